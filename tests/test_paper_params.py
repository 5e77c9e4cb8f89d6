"""The paper's params files run through every stage on CPU with the tiny model standing in for Llama-3-8B (issue 16).

Everything the paper files set is kept (reward mask 'icr', full fine-tuning, bf16 requested with its CPU fallback,
the API judge protocol, every language) except what a CPU cannot hold: the models (tiny:0 as pi_ref, tiny:1 as pi0),
the device, vLLM (the HF loop instead) and the sizes. The API judge is the loopback mock server.
"""

import json
from pathlib import Path

import pytest

from xlr.cli import main
from xlr.mock_openai import MockServer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

STAND_IN = {
    "models.pi_ref": "tiny:0",
    "models.pi0": "tiny:1",
    "runtime.device": "cpu",
    "runtime.threads": "2",
    "sampling.backend": "hf",
    "sampling.data_parallel_size": "1",
    "data.n_train_prompts": "2",
    "sampling.n_samples": "2",
    "sampling.max_new_tokens": "8",
    "sampling.batch_size": "8",
    "training.max_length": "256",
    "evaluation.n_prompts": "10",
    "evaluation.max_new_tokens": "8",
    "evaluation.batch_size": "16",
    "evaluation.bootstrap": "50",
    "evaluation.lc_bootstrap": "0",
    "evaluation.lcb_n_prompts": "2",
    "evaluation.lcb_max_new_tokens": "8",
    "judge.model": "mock-gpt",
    "judge.api_key_env": "XLR_TEST_PAPER_KEY",
    "judge.n_validation_pairs": "4",
    "judge.validation_items": "4",
    "judge.validation_rank_items": "1",
    "judge.validation_xae_items": "1",
    "probe.n_items": "5",
    "probe.translate_max_new_tokens": "8",
    "probe.n_english_label_pairs": "4",
    "probe.bootstrap": "50",
    "probe.permutations": "100",
    "probe.english_label_files": "[FuseChat-Llama-3.2-3B-Instruct, FuseChat-Gemma-2-9B-Instruct]",
}


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("paper", ["paper-llama3-8b", "paper-lowres"])
def test_paper_params_run_every_stage_with_a_tiny_stand_in(paper, tmp_path, monkeypatch, capsys):
    from xlr.config import load_params
    from xlr.study import plan

    monkeypatch.setenv("XLR_TEST_PAPER_KEY", "sk-test-paper-0000")
    with MockServer() as server:
        sets = {**STAND_IN, "judge.base_url": server.base_url}
        args = ["run", str(REPO / f"params/{paper}.yaml"), "--direct"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        assert main(args) == 0, capsys.readouterr().err
    params = load_params(REPO / f"params/{paper}.yaml")
    m = json.loads((tmp_path / "runs" / paper / "manifest.json").read_text())
    keys = [f"iter{i}/{s}" if i else s for s, i in plan(params) if s != "report"]
    assert {k: m["stages"].get(k, {}).get("status") for k in keys} == {k: "done" for k in keys}
    # the paper's choices survived the stand-in
    assert m["params"]["reward"]["parity"] == "icr" and m["params"]["training"]["finetune"] == "full"
    rewards = [json.loads(x) for x in (tmp_path / "runs" / paper / "iter1/rewards/rewards.jsonl").read_text().splitlines()]
    assert {r["lang"] for r in rewards} == set(params.languages.train)
    assert m["stages"]["iter2/training"]["counts"]["pairs"] > 0
