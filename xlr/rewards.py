"""The implicit cross-lingual reward.

For a sample y of the target-language prompt with instruction_id i, the reward prompt is, by variant:

- ``R_c`` (the paper's method): G(x) = "Please answer the following instruction using only {L}, unless explicitly
  instructed to respond in a different language.\\n\\n" + x, with x the ENGLISH instruction with the same id
  (English itself: x alone);
- ``R_m``: the target-language instruction itself, no prefix;
- ``R_t``: pi0 translates y into English, and the translation is scored under the plain English instruction x. The
  default style ``reference`` is the reference implementation's: its tagged prompt, the assistant's answer primed with
  ``<translated>``, greedy decoding up to 8192 new tokens, the translation taken by its pattern (see
  :func:`extract_translation`), and English samples skipped (no R_t reward, hence no English pairs). Style ``plain``
  is xlr's earlier R_t (a one-line request, no primer, the whole generation kept, English scored untranslated).

r = log pi0(y | prompt) - log pi_ref(y | prompt), each log-probability a SUM over the response tokens (no beta,
no length normalisation), as the reference implementation ranks.

Also here: the annotation of samples across several processes (:func:`annotate_sharded`, on :mod:`xlr.distributed`'s
collectives) and the reward accuracy of an implicit reward on labelled pairs (:func:`reward_accuracy`, the anchor's
held-out check).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xlr import distributed, faults
from xlr.chat import end_of_turn, render_prompt
from xlr.errors import XlrError
from xlr.languages import language_name

if TYPE_CHECKING:
    from xlr.config import RewardParams

log = logging.getLogger(__name__)

G_PREFIX = (
    "Please answer the following instruction using only {language}, unless explicitly instructed to respond in a different language.\n\n"
)
# R_t, style "plain" (xlr's earlier R_t): the source language named, no tags
TRANSLATE_PROMPT = "Translate the following {language} text into English. Output only the translation.\n\n{text}"
# R_t, style "reference": the reference's TRANS_INSTRUCTION (utils/trans_prompts.py), its target language always English
REFERENCE_TRANSLATE_PROMPT = (
    "Please translate the following sentences into {lang}. The input sentences are wrapped by <sentence> and </sentence>:\n\n"
    "<sentence>\n{text}\n</sentence>\n\n"
    "The translated result should be wrapped by <translated> and </translated>.\n"
)
TRANSLATION_PRIMER = "<translated>\n"  # the reference's PRIMER (utils/translate.py): the start of the assistant's answer, pre-filled
TRANSLATION_ERROR = "Translation Error"  # what the reference scores when nothing is left to extract (utils/batch_translate.py)
RT_MAX_NEW_TOKENS = 8192  # the reference's cap on a translation (scripts/batch_translate.sh --max_tokens)
RT_STYLES = ("reference", "plain")
MAX_BATCH = 64  # rows per scoring batch at most, whatever batch_tokens allows (score_models, and the shard plan of annotate_sharded)
_TRANSLATED = re.compile(r"<translated>(.*?)</translated>", re.DOTALL)


class RewardError(XlrError, ValueError):
    pass


def cross_lingual_prompt(instruction_en: str, lang: str, names: dict[str, str] | None = None) -> str:
    """G(x): the English instruction, prefixed (for any language but English) with the request to answer in it."""
    if lang == "en":
        return instruction_en
    return G_PREFIX.format(language=language_name(lang, names)) + instruction_en


def reward_prompt(variant: str, lang: str, instruction: str, instruction_en: str, names: dict[str, str] | None = None) -> str:
    if variant == "R_c":
        return cross_lingual_prompt(instruction_en, lang, names)
    if variant == "R_m":
        return instruction
    if variant == "R_t":  # the plain English instruction, no prefix (reference: compute_reward_score.py, translateToEn_rewarding)
        return instruction_en
    raise RewardError(f"unknown reward variant {variant!r}: use R_c, R_m or R_t")


# ----------------------------------------------------------------------------------------------------------------
# sequence log-probabilities


def encode_pairs(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[list[int], int]]:
    """(input ids, prompt length) per pair. Convention:
    prompt_ids = tokenizer(apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
    add_generation_prompt=True), add_special_tokens=False); completion_ids = tokenizer(response + END_OF_TURN,
    add_special_tokens=False). Prompt tokenisation is cached: N samples share one prompt."""
    eot = end_of_turn(tokenizer)
    cache: dict[str, list[int]] = {}
    out = []
    for p, r in zip(prompts, responses, strict=True):
        if p not in cache:
            cache[p] = tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        comp = tokenizer(r + eot, add_special_tokens=False)["input_ids"]
        out.append((cache[p] + comp, len(cache[p])))
    return out


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = MAX_BATCH) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first) whose padded size fits ``batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * width > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _score_positions(prompt_len: int, total: int, parity: str | None) -> tuple[int, int]:
    """[start, end) of hidden positions whose next-token prediction is scored.

    Correct alignment: hidden positions P-1 .. P+C-2 predict the completion tokens P .. P+C-1.
    parity='icr' (the reference code): the mask is applied to input positions of the response text (P .. P+C-2,
    end-of-turn excluded), so the first response token is not scored and the final end-of-turn token is."""
    if parity == "icr":
        return prompt_len, total - 1
    return prompt_len - 1, total - 1


def _head_weight(head: Any, fp32: bool) -> tuple[Any, Any]:
    """The LM head's weight/bias, in fp32 when asked; the fp32 copy is made once per model, not per batch."""
    import torch

    w, b = head.weight, getattr(head, "bias", None)
    if not fp32 or w.dtype == torch.float32:
        return w, b
    cached = getattr(head, "_xlr_fp32", None)
    if cached is None or cached[0] != (w.data_ptr(), w._version):
        cached = ((w.data_ptr(), w._version), w.float(), None if b is None else b.float())
        head._xlr_fp32 = cached
    return cached[1], cached[2]


