"""Kill anywhere, resume, same result: ``xlr run params/smoke.yaml`` in a subprocess is SIGKILLed at a chosen point
inside every stage (``xlr.faults``), the same command is rerun, and the finished run's artifacts must equal those of an
uninterrupted run with the same seeds; finished shards, training steps and judgments must not be redone."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
XLR = Path(sys.executable).parent / "xlr"

# One kill inside every stage, in the order the stages run; each rerun resumes and goes on to the next kill point.
# Smoke sizes: 4 prompts x 2 languages, shards of 2 prompts; 8 anchor pairs in batches of 2 (checkpoint every step);
# 12 eval prompts per language, 4 models.
KILLS = [
    "data:finish",  # artifacts written, not yet recorded in the manifest
    "anchor:checkpoint#2",  # after the 2nd of 4 optimizer steps was checkpointed
    "anchor:batch#1",  # inside the held-out reward-accuracy pass (after training)
    "probe:batch#2",  # the cross-lingual reward probe, after its first scoring batches
    "iter1/sampling:shard#3",  # en shards 0, 1 and de shard 0 written
    "iter1/rewards:batch#1",  # reward annotation
    "iter1/pairs:finish",  # pair building
    "iter1/training:checkpoint#1",  # iteration DPO
    "iter2/sampling:shard#2",
    "generation:shard#7",  # eval generation: pi_ref/en's 6 shards and pi_ref/zh's first
    "judging:judgment#5",
    "metrics:finish",
]
# fields that legitimately differ between two runs (times, attempts, whether this process resumed)
VOLATILE = {
    "wall_s",
    "started",
    "finished",
    "created",
    "reopened",
    "attempts",
    "peak_rss_mib",
    "resumed",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "seconds",
    "judgments_per_s",
    "error",
    "corrupt_moved_aside",
    "shards_written",
    "shards_skipped",
    # judge bookkeeping: a resumed judging stage counts cache hits where the uninterrupted one made calls (checked below)
    "calls",
    "cache_hits",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "cached",
    "calls_per_s",
    "comparisons_per_s",
    "calls_per_comparison",
}


def xlr_run(runs: Path, reports: Path, *extra: str, kill_at: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLR_RUNS_DIR": str(runs), "XLR_REPORTS_DIR": str(reports), "PYTHONUNBUFFERED": "1"}
    env.pop("XLR_KILL_AT", None)
    if kill_at:
        env["XLR_KILL_AT"] = kill_at
    return subprocess.run(
        [str(XLR), "run", str(REPO / "params/smoke.yaml"), *extra], env=env, capture_output=True, text=True, timeout=timeout
    )


def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def load(path: Path):
    if path.suffix == ".jsonl":
        return [strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return strip(json.loads(path.read_text()))


def same(a, b, where: str = "") -> None:
    """Equal, floats within 1e-5 relative (a resumed judge batches the remaining prompts differently, which moves
    the last bits of fp32 log-probs)."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {set(a) ^ set(b) if isinstance(b, dict) else b}"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: length"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def artifacts(run: Path) -> dict[str, Path]:
    """Every file a stage produced (not checkpoints, caches, executed notebooks or moved-aside files). The probe's score
    cache is named by the models' fingerprint, which holds the run directory's path: its results are compared in
    probe.json / probe_items.jsonl."""
    skip = ("checkpoints", "incomplete-checkpoints", "notebooks", "corrupt", "cache")
    return {
        str(p.relative_to(run)): p for p in run.rglob("*") if p.is_file() and not any(part in skip for part in p.relative_to(run).parts)
    }


def _compare(base: Path, other: Path, rel: str, pa: Path, pb: Path) -> None:
    import torch
    from safetensors.torch import load_file

    if pa.suffix in (".json", ".jsonl"):
        if pa.name == "manifest.json":
            ma, mb = load(pa), load(pb)
            # the paths of the two run dirs differ; compare per-stage status, artifact hashes and counts
            same(
                {k: (v["status"], v.get("counts")) for k, v in ma["stages"].items()},
                {k: (v["status"], v.get("counts")) for k, v in mb["stages"].items()},
                rel,
            )
            return
        ta, tb = pa.read_text().replace(str(base), "<run>"), pb.read_text().replace(str(other), "<run>")
        if pa.suffix == ".jsonl":
            va = [strip(json.loads(x)) for x in ta.splitlines() if x.strip()]
            vb = [strip(json.loads(x)) for x in tb.splitlines() if x.strip()]
        else:
            va, vb = strip(json.loads(ta)), strip(json.loads(tb))
            if pa.name == "xlr_model.json":  # weight hashes: the weights themselves are compared within tolerance below
                va.pop("weights", None), vb.pop("weights", None)
        same(va, vb, rel)
    elif pa.suffix == ".safetensors":
        wa, wb = load_file(pa), load_file(pb)
        assert wa.keys() == wb.keys(), rel
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=f"{rel}:{k}")
    else:
        ba, bb = pa.read_bytes(), pb.read_bytes()
        try:  # text (e.g. peft's adapter README names the base model by its path): the two run dirs' paths differ
            ba, bb = ba.decode().replace(str(base), "<run>"), bb.decode().replace(str(other), "<run>")
        except UnicodeDecodeError:
            pass
        assert ba == bb, rel


