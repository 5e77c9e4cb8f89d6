import json
import subprocess
import sys
from pathlib import Path

import pytest

from xlr.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "params", "data", "models"):
        assert cmd in out


def test_console_script_installed():
    exe = Path(sys.executable).parent / "xlr"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "cross-lingual" in r.stdout


def test_params_command(capsys, tmp_path):
    assert main(["params", *map(str, sorted((REPO / "params").glob("*.yaml")))]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: {pi_ref: tiny:0}\nsampling: {n_samples: 0}\n")
    assert main(["params", str(bad)]) == 1
    assert "sampling.n_samples" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_data_check_table(capsys):
    assert main(["data", "check", "--data-dir", str(SHARED)]) == 0
    out = capsys.readouterr().out
    assert "ultrafeedback-prompts/de.jsonl" in out and "31 files, 0 with problems" in out


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-0.5b-instruct" in out and "smollm2-135m-instruct" in out


def test_run_error_is_clear(capsys, tmp_path):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_run_smoke_runs_what_exists_and_says_what_is_not_built(capsys, tmp_path):
    assert main(["run", str(REPO / "params/smoke.yaml")]) == 0
    out = capsys.readouterr().out
    assert "NOT BUILT YET" in out and "sampling" in out
    manifest = json.loads((tmp_path / "runs/smoke/manifest.json").read_text())
    assert manifest["stages"]["data"]["status"] == "done" and manifest["stages"]["models"]["status"] == "done"
    assert manifest["stages"]["data"]["counts"]["train_prompts"] == {"en": 4, "de": 4}
    assert set(manifest["models"]) == {"pi_ref", "judge"} and manifest["runtime"]["threads"] == 2
    assert main(["run", str(REPO / "params/smoke.yaml")]) == 0
    assert "done earlier, artifacts intact: skipped" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_run_iteration_one_core_stages_with_a_given_pi0(capsys, tmp_path):
    from xlr.runs import read_jsonl

    assert main(["run", str(REPO / "params/smoke.yaml"), "--set", "models.pi0=tiny:1"]) == 0
    out = capsys.readouterr().out
    assert "[iter1/pairs]" in out and "only iteration 1" in out
    run = tmp_path / "runs/smoke"
    samples = [r for p in sorted((run / "iter1/sampling").glob("*/shard-*.jsonl")) for r in read_jsonl(p)]
    rewards = read_jsonl(run / "iter1/rewards/rewards.jsonl")
    assert len(samples) == len(rewards) == 2 * 4 * 3  # languages x prompts x N
    assert all(abs(r["reward"] - (r["policy_logp"] - r["reference_logp"])) < 1e-9 for r in rewards)
    de = [r for r in rewards if r["lang"] == "de"]
    assert all("using only German, unless explicitly instructed" in r["reward_prompt"] for r in de)
    stats = json.loads((run / "iter1/pairs/pairs_stats.json").read_text())
    pairs = read_jsonl(run / "iter1/pairs/pairs.jsonl")
    for lang in ("en", "de"):
        s = stats[lang]
        assert s["pairs"] + sum(v for k, v in s["drops"].items() if "(prompt)" in k) == 4
        assert set(s["fidelity"]) == {"samples", "chosen", "rejected"}
    assert len(pairs) == stats["en"]["pairs"] + stats["de"]["pairs"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(manifest["stages"][f"iter1/{s}"]["status"] == "done" for s in ("sampling", "rewards", "pairs"))
