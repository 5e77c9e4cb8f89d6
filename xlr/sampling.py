"""On-policy sampling: N responses per training prompt and language from the current policy.

Each prompt is the target-language instruction as the only user message through the model's chat template
(:func:`xlr.chat.render_prompt`). Generation is batched: prompts are bucketed by token length and several
prompts x N samples share a batch (left padding, KV cache). Output is sharded JSONL per language, written
atomically shard by shard; a rerun skips finished shards, and each shard's sampling is seeded from
(seed, language, shard index), so an interrupted and resumed run writes the same shards as an uninterrupted one.

Backends: ``hf`` (transformers ``generate``; CPU or GPU) and ``vllm`` (when vLLM imports).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlr import faults
from xlr.chat import render_prompt, stop_token_ids
from xlr.runs import atomic_write_jsonl, read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int  # generated tokens before the stop token (all of them when truncated)
    truncated: bool  # hit max_new_tokens without a stop token


@dataclass(frozen=True)
class GenConfig:
    n: int = 1
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    batch_size: int = 16  # sequences per batch (prompts x n)


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts, stable across processes (no Python hash randomisation)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def sample_next(logits: Any, cfg: GenConfig, generator: Any) -> Any:
    """Next tokens from last-position logits: greedy, or temperature / top-k / top-p sampling.

    Sampling draws by inverse CDF (cumsum + searchsorted of one uniform per row). torch.multinomial on CPU draws an
    exponential per vocabulary entry (151,936 for Qwen): measured 40 ms per step at 16 rows here, more than the
    whole matmul work of a decoding step's attention."""
    import torch

    if not cfg.do_sample:
        return logits.argmax(-1)
    scores = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(scores, min(cfg.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < cfg.top_p  # the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p * keep
        u = torch.rand(probs.shape[0], 1, generator=generator).to(probs.device) * sorted_p.sum(-1, keepdim=True)
        pick = torch.searchsorted(sorted_p.cumsum(-1), u).clamp_(max=probs.shape[-1] - 1)
        return order.gather(-1, pick).squeeze(-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator).to(probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


class HFBackend:
    """transformers models, decoded by xlr's own loop: length-bucketed multi-prompt batches, left padding, a KV
    cache, and finished rows dropped from the batch (a batch no longer steps until its longest sample ends).

    Written by hand because transformers' ``generate`` keeps every row of a batch until the last one stops and
    samples with ``torch.multinomial`` (slow over a 152k vocabulary on CPU); its continuous batching
    (``generate_batch``) targets paged attention on GPUs. Greedy output equals ``generate``'s (tested)."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer)

    def _decode_batch(self, prompts: list[list[int]], n: int, cfg: GenConfig, generator: Any) -> list[Generation]:
        """``n`` continuations of each prompt. Each prompt is prefilled ONCE and its KV cache repeated n times
        (the N samples of a prompt share it): prompts of 1,000+ tokens occur in the training data."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in prompts)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in prompts], device=device)
        attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in prompts], device=device)
        pos = (attn.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache()
        stop = torch.tensor(self.stop_ids, device=device)
        n_rows = len(prompts) * n
        alive = list(range(n_rows))  # original row (prompt-major, n per prompt) of each live batch row
        out: list[list[int]] = [[] for _ in range(n_rows)]
        ended = [False] * n_rows
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            if n > 1:
                cache.batch_repeat_interleave(n)
                logits, attn, pos = logits.repeat_interleave(n, 0), attn.repeat_interleave(n, 0), pos.repeat_interleave(n, 0)
            next_pos = pos[:, -1:] + 1
            for _ in range(cfg.max_new_tokens):
                tok = sample_next(logits, cfg, generator)
                is_stop = torch.isin(tok, stop)
                toks = tok.tolist()
                keep = []
                for j, (row, t, s) in enumerate(zip(alive, toks, is_stop.tolist(), strict=True)):
                    if s:
                        ended[row] = True
                    else:
                        out[row].append(t)
                        keep.append(j)
                if not keep or len(out[alive[keep[0]]]) >= cfg.max_new_tokens:
                    break
                if len(keep) < len(alive):
                    idx = torch.tensor(keep, device=device)
                    cache.batch_select_indices(idx)
                    attn, next_pos, tok = attn[idx], next_pos[idx], tok[idx]
                    alive = [alive[j] for j in keep]
                attn = torch.cat([attn, attn.new_ones(len(alive), 1)], dim=-1)
                logits = self.model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                next_pos = next_pos + 1
        return [Generation(self.tokenizer.decode(o, skip_special_tokens=True).strip(), len(o), not e) for o, e in zip(out, ended, strict=True)]

    def generate(self, prompts: Sequence[str], cfg: GenConfig, seed: int | None = None, progress: Callable[[int], None] | None = None) -> list[list[Generation]]:
        """``cfg.n`` generations per rendered prompt, in the order of ``prompts``."""
        import torch

        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_batch = max(1, cfg.batch_size // cfg.n)
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.initial_seed() & 0x7FFFFFFF)
        out: list[list[Generation]] = [[] for _ in prompts]
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            gens = self._decode_batch([encoded[i] for i in idx], cfg.n, cfg, generator)
            for j, i in enumerate(idx):
                out[i] = gens[j * cfg.n : (j + 1) * cfg.n]
            if progress:
                progress(len(idx))
        return out


class VLLMBackend:
    """vLLM (``SamplingParams(n=N)``; ``best_of``/``use_beam_search`` are not used: removed in current vLLM)."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer: Any, dtype: str = "auto", seed: int = 0):
        from vllm import LLM  # noqa: PLC0415 - optional dependency

        self.llm = LLM(model=model_path, dtype=dtype, seed=seed)
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer)

    def generate(self, prompts: Sequence[str], cfg: GenConfig, seed: int | None = None, progress: Callable[[int], None] | None = None) -> list[list[Generation]]:
        from vllm import SamplingParams  # noqa: PLC0415

        sp = SamplingParams(
            n=cfg.n, temperature=cfg.temperature if cfg.do_sample else 0.0, top_p=cfg.top_p if cfg.do_sample else 1.0,
            top_k=(cfg.top_k or -1) if cfg.do_sample else -1, max_tokens=cfg.max_new_tokens, seed=seed, stop_token_ids=self.stop_ids,
        )
        results = self.llm.generate(list(prompts), sp, use_tqdm=False)
        if progress:
            progress(len(prompts))
        return [[Generation(o.text.strip(), len([t for t in o.token_ids if t not in self.stop_ids]), o.finish_reason == "length") for o in r.outputs] for r in results]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# ----------------------------------------------------------------------------------------------------------------
# sharded, resumable sampling of one language


def shard_paths(out_dir: Path, n_prompts: int, shard_size: int) -> list[Path]:
    return [out_dir / f"shard-{k:05d}.jsonl" for k in range((n_prompts + shard_size - 1) // shard_size)]


def _shard_complete(path: Path, expected_rows: int) -> bool:
    if not path.is_file():
        return False
    try:
        return len(read_jsonl(path)) == expected_rows
    except ValueError:
        return False


def sample_language(
    backend: Any,
    rows: Sequence[dict[str, Any]],
    lang: str,
    out_dir: Path,
    cfg: GenConfig,
    seed: int,
    shard_size: int,
    on_shard_written: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Sample ``cfg.n`` responses for each row (``instruction_id``, ``instruction``) into shards under ``out_dir``.

    Returns counts: shards written and skipped (already complete), samples, truncated samples, empty responses.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = shard_paths(out_dir, len(rows), shard_size)
    counts = {"shards_written": 0, "shards_skipped": 0}
    with tqdm(total=len(rows), desc=f"sampling {lang}", unit="prompt") as bar:
        for k, path in enumerate(paths):
            chunk = rows[k * shard_size : (k + 1) * shard_size]
            if _shard_complete(path, len(chunk) * cfg.n):
                counts["shards_skipped"] += 1
                bar.update(len(chunk))
                continue
            prompts = [render_prompt(backend.tokenizer, r["instruction"]) for r in chunk]
            gens = backend.generate(prompts, cfg, seed=derive_seed(seed, lang, k), progress=bar.update)
            records = [
                {"id": r["instruction_id"], "lang": lang, "sample_idx": s, "prompt": r["instruction"], "response": g.text, "n_tokens": g.n_tokens, "truncated": g.truncated}
                for r, gs in zip(chunk, gens, strict=True)
                for s, g in enumerate(gs)
            ]
            atomic_write_jsonl(path, records)
            faults.point("shard")
            counts["shards_written"] += 1
            if on_shard_written:
                on_shard_written(k)
    samples = [r for p in paths for r in read_jsonl(p)]
    counts.update(samples=len(samples), truncated=sum(r["truncated"] for r in samples), empty=sum(not r["response"] for r in samples),
                  mean_tokens=round(sum(r["n_tokens"] for r in samples) / max(len(samples), 1), 1))
    return counts


def load_samples(out_dir: Path) -> list[dict[str, Any]]:
    return [r for p in sorted(out_dir.glob("shard-*.jsonl")) for r in read_jsonl(p)]
