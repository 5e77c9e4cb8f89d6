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
