"""GPU check (issue 8): reward scoring and sampling on a CUDA device, side by side with the reference way, against
the GPU's measured bf16 matmul peak and memory bandwidth. Run by bench/gpu_check.sh on a lent GPU machine; the CPU
study never depends on it.

Models: the tiny test model (carried, 3.2M parameters: launch-bound, it only shows the code runs on CUDA) and a
random-weight model with Qwen2.5-0.5B's shape (24 layers, hidden 896, 14/2 heads, MLP 4864) over the tiny model's
tokenizer, built on the GPU from its config (no weights travel; the real checkpoint is 1 GB, over the 64 MiB that can
be carried). Random weights make the timings those of the architecture, not of a trained model: responses run to
max_new_tokens (no EOS), and the log-probs themselves mean nothing; both ways are checked equal on them all the same.

    python3 bench/gpu_check.py [--tiny PATH] [--n 256] [--prompts 16] [--samples 8] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rewards import reference_way  # noqa: E402  (bench/rewards.py: the reference code's way of scoring)

from xlr.chat import render_prompt  # noqa: E402
from xlr.models import load_model  # noqa: E402
from xlr.rewards import cross_lingual_prompt, encode_pairs, score_models  # noqa: E402
from xlr.sampling import GenConfig, HFBackend  # noqa: E402

SENTENCES = {
    "en": "The river carries cold water from the mountains to the sea, and the town grew up along its banks. ",
    "de": "Der Fluss bringt kaltes Wasser aus den Bergen zum Meer, und die Stadt wuchs an seinen Ufern. ",
    "es": "El río lleva agua fría de las montañas al mar, y el pueblo creció a lo largo de sus orillas. ",
    "fr": "La rivière porte l'eau froide des montagnes à la mer, et la ville a grandi le long de ses rives. ",
    "ru": "Река несёт холодную воду с гор к морю, и город вырос вдоль её берегов. ",
}
INSTRUCTIONS = [
    "Describe a river town in a few sentences.",
    "Explain why rivers flow to the sea.",
    "Write a short story about a bridge.",
    "List three facts about mountains.",
    "Summarise the history of a small town.",
]


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn) -> tuple[float, object]:
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def gpu_peaks() -> tuple[float, float]:
    """bf16 matmul TFLOP/s (8192^3, best of 5) and device memory bandwidth GB/s (copy, read + write)."""
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    a @ b
    flops = max(2 * 8192**3 / timed(lambda: a @ b)[0] for _ in range(5)) / 1e12
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    bw = max(2 * x.numel() * 2 / timed(lambda: y.copy_(x))[0] for _ in range(5)) / 1e9
    return flops, bw  # the test tensors are freed with this frame (the caller empties the cache)


def qwen_shaped(tok) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    return model.eval()


def bench_rewards(name, pi0, pi_ref, tok, n, peak_tflops) -> None:
    langs = list(SENTENCES)
    prompts, responses = [], []
    for i in range(n):  # lengths vary 1..24 sentences, as real responses do
        lang = langs[i % len(langs)]
        prompts.append(cross_lingual_prompt(INSTRUCTIONS[i % len(INSTRUCTIONS)], lang))
        responses.append(SENTENCES[lang] * (1 + (i * 7) % 24))
    tokens = sum(len(ids) for ids, _ in encode_pairs(tok, prompts, responses))
    n_params = sum(p.numel() for p in pi0.parameters())
    # share_prompts=False: the bucketed path, as recorded in bench/RESULTS.md (the shared-prompt path, one prompt per
    # forward, was measured on CPU only)
    score_models([pi0, pi_ref], tok, prompts[:8], responses[:8], batch_tokens=16384, share_prompts=False)  # warm-up
    reference_way(pi0, tok, prompts[:6], responses[:6])
    t_ref, ref = timed(lambda: (reference_way(pi0, tok, prompts, responses), reference_way(pi_ref, tok, prompts, responses)))
    t_xlr, got = timed(lambda: score_models([pi0, pi_ref], tok, prompts, responses, batch_tokens=16384, max_batch=256, share_prompts=False))
    diff = max(abs(a - b) / max(abs(b), 1e-9) for m in range(2) for a, b in zip(got[m], ref[m], strict=True))
    flops = 2 * n_params * tokens * 2
    print(f"\n[rewards] {name}: {n_params / 1e6:.1f}M params bf16, {n} responses, {tokens} tokens per model, 2 models")
    print("| way | wall s | tokens/s | TFLOP/s | % of bf16 peak |\n|---|---|---|---|---|")
    for way, t in (
        ("reference (batch 3, unsorted, right padding, full head)", t_ref),
        ("xlr (bucketed 16k tokens, one sweep, head at response positions)", t_xlr),
    ):
        print(f"| {way} | {t:.2f} | {2 * tokens / t:,.0f} | {flops / t / 1e12:.2f} | {100 * flops / t / 1e12 / peak_tflops:.1f}% |")
    print(f"speed ratio xlr / reference: {t_ref / t_xlr:.2f}x (goal >= 3x); max relative log-prob difference {diff:.1e}")


def bench_sampling(name, model, tok, n_prompts, samples, max_new, bw_gbs) -> None:
    backend = HFBackend(model, tok)
    prompts = [render_prompt(tok, INSTRUCTIONS[i % len(INSTRUCTIONS)] + f" ({i})") for i in range(n_prompts)]
    cfg = GenConfig(n=samples, temperature=0.9, top_p=1.0, max_new_tokens=max_new, batch_size=n_prompts * samples)
    backend.generate(prompts[:1], GenConfig(n=1, max_new_tokens=4))  # warm-up
    one = GenConfig(**{**cfg.__dict__, "batch_size": samples})
    t1, g1 = timed(lambda: [g for p in prompts for g in backend.generate([p], one, seed=0)])
    t2, g2 = timed(lambda: backend.generate(prompts, cfg, seed=0))
    u1 = sum(g.n_tokens for gs in g1 for g in gs)
    u2 = sum(g.n_tokens for gs in g2 for g in gs)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound = bw_gbs * 1e9 / weight_bytes
    print(
        f"\n[sampling] {name}: {weight_bytes / 1e6:.0f} MB of bf16 weights, {n_prompts} prompts x {samples} samples, up to {max_new} new tokens"
    )
    print("| way | wall s | useful tokens | tokens/s |\n|---|---|---|---|")
    print(f"| one prompt at a time ({samples} rows) | {t1:.2f} | {u1} | {u1 / t1:,.0f} |")
    print(f"| xlr batched ({n_prompts * samples} rows) | {t2:.2f} | {u2} | {u2 / t2:,.0f} |")
    print(
        f"speed ratio batched / one at a time: {(u2 / t2) / (u1 / t1):.2f}x (goal >= 4x); decoding bound at batch {n_prompts * samples}: "
        f"{bound:,.0f} steps/s x {n_prompts * samples} = {bound * n_prompts * samples:,.0f} tokens/s (weights re-read each step); "
        f"xlr reaches {100 * (u2 / t2) / (bound * n_prompts * samples):.1f}% of it"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", default="tiny:0")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check runs on a GPU machine only (bench/gpu_check.sh)")
    props = torch.cuda.get_device_properties(0)
    import transformers

    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, transformers {transformers.__version__}")
    peak, bw = gpu_peaks()
    torch.cuda.empty_cache()
    print(f"measured: bf16 matmul {peak:.0f} TFLOP/s, memory bandwidth {bw:,.0f} GB/s")
    tiny, tok = load_model(a.tiny, dtype=torch.bfloat16, device="cuda")
    tiny2, _ = load_model(a.tiny.replace(":0", ":1") if a.tiny.endswith(":0") else a.tiny, dtype=torch.bfloat16, device="cuda")
    bench_rewards("tiny test model", tiny, tiny2, tok, a.n, peak)
    bench_sampling("tiny test model", tiny, tok, a.prompts, a.samples, a.max_new_tokens, bw)
    pi0, pi_ref = qwen_shaped(tok), qwen_shaped(tok)
    bench_rewards("Qwen2.5-0.5B-shaped, random weights", pi0, pi_ref, tok, a.n, peak)
    bench_sampling("Qwen2.5-0.5B-shaped, random weights", pi0, tok, a.prompts, a.samples, a.max_new_tokens, bw)
    print(
        f"\nvLLM: {'installed' if importlib.util.find_spec('vllm') else 'not installed in this image (the vLLM backend was not exercised)'}"
    )


if __name__ == "__main__":
    main()
