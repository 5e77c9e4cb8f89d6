import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from xlr.config import AnchorParams, LoraParams, TrainingParams
from xlr.models import load_model
from xlr.train import DPOLoss, to_conversational, train_dpo

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
    dpo = TrainingParams(
        beta=0.1,
        learning_rate=1e-3,
        epochs=1,
        batch_size=4,
        grad_accum=1,
        max_length=128,
        finetune="lora",
        lora=LoraParams(r=4, alpha=8, dropout=0.0),
        warmup_ratio=0.0,
        head=head,
        save_merged=True,
    )
    rec = train_dpo("tiny:0", pairs, tmp_path, dpo, loss=DPOLoss.sigmoid_nll(0.7), seed=0, dtype=None, device="cpu")
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
    dpo = TrainingParams(
        beta=0.1, learning_rate=1e-3, epochs=1, batch_size=2, grad_accum=1, max_length=128, finetune="full", warmup_ratio=0.0, head="bf16"
    )
    rec = train_dpo("tiny:0", pairs, tmp_path, dpo, loss=DPOLoss.sigmoid_nll(1.0), seed=0, dtype=None, device="cpu")
    first = json.loads((tmp_path / "metrics.json").read_text())[0]
    start, tok = load_model("tiny:0")
    chosen_tokens = [lp for p in pairs[:2] for lp in _token_logps(start, tok, p["prompt"], p["chosen"])]
    assert first["loss"] == pytest.approx(math.log(2) - sum(chosen_tokens) / len(chosen_tokens), rel=1e-4)
    trained, _ = load_model(rec["model"])
    assert trained.get_output_embeddings().weight is trained.get_input_embeddings().weight
    assert not torch.allclose(trained.get_output_embeddings().weight, start.get_output_embeddings().weight)


def _tiny_lora_anchor(learning_rate: float) -> AnchorParams:
    """One-step LoRA DPO settings for the tiny model (micro-batch 1, no warmup)."""
    return AnchorParams(
        beta=0.1,
        learning_rate=learning_rate,
        epochs=1,
        batch_size=1,
        grad_accum=1,
        max_length=64,
        finetune="lora",
        lora=LoraParams(r=2, alpha=4),
        warmup_ratio=0.0,
    )


def test_too_long_prompts_are_counted_not_silently_dropped(tmp_path):
    pairs = [to_conversational(*PAIRS[0]), to_conversational("word " * 200, "a", "b")]
    dpo = _tiny_lora_anchor(learning_rate=1e-4)
    rec = train_dpo("tiny:0", pairs, tmp_path, dpo, loss=DPOLoss.sigmoid(), seed=0, dtype=None, device="cpu")
    assert rec["pairs"] == 1 and rec["dropped_prompt_too_long"] == 1


RESUME_SCRIPT = """
import sys, json
from pathlib import Path
from xlr.config import AnchorParams, LoraParams
from xlr.runtime import set_threads
from xlr.train import DPOLoss, to_conversational, train_dpo
set_threads(1)
pairs = [to_conversational("Question %d?" % i, "Answer %d." % i, "No.") for i in range(12)]
dpo = AnchorParams(beta=0.1, learning_rate=1e-3, epochs=1, batch_size=2, grad_accum=1, max_length=64, finetune="lora",
                   lora=LoraParams(r=2, alpha=4, dropout=0.0), warmup_ratio=0.0, checkpoint_steps=1)
rec = train_dpo("tiny:0", pairs, Path(sys.argv[1]), dpo, loss=DPOLoss.sigmoid(), seed=0, dtype=None, device="cpu")
print(json.dumps(rec))
"""


def test_resume_after_kill_mid_training(tmp_path):
    out = tmp_path / "train"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
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

    from xlr.data import DataError, select_by_score_margin

    ds = datasets.Dataset.from_list([{"prompt": f"p{i}", "score_margin": m} for i, m in enumerate([0.0, 2.0, 0.5, 1.5, 1.0])])
    kept, dropped = select_by_score_margin(ds, 1.0, "ultrafeedback")
    assert kept["prompt"] == ["p1", "p3", "p4"] and dropped == 2
    assert select_by_score_margin(ds, 0.0, "ultrafeedback") == (ds, 0)
    unscored = datasets.Dataset.from_list([{"prompt": "p", "score_margin": None}])
    with pytest.raises(
        DataError,
        match=r"anchor.min_score_margin 0.5: source 'hh-rlhf-helpful' has pairs without rating scores.*Fix: set anchor.min_score_margin: 0",
    ):
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


