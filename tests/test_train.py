import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import independent_seq_logp
import torch

from xlr.config import LoraParams
from xlr.models import load_model
from xlr.train import bootstrap_ci, reward_accuracy, to_conversational, train_dpo

PAIRS = [
    ("Name a colour.", "Blue.", "I like turtles and many other animals."),
    ("What is 2+2?", "4", "Five, probably."),
    ("Say hello in German.", "Hallo!", "Bonjour."),
    ("Give a fruit.", "An apple.", "Rock."),
]


def _token_logps(model, tok, prompt, completion_text_messages):
    """Independent: per-token log-probs of the completion as trl tokenises it (template over prompt+completion,
    completion = what follows the rendered prompt)."""
    p_ids = tok(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
    full = tok(tok.apply_chat_template(prompt + completion_text_messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert full[: len(p_ids)] == p_ids
    ids = torch.tensor([full])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return [logp[k - 1, full[k]].item() for k in range(len(p_ids), len(full))]


@pytest.mark.parametrize("train_weight", [False, True])
def test_tiled_head_log_probs_and_gradients_equal_plain_autograd(train_weight):
    from xlr.train import _head_log_probs_function

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=train_weight)
    target = torch.randint(0, 50, (37,), generator=g)
    upstream = torch.randn(37, generator=g, dtype=torch.float64)
    temperature = 0.7
    # independent: the whole logits matrix, torch's log_softmax and autograd
    logits = hidden @ weight.T / temperature
    logp = torch.log_softmax(logits, -1)
    want = logp.gather(-1, target[:, None]).squeeze(-1)
    want_grads = torch.autograd.grad((want * upstream).sum(), [hidden, weight] if train_weight else [hidden])
    lp, entropy, mean_logits, top1, sq = _head_log_probs_function().apply(hidden, weight, target, temperature, 8)  # 5 tiles, the last short
    got_grads = torch.autograd.grad((lp * upstream).sum(), [hidden, weight] if train_weight else [hidden])
    with torch.no_grad():
        assert torch.allclose(lp.double(), want, atol=1e-5)  # fp32 log-softmax inside the tiles
        assert torch.allclose(entropy.double(), -(logp.exp() * logp).sum(-1), atol=1e-4)
        assert torch.allclose(mean_logits.double(), logits.mean(-1), atol=1e-5)
        assert torch.equal(top1, logits.argmax(-1) == target)
        assert torch.allclose(sq.double(), torch.log((logp.exp() ** 2).sum(-1)), atol=1e-4)
    for got, ref in zip(got_grads, want_grads):
        assert torch.allclose(got.double(), ref, atol=1e-5)


@pytest.mark.parametrize("head", ["trl-compact", "bf16"])
def test_first_logged_loss_is_dpo_plus_nll(tmp_path, head):
    pairs = [to_conversational(*p) for p in PAIRS]
    rec = train_dpo("tiny:0", pairs, tmp_path, beta=0.1, learning_rate=1e-3, epochs=1, batch_size=4, grad_accum=1, max_length=128,
                    finetune="lora", lora=LoraParams(r=4, alpha=8, dropout=0.0), loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.7], seed=0, head=head)
    first = json.loads((tmp_path / "metrics.json").read_text())[0]
    model, tok = load_model("tiny:0")
    # At step 1 the LoRA update is zero, so policy == reference: DPO sigmoid loss = -log sigmoid(0) = log 2.
    chosen_tokens = [lp for p in pairs for lp in _token_logps(model, tok, p["prompt"], p["chosen"])]
    nll = -sum(chosen_tokens) / len(chosen_tokens)  # trl's "sft" loss: token mean over the batch's chosen completions
    assert first["loss"] == pytest.approx(math.log(2) + 0.7 * nll, rel=1e-4)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "learning_rate"} <= set(first)
    assert (tmp_path / "model/xlr_model.json").is_file() and (tmp_path / "adapter/adapter_config.json").is_file()
    assert rec["pairs"] == 4 and rec["dropped_prompt_too_long"] == 0
    # the adapter folder loads on its own (base named by its spec) and equals the merged model
    merged, _ = load_model(str(tmp_path / "model"))
    via_adapter, _ = load_model(str(tmp_path / "adapter"))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, via_adapter(ids).logits, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-6)  # training changed the model