def _forward_scores(
    model: Any,
    input_ids: Any,
    attention: Any,
    spans: list[tuple[int, int]],
    fp32_head: bool,
    chunk: int = 1024,
    work: Callable[[int], None] | None = None,
) -> Any:
    """Sum of log p(next token) over each row's span of hidden positions, computing the LM head only there.

    log p = logit[target] - logsumexp(logits), in fp32 (the head matmul itself in fp32 only when ``fp32_head``).
    ``work``: the pass's real tokens (padding not counted), reported as it runs (:func:`xlr.sampling.reporting_layers`)."""
    import torch

    from xlr.sampling import reporting_layers

    device = input_ids.device
    lens = torch.tensor([e - s for s, e in spans], device=device)
    rows_t = torch.repeat_interleave(torch.arange(len(spans), device=device), lens)
    starts = torch.tensor([s for s, _ in spans], device=device)
    offsets = torch.arange(int(lens.sum()), device=device) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
    cols_t = torch.repeat_interleave(starts, lens) + offsets
    targets = input_ids[rows_t, cols_t + 1]
    sums = torch.zeros(len(spans), dtype=torch.float64, device=device)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings()
    with reporting_layers(decoder, work, int(attention.sum()) if work else 0):
        if decoder is None or head is None:  # no separable decoder: full logits
            logits = model(input_ids=input_ids, attention_mask=attention).logits[rows_t, cols_t].float()
            lp = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
            return sums.index_add_(0, rows_t, lp.double())
        hidden = decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state[rows_t, cols_t]
        return _head_sums(head, hidden, targets, rows_t, sums, fp32_head, chunk)


def _head_sums(head: Any, hidden: Any, targets: Any, rows: Any, sums: Any, fp32_head: bool, chunk: int) -> Any:
    """Adds log p(target) at each scored position to its row's sum, the LM head run over ``chunk`` positions at a time."""
    import torch

    weight, bias = _head_weight(head, fp32_head)
    for k in range(0, hidden.shape[0], chunk):
        logits = torch.nn.functional.linear(hidden[k : k + chunk].to(weight.dtype), weight, bias).float()
        # cross_entropy = logsumexp - logit[target], fused (faster than gather + logsumexp: bench/RESULTS.md, Reward annotation)
        lp = -torch.nn.functional.cross_entropy(logits, targets[k : k + chunk], reduction="none")
        sums.index_add_(0, rows[k : k + chunk], lp.double())
    return sums