# ----------------------------------------------------------------------------------------------------------------
# precision of full fine-tuning in bf16: fp32 master weights under bf16 autocast


def test_tiled_head_under_autocast_runs_every_matmul_in_the_autocast_dtype():
    """fp32 master weights under bf16 autocast: the tile matmuls of forward AND backward run in bf16 (backward runs
    outside autocast, so the Function must carry the dtype over), gradients come back in fp32, and the numbers are
    those of an independent autograd computation on bf16 copies of the inputs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from xlr.train import _head_log_probs_function

    class MatmulDtypes(TorchDispatchMode):  # below autocast: sees the dtypes the matmuls actually run in
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
                self.seen.append(tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    target = torch.randint(0, 50, (37,), generator=g)
    upstream = torch.randn(37, generator=g)
    spy = MatmulDtypes()
    with spy:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = _head_log_probs_function().apply(hidden, weight, target, 0.7, 8)[0]
        (lp * upstream).sum().backward()
    # 5 tiles, each: forward logits; in backward, logits again, d/d hidden and d/d weight
    assert len(spy.seen) == 5 * 4 and all(d == (torch.bfloat16, torch.bfloat16) for d in spy.seen), spy.seen
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    # independent: whole logits from bf16 copies, torch's log_softmax, autograd
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    want = torch.log_softmax((h16 @ w16.T).float() / 0.7, -1).gather(-1, target[:, None]).squeeze(-1)
    (want * upstream).sum().backward()
    assert torch.allclose(lp.detach(), want.detach(), atol=1e-4)
    for got, ref in ((hidden.grad, h16.grad), (weight.grad, w16.grad)):
        assert torch.allclose(got, ref.float(), rtol=2e-2, atol=2e-2 * ref.float().abs().max().item())


@pytest.fixture(scope="module")
def bf16_start(tmp_path_factory):
    """The tiny model with its weights rounded to bf16 and saved as a plain folder: fp32 and bf16 runs start from
    exactly the same numbers, and every weight sits on the bf16 grid."""
    folder = tmp_path_factory.mktemp("bf16-start")
    model, tok = load_model("tiny:0", dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


MASTER_PAIRS = [
    to_conversational(f"Question {i}: name a thing?", f"Answer number {i} is this one here.", "No." * (i + 1)) for i in range(8)
]
MASTER_LR = 5e-6  # AdamW moves a weight ~lr per step, well below half a bf16 ulp of weights ~0.02 (6e-5): only accumulated steps cross it


def _full_ft(start, out, dtype, head="trl-compact"):
    dpo = TrainingParams(
        beta=0.1, learning_rate=MASTER_LR, epochs=1, batch_size=1, grad_accum=1, max_length=64, finetune="full", warmup_ratio=0.0, head=head
    )
    return train_dpo(str(start), MASTER_PAIRS, out, dpo, loss=DPOLoss.sigmoid_nll(1.0), seed=0, dtype=dtype, device="cpu")


@pytest.fixture(scope="module")
def fp32_run(bf16_start, tmp_path_factory):
    rec = _full_ft(bf16_start, tmp_path_factory.mktemp("fp32-run"), torch.float32)
    assert rec["master_dtype"] == "fp32" and rec["autocast"] is None
    return load_model(rec["model"])[0].state_dict()


@pytest.mark.parametrize("head", ["trl-compact", "bf16"])
def test_full_fine_tuning_in_bf16_moves_the_weights_as_an_fp32_run_does(tmp_path, bf16_start, fp32_run, head):
    """Reference: the same 8 steps in fp32 (no autocast), its result rounded to bf16 (the saved dtype). In pure bf16
    (the old way) each update below half an ulp rounds away, so far fewer entries move and the update is smaller."""
    from safetensors import safe_open

    rec = _full_ft(bf16_start, tmp_path, torch.bfloat16, head)
    assert rec["master_dtype"] == "fp32" and rec["autocast"] == "bf16"
    with safe_open(str(tmp_path / "model/model.safetensors"), "pt") as f:  # saved in the requested dtype, not as fp32 master weights
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    start = load_model(str(bf16_start))[0].state_dict()
    got = load_model(rec["model"])[0].state_dict()
    keys = sorted(start)
    w0 = torch.cat([start[k].flatten() for k in keys])
    want = torch.cat([fp32_run[k].bfloat16().float().flatten() for k in keys])
    w = torch.cat([got[k].flatten() for k in keys])
    moved, moved_fp32 = (w != w0).float().mean().item(), (want != w0).float().mean().item()
    assert moved_fp32 > 0.2  # the setting shows the effect: in fp32 many entries cross a bf16 rounding boundary
    assert moved == pytest.approx(moved_fp32, rel=0.1)
    d, d_ref = w - w0, want - w0
    assert torch.nn.functional.cosine_similarity(d, d_ref, dim=0).item() > 0.95
    assert d.norm().item() == pytest.approx(d_ref.norm().item(), rel=0.1)


def test_lora_in_bf16_keeps_a_bf16_base_and_fp32_adapters_without_autocast(tmp_path, bf16_start):
    from safetensors import safe_open

    dpo = _tiny_lora_anchor(learning_rate=1e-3)
    rec = train_dpo(str(bf16_start), MASTER_PAIRS[:1], tmp_path, dpo, loss=DPOLoss.sigmoid(), seed=0, dtype=torch.bfloat16, device="cpu")
    assert rec["master_dtype"] == "fp32" and rec["autocast"] is None  # peft's adapters (the trained weights) in fp32
    with safe_open(str(tmp_path / "model/model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


# ----------------------------------------------------------------------------------------------------------------
# warmup and the NLL term's pooling


@pytest.mark.parametrize("world", [1, 8])
def test_warmup_is_the_ratio_of_the_optimizer_steps_with_every_process_counted(tmp_path, monkeypatch, world):
    """accelerate shards the dataloader over its processes, so each process takes 1/world of the steps; the warmup
    must be warmup_ratio of those (faked: accelerate's num_processes, which its dataloader sharding reads)."""
    from accelerate import Accelerator
    from datasets import Dataset
    from trl import DPOTrainer

    from xlr.train import compact_fused_head, dpo_args, lora_config

    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: world))
    n, bs, ga, ratio, lr = 96, 1, 2, 0.25, 1e-3
    model, tok = load_model("tiny:0")
    dpo = TrainingParams(
        beta=0.1,
        learning_rate=lr,
        epochs=1,
        batch_size=bs,
        grad_accum=ga,
        max_length=64,
        warmup_ratio=ratio,
        precompute_ref_log_probs=False,
    )
    args = dpo_args(tmp_path, dpo, loss=DPOLoss.sigmoid(), autocast=None, device="cpu", seed=42)
    with compact_fused_head():
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list([to_conversational(f"Q{i}?", "A.", "B.") for i in range(n)]),
            processing_class=tok,
            peft_config=lora_config(LoraParams(r=2, alpha=4)),
        )
    # what transformers' training loop does before its first step
    max_steps = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]
    assert max_steps == math.ceil(math.ceil(n / (bs * world)) / ga)  # independent: the optimizer steps of one process
    trainer.create_optimizer_and_scheduler(num_training_steps=max_steps)
    lrs = []
    for _ in range(max_steps):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs.index(max(lrs)) == math.ceil(ratio * max_steps) and max(lrs) == pytest.approx(lr)  # linear warmup peaks where it ends


