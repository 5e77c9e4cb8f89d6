"""Paper-shaped GPU check (issue 16): the four GPU stages of the paper's setting on a Llama-3-8B-shaped model with
random weights, timed and measured (peak GPU memory), then the wall time of each stage of params/paper-llama3-8b.yaml
projected on 1 and on 8 GPUs. Run by bench/gpu_paper_check.sh on a lent GPU machine; nothing depends on it, it
downloads nothing, and `--tiny` runs the same code on a tiny shape on the CPU as a smoke test.

Model: transformers' LlamaConfig with Llama-3-8B's shape (hidden 4096, 32 layers, 32 query / 8 key-value heads, MLP
14336, vocabulary 128256, rope theta 500000), built on the GPU in bf16 from its config (no weights travel; random
weights make the timings those of the architecture: responses run to max_new_tokens, log-probs mean nothing). Text
goes through the tiny model's tokenizer (xlr.tiny, carried in .devcache; its ids all lie inside the 128256-entry
vocabulary, and generated ids beyond its own vocabulary decode to nothing); without it the parts run on token ids.

Parts, each in its own try/except so that one failing still leaves the others:
  (a) reward scoring: xlr.rewards.score_models on [model, model] (pi0 and pi_ref have one shape; one copy in memory),
      the reward stage's path (shared prompts, G(x) prompts, reward.batch_tokens, parity icr); tokens/s.
  (b) one LoRA DPO step: peft adapters (xlr.train.lora_config, xlr's default r 16 / alpha 32 / all-linear) on the
      bf16 base, precision as xlr.train.training_precision decides for LoRA (fp32 adapters, no autocast), reference =
      the base with adapters disabled, DPO sigmoid loss + NLL on a random pair batch, AdamW; plain torch.
  (c) one full-fine-tuning DPO step: fp32 master weights under bf16 autocast (training_precision for full), frozen bf16
      reference, AdamW. Full fine-tuning of all 32 layers needs ~16 bytes per parameter (fp32 weights, gradients, two
      Adam moments: 128 GB) plus the 16 GB reference: over one 141 GB GPU. So the step runs on a REDUCED layer count
      (--full-layers) and is scaled to 32 layers by the matmul parameters per token (layers + LM head); the output says so.
  (d) generation: xlr.sampling.HFBackend (the hf backend's continuous-batching loop) at batch 64, T 0.9; without a
      tokenizer, a plain KV-cache greedy loop. vLLM is not in the machine's image: a memory-bandwidth bound of decoding
      at the paper's batch 256 is printed beside it (what a paged-attention engine could approach, not a measurement).

    python3 bench/gpu_paper_check.py [--tiny] [--no-tokenizer] [--full-layers 16] [--mean-response-tokens 500] ...

Prints one JSON summary (also written to $OUT/gpu_paper_check.json when $OUT is set) and the projection table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GiB = 2**30
LLAMA3_8B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=1024,
    rope_theta=500000.0,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)
LORA_DEFAULTS = SimpleNamespace(r=16, alpha=32, dropout=0.05, target_modules="all-linear")  # xlr.config.LoraParams' defaults
# params/paper-llama3-8b.yaml, with xlr.config's defaults for what it leaves out (read from the file when PyYAML imports)
PAPER = dict(
    n_train_prompts=3000,
    train=["en", "es", "ru", "de", "fr"],
    eval=["en", "es", "ru", "de", "fr", "zh"],
    n_samples=10,
    max_new_tokens=2400,
    iterations=2,
    eval_n_prompts=805,
    eval_max_new_tokens=2048,
    epochs=1.0,
    finetune="full",
    lcb_n_prompts=100,
    lcb_max_new_tokens=256,
    batch_tokens=32768,
    sampling_batch_size=256,
)
LCB_LANGS = {
    "monolingual": {"ar", "de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "tr", "vi", "zh"},
    "crosslingual": {"ar", "de", "es", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "tr", "vi", "zh"},
}  # xlr.data.lcb_languages


# ----------------------------------------------------------------------------------------------------------------
# helpers


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


@contextlib.contextmanager
def measured(device: str):
    """Peak GPU memory of the block (GiB; None on CPU), filled into the yielded dict."""
    rec: dict[str, Any] = {}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield rec
    finally:
        if device == "cuda":
            torch.cuda.synchronize()
            rec["peak_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
            rec["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 2)
        else:
            rec["peak_gib"] = None


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(shape: dict[str, Any], layers: int | None, dtype: torch.dtype, device: str, tok: Any = None) -> torch.nn.Module:
    """A random-weight LlamaForCausalLM of ``shape`` (``layers`` overriding its layer count), made directly on
    ``device`` in ``dtype`` (no fp32 copy first)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    extra = {} if tok is None else dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = LlamaConfig(**{**shape, **({"num_hidden_layers": layers} if layers else {})}, **extra)
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = LlamaForCausalLM(cfg)
    return model