def _shared_prompt_scores(
    model: Any,
    prompt_ids: list[int],
    completions: list[list[int]],
    fp32_head: bool,
    parity: str | None,
    pad: int,
    chunk: int = 1024,
    work: Callable[[int], None] | None = None,
) -> Any:
    """Sum of log p(completion | prompt) for several completions of ONE prompt: the prompt is run once, its KV cache
    repeated for every completion, and only the completions are run again (the N samples of a prompt share it).
    ``work`` gets the tokens of each of the two forward passes (the prompt's, then the completions') as they run
    (:func:`xlr.sampling.reporting_layers`).

    Positions scored as :func:`_score_positions`: correct alignment scores every completion token, the first one
    from the prompt's last hidden state; parity='icr' skips the first completion token."""
    import torch
    from transformers import DynamicCache

    from xlr.sampling import reporting_layers

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = next(model.parameters()).device
    n, p_len = len(completions), len(prompt_ids)
    cache = DynamicCache()
    with reporting_layers(decoder, work, p_len):
        pre = decoder(input_ids=torch.tensor([prompt_ids], device=device), cache=cache, use_cache=True)
    cache.batch_repeat_interleave(n)
    width = max(len(c) for c in completions)
    ids = torch.tensor([c + [pad] * (width - len(c)) for c in completions], device=device)
    attn = torch.tensor([[1] * (p_len + len(c)) + [0] * (width - len(c)) for c in completions], device=device)
    pos = torch.arange(p_len, p_len + width, device=device).expand(n, -1)
    with reporting_layers(decoder, work, sum(len(c) for c in completions)):
        out = decoder(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True).last_hidden_state
        # hidden state that predicts completion token j: the prompt's last position for j = 0, else completion position j - 1
        hidden = torch.cat([pre.last_hidden_state[:, -1:].expand(n, -1, -1), out[:, :-1]], dim=1)  # [n, width, d]
        first = 1 if parity == "icr" else 0
        rows = torch.repeat_interleave(torch.arange(n, device=device), torch.tensor([len(c) - first for c in completions], device=device))
        cols = torch.cat([torch.arange(first, len(c), device=device) for c in completions])
        zeros = torch.zeros(n, dtype=torch.float64, device=device)
        return _head_sums(head, hidden[rows, cols], ids[rows, cols], rows, zeros, fp32_head, chunk)


def score_plan(
    enc: Sequence[tuple[list[int], int]], models: Sequence[Any], batch_tokens: int, max_batch: int = MAX_BATCH, share_prompts: bool = True
) -> tuple[dict[tuple[int, ...], list[int]], list[list[int]]]:
    """How :func:`score_models` scores encoded pairs (:func:`encode_pairs`): the groups of two or more pairs sharing a
    prompt (prompt ids -> indices; scored together from one run of the prompt, when ``share_prompts`` and every model
    has a separable decoder and head), and the length batches of the rest (:func:`length_batches`). A pair's numbers
    depend only on its unit (group or batch): :func:`scoring_units` shards by these units."""
    groups: dict[tuple[int, ...], list[int]] = {}
    if share_prompts and all(hasattr(m, "get_decoder") and m.get_output_embeddings() is not None for m in models):
        for i, (ids, p_len) in enumerate(enc):
            groups.setdefault(tuple(ids[:p_len]), []).append(i)
        groups = {k: v for k, v in groups.items() if len(v) > 1}
    shared = {i for idx in groups.values() for i in idx}
    rest = [i for i in range(len(enc)) if i not in shared]
    return groups, [[rest[j] for j in b] for b in length_batches([len(enc[i][0]) for i in rest], batch_tokens, max_batch)]


def _plan_work(
    enc: Sequence[tuple[list[int], int]], groups: dict[tuple[int, ...], list[int]], batches: list[list[int]], max_batch: int
) -> int:
    """Tokens one model runs through its forward passes for :func:`score_plan`'s plan: each part (at most ``max_batch``
    rows) of a prompt group, its prompt once and its completions; each length batch, its pairs (padding not counted)."""
    total = 0
    for key, idx in groups.items():
        for k in range(0, len(idx), max_batch):
            total += len(key) + sum(len(enc[i][0]) - len(key) for i in idx[k : k + max_batch])
    return total + sum(len(enc[i][0]) for b in batches for i in b)


def score_work(
    models: Sequence[Any],
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_tokens: int = 2048,
    max_batch: int = MAX_BATCH,
    share_prompts: bool = True,
) -> int:
    """The tokens :func:`score_models` (same arguments) runs through all ``models``: the total of a
    :class:`xlr.sampling.Progress` bar to which it reports each forward pass, when that bar spans several calls."""
    enc = encode_pairs(tokenizer, prompts, responses)
    groups, batches = score_plan(enc, models, batch_tokens, max_batch, share_prompts)
    return len(models) * _plan_work(enc, groups, batches, max_batch)