def test_full_fine_tuning_with_bf16_head_trains_the_tied_head(tmp_path):
    # full fine-tuning through the tiled head (d/d weight itself is checked in the test above): loss, tying, movement
    pairs = [to_conversational(*p) for p in PAIRS]
    rec = train_dpo("tiny:0", pairs, tmp_path, beta=0.1, learning_rate=1e-3, epochs=1, batch_size=2, grad_accum=1, max_length=128,
                    finetune="full", lora=LoraParams(), loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], seed=0, head="bf16")
    first = json.loads((tmp_path / "metrics.json").read_text())[0]
    start, tok = load_model("tiny:0")
    chosen_tokens = [lp for p in pairs[:2] for lp in _token_logps(start, tok, p["prompt"], p["chosen"])]
    assert first["loss"] == pytest.approx(math.log(2) - sum(chosen_tokens) / len(chosen_tokens), rel=1e-4)
    trained, _ = load_model(rec["model"])
    assert trained.get_output_embeddings().weight is trained.get_input_embeddings().weight
    assert not torch.allclose(trained.get_output_embeddings().weight, start.get_output_embeddings().weight)


def test_too_long_prompts_are_counted_not_silently_dropped(tmp_path):
    pairs = [to_conversational(*PAIRS[0]), to_conversational("word " * 200, "a", "b")]
    rec = train_dpo("tiny:0", pairs, tmp_path, beta=0.1, learning_rate=1e-4, epochs=1, batch_size=1, grad_accum=1, max_length=64,
                    finetune="lora", lora=LoraParams(r=2, alpha=4), seed=0)
    assert rec["pairs"] == 1 and rec["dropped_prompt_too_long"] == 1


def test_reward_accuracy_equals_independent_computation():
    pol, tok = load_model("tiny:0")
    ref, _ = load_model("tiny:1")
    margins = [0.5, 1.5, 3.0, 1.0]
    rows = [{"prompt": "x", "chosen": "y", "rejected": "z", "tie": True, "score_margin": 0.0}]
    rows += [{"prompt": p, "chosen": c, "rejected": r, "tie": False, "score_margin": m} for (p, c, r), m in zip(PAIRS, margins, strict=True)]
    got = reward_accuracy(pol, ref, tok, rows, n_boot=200, seed=0)
    want = []
    for p, c, r in PAIRS:
        rc = independent_seq_logp(pol, tok, p, c) - independent_seq_logp(ref, tok, p, c)
        rr = independent_seq_logp(pol, tok, p, r) - independent_seq_logp(ref, tok, p, r)
        want.append(rc > rr)
    assert got["n"] == 4 and got["ties_excluded"] == 1
    assert got["accuracy"] == sum(want) / 4
    # per pair: rows of the input (the tie, row 0, left out), the rewards, and the bins of the labels' margin
    assert [q["row"] for q in got["per_pair"]] == [1, 2, 3, 4] and [q["correct"] for q in got["per_pair"]] == want
    assert [q["score_margin"] for q in got["per_pair"]] == margins
    assert got["by_score_margin"] == {"(0, 1]": {"n": 2, "accuracy": (want[0] + want[3]) / 2}, "(1, 2]": {"n": 1, "accuracy": float(want[1])},
                                      "(2, inf]": {"n": 1, "accuracy": float(want[2])}}
    assert got["ci95"][0] <= got["accuracy"] <= got["ci95"][1]


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    v = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 5
    a, b = bootstrap_ci(v, 500, seed=3), bootstrap_ci(v, 500, seed=3)
    assert a == b and a[0] < 0.7 < a[1] and a[1] - a[0] < 0.3
    assert all(math.isnan(x) for x in bootstrap_ci([], 10))


RESUME_SCRIPT = """
import sys, json
from pathlib import Path
from xlr.config import LoraParams
from xlr.runtime import set_threads
from xlr.train import to_conversational, train_dpo
set_threads(1)
pairs = [to_conversational("Question %d?" % i, "Answer %d." % i, "No.") for i in range(12)]
rec = train_dpo("tiny:0", pairs, Path(sys.argv[1]), beta=0.1, learning_rate=1e-3, epochs=1, batch_size=2, grad_accum=1, max_length=64,
                finetune="lora", lora=LoraParams(r=2, alpha=4, dropout=0.0), seed=0, save_steps=1)
print(json.dumps(rec))
"""


