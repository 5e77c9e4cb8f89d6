"""Sampling: xlr's batched generation vs one prompt at a time, side by side on the same prompts.

Both sides use the same backend code path (HFBackend.generate), the same seedless sampling settings of the study
(N samples per prompt, T 0.9, top_p 1.0) and the same max_new_tokens; only the batching differs: one prompt (x N
samples) per generate call, vs length-bucketed batches of --batch-size sequences. "Useful tokens" are generated
tokens before the stop token (padding after a finished sample is not counted). Also printed: the decoding
memory-bandwidth bound (weight bytes read per step over measured memory bandwidth, times the batch).

    .venv/bin/python bench/sampling.py [--model qwen2.5-coder-0.5b-instruct] [--prompts 8] [--n 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from xlr import data
from xlr.chat import render_prompt
from xlr.models import load_model
from xlr.runtime import set_threads
from xlr.sampling import GenConfig, HFBackend


def memory_bandwidth_gbs(mb: int = 512) -> float:
    a = torch.empty(mb * 1024 * 1024 // 4, dtype=torch.float32).fill_(1.0)
    b = torch.empty_like(a)
    b.copy_(a)
    best = min((lambda t: (b.copy_(a), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
    return 2 * a.numel() * 4 / best / 1e9  # read + write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lang", default="de")
    args = ap.parse_args()
    threads = set_threads()
    model, tok = load_model(args.model, dtype=torch.bfloat16)
    backend = HFBackend(model, tok)
    rows = data.load_train_prompts([args.lang], args.prompts)
    prompts = [render_prompt(tok, r["instruction"]) for r in rows]
    cfg = GenConfig(n=args.n, temperature=0.9, top_p=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    backend.generate(prompts[:1], GenConfig(n=1, max_new_tokens=4))  # warm-up

    results = {}
    for name, fn in (
        ("one prompt at a time", lambda: [g for p in prompts for g in backend.generate([p], GenConfig(**{**cfg.__dict__, "batch_size": args.n}), seed=0)]),
        (f"xlr batched ({args.batch_size} seqs)", lambda: backend.generate(prompts, cfg, seed=0)),
    ):
        t = time.perf_counter()
        gens = fn()
        wall = time.perf_counter() - t
        useful = sum(g.n_tokens for gs in gens for g in gs)
        ended = sum(not g.truncated for gs in gens for g in gs)
        results[name] = (wall, useful, ended, sum(len(gs) for gs in gens))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = memory_bandwidth_gbs()
    bound = bw * 1e9 / weight_bytes  # decoding steps/s when every step re-reads all weights
    print(f"model {args.model} (bf16, {weight_bytes / 1e9:.2f} GB of weights), {threads} threads, {args.prompts} {args.lang} prompts x {args.n} samples, max {args.max_new_tokens} new tokens")
    print(f"{'way':<28}{'wall s':>9}{'useful tok':>12}{'tok/s':>9}{'ended by EOS':>14}")
    for name, (wall, useful, ended, total) in results.items():
        print(f"{name:<28}{wall:>9.1f}{useful:>12}{useful / wall:>9.1f}{f'{ended}/{total}':>14}")
    (w1, u1, *_), (w2, u2, *_) = results.values()
    print(f"speed ratio (useful tokens/s) batched / one-at-a-time: {(u2 / w2) / (u1 / w1):.2f}x   (goal >= 4x)")
    print(f"measured memory bandwidth {bw:.1f} GB/s -> decoding bound {bound:.1f} steps/s; at batch {args.batch_size}: {bound * args.batch_size:.0f} tokens/s")


if __name__ == "__main__":
    main()