def score_models(
    models: Sequence[Any],
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_tokens: int = 2048,
    parity: str | None = None,
    fp32_head: bool | None = None,
    progress: Callable[[int], None] | None = None,
    max_batch: int = MAX_BATCH,
    share_prompts: bool = True,
) -> list[list[float]]:
    """Sequence log-probs of each pair under each model, in one sweep (the batch tensors are built once and fed to
    every model). Returns one list per model.

    ``share_prompts``: responses that share a prompt (the N samples of a prompt; chosen and rejected of a pair) are
    scored together from one run of the prompt (:func:`_shared_prompt_scores`); the rest go in length-bucketed
    batches under ``batch_tokens``. ``fp32_head``: run the LM head matmul in fp32 (default: only when the model
    itself is fp32). The logsumexp is always fp32.

    ``progress(k)``: k more pairs scored by every model (after each group part or batch). A
    :class:`xlr.sampling.Progress` bar (``work``/``expect`` methods) also gets the tokens of every forward pass of
    every model, its total declared up front (:func:`score_work`): it moves at every pass and, within a pass, as each
    decoder layer ends (:func:`xlr.sampling.reporting_layers`), however many models and rows the pass holds (a group
    part of up to ``max_batch`` completions, or a length batch of up to ``batch_tokens`` tokens, is one pass)."""
    import torch

    if parity not in (None, "none", "icr"):
        raise RewardError(f"parity={parity!r}: use None or 'icr'")
    parity = None if parity == "none" else parity
    enc = encode_pairs(tokenizer, prompts, responses)
    results = [[math.nan] * len(enc) for _ in models]
    pad = tokenizer.pad_token_id
    device = next(models[0].parameters()).device
    groups, batches = score_plan(enc, models, batch_tokens, max_batch, share_prompts)
    work, expect = getattr(progress, "work", None), getattr(progress, "expect", None)
    if expect:
        expect(len(models) * _plan_work(enc, groups, batches, max_batch), len(enc))
    for prompt_ids, idx in groups.items():  # a group's rows scored at once; a group larger than max_batch is split
        for k in range(0, len(idx), max_batch):
            part = idx[k : k + max_batch]
            completions = [enc[i][0][len(prompt_ids) :] for i in part]
            with torch.no_grad():
                for m, model in enumerate(models):
                    sums = _shared_prompt_scores(model, list(prompt_ids), completions, bool(fp32_head), parity, pad, work=work).tolist()
                    for j, i in enumerate(part):
                        results[m][i] = sums[j]
            if progress:
                progress(len(part))
            faults.point("batch")
    for idx in batches:
        width = max(len(enc[i][0]) for i in idx)
        ids = torch.tensor([enc[i][0] + [pad] * (width - len(enc[i][0])) for i in idx], device=device)
        attn = torch.tensor([[1] * len(enc[i][0]) + [0] * (width - len(enc[i][0])) for i in idx], device=device)
        spans = [_score_positions(enc[i][1], len(enc[i][0]), parity) for i in idx]
        with torch.no_grad():
            for m, model in enumerate(models):
                sums = _forward_scores(model, ids, attn, spans, bool(fp32_head), work=work).tolist()
                for j, i in enumerate(idx):
                    results[m][i] = sums[j]
        if progress:
            progress(len(idx))
        faults.point("batch")
    for m, res in enumerate(results):
        bad = [i for i, v in enumerate(res) if not math.isfinite(v)]
        if bad:
            raise RewardError(
                f"model {m}: non-finite log-probability for {len(bad)} pair(s), e.g. index {bad[0]} (prompt {prompts[bad[0]][:60]!r}). "
                "Fix: score in fp32 (reward.dtype: fp32), or check the model's weights."
            )
    return results


def sequence_logprobs(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8, parity: str | None = None
) -> list[float]:
    """log p(response | prompt) summed over response tokens, for raw user-message prompts.

    Convention: prompt_ids = tokenizer(apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
    add_generation_prompt=True), add_special_tokens=False); completion_ids = tokenizer(response + END_OF_TURN,
    add_special_tokens=False), END_OF_TURN being the token the chat template closes an assistant turn with
    (``<|im_end|>`` for ChatML models such as Qwen and SmolLM2, ``<|eot_id|>`` for Llama 3). The sum runs over
    completion_ids. ``parity="icr"`` reproduces the reference code's masking (first response token not scored,
    final end-of-turn scored); the default is the correct alignment. The LM head and log-softmax run in fp32.
    """
    return score_models([model], tokenizer, prompts, responses, batch_tokens=1 << 40, parity=parity, max_batch=batch_size)[0]


# ----------------------------------------------------------------------------------------------------------------
# annotation of samples


def translation_message(text: str, lang: str, style: str = "reference", names: dict[str, str] | None = None) -> str:
    """The user message asking pi0 to translate ``text`` (a sample in ``lang``) into English, in the R_t ``style``:
    ``reference``: the reference's tagged request (it names only the target language, so ``lang`` is not used);
    ``plain``: xlr's earlier one-line request naming the source language."""
    if style == "reference":
        return REFERENCE_TRANSLATE_PROMPT.format(lang="English", text=text)
    if style == "plain":
        return TRANSLATE_PROMPT.format(language=language_name(lang, names), text=text)
    raise RewardError(f"R_t style {style!r}: use one of {', '.join(RT_STYLES)} (reward.rt_style)")