def matmul_params(shape: dict[str, Any], layers: int) -> int:
    """Parameters that take part in a matmul per token (all but the embedding lookup and norms): layers + LM head."""
    h, kv = shape["hidden_size"], shape["num_key_value_heads"] * shape["hidden_size"] // shape["num_attention_heads"]
    per_layer = h * (2 * h + 2 * kv) + 3 * h * shape["intermediate_size"]
    return layers * per_layer + shape["vocab_size"] * h


def kv_bytes_per_token(shape: dict[str, Any]) -> int:
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    return shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * 2 * 2  # keys and values, bf16


def random_text(tok: Any, n_tokens: int, gen: torch.Generator) -> str:
    """Text of about ``n_tokens`` tokens: random ids of the tokenizer's ordinary vocabulary, decoded."""
    ids = torch.randint(1000, min(len(tok), 40000), (n_tokens,), generator=gen).tolist()
    return tok.decode(ids, skip_special_tokens=True)


def load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from xlr.tiny import tokenizer_dir

    return AutoTokenizer.from_pretrained(str(tokenizer_dir()))


def paper_params() -> dict[str, Any]:
    """PAPER, updated from params/paper-llama3-8b.yaml where it can be read (PyYAML)."""
    p = dict(PAPER, source="built-in copy of params/paper-llama3-8b.yaml")
    try:
        import yaml

        y = yaml.safe_load((REPO / "params" / "paper-llama3-8b.yaml").read_text())
    except Exception as e:  # noqa: BLE001 -- the copy above stands in
        p["source"] += f" (file not read: {type(e).__name__})"
        return p
    ev, sa, tr = y.get("evaluation", {}), y.get("sampling", {}), y.get("training", {})
    p.update(
        n_train_prompts=y["data"]["n_train_prompts"],
        train=y["languages"]["train"],
        eval=y["languages"]["eval"],
        n_samples=sa["n_samples"],
        max_new_tokens=sa["max_new_tokens"],
        iterations=y["iterations"],
        eval_n_prompts=ev.get("n_prompts") or 805,
        eval_max_new_tokens=ev.get("max_new_tokens", 2048),
        epochs=tr.get("epochs", 1.0),
        finetune=tr.get("finetune", "lora"),
        lcb_n_prompts=ev.get("lcb_n_prompts", PAPER["lcb_n_prompts"]),
        lcb_max_new_tokens=ev.get("lcb_max_new_tokens", PAPER["lcb_max_new_tokens"]),
        batch_tokens=y.get("reward", {}).get("batch_tokens", PAPER["batch_tokens"]),
        sampling_batch_size=sa.get("batch_size", PAPER["sampling_batch_size"]),
        source="params/paper-llama3-8b.yaml",
    )
    return p


# ----------------------------------------------------------------------------------------------------------------
# parts


