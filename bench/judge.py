"""Judging throughput: the local judge (prompts/s, tokens/s, batched vs one prompt at a time, same numbers checked),
and the API judge against the loopback mock server (throughput at 1 vs the configured concurrency, and zero repeated
calls on a rerun thanks to the cache).

    .venv/bin/python bench/judge.py [--model qwen2.5-coder-1.5b-instruct] [--n 16] [--latency 0.2] [--concurrency 8]
    .venv/bin/python bench/judge.py --protocols pairwise,pairwise_both,pointwise_score,pointwise_yes,loglik --n 4 --skip-api --skip-local

``--protocols``: the per-protocol table (judge.protocol): judge calls per comparison, judgments/s, comparisons/s and
prompt tokens/s of the local judge, each protocol on the same n comparisons through ``judge_pairs`` with a fresh cache
(pointwise protocols score each distinct output once: the reference of a comparison and the model's output).

Prompts are real: X-AlpacaEval English instructions with their GPT-4-turbo reference as one output and a shortened
copy as the other, rendered with the AlpacaEval template plus the same-language clause.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from xlr import data
from xlr import judge as J
from xlr.mock_openai import MockServer
from xlr.models import load_model
from xlr.runtime import set_threads


def prompts(n: int) -> list[str]:
    template = J.protocol_template(True)
    rows = list(data.load_xalpacaeval("en", data.xalpacaeval_ids(n, 0)))
    return [J.render(template, r["instruction"], r["reference_output"], r["reference_output"][: len(r["reference_output"]) // 3]) for r in rows]


def local(model_spec: str, ps: list[str]) -> None:
    model, tok = load_model(model_spec, dtype=torch.bfloat16)
    judge = J.LocalJudge(model, tok, model_spec)
    judge(ps[:2])  # warm-up
    t0 = time.perf_counter()
    batched = judge(ps)
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [judge([p])[0] for p in ps]
    ts = time.perf_counter() - t0
    diff = max(abs(a["logprob_m"] - b["logprob_m"]) + abs(a["logprob_M"] - b["logprob_M"]) for a, b in zip(batched, single, strict=True))
    toks = sum(r["tokens_in"] for r in batched)
    print(f"local judge {model_spec} (bf16, {torch.get_num_threads()} threads), {len(ps)} prompts, {toks / len(ps):.0f} tokens each on average")
    print(f"  batched     : {len(ps) / tb:6.2f} prompts/s  {toks / tb:7.0f} tokens/s")
    print(f"  one at a time: {len(ps) / ts:6.2f} prompts/s  {toks / ts:7.0f} tokens/s")
    print(f"  ratio batched/single: {ts / tb:.2f}x; max |logprob difference| {diff:.2e} (bf16 rounding of different batch shapes)")
    plain = J.LocalJudge(model, tok, model_spec, prefix_cache=False)
    t0 = time.perf_counter()
    no_prefix = plain(ps)
    tn = time.perf_counter() - t0
    diff = max(abs(a["logprob_m"] - b["logprob_m"]) + abs(a["logprob_M"] - b["logprob_M"]) for a, b in zip(batched, no_prefix, strict=True))
    n_prefix = J._common_prefix_len([judge.encode(p) for p in ps])
    print(f"  shared-prefix KV cache ({n_prefix} tokens) vs none: {tn / tb:.2f}x faster; max |logprob difference| {diff:.2e}")


def api(ps: list[str], latency: float, concurrency: int) -> None:
    os.environ["XLR_BENCH_KEY"] = "bench-key"
    with MockServer(latency_s=latency) as server, tempfile.TemporaryDirectory() as tmp:
        items = [{"key": f"b:{k}", "instruction": p[:50], "output": p, "baseline_output": p[::-1]} for k, p in enumerate(ps)]
        template = J.protocol_template(True)
        times = {}
        for c in (1, concurrency):
            judge = J.APIJudge(server.base_url, "mock", "XLR_BENCH_KEY", concurrency=c)
            cache = J.JudgeCache(Path(tmp) / f"c{c}.jsonl")
            t0 = time.perf_counter()
            recs, st = J.judge_pairs(judge, items, cache, seed=0, template=template)
            times[c] = time.perf_counter() - t0
            assert st.calls == len(items)
        before = server.requests
        _, st = J.judge_pairs(judge, items, J.JudgeCache(Path(tmp) / f"c{concurrency}.jsonl"), seed=0, template=template)
        print(f"API judge vs loopback mock server ({latency * 1000:.0f} ms per reply), {len(items)} judgments")
        for c, t in times.items():
            print(f"  concurrency {c:2d}: {len(items) / t:6.1f} judgments/s  (peak in flight {server.peak_in_flight})")
        print(f"  ratio: {times[1] / times[concurrency]:.2f}x; rerun: {server.requests - before} requests, {st.cache_hits} cache hits")
        assert server.requests == before and not math.isnan(recs[0]["p_model"])


def protocols_table(model_spec: str, n: int, names: list[str]) -> None:
    from xlr.runtime import resolve_dtype

    dtype, why = resolve_dtype("auto", "cpu")
    model, tok = load_model(model_spec, dtype=dtype)
    judge = J.LocalJudge(model, tok, model_spec)
    template = J.protocol_template(True)
    rows = list(data.load_xalpacaeval("en", data.xalpacaeval_ids(n, 0)))
    items = [{"key": f"b:{r['id']}", "instruction": r["instruction"], "output": r["reference_output"][: len(r["reference_output"]) // 3],
              "baseline_output": r["reference_output"]} for r in rows]
    print(f"per protocol: local judge {model_spec} ({why}, {torch.get_num_threads()} threads), {n} comparisons (X-AlpacaEval en: reference vs its first third)")
    print(f"  {'protocol':16s} {'calls/comparison':>16s} {'judgments/s':>12s} {'comparisons/s':>14s} {'tokens/s':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            proto = J.Protocol(name)
            t0 = time.perf_counter()
            recs, st = J.judge_pairs(judge, items, J.JudgeCache(Path(tmp) / f"{name}.jsonl"), seed=0, template=template, protocol=proto, desc=name)
            dt = time.perf_counter() - t0
            assert st.unjudgeable == 0 and all(0 <= r["p_model"] <= 1 for r in recs)
            print(f"  {name:16s} {st.calls / n:16.2f} {st.calls / dt:12.3f} {n / dt:14.3f} {st.tokens_in / dt:9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-api", action="store_true")
    ap.add_argument("--protocols", default="", help="comma-separated judge protocols for the per-protocol table (xlr.judge.PROTOCOLS)")
    args = ap.parse_args()
    set_threads(None)
    ps = prompts(args.n)
    if not args.skip_api:
        api(ps, args.latency, args.concurrency)
    if not args.skip_local:
        local(args.model, ps)
    if args.protocols:
        protocols_table(args.model, args.n, [p for p in args.protocols.split(",") if p])


if __name__ == "__main__":
    main()
