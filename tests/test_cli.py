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
