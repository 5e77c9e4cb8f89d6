"""Judging throughput: the local judge (prompts/s, tokens/s, batched vs one prompt at a time, same numbers checked),
and the API judge against the loopback mock server (throughput at 1 vs the configured concurrency, and zero repeated
calls on a rerun thanks to the cache).

    .venv/bin/python bench/judge.py [--model qwen2.5-coder-1.5b-instruct] [--n 16] [--latency 0.2] [--concurrency 8]
    .venv/bin/python bench/judge.py --protocols pairwise,pairwise_both,pointwise_score,pointwise_yes,loglik --n 4 --skip-api --skip-local

``--study-shape``: the judging stage's shape, K X-AlpacaEval items (``--items``) x M models (``--models``: the 3
shipped generators' answers, then shortened references, which flatter the sharing) against the reference, each
protocol of ``--protocols`` (default pairwise) with the prefix cache of before ("global": system + template opening)
and the grouped one (also an item's instruction and, reference first, the reference: prefilled once per item) side
by side: judgments/s, the ratio, the fraction of prompt tokens computed, and the largest difference in p_model.
``--calls per-model`` judges one model per judge_pairs call (xlr.study's judging stage before issue 15; it now
judges all models of a language in one call first).

    .venv/bin/python bench/judge.py --skip-api --skip-local --study-shape --items 8 --models 3 --protocols pairwise,pointwise_score

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
from xlr.config import JudgeParams
from xlr.mock_openai import MockServer
from xlr.models import load_model
from xlr.runtime import set_threads

# judge_pairs' settings: order seed 0, one random order per item, unpriced; pairwise unless a call names another protocol
JP = JudgeParams(protocol="pairwise")


def prompts(n: int) -> list[str]:
    template = J.protocol_template(True)
    rows = list(data.load_xalpacaeval("en", data.xalpacaeval_ids(n, 0)))
    return [
        J.render(template, r["instruction"], r["reference_output"], r["reference_output"][: len(r["reference_output"]) // 3]) for r in rows
    ]


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
    print(
        f"local judge {model_spec} (bf16, {torch.get_num_threads()} threads), {len(ps)} prompts, {toks / len(ps):.0f} tokens each on average"
    )
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
            recs, st = J.judge_pairs(judge, items, cache, JP, template)
            times[c] = time.perf_counter() - t0
            assert st.calls == len(items)
        before = server.requests
        _, st = J.judge_pairs(judge, items, J.JudgeCache(Path(tmp) / f"c{concurrency}.jsonl"), JP, template)
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
    items = [
        {
            "key": f"b:{r['id']}",
            "instruction": r["instruction"],
            "output": r["reference_output"][: len(r["reference_output"]) // 3],
            "baseline_output": r["reference_output"],
        }
        for r in rows
    ]
    print(
        f"per protocol: local judge {model_spec} ({why}, {torch.get_num_threads()} threads), {n} comparisons (X-AlpacaEval en: reference vs its first third)"
    )
    print(f"  {'protocol':16s} {'calls/comparison':>16s} {'judgments/s':>12s} {'comparisons/s':>14s} {'tokens/s':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            proto = J.Protocol(name)
            t0 = time.perf_counter()
            recs, st = J.judge_pairs(judge, items, J.JudgeCache(Path(tmp) / f"{name}.jsonl"), JP, template, protocol=proto, desc=name)
            dt = time.perf_counter() - t0
            assert st.unjudgeable == 0 and all(0 <= r["p_model"] <= 1 for r in recs)
            print(f"  {name:16s} {st.calls / n:16.2f} {st.calls / dt:12.3f} {n / dt:14.3f} {st.tokens_in / dt:9.0f}")


class _TallyJudge(J.LocalJudge):
    """A LocalJudge that adds up ``last_stats`` over its calls (a per-model study stage makes several)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tally: dict[str, int] = {}

    def _next_token(self, *args, **kwargs):
        out = super()._next_token(*args, **kwargs)
        for k, v in self.last_stats.items():
            self.tally[k] = self.tally.get(k, 0) + v
        return out


def study_items(k: int, m: int, max_chars: int = 0) -> tuple[list[str], list[dict]]:
    """K X-AlpacaEval English items, each answered by M "models": the shipped answers of other generators first
    (x-alpacaeval/outputs, e.g. gpt-3.5-turbo-0125), then shortened copies of the reference (its first j/(M+1)); every
    answer judged against the item's GPT-4-turbo reference (beyond the shipped generators, 3, the sharing is flattered:
    a shortened reference shares its opening with the reference). Keys as the study's (``evaluate.reference_items``:
    "en:<id>", so the pairwise order of an item, drawn from its key, is the same for every model, as in the study).
    ``max_chars`` > 0 cuts every answer and reference to that many characters (a quick check, not the study's shape)."""
    ids = data.xalpacaeval_ids(k, 0)
    rows = list(data.load_xalpacaeval("en", ids))
    gens = data.xalpacaeval_output_generators()[:m]
    answers = {g: data.load_xalpacaeval_outputs(g, "en", ids) for g in gens}
    cuts = {f"reference[:{j}/{m + 1}]": j / (m + 1) for j in range(1, m - len(gens) + 1)}
    names = gens + list(cuts)
    items = []
    for name in names:
        for r in rows:
            ref = r["reference_output"]
            out = answers[name][r["id"]] if name in answers else ref[: int(len(ref) * cuts[name])]
            ref, out = (ref[:max_chars], out[:max_chars]) if max_chars else (ref, out)
            items.append(
                {
                    "model": name,
                    "key": f"en:{r['id']}",
                    "id": r["id"],
                    "instruction": r["instruction"],
                    "output": out,
                    "baseline_output": ref,
                }
            )
    return names, items