def bandwidth(device: str) -> dict[str, Any]:
    """Device memory bandwidth (copy of 2 GiB, read + write, best of 5) for the decoding bound."""
    if device != "cuda":
        return {"skipped": "CPU run: no device bandwidth"}
    x = torch.empty(GiB, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    gbs = max(2 * x.numel() * 2 / timed(lambda: y.copy_(x), device)[0] for _ in range(5)) / 1e9
    return {"copy_gb_per_s": round(gbs)}


def part_scoring(model: Any, tok: Any, a: argparse.Namespace, device: str) -> dict[str, Any]:
    """Reward scoring of prompts x samples responses under two models (the same one twice)."""
    from xlr.rewards import _forward_scores, cross_lingual_prompt, encode_pairs, score_models

    gen = torch.Generator().manual_seed(1)
    rec: dict[str, Any] = {"models": 2, "prompts": a.score_prompts, "samples_per_prompt": a.samples}
    if tok is not None:
        langs = PAPER["train"]
        prompts, responses = [], []
        for i in range(a.score_prompts):
            p = cross_lingual_prompt(random_text(tok, a.prompt_tokens, gen), langs[i % len(langs)])
            for _ in range(a.samples):
                prompts.append(p)
                responses.append(random_text(tok, a.mean_response_tokens, gen))
        enc = encode_pairs(tok, prompts, responses)
        resp_tokens = sum(len(ids) - p_len for ids, p_len in enc)
        input_tokens = resp_tokens + sum(len(u) for u in {tuple(ids[:p_len]) for ids, p_len in enc})  # each prompt run once (shared)
        kw = dict(batch_tokens=a.batch_tokens, parity="icr", share_prompts=True)
        score_models([model, model], tok, prompts[: a.samples], responses[: a.samples], **kw)  # warm-up
        with measured(device) as mem:
            wall, out = timed(lambda: score_models([model, model], tok, prompts, responses, **kw), device)
        rec.update(path="xlr.rewards.score_models (shared prompts, parity icr)", finite=all(math.isfinite(v) for v in out[0]))
    else:
        n, p_len, t = a.score_prompts * a.samples, a.prompt_tokens, a.prompt_tokens + a.mean_response_tokens
        ids = torch.randint(0, model.config.vocab_size, (n, t), device=device)
        attn = torch.ones_like(ids)
        spans = [(p_len - 1, t - 1)] * n
        resp_tokens, input_tokens = n * a.mean_response_tokens, n * t
        with torch.no_grad():
            _forward_scores(model, ids[: a.samples], attn[: a.samples], spans[: a.samples], False)  # warm-up
            with measured(device) as mem:
                wall, out = timed(
                    lambda: [
                        _forward_scores(model, ids[k : k + a.samples], attn[k : k + a.samples], spans[k : k + a.samples], False)
                        for k in range(0, n, a.samples)
                        for _ in range(2)
                    ],
                    device,
                )
        rec.update(
            path="xlr.rewards._forward_scores on random ids (no tokenizer), one batch per prompt's samples",
            finite=bool(torch.isfinite(torch.cat(out)).all()),
        )
    rec.update(
        mem,
        wall_s=round(wall, 3),
        response_tokens=resp_tokens,
        input_tokens_per_model=input_tokens,
        response_tokens_per_s=round(2 * resp_tokens / wall, 1),
        input_tokens_per_s=round(2 * input_tokens / wall, 1),
        s_per_response_token_per_model=wall / (2 * resp_tokens),
    )
    return rec


def response_logps(model: Any, ids: torch.Tensor, prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, mean) of log p(response token) per row: decoder once, LM head over response positions only."""
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state[:, prompt_len - 1 : -1]
    logits = model.get_output_embeddings()(hidden).float()
    lp = -torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, prompt_len:].flatten(), reduction="none").view(ids.shape[0], -1)
    return lp.sum(-1), lp.mean(-1)


def dpo_step(
    policy: Any,
    ref_logps: Any,
    opt: Any,
    ids: torch.Tensor,
    prompt_len: int,
    autocast: str | None,
    device: str,
    beta: float = 0.1,
    nll_weight: float = 1.0,
) -> float:
    """One optimizer step of DPO (sigmoid) + NLL on chosen (xlr's loss_type [sigmoid, sft]) over rows [chosen..., rejected...]."""
    n = ids.shape[0] // 2
    with torch.no_grad():
        ref_sum = ref_logps(ids)
    ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast == "bf16" else contextlib.nullcontext()
    with ctx:
        pol_sum, pol_mean = response_logps(policy, ids, prompt_len)
    margin = (pol_sum[:n] - ref_sum[:n].float()) - (pol_sum[n:] - ref_sum[n:].float())
    loss = -torch.nn.functional.logsigmoid(beta * margin).mean() - nll_weight * pol_mean[:n].mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def run_steps(policy: Any, ref_logps: Any, a: argparse.Namespace, autocast: str | None, device: str, vocab: int) -> dict[str, Any]:
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-7, fused=device == "cuda")
    gen = torch.Generator(device=device).manual_seed(2)
    t = a.prompt_tokens + a.mean_response_tokens
    ids = torch.randint(0, vocab, (2 * a.train_pairs, t), device=device, generator=gen)
    with measured(device) as mem:
        first, loss0 = timed(
            lambda: dpo_step(policy, ref_logps, opt, ids, a.prompt_tokens, autocast, device), device
        )  # allocates Adam state
        walls, losses = [], [loss0]
        for _ in range(a.steps):
            w, loss = timed(lambda: dpo_step(policy, ref_logps, opt, ids, a.prompt_tokens, autocast, device), device)
            walls.append(w)
            losses.append(loss)
    step = sum(walls) / len(walls)
    return {
        **mem,
        "pairs_per_step": a.train_pairs,
        "tokens_per_sequence": t,
        "first_step_s": round(first, 3),
        "step_s": round(step, 3),
        "s_per_pair": step / a.train_pairs,
        "policy_tokens_per_s": round(2 * a.train_pairs * t / step, 1),
        "trainable_params": sum(p.numel() for p in params),
        "losses": [round(x, 4) for x in losses],
        "finite": all(math.isfinite(x) for x in losses),
    }


def part_lora(model: Any, a: argparse.Namespace, device: str) -> dict[str, Any]:
    from peft import get_peft_model

    from xlr.train import lora_config, training_precision

    train_dtype, autocast = training_precision(torch.bfloat16, "lora")
    policy = get_peft_model(model, lora_config(LORA_DEFAULTS))
    policy.train()

    def ref_logps(ids: torch.Tensor) -> torch.Tensor:
        with policy.disable_adapter():
            return response_logps(policy, ids, a.prompt_tokens)[0]

    try:
        rec = run_steps(policy, ref_logps, a, autocast, device, model.config.vocab_size)
    finally:
        policy.unload()  # the base model back, without adapters
    return {
        "precision": f"base {str(train_dtype).removeprefix('torch.')}, fp32 adapters, autocast {autocast}",
        "lora": vars(LORA_DEFAULTS),
        "layers": model.config.num_hidden_layers,
        **rec,
    }


def part_full(shape: dict[str, Any], a: argparse.Namespace, device: str) -> dict[str, Any]:
    from xlr.train import training_precision

    train_dtype, autocast = training_precision(torch.bfloat16, "full")
    layers, full = a.full_layers or shape["num_hidden_layers"], shape["num_hidden_layers"]
    ref = build(shape, layers, torch.bfloat16, device).eval().requires_grad_(False)
    policy = build(shape, layers, train_dtype, device)
    policy.load_state_dict(ref.state_dict())  # the same start, fp32 master copy of the bf16 reference
    policy.train()
    try:
        rec = run_steps(policy, lambda ids: response_logps(ref, ids, a.prompt_tokens)[0], a, autocast, device, shape["vocab_size"])  # noqa: F821 (ref is deleted only after)
    finally:
        del policy, ref
    scale = matmul_params(shape, full) / matmul_params(shape, layers)
    n_full = matmul_params(shape, full) + shape["vocab_size"] * shape["hidden_size"]  # + the input embedding
    how = (
        "all layers"
        if layers == full
        else f"REDUCED to {layers} of {full} layers (all {full} need ~{(16 + 2) * n_full / 1e9:.0f} GB for fp32 weights + grads + Adam and the bf16 "
        f"reference: over one GPU); step time scaled to {full} layers by matmul parameters per token, x{scale:.3f}"
    )
    return {
        "precision": f"master {str(train_dtype).removeprefix('torch.')}, autocast {autocast}, reference bf16",
        "layers_run": layers,
        "way": how,
        **rec,
        "s_per_pair_at_full_depth": rec["s_per_pair"] * scale,
        "depth_scale": scale,
    }


def part_generation(model: Any, tok: Any, a: argparse.Namespace, device: str) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(3)
    rows = a.gen_batch
    if tok is not None:
        from xlr.chat import render_prompt
        from xlr.sampling import GenConfig, HFBackend

        n = min(a.gen_samples, rows)
        prompts = [render_prompt(tok, random_text(tok, a.gen_prompt_tokens, gen)) for _ in range(max(1, rows // n))]
        backend = HFBackend(model, tok)
        backend.generate(prompts[:1], GenConfig(n=1, max_new_tokens=4))  # warm-up
        cfg = GenConfig(n=n, temperature=0.9, top_p=1.0, max_new_tokens=a.gen_new_tokens, batch_size=rows)
        with measured(device) as mem:
            wall, out = timed(lambda: backend.generate(prompts, cfg, seed=0), device)
        useful = sum(g.n_tokens for gs in out for g in gs)
        prompt_tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) / len(prompts)
        rec = {"path": f"xlr.sampling.HFBackend ({len(prompts)} prompts x {n} samples, T 0.9)", **mem, "loop_stats": backend.last_stats}
    else:
        from transformers import DynamicCache

        ids = torch.randint(0, model.config.vocab_size, (rows, a.gen_prompt_tokens), device=device)
        prompt_tokens = a.gen_prompt_tokens

        def greedy() -> int:
            cache = DynamicCache()
            with torch.no_grad():
                logits = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                for _ in range(a.gen_new_tokens - 1):
                    logits = model(input_ids=logits.argmax(-1, keepdim=True), cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            return rows * a.gen_new_tokens

        with measured(device) as mem:
            wall, useful = timed(greedy, device)
        rec = {"path": "plain KV-cache greedy loop (no tokenizer)", **mem}
    return {
        **rec,
        "batch_rows": rows,
        "mean_prompt_tokens": round(prompt_tokens, 1),
        "max_new_tokens": a.gen_new_tokens,
        "useful_tokens": useful,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(useful / wall, 1),
    }


# ----------------------------------------------------------------------------------------------------------------
# projection


def decode_bound(shape: dict[str, Any], n_params: int, bw_gbs: float, batch: int, context: float) -> float:
    """Tokens/s if each decoding step only re-read the bf16 weights and the batch's KV cache at ``context`` tokens."""
    step_bytes = 2 * n_params + batch * context * kv_bytes_per_token(shape)
    return batch * bw_gbs * 1e9 / step_bytes


def project(parts: dict[str, Any], a: argparse.Namespace, shape: dict[str, Any], n_params: int) -> dict[str, Any]:
    P = paper_params()
    resp = a.mean_response_tokens
    eval_models = 2 + P["iterations"]  # pi_ref, pi0, pi^1..pi^T
    responses = P["n_train_prompts"] * len(P["train"]) * P["n_samples"]
    pairs = P["n_train_prompts"] * len(P["train"])  # at most one pair per prompt and language
    lcb_cells = sum(len(set(P["eval"]) & langs) for langs in LCB_LANGS.values())
    eval_answers = P["eval_n_prompts"] * len(P["eval"]) * eval_models
    lcb_answers = P["lcb_n_prompts"] * lcb_cells * eval_models
    gen_tokens_eval = eval_answers * min(resp, P["eval_max_new_tokens"]) + lcb_answers * min(resp, P["lcb_max_new_tokens"])
    rates: dict[str, tuple[float | None, str]] = {}
    g = parts.get("generation", {})
    rates["gen"] = (
        (g["tokens_per_s"], f"HF decoding, batch {g.get('batch_rows')}, measured") if "tokens_per_s" in g else (None, "generation failed")
    )
    bw = parts.get("bandwidth", {}).get("copy_gb_per_s")
    if bw:
        b = P["sampling_batch_size"]
        rates["gen_bound"] = (
            decode_bound(shape, n_params, bw, b, a.prompt_tokens + resp / 2),
            f"bandwidth bound, batch {b} (not measured)",
        )
    s = parts.get("scoring", {})
    score_s = s.get("s_per_response_token_per_model")
    full, lora = parts.get("full_dpo_step", {}), parts.get("lora_dpo_step", {})
    stages = []

    def row(name: str, work: str, seconds_1gpu: float | None, rate: str, note: str = "") -> None:
        stages.append(
            {
                "stage": name,
                "work": work,
                "rate": rate,
                "h_1gpu": None if seconds_1gpu is None else seconds_1gpu / 3600,
                "h_8gpu": None if seconds_1gpu is None else seconds_1gpu / 3600 / 8,
                "note": note,
            }
        )

    it = P["iterations"]
    for key, label in (("gen", "sampling"), ("gen_bound", "sampling (decode bound)")):
        if key in rates:
            r, how = rates[key]
            row(label, f"{it} x {responses:,} responses x {resp} tokens", None if r is None else it * responses * resp / r, how)
    row(
        "rewards",
        f"{it} x {responses:,} responses x {resp} tokens x 2 models",
        None if score_s is None else it * responses * resp * 2 * score_s,
        "score_models, measured" if score_s else "scoring failed",
    )
    t_full = full.get("s_per_pair_at_full_depth")
    row(
        "training (full)",
        f"{it} x {pairs:,} pairs x {P['epochs']} epoch",
        None if t_full is None else it * pairs * P["epochs"] * t_full,
        f"full DPO step, {full.get('layers_run')} layers scaled to {shape['num_hidden_layers']}" if t_full else "full step failed",
        "1 GPU: compute time only; the step ran at reduced depth (--full-layers): at full depth its state needs sharding or offload"
        if full.get("layers_run", shape["num_hidden_layers"]) < shape["num_hidden_layers"]
        else "",
    )
    t_lora = lora.get("s_per_pair")
    row(
        "training (LoRA instead)",
        f"{it} x {pairs:,} pairs x {P['epochs']} epoch",
        None if t_lora is None else it * pairs * P["epochs"] * t_lora,
        "LoRA DPO step, measured" if t_lora else "LoRA step failed",
        "not the paper's setting (finetune: full)",
    )
    for key, label in (("gen", "generation (eval)"), ("gen_bound", "generation (eval, decode bound)")):
        if key in rates:
            r, how = rates[key]
            row(
                label,
                f"{eval_answers:,} X-AlpacaEval + {lcb_answers:,} LCB answers ({eval_models} models)",
                None if r is None else gen_tokens_eval / r,
                how,
            )
    measured_rows = [r for r in stages if r["stage"] in ("sampling", "rewards", "training (full)", "generation (eval)")]
    total = None if any(r["h_1gpu"] is None for r in measured_rows) else sum(r["h_1gpu"] for r in measured_rows)
    return {
        "params": P,
        "assumptions": {
            "mean_response_tokens": resp,
            "prompt_tokens": a.prompt_tokens,
            "responses_per_iteration": responses,
            "pairs_per_iteration": f"{pairs} (an upper bound: one per prompt and language, before drops)",
            "eval_models": eval_models,
            "lcb_language_cells": lcb_cells,
            "scaling": "linear in GPUs for every GPU stage (data-parallel engines / shards; training FSDP with the effective batch kept); "
            "communication, stragglers and start-up ignored",
            "sampling": "HF decoding rate at the measured batch and context (vLLM, the paper setting's backend, is not in the image); "
            "the decode-bound row is the weight + KV re-read limit at sampling.batch_size, not a measurement",
            "rewards": "per response token per model, prompt cost amortised over the measured samples per prompt",
            "not projected": "pairs, metrics (CPU), judging (API), probe (small), model loading and checkpoint saving",
        },
        "stages": stages,
        "total_h_1gpu_measured_rows": total,
        "total_h_8gpu_measured_rows": None if total is None else total / 8,
    }


def print_table(proj: dict[str, Any]) -> None:
    def h(x: float | None) -> str:
        return "failed" if x is None else f"{x:,.1f}"

    print(
        f"\nProjection for {proj['params']['source']}: {proj['params']['n_train_prompts']} prompts x {len(proj['params']['train'])} languages x "
        f"N {proj['params']['n_samples']}, {proj['params']['iterations']} iterations; eval {proj['params']['eval_n_prompts']} prompts x "
        f"{len(proj['params']['eval'])} languages"
    )
    print("| stage | work | rate | 1 GPU [h] | 8 GPUs [h] | note |\n|---|---|---|---|---|---|")
    for r in proj["stages"]:
        print(f"| {r['stage']} | {r['work']} | {r['rate']} | {h(r['h_1gpu'])} | {h(r['h_8gpu'])} | {r['note']} |")
    print(
        f"| total (sampling, rewards, full training, eval generation) | | | {h(proj['total_h_1gpu_measured_rows'])} | "
        f"{h(proj['total_h_8gpu_measured_rows'])} | |"
    )
    print("Assumptions:")
    for k, v in proj["assumptions"].items():
        print(f"  {k}: {v}")


# ----------------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: a 2-layer, hidden-64 model, a few small steps")
    ap.add_argument("--no-tokenizer", action="store_true", help="run on token ids only (the fallback paths)")
    ap.add_argument("--full-layers", type=int, default=16, help="layers of the full fine-tuning step (0 = all; 32 does not fit one GPU)")
    ap.add_argument("--mean-response-tokens", type=int, default=500, help="response length used in every part and in the projection")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--score-prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=10, help="responses per prompt (the paper's N)")
    ap.add_argument("--batch-tokens", type=int, default=PAPER["batch_tokens"])
    ap.add_argument("--train-pairs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed training steps after one warm-up step")
    ap.add_argument("--gen-batch", type=int, default=64, help="rows decoded together")
    ap.add_argument("--gen-samples", type=int, default=8, help="samples per prompt in decoding (batch / samples prompts)")
    ap.add_argument("--gen-prompt-tokens", type=int, default=256, help="prompt length of decoding (~ prompt + half a mean response)")
    ap.add_argument("--gen-new-tokens", type=int, default=256)
    a = ap.parse_args()
    if a.tiny:
        a.full_layers = a.full_layers if a.full_layers in (0, 1) else 1
        for k, v in dict(
            mean_response_tokens=32,
            prompt_tokens=16,
            score_prompts=2,
            samples=3,
            batch_tokens=2048,
            train_pairs=1,
            steps=1,
            gen_batch=6,
            gen_samples=3,
            gen_prompt_tokens=16,
            gen_new_tokens=8,
        ).items():
            if getattr(a, k) == ap.get_default(k):
                setattr(a, k, v)
    device = "cpu" if a.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this check runs on a GPU machine (bench/gpu_paper_check.sh), or on the CPU with --tiny")
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import transformers

    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "args": vars(a),
        "parts": {},
    }
    if device == "cuda":
        summary["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GiB, 1)
    parts = summary["parts"]
    tok = None
    if not a.no_tokenizer:
        try:
            tok = load_tokenizer()
        except Exception as e:  # noqa: BLE001 -- the id-only paths stand in
            parts["tokenizer"] = {"error": f"{type(e).__name__}: {e}", "then": "parts run on token ids"}
    shape = dict(TINY if a.tiny else LLAMA3_8B)
    if a.tiny and tok is not None:
        shape["vocab_size"] = len(tok)  # the tokenizer's ids must fit (the 8B vocabulary holds them all)
    summary["shape"] = shape

    def attempt(name: str, fn) -> Any:
        t0 = time.perf_counter()
        try:
            parts[name] = fn()
        except Exception as e:  # noqa: BLE001 -- one part failing must leave the others
            traceback.print_exc()
            parts[name] = {"error": f"{type(e).__name__}: {str(e)[:600]}"}
        parts[name]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        free(device)
        print(f"[{name}] {json.dumps(parts[name])}", flush=True)
        save(summary)  # after every part: a run cut by its timeout still leaves the parts done
        return parts[name]

    attempt("bandwidth", lambda: bandwidth(device))
    model = None

    def make() -> dict[str, Any]:
        nonlocal model
        w, model = timed(lambda: build(shape, None, torch.bfloat16, device, tok).eval(), device)
        return {
            "params": sum(p.numel() for p in model.parameters()),
            "build_s": round(w, 2),
            "memory_gib": round(torch.cuda.memory_allocated() / GiB, 2) if device == "cuda" else None,
        }

    built = attempt("model_bf16", make)
    n_params = built.get("params") or (matmul_params(shape, shape["num_hidden_layers"]) + shape["vocab_size"] * shape["hidden_size"])
    if model is not None:
        attempt("scoring", lambda: part_scoring(model, tok, a, device))
        attempt("generation", lambda: part_generation(model, tok, a, device))
        model.train()
        attempt("lora_dpo_step", lambda: part_lora(model, a, device))
    model = None
    free(device)
    attempt("full_dpo_step", lambda: part_full(shape, a, device))
    summary["projection"] = project(parts, a, shape, n_params)
    summary["complete"] = True
    print(save(summary))
    print_table(summary["projection"])


def save(summary: dict[str, Any]) -> str:
    """The summary as JSON, written to $OUT/gpu_paper_check.json when $OUT is set (``complete`` false until the end)."""
    text = json.dumps({"complete": False, **summary}, indent=1, default=str)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu_paper_check.json").write_text(text)
    return text


if __name__ == "__main__":
    main()