def translation_generation_prompt(
    tokenizer: Any, text: str, lang: str, style: str = "reference", names: dict[str, str] | None = None
) -> str:
    """The string pi0 continues: the translation request through the chat template, plus (style ``reference``) the
    primer ``<translated>\\n`` as the start of the assistant's answer (reference: utils/translate.py get_llm_request)."""
    prompt = render_prompt(tokenizer, translation_message(text, lang, style, names))
    return prompt + TRANSLATION_PRIMER if style == "reference" else prompt


def extract_translation(generated: str) -> tuple[str, str]:
    """(translation, status) from pi0's continuation of the primed prompt, as the reference extracts it
    (utils/batch_translate.py, after utils/translate.py put the primer back in front of the stripped output):

    - ``tagged``: the text between the primer and the first ``</translated>``, stripped;
    - ``tagged_empty``: the same, but nothing between the tags (the empty string is scored, as in the reference);
    - ``untagged``: no closing tag (e.g. cut at the cap): the whole output, stripped;
    - ``error``: no output at all: the reference's placeholder ``Translation Error`` is scored.
    """
    full = TRANSLATION_PRIMER + generated.strip()
    m = _TRANSLATED.search(full)
    if m:
        text = m.group(1).strip()
        return text, "tagged" if text else "tagged_empty"
    # no match: the reference strips the leading tag (always the primer here) and a trailing closing tag (impossible
    # once the search failed); what is left is the translation, or the placeholder when nothing is
    rest = full.strip().removeprefix("<translated>").strip()
    return (rest, "untagged") if rest else (TRANSLATION_ERROR, "error")


TRANSLATION_STATUSES = {"reference": ("tagged", "tagged_empty", "untagged", "error"), "plain": ("plain", "english_untranslated")}


@dataclass(frozen=True)
class Translations:
    """R_t translations, in the order of the texts: what is scored (``texts``), how it was obtained (``status``: see
    :func:`extract_translation`; ``plain`` for the plain style's generations, ``english_untranslated`` for English
    texts the plain style passes through), whether pi0 hit the cap (``truncated``) and its new tokens (``n_tokens``)."""

    style: str
    max_new_tokens: int
    texts: list[str]
    status: list[str]
    truncated: list[bool]
    n_tokens: list[int]

    @property
    def counts(self) -> dict[str, Any]:
        """style, cap, texts, one count per status of the style (zeros included) and truncated."""
        return _status_counts(self.style, self.max_new_tokens, self.status, self.truncated)


def _status_counts(style: str, max_new_tokens: int, status: Sequence[str], truncated: Sequence[bool]) -> dict[str, Any]:
    by = Counter(status)
    known = TRANSLATION_STATUSES[style]
    return {
        "style": style,
        "max_new_tokens": max_new_tokens,
        "texts": len(status),
        **{k: by.get(k, 0) for k in known},
        **{k: v for k, v in by.items() if k not in known},
        "truncated": sum(bool(t) for t in truncated),
    }


def translation_counts(rows: Sequence[dict[str, Any]], style: str, max_new_tokens: int, skipped_english: int = 0) -> dict[str, Any]:
    """``counts["r_t"]`` of :func:`annotate` recomputed from its R_t rows (e.g. rows gathered from several processes,
    each of which annotated a share): the translation counts and ``skipped_english``."""
    status = [r["translation_status"] for r in rows]
    return {**_status_counts(style, max_new_tokens, status, [r["translation_truncated"] for r in rows]), "skipped_english": skipped_english}


