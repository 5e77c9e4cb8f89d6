import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Runs and reports of a test go to its own temp dir; the model cache stays shared (it is a cache)."""
    monkeypatch.setenv("XLR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("XLR_REPORTS_DIR", str(tmp_path / "reports"))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    from xlr.runtime import set_threads

    set_threads(2)


@pytest.fixture(scope="session")
def tiny_dir():
    from xlr.tiny import build_tiny_model

    return build_tiny_model(seed=0)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
