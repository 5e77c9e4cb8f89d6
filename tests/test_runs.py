import json
import os

import pytest

from xlr.config import load_params, parse_override
from xlr.files import atomic_write_json, atomic_write_text, read_jsonl, sha256_file
from xlr.runs import Run, RunMismatch


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    f = tmp_path / "a.json"
    atomic_write_json(f, {"v": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(f, "half")
    monkeypatch.undo()
    assert json.loads(f.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_read_jsonl_names_bad_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        read_jsonl(f)


@pytest.fixture
def smoke_params():
    from pathlib import Path

    return load_params(Path(__file__).resolve().parents[1] / "params/smoke.yaml")


def test_run_manifest_and_stage_integrity(smoke_params, tmp_path):
    run = Run.open(smoke_params)
    m = json.loads((run.root / "manifest.json").read_text())
    assert m["params_hash"] == smoke_params.params_hash() and m["packages"]["torch"].startswith("2.13")
    assert "git_sha" in m and (run.root / "params.yaml").is_file()
    run.start_stage("sampling", iteration=1)
    out = run.stage_dir("sampling", 1) / "shard-000.jsonl"
    atomic_write_text(out, '{"x": 1}\n')
    run.finish_stage("sampling", iteration=1, artifacts=[out], counts={"samples": 1})
    assert run.stage_done("sampling", 1)
    again = Run.open(smoke_params)
    assert again.manifest["stages"]["iter1/sampling"]["artifacts"] == {"iter1/sampling/shard-000.jsonl": sha256_file(out)}
    out.write_text('{"x"')  # truncated
    assert not again.stage_done("sampling", 1)


def test_run_from_other_params_is_refused_or_moved_aside(smoke_params):
    run = Run.open(smoke_params)
    other = load_params(run.root / "params.yaml", parse_override("seed=7"))
    with pytest.raises(RunMismatch, match="--force"):
        Run.open(other)
    moved = Run.open(other, force=True)
    assert moved.manifest["params_hash"] == other.params_hash()
    assert any(p.name.startswith("smoke.replaced-") for p in run.root.parent.iterdir())


def test_a_run_can_be_extended_by_more_iterations(smoke_params):
    run = Run.open(smoke_params)
    more = load_params(run.root / "params.yaml", parse_override("iterations=3"))
    again = Run.open(more)
    assert again.manifest["params"]["iterations"] == 3 and again.manifest["params_history"][0]["iterations"] == 2
    assert load_params(run.root / "params.yaml").iterations == 3


def test_a_field_added_to_the_schema_does_not_orphan_a_run(smoke_params):
    run = Run.open(smoke_params)
    m = json.loads((run.root / "manifest.json").read_text())
    m["params"]["anchor"].pop("head")  # as written by a version of xlr before `anchor.head` existed
    (run.root / "manifest.json").write_text(json.dumps(m))
    assert Run.open(smoke_params).manifest["name"] == "smoke"
