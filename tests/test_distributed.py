"""Several processes: the shard plan of reward annotation (xlr.rewards.scoring_units / annotate_sharded on
xlr.distributed's collectives), the rows of two gloo processes against one process, and the run manifest written by the
main process only."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from xlr import distributed
from xlr.config import RewardParams
from xlr.distributed import shard_units
from xlr.models import load_model
from xlr.rewards import annotate, annotate_sharded, scoring_units

REPO = Path(__file__).resolve().parents[1]
ENGLISH = {
    "a": "Name three colours.",
    "b": "What is the capital of France?",
    "c": "Write a haiku about the sea.",
    "d": "Explain photosynthesis briefly.",
}
PROMPTS = {
    ("a", "de"): "Nenne drei Farben.",
    ("b", "de"): "Was ist die Hauptstadt von Frankreich?",
    ("c", "de"): "Schreibe ein Haiku über das Meer.",
    ("d", "de"): "Erkläre kurz die Photosynthese.",
    ("a", "fr"): "Nomme trois couleurs.",
    ("b", "fr"): "Quelle est la capitale de la France ?",
    ("c", "fr"): "Écris un haïku sur la mer.",
    ("d", "fr"): "Explique brièvement la photosynthèse.",
}


def make_samples(seed: int = 0) -> list[dict]:
    """Prompts with 1 to 4 samples each (1: scored in length batches; more: shared-prompt groups), shuffled so groups
    are not contiguous."""
    rng = random.Random(seed)
    words = "rot grün blau rouge vert bleu Paris mer vague soleil lumière Wasser Licht Pflanze énergie".split()
    out = []
    for (i, lang), prompt in PROMPTS.items():
        for k in range(rng.choice([1, 1, 2, 4])):
            response = " ".join(rng.choices(words, k=rng.randint(0, 30)))
            out.append({"id": i, "lang": lang, "sample_idx": k, "prompt": prompt, "response": response, "n_tokens": None})
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def models():
    pol, tok = load_model("tiny:0")
    ref, _ = load_model("tiny:1")
    return pol, ref, tok


# ---------------------------------------------------------------------------------------------------------------
# the shard plan


def test_shard_units_partition_every_unit_once_and_balance():
    rng = random.Random(1)
    for _trial in range(50):
        costs = [rng.randint(1, 1000) for _ in range(rng.randint(0, 40))]
        world = rng.randint(1, 5)
        shards = shard_units(costs, world)
        assert len(shards) == world and sorted(u for s in shards for u in s) == list(range(len(costs)))
        assert all(s == sorted(s) for s in shards)
        loads = [sum(costs[u] for u in s) for s in shards]
        if costs:  # greedy to the least loaded: no two shards differ by more than the largest unit
            assert max(loads) - min(loads) <= max(costs), (costs, world, loads)
        assert shard_units(costs, world) == shards  # deterministic: every rank computes the same plan
    assert shard_units([5, 4, 3, 3, 3], 2) == [[0, 3], [1, 2, 4]]  # 5 -> A, 4 -> B, 3 -> B (7), 3 -> A (8), 3 -> B (10)
    with pytest.raises(distributed.DistributedError, match="world_size=0"):
        shard_units([1], 0)


@pytest.mark.parametrize("variant", ["R_c", "R_m", "R_t"])
def test_scoring_units_keep_every_reward_prompt_whole(models, variant):
    pol, ref, tok = models
    samples = make_samples()
    units, costs = scoring_units(samples, ENGLISH, tok, (pol, ref), RewardParams(variant=variant, batch_tokens=200), None)
    assert sorted(i for u in units for i in u) == list(range(len(samples))) and len(costs) == len(units)
    unit_of = {i: k for k, u in enumerate(units) for i in u}
    # the reward prompt of each variant, written out here: R_c/R_m per (id, lang); R_t the English instruction, shared by every language
    key = (lambda s: s["id"]) if variant == "R_t" else (lambda s: (s["id"], s["lang"]))
    for i, s in enumerate(samples):
        for j, t in enumerate(samples):
            if key(s) == key(t):
                assert unit_of[i] == unit_of[j], (variant, s, t)


def test_a_shard_of_whole_units_scores_bitwise_as_one_process(models):
    """Any set of whole units, scored alone, gives exactly the rows of the full call: the samples meet the same batch
    mates (prompt groups, global length batches) whichever shard they land in."""
    pol, ref, tok = models
    samples = make_samples(2)
    for share in (True, False):
        rp = RewardParams(variant="R_c", batch_tokens=200, share_prompts=share)
        full = annotate(samples, ENGLISH, pol, ref, tok, rp, None, fp32_head=False)
        units, _ = scoring_units(samples, ENGLISH, tok, (pol, ref), rp, None)
        assert len(units) > 3  # several batches / groups, so the subsets below split them up
        rng = random.Random(3)
        for _ in range(3):
            chosen = sorted(i for u in units if rng.random() < 0.5 for i in u)
            part = annotate([samples[i] for i in chosen], ENGLISH, pol, ref, tok, rp, None, fp32_head=False)
            assert part == [full[i] for i in chosen]


def test_single_process_annotate_sharded_is_annotate(models, monkeypatch):
    pol, ref, tok = models
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    samples = make_samples(4)
    rp = RewardParams(variant="R_m", batch_tokens=256)
    assert annotate_sharded(samples, ENGLISH, pol, ref, tok, rp, None, fp32_head=False) == annotate(
        samples, ENGLISH, pol, ref, tok, rp, None, fp32_head=False
    )
    assert distributed.world() == (0, 1, 0) and distributed.is_main() and distributed.init() is False
    distributed.barrier()  # a no-op, no process group
    assert distributed.all_gather_object("x") == distributed.gather_object("x") == ["x"]  # one rank: its own object


def test_local_device_is_this_ranks_gpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device("cuda") == "cuda"  # one process: as configured
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert (distributed.local_device("cuda"), distributed.local_device("cpu"), distributed.local_device("cuda:0")) == (
        "cuda:1",
        "cpu",
        "cuda:0",
    )
    assert not distributed.is_main() and distributed.world() == (3, 4, 1)


def test_bad_launch_environment_names_the_fix(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match="RANK=2, WORLD_SIZE=2.*accelerate launch"):
        distributed.world()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(distributed.DistributedError, match="RANK='one'.*unset it"):
        distributed.world()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(distributed.DistributedError, match="MASTER_ADDR, MASTER_PORT not set.*accelerate launch -m xlr.cli"):
        distributed.init()


# ---------------------------------------------------------------------------------------------------------------
# two processes (gloo, CPU)

CHILD = r"""
import json, os, sys
from pathlib import Path
from xlr import distributed
from xlr.config import RewardParams, load_params
from xlr.models import load_model
from xlr.rewards import annotate_sharded
from xlr.runs import Run
from xlr.files import atomic_write_json

