"""Data-parallel sampling (issue 16): sample_tasks with data_parallel_size 2 runs two worker processes (the hf backend and
the tiny model in float64, on CPU) and must write the shards one engine writes; a failed or killed engine is reported
with its exit and log, and a rerun samples only the missing shards. Each worker start loads torch and the model (seconds)."""

import json
import shutil

import pytest

from xlr import faults
from xlr.sampling import EngineConfig, EngineError, GenConfig, SamplingTask, engine_devices, load_samples, sample_tasks

CFG = GenConfig(n=2, do_sample=True, temperature=0.9, max_new_tokens=5, batch_size=4)
DE = ["Hallo!", "Nenne eine Farbe.", "Zähle bis drei.", "Was ist Licht?", "Erkläre Regen."]
ROWS = {
    "de": [{"instruction_id": f"de{i}", "instruction": q} for i, q in enumerate(DE)],
    "fr": [
        {"instruction_id": i, "instruction": q} for i, q in enumerate(["Bonjour !", "Compte jusqu'à trois.", "Qu'est-ce que la pluie ?"])
    ],
}
ENGINE = {"backend": "hf", "spec": "tiny:0", "dtype": "float64", "device": "cpu", "seed": 1}  # float64: no thread-count-dependent rounding
SHARD = 2  # de: 3 shards, fr: 2; dealt round-robin in task order to 2 engines: engine 0 de0 de2 fr1, engine 1 de1 fr0


def _tasks(root):
    return [SamplingTask(lang, ROWS[lang], lang, root / lang, CFG, seed=7) for lang in ROWS]


def _files(root):
    return {f"{p.parent.name}/{p.name}": p.read_text() for p in sorted(root.glob("*/shard-*.jsonl")) if p.is_file()}