def assert_same_artifacts(base: Path, other: Path) -> int:
    """Every artifact of ``other`` equals ``base``'s; all differences are listed, not only the first."""
    a, b = artifacts(base), artifacts(other)
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    errors = []
    for rel, pa in a.items():
        try:
            _compare(base, other, rel, pa, b[rel])
        except AssertionError as e:
            errors.append(f"{rel}: {str(e).splitlines()[0]}")
    assert not errors, "\n".join(errors)
    return len(a)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_kill_anywhere_then_resume_gives_the_same_artifacts(tmp_path):
    base_runs, runs, reports = tmp_path / "base-runs", tmp_path / "runs", tmp_path / "reports"
    base = xlr_run(base_runs, tmp_path / "base-reports", "--direct")
    assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-3000:]

    for kill in KILLS:
        r = xlr_run(runs, reports, "--direct", kill_at=kill)
        assert r.returncode == -signal.SIGKILL, (
            f"{kill}: expected the run to be killed there, got rc {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        )
        stage = kill.split(":")[0]
        m = json.loads((runs / "smoke/manifest.json").read_text())
        assert m["stages"][stage]["status"] == "running", kill  # killed inside the stage, not after it
    # the report stage: a kill in the parent after the second page was written, then a clean rerun
    r = xlr_run(runs, reports, kill_at="report:page#2")
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-2000:]
    done = xlr_run(runs, reports)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (reports / "smoke/index.html").is_file() and (reports / "smoke/06_summary.html").is_file()

    run = runs / "smoke"
    m = json.loads((run / "manifest.json").read_text())
    # a stage ran once more for each kill inside it; nothing else ran twice
    kills = Counter(k.split(":")[0] for k in KILLS)
    for key, entry in m["stages"].items():
        assert entry["status"] == "done", key
        assert entry["attempts"] == 1 + kills[key], (key, entry["attempts"])
    # finished units were not redone: sampling shards and eval shards skipped, training resumed from its checkpoint
    assert m["stages"]["iter1/sampling"]["counts"]["en"]["shards_skipped"] == 2
    assert m["stages"]["iter1/sampling"]["counts"]["de"] == {
        **m["stages"]["iter1/sampling"]["counts"]["de"],
        "shards_skipped": 1,
        "shards_written": 1,
    }
    assert m["stages"]["generation"]["counts"]["pi_ref/en"]["shards_skipped"] == 6
    for key in ("anchor", "iter1/training"):
        rec = json.loads((run / key / "train_record.json").read_text())
        assert rec["resumed"] is True, key
        steps = [h["step"] for h in json.loads((run / key / "metrics.json").read_text()) if "loss" in h]
        assert steps == sorted(set(steps)) and steps[0] == 1, (key, steps)  # no step logged twice
    # judging: the 5 judgments made before the kill were not made again (the cache holds each prompt once)
    cache = [json.loads(x) for p in (runs / ".judge-cache").glob("*.jsonl") for x in p.read_text().splitlines() if x.strip()]
    assert len(cache) == len({c["key"] for c in cache}) > 5
    resumed = m["stages"]["judging"]["counts"]["totals"]
    uninterrupted = json.loads((base_runs / "smoke/manifest.json").read_text())["stages"]["judging"]["counts"]["totals"]
    assert resumed["cache_hits"] == 5 and resumed["calls"] + 5 == uninterrupted["calls"] == len(cache)

    n = assert_same_artifacts(base_runs / "smoke", run)
    assert n > 40


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_a_truncated_artifact_is_moved_aside_and_its_stage_redone(tmp_path):
    from xlr.config import load_params
    from xlr.runs import Run
    from xlr.study import run_stage

    params = load_params(REPO / "params/smoke.yaml", {"iterations": 1, "models": {"pi0": "tiny:1"}})
    run = Run.open(params)
    for name, iteration in (("data", None), ("models", None), ("sampling", 1)):
        run_stage(params, run, name, iteration)
    shard = run.root / "iter1/sampling/de/shard-00001.jsonl"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])  # cut mid-line, as a full disk or a copy gone wrong would
    run = Run.open(params)
    assert not run.stage_done("sampling", 1)
    assert run_stage(params, run, "sampling", 1) is True
    entry = run.manifest["stages"]["iter1/sampling"]
    assert entry["status"] == "done" and entry["attempts"] == 2
    assert entry["corrupt_moved_aside"] == ["iter1/sampling/de/shard-00001.jsonl"]
    assert entry["counts"]["de"]["shards_written"] == 1 and entry["counts"]["de"]["shards_skipped"] == 1
    assert entry["counts"]["en"]["shards_skipped"] == 2
    assert shard.read_bytes() == good  # redone with the same seed: the same shard
    moved = list((run.root / "corrupt").rglob("shard-00001.jsonl"))
    assert len(moved) == 1 and moved[0].read_bytes() == good[: len(good) // 2]  # kept, not deleted
