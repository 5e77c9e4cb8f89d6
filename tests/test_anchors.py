"""Issue 19: the content-addressed cache of the English anchor pi0 (xlr.anchors, xlr.stages.stage_anchor).

One real anchor is trained and stored (module fixture); the other tests reuse that entry, or fake the training where
what matters is whether the stage trains (a stand-in that raises, or one that copies the stored anchor's files)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from xlr import anchors, stages
from xlr.config import deep_merge, load_params
from xlr.files import read_json, sha256_file
from xlr.runs import Run
from xlr.study import run_stage

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "params" / "smoke.yaml"


def _params(name: str, **overrides):
    """The smoke params under another name; 4 held-out pairs keep each accuracy pass short."""
    return load_params(SMOKE, deep_merge({"name": name, "anchor": {"n_eval": 4}}, overrides))


def _anchor(params, echo=print) -> Run:
    run = Run.open(params)
    run_stage(params, run, "anchor", echo=echo)
    return run


class Trained(Exception):
    """Raised by the stand-in for train_dpo: the stage went the training way."""


def _refuse_training(*args, **kwargs):
    raise Trained


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """Run ``anchors-a`` trained its anchor with the cache at a module temp dir: (run, cache root, key)."""
    base = tmp_path_factory.mktemp("anchor-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLR_RUNS_DIR", str(base / "runs"))
        mp.setenv(anchors.ENV, str(base / "cache"))
        run = _anchor(_params("anchors-a"))
    rec = run.manifest["models"]["pi0"]["anchor_cache"]
    return run, base / "cache", rec["key"]


@pytest.fixture
def cache(first, monkeypatch):
    """The module's cache root in XLR_ANCHOR_CACHE for this test (the autouse fixture turned it off)."""
    monkeypatch.setenv(anchors.ENV, str(first[1]))
    return first[1]


def test_a_finished_anchor_is_stored_with_every_file_hashed(first):
    run, root, key = first
    assert len(key) == anchors.KEY_CHARS and int(key, 16) >= 0
    entry_dir = root / key
    entry = json.loads((entry_dir / anchors.ENTRY).read_text())
    assert entry["key"] == key and entry["built_by"] == {"run": "anchors-a", "root": str(run.root)}
    counts = run.manifest["stages"]["anchor"]["counts"]
    assert entry["pi_ref"] == "tiny:0" and entry["n_train"] == 8
    assert entry["train"] == {
        "pairs": counts["train_pairs"],
        "dropped_prompt_too_long": counts["dropped_prompt_too_long"],
        "truncated": counts["truncated"],
    }
    assert {"model/model.safetensors", "model/xlr_model.json", "adapter/adapter_model.safetensors", "metrics.json"} <= set(entry["files"])
    assert {"reward_accuracy.json", "reward_accuracy_pairs.jsonl", anchors.INPUTS} <= set(entry["files"])
    assert not any(rel.startswith("checkpoints") for rel in entry["files"])  # resume state stays in the run
    for rel, digest in entry["files"].items():
        assert sha256_file(entry_dir / rel) == digest, rel
    assert entry["size_bytes"] == sum((entry_dir / rel).stat().st_size for rel in entry["files"])
    acc = read_json(run.layout.reward_accuracy)
    assert entry["reward_accuracy"]["accuracy"] == acc["accuracy"] and entry["reward_accuracy"]["ci95"] == acc["ci95"]
    inputs = read_json(entry_dir / anchors.INPUTS)
    assert anchors.key(inputs) == key and inputs["keyed"]["seed"] == 42 and inputs["keyed"]["precision"]["train_dtype"] == "float32"
    assert {"torch", "transformers", "trl", "peft"} <= set(inputs["recorded"]["packages"]) and "xlr_git_sha" in inputs["recorded"]
    rec = run.manifest["models"]["pi0"]["anchor_cache"]
    assert rec == {
        "status": "stored",
        "key": key,
        "entry": str(entry_dir),
        "built_at": entry["built_at"],
        "built_by": entry["built_by"],
    }
    assert run.manifest["stages"]["anchor"]["counts"]["anchor_cache"] == f"stored as {key}"
    assert not list(root.glob(".tmp-*"))


def test_another_run_with_the_same_inputs_reuses_the_anchor_without_training(first, cache, monkeypatch):
    run_a, _, key = first
    monkeypatch.setattr(stages, "train_dpo", _refuse_training)
    lines: list[str] = []
    run_b = _anchor(_params("anchors-b"), echo=lines.append)
    assert run_b.stage_done("anchor")
    for rel in ("model/model.safetensors", "model/xlr_model.json", "model/config.json", "reward_accuracy.json"):
        assert (run_b.layout.stage("anchor") / rel).read_bytes() == (run_a.layout.stage("anchor") / rel).read_bytes(), rel
    assert (run_b.layout.reward_accuracy_pairs).read_bytes() == run_a.layout.reward_accuracy_pairs.read_bytes()
    rec = run_b.manifest["models"]["pi0"]["anchor_cache"]
    assert rec["status"] == "reused" and rec["key"] == key and rec["entry"] == str(cache / key)
    assert rec["built_by"]["run"] == "anchors-a"
    line = run_b.manifest["stages"]["anchor"]["counts"]["anchor_cache"]
    assert line == f"reused anchor {key} built {rec['built_at']} by anchors-a"
    a_counts, b_counts = (r.manifest["stages"]["anchor"]["counts"] for r in (run_a, run_b))
    assert {k: v for k, v in b_counts.items() if k != "anchor_cache"} == {k: v for k, v in a_counts.items() if k != "anchor_cache"}
    assert run_b.manifest["models"]["pi0"]["reward_accuracy"] == run_a.manifest["models"]["pi0"]["reward_accuracy"]
    # the stage records its precision as when it trains (resolved before the key)
    assert set(run_b.manifest["runtime"]["precision"]) == {"anchor.head", "reward.dtype"}