@pytest.fixture(autouse=True)
def _no_kill_points(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.delenv(faults.RUN_PID_ENV, raising=False)  # a kill point in a worker must never take pytest down
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture(scope="module")
def one_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    counts = sample_tasks(EngineConfig(**ENGINE), _tasks(root), SHARD, root / "engines")
    assert not (root / "engines").exists()  # one engine: in this process, no workers
    return root, counts


def test_two_engines_write_the_shards_of_one_engine(one_engine, tmp_path):
    ref_root, ref_counts = one_engine
    work = tmp_path / "engines"
    counts = sample_tasks(EngineConfig(**ENGINE, data_parallel_size=2), _tasks(tmp_path), SHARD, work, poll_s=0.2)
    assert _files(tmp_path) == _files(ref_root) and len(_files(tmp_path)) == 5
    assert counts == ref_counts
    assert [(r["id"], r["sample_idx"]) for r in load_samples(tmp_path / "fr")] == [
        (i, s) for i in range(3) for s in range(2)
    ]  # prompt order
    results = [json.loads((work / f"engine-{k}.result.json").read_text()) for k in (0, 1)]
    assert [r["cuda_visible_devices"] for r in results] == ["0", "1"]  # engine k: GPUs [k*tp, (k+1)*tp), tp 1
    assert [sorted(p.rsplit("/", 2)[-2] + p[-7:-6] for p in r["shards_written"]) for r in results] == [
        ["de0", "de2", "fr1"],
        ["de1", "fr0"],
    ]
    record = json.loads((work / "engines.json").read_text())
    assert [(e["engine"], e["exit_code"], e["cuda_visible_devices"]) for e in record["engines"]] == [(0, 0, "0"), (1, 0, "1")]
    logs = {k: (work / f"engine-{k}.log").read_text() for k in (0, 1)}
    assert "CUDA_VISIBLE_DEVICES='1'" in logs[1]
    again = sample_tasks(EngineConfig(**ENGINE, data_parallel_size=2), _tasks(tmp_path), SHARD, work, poll_s=0.2)
    assert (
        all(c["shards_written"] == 0 for c in again.values()) and {k: (work / f"engine-{k}.log").read_text() for k in (0, 1)} == logs
    )  # no launch


def test_a_failed_and_a_killed_engine_are_reported_and_a_rerun_samples_only_the_missing_shards(one_engine, tmp_path, monkeypatch):
    ref_root, _ = one_engine
    work = tmp_path / "engines"
    obstacle = tmp_path / "fr" / "shard-00000.jsonl"
    obstacle.mkdir(parents=True)  # engine 1 cannot write fr0 (its 2nd shard): it fails with a traceback
    monkeypatch.setattr(faults, "stage", "test/sampling")
    monkeypatch.setenv(faults.ENV, "test/sampling:shard#2")  # engine 0 is SIGKILLed after its 2nd shard (de2); engine 1 never gets there
    engine = EngineConfig(**ENGINE, data_parallel_size=2)
    with pytest.raises(EngineError) as e:
        sample_tasks(engine, _tasks(tmp_path), SHARD, work, poll_s=0.2)
    msg = str(e.value)
    assert "2 of 2 data-parallel engine(s) failed (sampling.data_parallel_size: 2); 3 of 5 shards are complete and kept" in msg
    assert f"engine 0 (CUDA_VISIBLE_DEVICES='0') was killed by signal 9 (SIGKILL); log: {work / 'engine-0.log'}" in msg
    assert f"engine 1 (CUDA_VISIBLE_DEVICES='1') exited with code 1; log: {work / 'engine-1.log'}" in msg
    assert "IsADirectoryError" in msg and "Fix:" in msg and "rerun" in msg  # the log's tail says why
    assert sorted(_files(tmp_path)) == ["de/shard-00000.jsonl", "de/shard-00001.jsonl", "de/shard-00002.jsonl"]
    obstacle.rmdir()
    monkeypatch.delenv(faults.ENV)
    counts = sample_tasks(engine, _tasks(tmp_path), SHARD, work, poll_s=0.2)
    assert (
        counts["de"]["shards_written"],
        counts["de"]["shards_skipped"],
        counts["fr"]["shards_written"],
        counts["fr"]["shards_skipped"],
    ) == (0, 3, 2, 0)
    assert [json.loads((work / f"engine-{k}.result.json").read_text())["shards_written"] for k in (0, 1)] == [
        [str(tmp_path / "fr" / "shard-00000.jsonl")],
        [str(tmp_path / "fr" / "shard-00001.jsonl")],
    ]
    assert _files(tmp_path) == _files(ref_root)


def test_one_engine_with_every_shard_done_starts_no_backend(one_engine, tmp_path):
    ref_root, ref_counts = one_engine
    for lang in ROWS:
        shutil.copytree(ref_root / lang, tmp_path / lang)
    counts = sample_tasks(EngineConfig(**{**ENGINE, "backend": "no-such-backend"}), _tasks(tmp_path), SHARD, tmp_path / "engines")
    assert counts == {
        k: {**c, "shards_written": 0, "shards_skipped": c["shards_written"] + c["shards_skipped"]} for k, c in ref_counts.items()
    }
    with pytest.raises(ValueError, match="own key and out_dir"):
        sample_tasks(EngineConfig(**ENGINE), _tasks(tmp_path) * 2, SHARD, tmp_path / "engines")


def test_engine_devices():
    gpus = [str(i) for i in range(8)]
    assert engine_devices(8, 1, gpus) == gpus
    assert engine_devices(4, 2, gpus) == ["0,1", "2,3", "4,5", "6,7"]
    assert engine_devices(2, 2, ["4", "5", "6", "7"]) == ["4,5", "6,7"]  # a subset made visible to the run: its own GPUs in turn
    assert engine_devices(1, 3, gpus) == ["0,1,2"]
    with pytest.raises(
        EngineError, match=r"evaluation\.data_parallel_size 3 x evaluation\.tensor_parallel_size 2 = 6 GPUs, but 4 are visible.*Fix: lower"
    ):
        engine_devices(3, 2, gpus[:4], section="evaluation")


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from xlr.sampling import _visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert _visible_gpus(EngineConfig("vllm", "m", device="cuda", data_parallel_size=2)) == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _visible_gpus(EngineConfig("hf", "m", device="cpu", data_parallel_size=2)) == ["", ""]  # hidden GPUs stay hidden


def test_engine_config_is_plain_json_and_checks_its_sizes():
    import torch

    e = EngineConfig(
        "vllm",
        "owner/m@rev",
        dtype=torch.bfloat16,
        device="cuda",
        tensor_parallel_size=2,
        data_parallel_size=4,
        options={"max_num_seqs": 8},
    )
    assert e.dtype == "bfloat16" and EngineConfig(**json.loads(json.dumps(e.__dict__))) == e
    with pytest.raises(ValueError, match=r"evaluation\.data_parallel_size: 0.*Fix"):
        EngineConfig("hf", "tiny:0", field="evaluation.backend", data_parallel_size=0)
    with pytest.raises(ValueError, match=r"sampling\.tensor_parallel_size: 2, but sampling\.backend: hf.*Fix: set sampling\.backend: vllm"):
        EngineConfig("hf", "tiny:0", tensor_parallel_size=2, data_parallel_size=4)


def test_params_parallel_fields():
    from pydantic import ValidationError

    from xlr.config import EvalParams, SamplingParams

    assert (SamplingParams().tensor_parallel_size, SamplingParams().data_parallel_size) == (1, 1)
    assert (EvalParams().tensor_parallel_size, EvalParams().data_parallel_size) == (None, None)  # None = sampling's
    assert SamplingParams(backend="vllm", tensor_parallel_size=2, data_parallel_size=4).data_parallel_size == 4
    assert SamplingParams(backend="hf", data_parallel_size=8).data_parallel_size == 8
    with pytest.raises(ValidationError, match=r"sampling\.tensor_parallel_size: 2 needs sampling\.backend: vllm"):
        SamplingParams(tensor_parallel_size=2)
    with pytest.raises(ValidationError, match=r"evaluation\.tensor_parallel_size: 2 needs evaluation\.backend: vllm"):
        EvalParams(backend="hf", tensor_parallel_size=2)
    with pytest.raises(ValidationError, match="greater than 0"):
        SamplingParams(data_parallel_size=0)


def test_an_engine_gets_its_gpus_and_no_launcher_ranks():
    from xlr.sampling import _engine_env

    parent = {
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
        "RANK": "0",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "x",
        "PYTHONPATH": "/extra",
        "XLR_CACHE": "/c",
    }
    env = _engine_env(parent, "2,3", "/src")
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2,3", "PYTHONPATH": "/src:/extra", "XLR_CACHE": "/c"}