def study_shape(
    model_spec: str, k: int, m: int, names: list[str], calls: str, max_chars: int = 0, modes: tuple[str, ...] = ("global", "grouped")
) -> None:
    """The judging stage's shape: K items x M models against the references, per protocol, with the prefix cache of
    before (global: system + template opening) and the grouped one side by side, same model, fresh caches."""
    from xlr.runtime import resolve_dtype

    dtype, why = resolve_dtype("auto", "cpu")
    model, tok = load_model(model_spec, dtype=dtype)
    template = J.protocol_template(True)
    models, items = study_items(k, m, max_chars)
    judges = {mode: _TallyJudge(model, tok, model_spec, prefix_cache=mode) for mode in modes}
    judges[modes[0]]([J.render(template, "Say hi.", "Hi!", "Hello.")])  # warm-up (a short prompt)
    groups = [items] if calls == "one" else [[it for it in items if it["model"] == name] for name in models]
    print(
        f"study shape: local judge {model_spec} ({why}, {torch.get_num_threads()} threads), {k} items x {len(models)} models "
        f"({', '.join(models)}) vs the reference{f' (cut to {max_chars} chars)' if max_chars else ''}, {'one judge_pairs call' if calls == 'one' else 'one judge_pairs call per model (xlr.study before issue 15)'}"
    )
    print(
        f"  {'protocol':16s} {'prefix':8s} {'judgments':>9s} {'judgments/s':>12s} {'computed/prompt tokens':>23s} {'computed tok/s':>14s} {'prefills':>8s} {'groups':>6s} {'s':>7s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            proto = J.Protocol(name)
            res, speed = {}, {}
            for mode, judge in judges.items():
                judge.tally = {}
                cache = J.JudgeCache(Path(tmp) / f"{name}-{mode}.jsonl")
                t0 = time.perf_counter()
                recs, calls_made = [], 0
                for part in groups:  # a shared cache across the calls, as the study's (a reference scored once)
                    r, st = J.judge_pairs(judge, part, cache, JP, template, protocol=proto, desc=f"{name}/{mode}")
                    recs += r
                    calls_made += st.calls
                dt = time.perf_counter() - t0
                res[mode], speed[mode] = recs, calls_made / dt
                t = judge.tally
                frac = f"{t['computed_tokens'] / t['prompt_tokens']:.3f}" if t.get("prompt_tokens") else "-"
                rate = f"{t['computed_tokens'] / dt:.0f}" if t.get("prompt_tokens") else "-"
                print(
                    f"  {name:16s} {mode:8s} {calls_made:9d} {speed[mode]:12.3f} {frac:>23s} {rate:>14s} {t.get('prefills', 0):8d} {t.get('groups', 0):6d} {dt:7.1f}"
                )
            if not {"global", "grouped"} <= set(res):
                continue
            diff = max((abs(a["p_model"] - b["p_model"]) for a, b in zip(res["global"], res["grouped"], strict=True)), default=0.0)
            print(
                f"  {name:16s} grouped/global: {speed['grouped'] / speed['global']:.2f}x judgments/s; max |p_model difference| {diff:.2e}"
                + (" (loglik: the grouped cache does not apply, sequence scoring)" if name == "loglik" else "")
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-api", action="store_true")
    ap.add_argument("--protocols", default="", help="comma-separated judge protocols for the per-protocol table (xlr.judge.PROTOCOLS)")
    ap.add_argument(
        "--study-shape",
        action="store_true",
        help="the study-shaped table: --items x --models, global vs grouped prefix cache, per --protocols",
    )
    ap.add_argument("--items", type=int, default=8, help="--study-shape: X-AlpacaEval items")
    ap.add_argument("--models", type=int, default=3, help="--study-shape: models judged per item")
    ap.add_argument(
        "--calls",
        choices=("one", "per-model"),
        default="one",
        help="--study-shape: all models in one judge_pairs call, or one call per model",
    )
    ap.add_argument("--max-chars", type=int, default=0, help="--study-shape: cut answers and references to this many characters (0: whole)")
    ap.add_argument("--modes", default="global,grouped", help="--study-shape: prefix caches to compare (LocalJudge.PREFIX_MODES)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = ap.parse_args()
    set_threads(args.threads)
    ps = prompts(args.n)
    if not args.skip_api:
        api(ps, args.latency, args.concurrency)
    if not args.skip_local:
        local(args.model, ps)
    names = [p for p in args.protocols.split(",") if p]
    if args.protocols and not args.study_shape:
        protocols_table(args.model, args.n, names)
    if args.study_shape:
        study_shape(args.model, args.items, args.models, names or ["pairwise"], args.calls, args.max_chars, tuple(args.modes.split(",")))


if __name__ == "__main__":
    main()
