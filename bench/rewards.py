"""Reward annotation: xlr's fast path vs the reference code's way, side by side on the same inputs.

Reference way (as the paper's code annotates): batches of 3 in data order (unsorted), right padding, full logits
at every position, log-softmax over the whole sequence, a pi0 pass over all data then a pi_ref pass.
xlr: responses sharing a prompt scored from one run of the prompt (its KV cache repeated), the rest in length-
bucketed batches under a token budget; pi0 and pi_ref in one sweep over the same batch tensors; the LM head and
log-softmax only at response positions.

Inputs: 200 real responses (the GPT-4-turbo X-AlpacaEval references in en/de/es/fr/ru, 40 each, cut to
--max-chars characters) scored under R_c prompts G(x), shaped as the method's input: --samples-per-prompt N (default
4, as params/cpu.yaml; the paper samples 10) responses per prompt G(x) (the references of N consecutive ids in that
language), so xlr's shared-prompt path applies; N = 1 gives distinct prompts (the bucketed path alone). Both "models"
are the same real checkpoint loaded twice: the cost is that of two models, the reward itself is ~0.

Prints: wall time of both ways, the speed ratio, the max relative difference of the log-probs, achieved model
FLOP/s (2 x params x tokens per model) and its fraction of this machine's bf16 matmul peak, measured here.

    .venv/bin/python bench/rewards.py [--model qwen2.5-coder-0.5b-instruct] [--n 200] [--profile]

``--profile`` (issue 15): xlr's sweep once more under torch.profiler: the forward passes per model (each decoder
run counted through a forward hook) against the number of batches, the tokens the decoders actually ran against the
distinct tokens of the input (shared prompts once + responses), and the top operators by self CPU time -- what is
left to cut, and confirmation that nothing is computed twice.
"""

from __future__ import annotations

import argparse
import time

import torch

from xlr import data
from xlr.models import load_model
from xlr.rewards import cross_lingual_prompt, encode_pairs, score_models
from xlr.runtime import set_threads


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def reference_way(model, tok, prompts, responses, batch: int = 3) -> list[float]:
    """Batch of 3, unsorted, right padding, full logits + log-softmax everywhere, then mask."""
    enc = encode_pairs(tok, prompts, responses)
    out = []
    dev = next(model.parameters()).device
    for k in range(0, len(enc), batch):
        chunk = enc[k : k + batch]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s, _ in chunk], device=dev)
        attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in chunk], device=dev)
        mask = torch.tensor([[0] * p + [1] * (len(s) - p) + [0] * (width - len(s)) for s, p in chunk], device=dev)[:, 1:]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        out += (lp * mask).sum(-1).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-chars", type=int, default=600)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    threads = set_threads()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    langs = ["en", "de", "es", "fr", "ru"]
    per = args.n // len(langs)
    prompts, responses = [], []
    n_samples = args.samples_per_prompt
    en = data.load_xalpacaeval("en", list(range(1, per + 1)))
    for lang in langs:
        ds = data.load_xalpacaeval(lang, list(range(1, per + 1)))
        for k in range(per):
            prompts.append(cross_lingual_prompt(en[k - k % n_samples]["instruction"], lang))  # N consecutive responses share a prompt
            responses.append(ds[k]["reference_output"][: args.max_chars])
    pi0, tok = load_model(args.model, dtype=dtype)
    pi_ref, _ = load_model(args.model, dtype=dtype)
    n_params = sum(p.numel() for p in pi0.parameters())
    enc = encode_pairs(tok, prompts, responses)
    tokens = sum(len(ids) for ids, _ in enc)  # what the reference way runs per model
    prompt_lens = {tuple(ids[:p]): p for ids, p in enc}
    run_tokens = sum(len(ids) - p for ids, p in enc) + sum(prompt_lens.values())  # what xlr runs: each prompt once

    score_models([pi0, pi_ref], tok, prompts[:6], responses[:6], batch_tokens=args.batch_tokens)  # warm-up
    t0 = time.perf_counter()
    ref = (reference_way(pi0, tok, prompts, responses), reference_way(pi_ref, tok, prompts, responses))
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    xlr = score_models([pi0, pi_ref], tok, prompts, responses, batch_tokens=args.batch_tokens)
    t_xlr = time.perf_counter() - t0
    rel = max(abs(a - b) / max(abs(b), 1e-9) for m in range(2) for a, b in zip(xlr[m], ref[m], strict=True))
    peak = matmul_peak_gflops(dtype)
    print(
        f"model {args.model} ({n_params / 1e6:.0f}M params, {args.dtype}), {threads} threads, {len(prompts)} responses, {len(prompt_lens)} prompts "
        f"({n_samples} per prompt); tokens per model: {tokens} as pairs, {run_tokens} with each prompt run once"
    )
    print("model FLOP/s count 2 x params per token each way actually runs (all tokens for the reference, shared prompts once for xlr)")
    print(f"{'way':<40}{'wall s':>9}{'pairs tok/s':>13}{'GFLOP/s':>10}{'% of peak':>11}")
    for name, t, run in (
        ("reference (b=3, unsorted, full head)", t_ref, tokens),
        ("xlr (shared prompts + buckets, one sweep)", t_xlr, run_tokens),
    ):
        flops = 2 * n_params * run * 2  # two models
        print(f"{name:<40}{t:>9.1f}{2 * tokens / t:>13.0f}{flops / t / 1e9:>10.0f}{100 * flops / t / 1e9 / peak:>10.0f}%")
    print(f"speed ratio xlr / reference: {t_ref / t_xlr:.2f}x   (goal >= 3x)")
    print(
        f"measured {args.dtype} matmul peak: {peak:.0f} GFLOP/s; xlr reaches {100 * 4 * n_params * run_tokens / t_xlr / 1e9 / peak:.0f}% (goal >= 50%)"
    )
    print(f"max relative difference of log-probs, xlr vs reference: {rel:.2e}  (reference way's log-softmax runs in fp32 too)")
    if args.profile:
        profile(pi0, pi_ref, tok, prompts, responses, args.batch_tokens, run_tokens)


def profile(pi0, pi_ref, tok, prompts, responses, batch_tokens: int, distinct_tokens: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    seen = {"pi0": [0, 0], "pi_ref": [0, 0]}  # decoder calls, tokens (batch x length, padding included)

    def hook(name):
        def count(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                seen[name][0] += 1
                seen[name][1] += ids.numel()

        return count

    handles = [m.get_decoder().register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in (("pi0", pi0), ("pi_ref", pi_ref))]
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        score_models([pi0, pi_ref], tok, prompts, responses, batch_tokens=batch_tokens)
    for h in handles:
        h.remove()
    print(
        f"\nprofile: decoder runs per model {seen['pi0'][0]} / {seen['pi_ref'][0]}; tokens run per model {seen['pi0'][1]} / {seen['pi_ref'][1]} "
        f"(padding included) vs {distinct_tokens} distinct input tokens (each shared prompt once): {seen['pi0'][1] / distinct_tokens:.2f}x"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