def test_dpo_args_take_the_stage_params_whole(tmp_path):
    """Every DPO setting comes from the stage's params object; the anchor's fields it lacks are constants of its class
    (the merged model always written: it is pi0), equal to what train_dpo's keyword defaults were."""
    from xlr.train import dpo_args

    a = AnchorParams(checkpoint_steps=3, warmup_ratio=0.2)
    args = dpo_args(tmp_path, a, loss=DPOLoss.sigmoid(), autocast=None, device="cpu", seed=7)
    assert (
        args.beta,
        args.learning_rate,
        args.num_train_epochs,
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.max_length,
        args.warmup_steps,
        args.save_steps,
        args.seed,
        args.data_seed,
    ) == (0.1, 5e-5, 1.0, 4, 1, 512, 0.2, 3, 7, 7)
    assert args.precompute_ref_log_probs is True and args.loss_type == ["sigmoid"] and args.loss_weights is None
    assert AnchorParams.save_merged is True and AnchorParams.precompute_ref_log_probs is True
    tp = TrainingParams(nll_weight=0.5, precompute_ref_log_probs=False)
    args = dpo_args(tmp_path, tp, loss=DPOLoss.sigmoid_nll(tp.nll_weight), autocast=None, device="cpu", seed=0)
    assert (args.learning_rate, args.per_device_train_batch_size, args.gradient_accumulation_steps, args.max_length) == (5e-6, 1, 8, 2048)
    assert args.precompute_ref_log_probs is False and args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    assert DPOLoss.sigmoid_nll(0.0) == DPOLoss(("sigmoid",), (1.0,)) and DPOLoss.sigmoid_nll(0.0).as_record() == {
        "loss_type": ["sigmoid"],
        "loss_weights": [1.0],
    }
    with pytest.raises(ValueError, match="warmup_ratio=1.5"):  # model_copy(update=...) skips the schema's check; dpo_args does not
        dpo_args(tmp_path, a.model_copy(update={"warmup_ratio": 1.5}), loss=DPOLoss.sigmoid(), autocast=None, device="cpu", seed=0)