def test_resume_after_kill_mid_training(tmp_path):
    out = tmp_path / "train"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "checkpoints/checkpoint-2").is_dir():
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed: " + proc.stdout.read().decode()[-2000:])
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    done = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rec = json.loads(done.stdout.strip().splitlines()[-1])
    assert rec["resumed"] is True
    steps = [h["step"] for h in json.loads((out / "metrics.json").read_text()) if "loss" in h]
    assert steps == list(range(1, 7))  # restored history + the remaining steps, none done twice


def test_incomplete_checkpoint_is_moved_aside_not_resumed(tmp_path):
    from xlr.train import last_complete_checkpoint

    ck = tmp_path / "checkpoints"
    for n, complete in ((2, True), (10, True), (12, False)):
        (ck / f"checkpoint-{n}").mkdir(parents=True)
        if complete:
            (ck / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(ck) == ck / "checkpoint-10"  # numeric order, not string order
    assert not (ck / "checkpoint-12").exists() and len(list((tmp_path / "incomplete-checkpoints").iterdir())) == 1
    assert last_complete_checkpoint(tmp_path / "none") is None


def test_select_by_score_margin_keeps_order_counts_drops_and_refuses_unscored_sources():
    import datasets

    from xlr.study import StudyError, select_by_score_margin

    ds = datasets.Dataset.from_list([{"prompt": f"p{i}", "score_margin": m} for i, m in enumerate([0.0, 2.0, 0.5, 1.5, 1.0])])
    kept, dropped = select_by_score_margin(ds, 1.0, "ultrafeedback")
    assert kept["prompt"] == ["p1", "p3", "p4"] and dropped == 2
    assert select_by_score_margin(ds, 0.0, "ultrafeedback") == (ds, 0)
    unscored = datasets.Dataset.from_list([{"prompt": "p", "score_margin": None}])
    with pytest.raises(StudyError, match=r"anchor.min_score_margin 0.5: source 'hh-rlhf-helpful' has pairs without rating scores.*Fix: set anchor.min_score_margin: 0"):
        select_by_score_margin(unscored, 0.5, "hh-rlhf-helpful")
    assert select_by_score_margin(unscored, 0.0, "hh-rlhf-helpful")[1] == 0


def test_adapter_written_from_a_gathered_state_equals_peft_own_save(tmp_path):
    """The distributed save path writes the LoRA adapter from a full state dict (peft's own selection walks module
    names that distributed wrappers rename); its files must be what peft writes, and load back into the same model."""
    from peft import PeftModel, get_peft_model
    from safetensors.torch import load_file

    from xlr.train import _canonical_name, lora_config, write_adapter_from_state

    model, _ = load_model("tiny:0")
    peft_model = get_peft_model(model, lora_config(LoraParams(r=2, alpha=4)))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # lora_B starts at zero: make the adapter change the model
    peft_model.save_pretrained(tmp_path / "peft")
    # as accelerate's FSDP2 path gathers it: activation-checkpoint wrappers' prefixes in the names, then dropped
    wrapped = {k.replace("layers.0.", "layers.0._checkpoint_wrapped_module."): v for k, v in peft_model.state_dict().items()}
    saved = write_adapter_from_state(peft_model, {_canonical_name(k): v for k, v in wrapped.items()}, tmp_path / "xlr")
    want, got = load_file(tmp_path / "peft/adapter_model.safetensors"), load_file(tmp_path / "xlr/adapter_model.safetensors")
    assert sorted(saved) == sorted(want) == sorted(got) and len(want) > 0
    assert all(torch.equal(want[k], got[k]) for k in want)
    configs = [json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("xlr", "peft")]
    for c in configs:
        c["target_modules"] = sorted(c["target_modules"])  # peft writes a set, in hash order
    assert configs[0] == configs[1]
    reloaded = PeftModel.from_pretrained(load_model("tiny:0")[0], tmp_path / "xlr").eval()
    peft_model.eval()  # no LoRA dropout
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, peft_model(ids).logits, atol=1e-5)
