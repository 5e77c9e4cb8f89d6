"""The API key never reaches a file: a judged run through the notebooks with a fake key and a loopback endpoint."""

import json
from pathlib import Path

from xlr.cli import main
from xlr.mock_openai import MockServer

REPO = Path(__file__).resolve().parents[1]

FAKE_KEY = "sk-xlr-leak-canary-5f3a9c0e7d"


def test_api_key_reaches_no_run_file_report_or_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XLR_CANARY_KEY", FAKE_KEY)
    with MockServer() as server:
        code = main(
            [
                "run",
                str(REPO / "params/smoke.yaml"),
                "--set",
                "name=smoke-api",
                "--set",
                "models.pi0=tiny:1",
                "--set",
                "iterations=0",
                "--set",
                "judge.backend=api",
                "--set",
                f"judge.base_url={server.base_url}",
                "--set",
                "judge.model=mock-gpt",
                "--set",
                "judge.api_key_env=XLR_CANARY_KEY",
                "--set",
                "judge.price_per_1k_input=0.01",
                "--set",
                "judge.orders=both",
            ]
        )
        assert code == 0, capsys.readouterr().err
        calls = server.requests
    out = capsys.readouterr()
    assert FAKE_KEY not in out.out + out.err
    run = tmp_path / "runs/smoke-api"
    m = json.loads((run / "manifest.json").read_text())
    totals = m["stages"]["judging"]["counts"]["totals"]
    assert totals["calls"] == calls > 0 and totals["cost_usd"] > 0
    assert m["params"]["judge"]["api_key_env"] == "XLR_CANARY_KEY"  # the name is recorded, not the value
    judgments = [json.loads(line) for line in (run / "eval/pi0/en/judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 2 * 12 and sum(r["model_first"] for r in judgments) == 12  # judge.orders: both
    files = [p for root in (tmp_path / "runs", tmp_path / "reports") for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in files) and any(p.name == "index.html" for p in files)
    leaked = [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
