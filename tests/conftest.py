import json
import os
from dataclasses import dataclass
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
    monkeypatch.setenv("XLR_ANCHOR_CACHE", "off")  # no test reuses another's anchor unless it asks (tests/test_anchors.py)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    from xlr.runtime import set_threads

    set_threads(2)


@pytest.fixture(scope="session")
def tiny_dir():
    from xlr.tiny import build_tiny_model

    return build_tiny_model(seed=0)


SMOKE = REPO / "params" / "smoke.yaml"


@dataclass(frozen=True)
class Smoke:
    runs: Path
    reports: Path
    root: Path  # runs/<name>


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Smoke:
    """The smoke study, every stage, in-process (``xlr run --direct``), once per session in its own runs dir, shared by
    tests/test_notebooks.py (each notebook on it) and tests/test_browser.py (its report in a browser). The per-test
    autouse fixture (_isolated_runs) is function-scoped and cannot reach here, so the env vars are set by hand and
    restored afterwards; a test that needs them points them back at this run (test_notebooks' ``smoke_env``)."""
    from xlr import study
    from xlr.config import load_params
    from xlr.runs import MANIFEST, Run

    base = tmp_path_factory.mktemp("smoke-notebooks")
    runs, reports = base / "runs", base / "reports"
    saved = {k: os.environ.get(k) for k in ("XLR_RUNS_DIR", "XLR_REPORTS_DIR", "XLR_ANCHOR_CACHE")}
    os.environ["XLR_RUNS_DIR"], os.environ["XLR_REPORTS_DIR"] = str(runs), str(reports)
    os.environ["XLR_ANCHOR_CACHE"] = "off"  # the smoke study trains its own anchor
    try:
        params = load_params(SMOKE)
        run = study.run_study(params)
        root = Path(run.root)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    manifest = json.loads((root / MANIFEST).read_text())
    not_done = [k for k, v in manifest["stages"].items() if v.get("status") != "done"]
    assert not not_done, f"smoke run: stages not done: {not_done}"
    missing = [
        Run.stage_key(n, i) for n, i in study.plan(params) if manifest["stages"].get(Run.stage_key(n, i), {}).get("status") != "done"
    ]
    assert not missing, f"smoke run: planned stages without a done record: {missing}"
    return Smoke(runs, reports, root)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def independent_seq_logp(model, tok, prompt, response) -> float:
    """sum log p(response | prompt) computed the plain way (one sequence, full logits in fp64), independently of
    xlr.rewards: the reference the reward and probe tests compare xlr's batched scoring with."""
    import torch

    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    p = tok(text, add_special_tokens=False)["input_ids"]
    c = tok(response + "<|im_end|>", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].double(), -1)
    return sum(lp[len(p) + k - 1, t].item() for k, t in enumerate(c))