def translate_to_english(
    backend: Any,
    texts: Sequence[str],
    langs: Sequence[str],
    max_new_tokens: int = RT_MAX_NEW_TOKENS,
    names: dict[str, str] | None = None,
    batch_size: int = 16,
    style: str = "reference",
    progress: Callable[[int], None] | None = None,
) -> Translations:
    """pi0 (``backend``: a generation backend of :mod:`xlr.sampling`) translates each text into English: greedy, one
    generation, at most ``max_new_tokens`` new tokens, stopping at the end of turn (reference: scripts/batch_translate.sh,
    temperature 0, top_p 1, --max_tokens 8192).

    ``reference`` style: every text is translated (the caller decides what to skip: :func:`annotate` leaves English
    out) and the translation extracted by :func:`extract_translation`. ``plain`` style: English texts are returned
    untranslated and the others' whole generation is the translation. ``progress`` is passed to the backend's generate
    (the texts of one prompt are generated once, so it counts distinct prompts); a :class:`xlr.sampling.Progress`
    made without a total is first told the budget, distinct prompts x ``max_new_tokens``, and moves at every
    decoding step."""
    from xlr.sampling import GenConfig

    if style not in RT_STYLES:
        raise RewardError(f"R_t style {style!r}: use one of {', '.join(RT_STYLES)} (reward.rt_style)")
    if len(texts) != len(langs):
        raise RewardError(f"translate_to_english: {len(texts)} texts but {len(langs)} languages")
    todo = [i for i, lg in enumerate(langs) if style == "reference" or lg != "en"]
    prompts = [translation_generation_prompt(backend.tokenizer, texts[i], langs[i], style, names) for i in todo]
    unique = list(dict.fromkeys(prompts))  # greedy: equal prompts (the same text) give equal translations, generated once
    expect = getattr(progress, "expect", None)
    if expect:
        expect(len(unique) * max_new_tokens, len(unique))
    gens = (
        backend.generate(unique, GenConfig(n=1, do_sample=False, max_new_tokens=max_new_tokens, batch_size=batch_size), progress=progress)
        if unique
        else []
    )
    by_prompt = {p: g[0] for p, g in zip(unique, gens, strict=True)}
    out, status = list(texts), ["english_untranslated"] * len(texts)
    truncated, n_tokens = [False] * len(texts), [0] * len(texts)
    for i, p in zip(todo, prompts, strict=True):
        g = by_prompt[p]
        out[i], status[i] = extract_translation(g.text) if style == "reference" else (g.text, "plain")
        truncated[i], n_tokens[i] = bool(g.truncated), int(g.n_tokens)
    return Translations(style, max_new_tokens, out, status, truncated, n_tokens)