work = Path(sys.argv[1])
spec = json.loads((work / "spec.json").read_text())
pol, tok = load_model("tiny:0", progress=False)
ref, _ = load_model("tiny:1", progress=False)
rank, size, local = distributed.world()
seen = {"world": [rank, size, local]}
for name, kw in spec["calls"].items():
    names = kw.pop("names", None)
    rows = annotate_sharded(spec["samples"], spec["english"], pol, ref, tok, RewardParams(**kw), names, fp32_head=False)
    seen[name] = rows if rank == 0 else (rows is None)

# the manifest: written by rank 0 alone, read by rank 1 after sync()
params = load_params(spec["params"])
run = Run.open(params)
run.sync()
seen["manifest_after_open"] = run.manifest.get("params_hash")
run.start_stage("rewards", 1)
out = run.stage_dir("rewards", 1) / "rewards.jsonl"
if distributed.is_main():
    out.write_text("{}\n")
run.finish_stage("rewards", 1, artifacts=[out], counts={"by": rank})  # rank 1: a no-op, it does not hash
run.sync()
seen["done_after_sync"] = run.stage_done("rewards", 1)
seen["counts"] = run.manifest["stages"]["iter1/rewards"]["counts"]
atomic_write_json(work / f"rank{rank}.json", seen)
distributed.shutdown()
"""


def test_two_gloo_processes_give_the_rows_of_one_process(models, tmp_path):
    """``torchrun --nproc_per_node 2`` on CPU: the rows gathered on rank 0 equal single-process ``annotate`` exactly
    (==, floats included: each sample is scored with the same batch mates, see scoring_units), in the original order;
    rank 1 gets None, writes no manifest, and sees the stage done after ``Run.sync``."""
    pol, ref, tok = models
    samples = make_samples(5)
    calls = {
        "rc": dict(variant="R_c", batch_tokens=200),
        "rm_unshared": dict(variant="R_m", batch_tokens=300, share_prompts=False),
        "rc_parity": dict(variant="R_c", batch_tokens=4096, parity="icr", names={"de": "German", "fr": "French"}),
    }  # names: beside the reward params
    (tmp_path / "spec.json").write_text(
        json.dumps({"samples": samples, "english": ENGLISH, "calls": calls, "params": str(REPO / "params/smoke.yaml")})
    )
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "XLR_DIST_TIMEOUT_S": "120", "PYTHONPATH": str(REPO)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        str(tmp_path / "child.py"),
        str(tmp_path),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    main, other = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    assert main["world"] == [0, 2, 0] and other["world"] == [1, 2, 1]
    for name, kw in calls.items():
        kw = dict(kw)
        names = kw.pop("names", None)
        want = annotate(samples, ENGLISH, pol, ref, tok, RewardParams(**kw), names, fp32_head=False)
        assert main[name] == json.loads(json.dumps(want)), name  # through JSON as the child's rows came
        assert other[name] is True, name  # rank 1 got None
    assert main["manifest_after_open"] == other["manifest_after_open"] is not None
    assert main["done_after_sync"] and other["done_after_sync"]
    assert main["counts"] == other["counts"] == {"by": 0}  # rank 1's finish_stage wrote nothing; it read rank 0's


# ---------------------------------------------------------------------------------------------------------------
# the manifest under a faked rank (no process group: the guard reads the environment)


@pytest.fixture
def smoke_params():
    from xlr.config import load_params

    return load_params(REPO / "params/smoke.yaml")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def test_other_ranks_write_no_manifest(smoke_params, monkeypatch):
    from xlr.runs import Run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run = Run.open(smoke_params)
    assert not run.root.exists()  # not created by rank 1
    run.manifest["runtime"]["threads"] = 1
    run.save()
    run.start_stage("data")
    art = run.stage_dir("data") / "x.json"
    art.write_text("{}")
    run.finish_stage("data", artifacts=[art], counts={"n": 1})
    run.fail_stage("data", "boom")
    assert run.move_aside_corrupt("data") == []
    assert _files(run.root) == {"data/x.json": b"{}"}  # only what the test itself wrote
    assert "data" not in run.manifest["stages"]

    monkeypatch.setenv("RANK", "0")  # the main process: as in one process
    main = Run.open(smoke_params)
    main.start_stage("data")
    main.finish_stage("data", artifacts=[art], counts={"n": 1})
    on_disk = json.loads((main.root / "manifest.json").read_text())
    assert on_disk["stages"]["data"]["status"] == "done" and on_disk["stages"]["data"]["counts"] == {"n": 1}
    assert (main.root / "params.yaml").is_file()

    monkeypatch.setenv("RANK", "1")  # rank 1 now reads what rank 0 wrote, and still writes nothing
    before = _files(main.root)
    again = Run.open(smoke_params)
    assert again.manifest == on_disk and again.stage_done("data")
    again.start_stage("data")
    again.fail_stage("data", "boom")
    art.write_text("{ }")  # an edited artifact: rank 1 must not move it aside
    before["data/x.json"] = b"{ }"
    assert again.move_aside_corrupt("data") == [] and _files(main.root) == before


def test_xlr_run_under_torchrun_writes_the_rewards_of_one_process(tmp_path):
    """The stage runner under a 2-process launch (``torchrun -m xlr.cli run ... --only iter1/rewards``, gloo on CPU):
    every rank scores its share, the main process writes rewards.jsonl and the manifest, and the file equals the one a
    single process writes for the same samples, byte for byte. The stages before it ran in one process."""
    import shutil

    base = ["--set", "models.pi0=tiny:1", "--set", "iterations=1", "--set", "probe.enabled=false", "--set", "judge.backend=none"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "XLR_DIST_TIMEOUT_S": "120",
        "PYTHONPATH": str(REPO),
        "XLR_RUNS_DIR": str(tmp_path / "one"),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    xlr = [sys.executable, "-m", "xlr.cli", "run", str(REPO / "params/smoke.yaml"), "--direct", *base]
    for step in ("data", "models", "iter1/sampling"):
        r = subprocess.run([*xlr, "--only", step], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    r = subprocess.run([*xlr, "--only", "iter1/rewards"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "-m",
        "xlr.cli",
        "run",
        str(REPO / "params/smoke.yaml"),
        *base,
        "--only",
        "iter1/rewards",
    ]  # no --direct: implied under several processes
    r = subprocess.run(launch, env={**env, "XLR_RUNS_DIR": str(tmp_path / "two")}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert (
        "notebooks and reports are not built" in r.stdout and r.stdout.count("notebooks and reports are not built") == 1
    )  # main speaks alone
    one, two = (tmp_path / d / "smoke/iter1/rewards/rewards.jsonl" for d in ("one", "two"))
    assert one.read_bytes() == two.read_bytes() and one.read_text().count("\n") == 2 * 4 * 3
    m = json.loads((tmp_path / "two/smoke/manifest.json").read_text())
    assert m["stages"]["iter1/rewards"]["status"] == "done" and m["stages"]["iter1/rewards"]["attempts"] == 1
