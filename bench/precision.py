"""How much do bf16 scoring and the reference code's masking (parity='icr') change rewards and pairs?

On real on-policy samples: --prompts German training prompts x --n samples from the 0.5B model (bf16, T 0.9).
By default the reward pair is a STAND-IN: "pi0" = qwen2.5-coder-1.5b-instruct, "pi_ref" = the 0.5B (same
tokenizer); pass --pi0 runs/cpu/anchor/model for the real English-DPO pi0 built by `xlr run params/cpu.yaml`. Reference: fp32 everywhere, correct alignment. Compared:
- bf16 weights and activations with the LM head and log-softmax in fp32 (xlr's reward.dtype: bf16),
- parity='icr' masking in fp32.
Printed: mean/max |difference| of rewards (nats), the within-prompt reward spread, and how many prompts change
their chosen or rejected sample (alpha = 0).

    .venv/bin/python bench/precision.py [--prompts 10] [--n 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from xlr import data
from xlr.chat import render_prompt
from xlr.models import load_model
from xlr.rewards import cross_lingual_prompt, score_models
from xlr.runtime import set_threads
from xlr.sampling import GenConfig, HFBackend


def pick(rewards: list[float], n: int) -> list[tuple[int, int]]:
    out = []
    for k in range(0, len(rewards), n):
        g = rewards[k : k + n]
        out.append((max(range(n), key=lambda i: (g[i], -i)), min(range(n), key=lambda i: (g[i], i))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lang", default="de")
    ap.add_argument(
        "--pi0",
        default="qwen2.5-coder-1.5b-instruct",
        help="default: a stand-in (see docstring); give a real pi0, e.g. runs/cpu/anchor/model",
    )
    ap.add_argument("--pi-ref", default="qwen2.5-coder-0.5b-instruct")
    args = ap.parse_args()
    set_threads()
    rows = data.load_train_prompts([args.lang], args.prompts)
    t0 = time.perf_counter()
    small_bf16, tok = load_model("qwen2.5-coder-0.5b-instruct", dtype=torch.bfloat16)
    gens = HFBackend(small_bf16, tok).generate(
        [render_prompt(tok, r["instruction"]) for r in rows],
        GenConfig(n=args.n, temperature=0.9, max_new_tokens=args.max_new_tokens, batch_size=16),
        seed=42,
    )
    del small_bf16
    prompts = [cross_lingual_prompt(r["instruction_en"], args.lang) for r in rows for _ in range(args.n)]
    responses = [g.text for gs in gens for g in gs]
    print(f"sampled {len(responses)} responses in {time.perf_counter() - t0:.0f} s")

    def rewards(dtype: torch.dtype, parity: str | None) -> list[float]:
        big, _ = load_model(args.pi0, dtype=dtype)
        small, _ = load_model(args.pi_ref, dtype=dtype)
        p, r = score_models([big, small], tok, prompts, responses, batch_tokens=4096, parity=parity)
        return [a - b for a, b in zip(p, r, strict=True)]

    ref = rewards(torch.float32, None)
    variants = {"bf16 (fp32 head)": rewards(torch.bfloat16, None), "parity icr (fp32)": rewards(torch.float32, "icr")}
    spread = statistics.mean(max(ref[k : k + args.n]) - min(ref[k : k + args.n]) for k in range(0, len(ref), args.n))
    base = pick(ref, args.n)
    print(f"pi0 = {args.pi0}, pi_ref = {args.pi_ref}")
    print(f"{len(rows)} prompts x {args.n} samples ({args.lang}); mean within-prompt reward spread (max - min), fp32: {spread:.2f} nats")
    print(f"{'variant':<22}{'mean |dr|':>11}{'max |dr|':>10}{'chosen changed':>16}{'rejected changed':>18}")
    for name, vals in variants.items():
        d = [abs(a - b) for a, b in zip(vals, ref, strict=True)]
        sel = pick(vals, args.n)
        ch = sum(a[0] != b[0] for a, b in zip(sel, base, strict=True))
        rj = sum(a[1] != b[1] for a, b in zip(sel, base, strict=True))
        print(f"{name:<22}{statistics.mean(d):>11.3f}{max(d):>10.3f}{f'{ch}/{len(base)}':>16}{f'{rj}/{len(base)}':>18}")


if __name__ == "__main__":
    main()