def annotate(
    samples: Sequence[dict[str, Any]],
    english: dict[str, str],
    policy: Any,
    reference: Any,
    tokenizer: Any,
    reward: RewardParams,
    names: dict[str, str] | None,
    *,
    fp32_head: bool,
    translator: Any = None,
    counts: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Reward rows for samples (``id``, ``lang``, ``sample_idx``, ``prompt``, ``response``, ``n_tokens``), by the
    reward params ``reward`` (variant, batch_tokens, parity, share_prompts, rt_style, rt_max_new_tokens; its dtype
    and models are the caller's: the models come loaded, ``fp32_head`` says whether their LM head runs in fp32).

    ``english`` maps instruction_id -> English instruction; ``names`` extra language names for G(x). Output rows carry
    id, lang, sample_idx, variant, reward_prompt (the exact rendered string), response (as scored; for R_t also
    ``response_original``, ``translation_status`` and ``translation_truncated``), policy_logp, reference_logp, reward,
    n_tokens, len_chars (of the original response).

    R_t: ``translator`` (pi0's generation backend) translates with ``reward.rt_style`` (:func:`translate_to_english`,
    at most ``reward.rt_max_new_tokens`` new tokens). Style ``reference`` gives English samples no R_t reward, as the
    reference (utils/generate_preference_pair.py skips English for translateToEn_rewarding): they have no row, so
    English forms no R_t pairs. ``counts``, when given, receives ``counts["r_t"]``: the translation counts
    (:attr:`Translations.counts`) and ``skipped_english``.

    Bars (:class:`xlr.sampling.Progress`): the translations in token budget, at every decoding step; the scoring in
    tokens through pi0 and pi_ref, at every forward pass and within it (:func:`score_models`); the postfixes count
    texts and samples.
    """
    from xlr.sampling import Progress

    variant, rt_style = reward.variant, reward.rt_style
    missing = sorted({s["id"] for s in samples if s["id"] not in english})
    if missing:
        raise RewardError(f"{len(missing)} sample id(s) have no English instruction (needed for G(x)), e.g. {missing[0]}")
    tr = None
    if variant == "R_t":
        if translator is None:
            raise RewardError("variant R_t needs a translator backend (pi0)")
        if rt_style not in RT_STYLES:
            raise RewardError(f"reward.rt_style {rt_style!r}: use one of {', '.join(RT_STYLES)}")
        n_all = len(samples)
        if rt_style == "reference":
            samples = [s for s in samples if s["lang"] != "en"]
        skipped = n_all - len(samples)
        if skipped:
            log.info("R_t (reference style): %d English sample(s) get no reward and form no pairs, as in the reference", skipped)
        with Progress("rewards R_t: pi0 translates the samples into English", item_unit="texts") as bar:  # budget: translate_to_english's
            tr = translate_to_english(
                translator,
                [s["response"] for s in samples],
                [s["lang"] for s in samples],
                reward.rt_max_new_tokens,
                names,
                style=rt_style,
                progress=bar,
            )
        if counts is not None:
            counts["r_t"] = {**tr.counts, "skipped_english": skipped}
    prompts = [reward_prompt(variant, s["lang"], s["prompt"], english[s["id"]], names) for s in samples]
    scored = tr.texts if tr is not None else [s["response"] for s in samples]
    with Progress(f"rewards {variant}", item_unit="samples") as bar:  # total: score_models declares its tokens
        pol, ref = (
            score_models(
                [policy, reference],
                tokenizer,
                prompts,
                scored,
                batch_tokens=reward.batch_tokens,
                parity=reward.parity,
                fp32_head=fp32_head,
                progress=bar,
                share_prompts=reward.share_prompts,
            )
            if samples
            else ([], [])
        )
    rows = []
    for k, (s, p, y, lp, lr) in enumerate(zip(samples, prompts, scored, pol, ref, strict=True)):
        row = {
            "id": s["id"],
            "lang": s["lang"],
            "sample_idx": s["sample_idx"],
            "variant": variant,
            "reward_prompt": render_prompt(tokenizer, p),
            "response": y,
            "policy_logp": lp,
            "reference_logp": lr,
            "reward": lp - lr,
            "n_tokens": s.get("n_tokens"),
            "len_chars": len(s["response"]),
        }
        if tr is not None:
            row.update(response_original=s["response"], translation_status=tr.status[k], translation_truncated=tr.truncated[k])
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# annotation across ranks (several processes under accelerate launch / torchrun: xlr.distributed)


def scoring_units(
    samples: Sequence[dict[str, Any]],
    english: dict[str, str],
    tokenizer: Any,
    models: Sequence[Any],
    reward: RewardParams,
    names: dict[str, str] | None,
) -> tuple[list[list[int]], list[int]]:
    """The samples (by index) cut into units that :func:`score_models` scores the same way whichever other units are
    in the same call, and each unit's token count, for :func:`annotate` with the same ``reward`` params (variant,
    batch_tokens, share_prompts). A unit is either every sample of one reward prompt (shared-prompt scoring runs them
    alone, from one run of the prompt) or one of the length batches of ALL the remaining samples: both from
    :func:`score_plan`, score_models' own plan. Its greedy packing closes a batch by its own size and first width
    only, so a shard made of whole batches is packed into exactly those again.

    For ``R_t`` the scored text is pi0's translation, known only after translating, so its units are the prompt groups
    and single samples (costed by the original response): prompt groups stay whole, the batches of single samples do
    not follow the global ones."""
    missing = sorted({s["id"] for s in samples if s["id"] not in english})
    if missing:
        raise RewardError(f"{len(missing)} sample id(s) have no English instruction (needed for G(x)), e.g. {missing[0]}")
    prompts = [reward_prompt(reward.variant, s["lang"], s["prompt"], english[s["id"]], names) for s in samples]
    enc = encode_pairs(tokenizer, prompts, [s["response"] for s in samples])
    groups, batches = score_plan(enc, models, reward.batch_tokens, MAX_BATCH, reward.share_prompts)  # score_models' own plan
    units = list(groups.values())
    costs = [len(key) + sum(len(enc[i][0]) - len(key) for i in idx) for key, idx in groups.items()]
    if reward.variant == "R_t":  # the scored texts are the translations: the batches of single samples follow the shard
        batches = [[i] for b in batches for i in b]
    units += batches
    costs += [sum(len(enc[i][0]) for i in b) for b in batches]
    return units, costs


def _digest(obj: Any) -> str:
    return hashlib.sha256(repr(obj).encode("utf-8")).hexdigest()


def annotate_sharded(
    samples: Sequence[dict[str, Any]],
    english: dict[str, str],
    policy: Any,
    reference: Any,
    tokenizer: Any,
    reward: RewardParams,
    names: dict[str, str] | None,
    *,
    fp32_head: bool,
    translator: Any = None,
) -> list[dict[str, Any]] | None:
    """:func:`annotate` with the samples split across the ranks; call it on EVERY rank (a collective), each with the
    same samples and its own copy of the models. Returns all rows, in the order of ``samples``, on the main process
    and None on the others; in a single process it is ``annotate`` itself.

    The split is by :func:`scoring_units` (prompt groups and global length batches kept whole), balanced by tokens
    (:func:`xlr.distributed.shard_units`), so each sample is scored in the same batch as in one process and the rows
    are the same numbers (R_t excepted: its translations and single-sample batches follow the shard). The ranks check
    first that they hold the same samples and plan, and refuse otherwise."""
    _, size, _ = distributed.world()
    if size <= 1:
        return annotate(samples, english, policy, reference, tokenizer, reward, names, fp32_head=fp32_head, translator=translator)
    distributed.init()
    rank = distributed.world()[0]
    units, costs = scoring_units(samples, english, tokenizer, (policy, reference), reward, names)
    shards = [sorted(i for u in plan for i in units[u]) for plan in distributed.shard_units(costs, size)]
    mine = shards[rank]
    check = (len(samples), _digest([(s["id"], s["lang"], s["sample_idx"], s["response"]) for s in samples]), _digest(shards))
    seen = distributed.all_gather_object(check)
    if any(c != seen[0] for c in seen):
        raise distributed.DistributedError(
            f"the ranks hold different samples or shard plans (samples per rank: {[c[0] for c in seen]}). "
            "Fix: every rank must read the same finished sampling stage; rerun after the sampling stage is done on the main process."
        )
    rows = (
        annotate(
            [samples[i] for i in mine], english, policy, reference, tokenizer, reward, names, fp32_head=fp32_head, translator=translator
        )
        if mine
        else []
    )
    gathered = distributed.gather_object((mine, rows))
    if gathered is None:  # another rank: its rows went to the main process
        return None
    out: list[dict[str, Any] | None] = [None] * len(samples)
    for idx, part in gathered:
        for i, row in zip(idx, part, strict=True):
            out[i] = row
    if any(r is None for r in out):
        raise distributed.DistributedError(
            f"{sum(r is None for r in out)} sample(s) came back from no rank; please report it with the launch command"
        )
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# reward accuracy of an implicit reward on labelled pairs

SCORE_MARGIN_BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, float("inf")))


def reward_accuracy(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    pairs: Sequence[dict[str, Any]],
    *,
    n_boot: int,
    seed: int,
    batch_tokens: int,
    fp32_head: bool | None,
) -> dict[str, Any]:
    """How often the implicit reward log pi/pi_ref prefers the chosen response of held-out English pairs
    (``prompt`` as a user message, ``chosen``, ``rejected`` strings; ties in the labels excluded), with a
    bootstrap CI (``n_boot`` resamples, ``seed``); as baselines, how often each model's log-likelihood alone prefers
    chosen; the accuracy per bin of the labels' rating margin (pairs with ``score_margin``); and ``per_pair`` (row,
    margin, rewards, correct). Scored by :func:`score_models` with the correct alignment and shared prompts (chosen
    and rejected share theirs), ``batch_tokens`` per length batch. The bar counts the tokens through pi0 and pi_ref
    and moves at every forward pass and within it (:func:`score_models`); its postfix counts the responses scored."""
    from xlr.sampling import Progress
    from xlr.stats import bootstrap_ci

    rows = [i for i, p in enumerate(pairs) if not p.get("tie")]
    usable = [pairs[i] for i in rows]
    prompts = [p["prompt"] for p in usable] * 2
    responses = [p["chosen"] for p in usable] + [p["rejected"] for p in usable]
    with Progress("reward accuracy (held-out pairs)", item_unit="responses") as bar:  # total: score_models declares its tokens
        pol, ref = score_models(
            [policy, reference], tokenizer, prompts, responses, batch_tokens=batch_tokens, fp32_head=fp32_head, progress=bar
        )
    n = len(usable)
    r = [pol[i] - ref[i] for i in range(2 * n)]
    correct = [float(r[i] > r[n + i]) for i in range(n)]
    lo, hi = bootstrap_ci(correct, n_boot, seed)
    per_pair = [
        {
            "row": rows[k],
            "score_margin": p.get("score_margin"),
            "reward_chosen": r[k],
            "reward_rejected": r[n + k],
            "correct": bool(correct[k]),
        }
        for k, p in enumerate(usable)
    ]
    return {
        "n": n,
        "ties_excluded": len(pairs) - n,
        "accuracy": float(np.mean(correct)),
        "ci95": [lo, hi],
        "loglik_accuracy_policy": float(np.mean([pol[i] > pol[n + i] for i in range(n)])),
        "loglik_accuracy_reference": float(np.mean([ref[i] > ref[n + i] for i in range(n)])),
        "mean_margin": float(np.mean([r[i] - r[n + i] for i in range(n)])),
        "by_score_margin": accuracy_by_score_margin(per_pair),
        "per_pair": per_pair,
    }


def accuracy_by_score_margin(per_pair: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Accuracy per bin of the labels' rating margin (score_chosen - score_rejected, bins (lo, hi]): low-margin
    labels are close to coin flips, so a reward is judged by how it does where the raters clearly agreed."""
    out = {}
    for lo, hi in SCORE_MARGIN_BINS:
        hits = [q["correct"] for q in per_pair if q["score_margin"] is not None and lo < q["score_margin"] <= hi]
        if hits:
            out[f"({lo:g}, {hi:g}]"] = {"n": len(hits), "accuracy": float(np.mean(hits))}
    return out