@pytest.mark.parametrize("overrides", [{"seed": 43}, {"anchor": {"n_train": 6}}], ids=["seed", "n_train"])
def test_other_inputs_give_another_key_and_train(first, cache, monkeypatch, overrides):
    asked: list[str] = []
    real_lookup = anchors.lookup

    def spy(k, inputs=None):
        asked.append(k)
        return real_lookup(k, inputs)

    monkeypatch.setattr(anchors, "lookup", spy)
    monkeypatch.setattr(stages, "train_dpo", _refuse_training)
    with pytest.raises(Trained):
        _anchor(_params("anchors-other", **overrides))
    assert len(asked) == 1 and asked[0] != first[2]


def test_the_key_covers_the_precision_and_the_data(first):
    inputs = read_json(first[1] / first[2] / anchors.INPUTS)
    keyed = inputs["keyed"]
    for field, value in (("train_dtype", "bfloat16"), ("score_dtype", "bf16"), ("device", "cuda"), ("processes", 2)):
        other = {**keyed, "precision": {**keyed["precision"], field: value}}
        assert anchors.key({"keyed": other}) != first[2], field
    other = {**keyed, "eval_rows": {**keyed["eval_rows"], "sha256": "0" * 64}}
    assert anchors.key({"keyed": other}) != first[2]
    assert anchors.key({"keyed": keyed, "recorded": {"xlr_git_sha": "else"}}) == first[2]  # versions are recorded, not keyed


def test_a_pi_ref_without_weight_hashes_is_not_cacheable(tmp_path, cache):
    folder = tmp_path / "plain-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    params = _params("anchors-plain", models={"pi_ref": str(folder), "pi0": "build"})
    with pytest.raises(anchors.NotCacheable, match="no recorded weight hashes"):
        anchors.key_inputs(params, [], [], {})
    rec, inputs, hit = stages._anchor_cache_lookup(params, [], [], {})
    assert rec["status"].startswith("not cacheable: pi_ref") and inputs is None and hit is None


def test_an_entry_for_other_inputs_is_refused_and_kept(first, cache, caplog):
    inputs = read_json(cache / first[2] / anchors.INPUTS)
    other = {**inputs, "keyed": {**inputs["keyed"], "seed": 7}}
    with caplog.at_level(logging.WARNING, logger="xlr.anchors"):
        assert anchors.lookup(first[2], other) is None
    assert "collision" in caplog.text and (cache / first[2] / anchors.ENTRY).is_file()
    assert anchors.lookup(first[2], inputs)["key"] == first[2]


