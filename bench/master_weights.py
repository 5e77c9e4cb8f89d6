"""Full fine-tuning in bf16: pure-bf16 weights (xlr before issue 16) vs fp32 master weights under bf16 autocast (what
xlr.train.train_dpo does now), side by side: peak memory and seconds per DPO step, plus how many entries of one weight
matrix the steps actually moved on the bf16 grid (pure bf16 rounds updates below half an ulp away).

Each variant runs in its own fresh process (its peak is its own) with train_dpo's own pieces (xlr.train.dpo_args,
training_precision, the head patch): the trainable model, a frozen bf16 copy as the DPO reference (precomputed
reference log-probs), DPO sigmoid + NLL (trl's ["sigmoid", "sft"]), 1 pair per step, synthetic pairs of about
--max-length tokens. Peak memory: CUDA ``max_memory_allocated`` (the tensors torch holds) on a GPU, peak RSS on CPU
(the whole process, interpreter included). Seconds per step exclude the first step. The analytic cost per parameter is
printed beside it.

    .venv/bin/python bench/master_weights.py [--model tiny:0] [--steps 3] [--device auto|cpu|cuda] [--max-length 512] [--head trl-compact|bf16] [--lr 5e-7]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = [
    {"name": "pure bf16 (weights, grads, AdamW states in bf16)", "master": False},
    {"name": "fp32 master weights + bf16 autocast (train_dpo)", "master": True},
]
# bytes per trained parameter: weights, gradients, AdamW's two moments (torch keeps them in the parameter's dtype)
ANALYTIC = {False: {"weights": 2, "grads": 2, "adam": 4}, True: {"weights": 4, "grads": 4, "adam": 8}}
AUTOCAST_COPY = 2  # autocast's bf16 copy of each weight, made in forward and held for backward
REFERENCE = 2  # the frozen bf16 DPO reference, in both variants


def _pairs(n: int, max_length: int) -> list[dict]:
    from xlr.train import to_conversational

    words = max(max_length // 6, 4)  # ~2-3 tokens a word here: chosen + prompt well inside max_length
    return [
        to_conversational(f"Write a short note about topic {i}.", " ".join(f"note{i} word{j}" for j in range(words // 2)), "No.")
        for i in range(n)
    ]


def variant(v: dict, args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOTrainer

    from xlr.config import TrainingParams
    from xlr.models import load_model
    from xlr.train import DPOLoss, bf16_cpu_head, compact_fused_head, dpo_args, training_precision

    device = args.device
    train_dtype, autocast = training_precision(torch.bfloat16, "full") if v["master"] else (torch.bfloat16, None)
    model, tok = load_model(args.model, dtype=train_dtype, device=device)
    with torch.no_grad():  # both variants start from the same numbers: the checkpoint rounded to bf16 (as bf16-stored checkpoints are)
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16))
    ref, _ = load_model(args.model, dtype=torch.bfloat16, device=device)
    name, watched = next((n, p) for n, p in model.named_parameters() if p.ndim == 2 and ".layers.0." in n)
    before = watched.detach().to("cpu", torch.bfloat16).clone()
    n_params = sum(p.numel() for p in model.parameters())
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as d, bf16_cpu_head() if args.head == "bf16" else compact_fused_head():
        dpo = TrainingParams(
            beta=0.1,
            learning_rate=args.lr,
            epochs=1,
            batch_size=1,
            grad_accum=1,
            max_length=args.max_length,
            warmup_ratio=0.0,
            finetune="full",
            precompute_ref_log_probs=True,
            checkpoint_steps=10**9,
        )
        cfg = dpo_args(Path(d), dpo, loss=DPOLoss.sigmoid_nll(1.0), autocast=autocast, device=device, seed=0)
        trainer = DPOTrainer(
            model=model,
            ref_model=ref,
            args=cfg,
            train_dataset=Dataset.from_list(_pairs(args.steps, args.max_length)),
            processing_class=tok,
            callbacks=[Clock()],
        )
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    after = dict(trainer.model.named_parameters())[name].detach().to("cpu", torch.bfloat16)
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    out = {
        "s_per_step": sum(times[1:]) / max(len(times) - 1, 1),
        "first_loss": logs[0]["loss"],
        "n_params": n_params,
        "watched": name,
        "changed": float((after != before).float().mean()),
        "master_dtype": str(train_dtype).removeprefix("torch."),
        "autocast": autocast,
    }
    if device.startswith("cuda"):
        out["peak_gib"], out["peak_what"] = torch.cuda.max_memory_allocated() / 2**30, "CUDA max_memory_allocated"
    else:
        out["peak_gib"], out["peak_what"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak RSS"
    return out


def run_one(v: dict, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        json.dumps(v),
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--max-length",
        str(args.max_length),
        "--head",
        args.head,
        "--lr",
        str(args.lr),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"variant {v['name']!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny:0", help="model spec (xlr.models.load_model)")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps (1 pair each); the first is left out of the times")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--head", default="trl-compact", choices=["trl-compact", "bf16"])
    ap.add_argument("--lr", type=float, default=5e-7, help="the paper setting's (params/paper-llama3-8b.yaml)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from xlr.runtime import resolve_device, set_threads

    set_threads()
    args.device = resolve_device(args.device)
    if args.one:
        print("RESULT " + json.dumps(variant(json.loads(args.one), args)))
        return
    rows = [(v, run_one(v, args)) for v in VARIANTS]
    n = rows[0][1]["n_params"]
    pure, master = rows[0][1], rows[1][1]
    print(
        f"model {args.model} ({n / 1e6:.1f}M parameters), device {args.device}, head {args.head}, full fine-tuning, 1 pair per step, "
        f"max_length {args.max_length}, {args.steps} steps at lr {args.lr:g} (first step excluded from times)\n"
    )
    print(
        f"| way | trained weights | autocast | s/step | peak GiB ({pure['peak_what']}) | first-step loss | entries of {pure['watched']} moved (bf16 grid) |"
    )
    print("|---|---|---|---|---|---|---|")
    for v, r in rows:
        print(
            f"| {v['name']} | {r['master_dtype']} | {r['autocast'] or 'off'} | {r['s_per_step']:.3f} | {r['peak_gib']:.3f} | {r['first_loss']:.4f} "
            f"| {r['changed']:.2%} |"
        )
    print(
        f"\nratios (master / pure): peak memory {master['peak_gib'] / pure['peak_gib']:.2f}x, s/step {master['s_per_step'] / pure['s_per_step']:.2f}x"
    )
    print("\nanalytic, bytes per parameter (activations and the LM head's tiles not included):")
    for master in (False, True):
        a = ANALYTIC[master]
        total = sum(a.values()) + (AUTOCAST_COPY if master else 0) + REFERENCE
        parts = (
            " + ".join(f"{k} {b}" for k, b in a.items())
            + (f" + autocast bf16 copies {AUTOCAST_COPY}" if master else "")
            + f" + bf16 reference {REFERENCE}"
        )
        print(
            f"  {'fp32 master + autocast' if master else 'pure bf16':<22} {parts} = {total} B -> {total * n / 2**30:.2f} GiB for this model "
            f"(Llama-3-8B, 8.03e9: {total * 8.03e9 / 2**30:.0f} GiB unsharded)"
        )


if __name__ == "__main__":
    main()