def test_default_micro_batches_give_the_reference_per_sequence_mean_nll(tmp_path):
    """The reference's NLL term (LLaMA-Factory's pref_ftx: -sum log p / length of each chosen response, averaged over
    the pairs) under TrainingParams' default batching: trl's sft term is a token mean per micro-batch, and transformers
    divides each micro-batch's loss by the number accumulated (trl's loss ignores num_items_in_batch), so at 1 pair per
    micro-batch one optimizer step averages per-sequence means. The logged loss is the objective backpropagated."""
    tp = TrainingParams()
    assert tp.batch_size * tp.grad_accum == 8
    answers = [
        "Yes.",
        "Blue.",
        "A long and winding answer that goes on for quite a few words, far more than the others do.",
        "4",
        "Hallo!",
        "An apple, a pear and a plum.",
        "No.",
        "The quick brown fox jumps over the lazy dog, twice over.",
    ]
    pairs = [to_conversational(f"Question {i}?", a, "Rock.") for i, a in enumerate(answers)]
    dpo = tp.model_copy(
        update={"learning_rate": 1e-3, "max_length": 128, "lora": LoraParams(r=2, alpha=4, dropout=0.0), "warmup_ratio": 0.0}
    )
    train_dpo("tiny:0", pairs, tmp_path, dpo, loss=DPOLoss.sigmoid_nll(tp.nll_weight), seed=0, dtype=None, device="cpu")
    first = json.loads((tmp_path / "metrics.json").read_text())[0]
    model, tok = load_model("tiny:0")
    tokens = [_token_logps(model, tok, p["prompt"], p["chosen"]) for p in pairs]
    per_sequence = sum(-sum(t) / len(t) for t in tokens) / len(tokens)
    pooled = -sum(sum(t) for t in tokens) / sum(len(t) for t in tokens)  # a token mean over the accumulated batch
    want = (
        math.log(2) + tp.nll_weight * per_sequence
    )  # all 8 micro-batches run before the first update: policy == reference, DPO term log 2
    # the random tiny model's per-token NLL is nearly log(vocabulary) everywhere, yet the poolings differ 20x the tolerance below
    assert abs(per_sequence - pooled) * tp.nll_weight > 20 * 1e-4 * want
    assert first["loss"] == pytest.approx(want, rel=1e-4)


def test_distributed_save_writes_a_gathered_fp32_state_in_the_requested_dtype(tmp_path):
    """The save path of FSDP/DeepSpeed runs gets the fp32 master weights as a gathered state dict: the folder must hold
    them rounded to bf16 (as the single-process path saves), say so in config.json, and load back as those numbers."""
    from safetensors import safe_open

    from xlr.train import _write_model_dir

    model, tok = load_model("tiny:0")  # fp32, as the master weights
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _write_model_dir(model, tmp_path / "model", tok, "tiny:0", {}, state_dict=state, dtype=torch.bfloat16)
    with safe_open(str(tmp_path / "model/model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "model/config.json").read_text())["dtype"] == "bfloat16"
    back = load_model(str(tmp_path / "model"))[0].state_dict()
    assert all(torch.equal(back[k], state[k].bfloat16().float()) for k in state)