def test_a_tampered_inputs_file_moves_the_entry_aside(first, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    shutil.copytree(first[1] / first[2], root / first[2])
    monkeypatch.setenv(anchors.ENV, str(root))
    inputs = read_json(root / first[2] / anchors.INPUTS)
    (root / first[2] / anchors.INPUTS).write_text(json.dumps({**inputs, "keyed": {**inputs["keyed"], "seed": 7}}))
    entry = read_json(root / first[2] / anchors.ENTRY)
    entry["files"][anchors.INPUTS] = sha256_file(root / first[2] / anchors.INPUTS)  # entry.json edited to match
    (root / first[2] / anchors.ENTRY).write_text(json.dumps(entry))
    assert anchors.lookup(first[2]) is None
    assert not (root / first[2]).exists() and len(list((root / ".corrupt").glob(f"{first[2]}-*"))) == 1


def _copy_anchor_of(run: Run, calls: list[str]):
    """A stand-in for train_dpo that puts ``run``'s finished anchor files (copies) where the stage trains, as if trained."""

    def fake_train(start, pairs, out, dpo, **kwargs):
        calls.append(str(out))
        for name in ("model", "adapter"):
            shutil.copytree(run.layout.stage("anchor") / name, out / name, dirs_exist_ok=True)
        shutil.copy2(run.layout.training_metrics(0), out / "metrics.json")
        return {"pairs": len(pairs), "dropped_prompt_too_long": 0, "truncated": 0}

    return fake_train


def _fake_measure(monkeypatch, run: Run, calls: list[str]) -> None:
    """train_dpo copies ``run``'s anchor (:func:`_copy_anchor_of`) and the held-out pass returns ``run``'s result: the
    stage goes the building way in a fraction of a second."""
    from xlr.files import read_jsonl

    monkeypatch.setattr(stages, "train_dpo", _copy_anchor_of(run, calls))
    acc = read_json(run.layout.reward_accuracy)
    monkeypatch.setattr(stages, "reward_accuracy", lambda *a, **k: {**acc, "per_pair": read_jsonl(run.layout.reward_accuracy_pairs)})


def test_with_the_cache_off_nothing_is_looked_up_or_written(first, monkeypatch, tmp_path):
    assert os.environ[anchors.ENV] == "off"  # tests/conftest.py: the default for every test
    calls: list[str] = []
    _fake_measure(monkeypatch, first[0], calls)
    for fn in ("lookup", "store", "restore", "key_inputs"):
        monkeypatch.setattr(anchors, fn, lambda *a, _fn=fn, **k: pytest.fail(f"anchors.{_fn} called with the cache off"))
    before = sorted(p.relative_to(first[1]) for p in first[1].rglob("*"))
    run = _anchor(_params("anchors-off"))
    assert calls and run.stage_done("anchor")
    assert run.manifest["models"]["pi0"]["anchor_cache"]["status"] == "off"
    assert run.manifest["stages"]["anchor"]["counts"]["anchor_cache"] == "off"
    assert sorted(p.relative_to(first[1]) for p in first[1].rglob("*")) == before
    for value in ("0", "OFF"):
        monkeypatch.setenv(anchors.ENV, value)
        assert anchors.cache_root() is None


def test_anchors_list_shows_the_entry(first, cache, capsys):
    from xlr.cli import main

    assert main(["anchors", "list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(first[2]))
    acc = read_json(first[0].layout.reward_accuracy)
    assert "anchors-a" in row and "tiny:0" in row and f"{acc['accuracy']:.3f} [{acc['ci95'][0]:.3f}" in row
    assert str(cache) in out and "MiB" in out


def test_a_corrupted_cached_weight_is_moved_aside_and_the_anchor_rebuilt(first, cache, monkeypatch, caplog):
    run_a, _, key = first
    weights = cache / key / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.unlink()  # a new file, not an edit in place: the runs' hard links keep the good bytes
    weights.write_bytes(bytes(data))
    calls: list[str] = []
    _fake_measure(monkeypatch, run_a, calls)
    with caplog.at_level(logging.WARNING, logger="xlr.anchors"):
        run_c = _anchor(_params("anchors-c"))
    assert calls, "the stage did not rebuild the anchor"
    assert "model/model.safetensors" in caplog.text and "moved aside" in caplog.text
    aside = list((cache / ".corrupt").glob(f"{key}-*"))
    assert len(aside) == 1 and (aside[0] / "model" / "model.safetensors").read_bytes() == bytes(data)  # kept, not deleted
    rec = run_c.manifest["models"]["pi0"]["anchor_cache"]
    assert rec["status"] == "stored" and rec["key"] == key and rec["built_by"]["run"] == "anchors-c"
    assert anchors.lookup(key)["built_by"]["run"] == "anchors-c"  # the rebuilt entry, verified
    assert sha256_file(cache / key / "model" / "model.safetensors") == sha256_file(run_a.layout.policy(0) / "model.safetensors")


def test_anchors_rm_by_prefix_and_unknown_keys(first, cache, capsys, tmp_path, monkeypatch):
    from xlr.cli import main

    key = first[2]
    assert main(["anchors", "rm", "deadbeef"]) == 2
    err = capsys.readouterr().err
    assert "xlr: error: no cached anchor 'deadbeef'" in err and str(cache) in err and "xlr anchors list" in err
    assert main(["anchors", "rm", key[:6]]) == 0
    assert f"removed cached anchor {key}" in capsys.readouterr().out
    assert not (cache / key).exists() and first[0].layout.policy(0).joinpath("model.safetensors").is_file()  # the run keeps its pi0
    assert main(["anchors", "list"]) == 0
    assert capsys.readouterr().out.strip() == f"no cached anchors in {cache}"
    # a prefix of two keys names neither
    monkeypatch.setenv(anchors.ENV, str(tmp_path / "two"))
    for k in ("abc111", "abc222"):
        (tmp_path / "two" / k).mkdir(parents=True)
    assert main(["anchors", "rm", "abc"]) == 2
    assert "'abc' is the start of 2 cached anchors" in capsys.readouterr().err
    assert (tmp_path / "two" / "abc111").is_dir()


def test_xlr_run_no_anchor_cache_turns_the_cache_off_for_the_run(cache, monkeypatch):
    import xlr.study
    from xlr.cli import main

    seen: list[str | None] = []
    monkeypatch.setattr(xlr.study, "run_study", lambda params, **kw: seen.append(os.environ.get(anchors.ENV)))
    assert main(["run", str(SMOKE), "--direct"]) == 0 and seen == [str(cache)]
    assert main(["run", str(SMOKE), "--direct", "--no-anchor-cache"]) == 0 and seen[-1] == "off"
