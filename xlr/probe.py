"""The cross-lingual reward probe: the paper's claim tested directly, with pi0 and pi_ref only and no judge.

The paper's premise is that the English implicit reward r = Σ log pi0(y|G(x)) − Σ log pi_ref(y|G(x)) still ranks
answers when the answers are in another language. The probe asks pi0 and pi_ref (nothing is generated, except R_t's
translations) three questions on X-AlpacaEval instructions, per training language L and reward variant:

- ``language`` (L ≠ en): under the reward prompt for L, GPT-4-turbo's answer in L (a) against its answer to the same
  instruction in English (b). The fraction of instructions where a gets the higher score: does the reward prefer the
  answer in the language asked for?
- ``quality``: GPT-4-turbo's answer (a, the stronger model) against ``probe.weaker_generator``'s (b, gpt-3.5-turbo-0125,
  shipped outputs) to the same instruction in L; English is the same test for L = en. The fraction where the stronger
  model wins, and its transfer from English: ``transfer_ratio`` = acc_L / acc_en and ``transfer_excess`` =
  (acc_L − 0.5) / (acc_en − 0.5) (the share of English's above-chance accuracy kept in L; undefined when
  acc_en ≤ 0.5: there is no English signal to transfer). Both are computed on the instructions present in both
  languages, with a CI from the same bootstrap over instructions (paired: one resample for both languages).
- ``english_labels`` (en only): AlpacaEval 2's own GPT-4-turbo verdicts (``probe.english_label_files``) on
  (output_1, output_2) pairs of the selected instructions, clear verdicts only (|preference − 1.5| ≥
  ``probe.clear_margin``), balanced (as many output_1 as output_2 wins, seeded draw); a = the preferred output. The CI
  resamples instructions (a cluster bootstrap when several files give pairs of one instruction).

Scores per variant (the prompts of :func:`xlr.rewards.reward_prompt`, the log-probs of :func:`xlr.rewards.score_models`):
``R_c`` scores both answers under G(x) = the language prefix for L + the English instruction (English: x alone);
``R_m`` under the instruction in L; ``R_t`` translates both answers into English with pi0 as training does
(:func:`xlr.rewards.translate_to_english` in ``reward.rt_style``, greedy, at most ``probe.translate_max_new_tokens``
new tokens, default ``reward.rt_max_new_tokens``) and scores the translations under the plain English instruction.
As in training, where every sample of language L goes through the translation prompt whatever language it is in,
the English answer of the language test is translated too (style ``reference``: with the same prompt as any
answer, as that prompt names only the target language; ``plain``: "from L"). English answers are not translated: the
reference gives English no R_t reward at all (its training skips English for R_t); the probe scores them under the
English instruction as they are, so that English stays the transfer baseline of R_t. ``length``: the longer answer
(characters of the original answer) wins; the baseline any reward should beat. In English the three variants
coincide (same prompt, no translation): their English rows are equal by construction.

A win is 1 when score(a) > score(b), 0.5 on an exact tie, else 0; the fraction is the mean win; 95% CIs are
percentile bootstraps over instructions (``probe.bootstrap`` resamples, seed ``params.seed``). Paired comparisons
of two variants on the same items: the difference of fractions, its paired bootstrap CI and a sign-flip permutation
p-value (:func:`xlr.stats.paired_difference`). The paper's Fig. 3 ordering R_c > R_m > R_t is reported as a
hypothesis per test and language (``hypotheses``), never assumed.

Artifacts (under ``out_dir``): ``probe.json`` (settings, counts, summary, paired comparisons, hypotheses),
``probe_items.jsonl`` (one row per item and variant: both scores, log-probs, lengths, prompts, translations), and
``cache/`` (scores and translations keyed by model fingerprint, translations also by style and cap: a rerun or an
interrupted run redoes only what is missing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlr.errors import XlrError
from xlr.files import atomic_write_json, atomic_write_jsonl, read_jsonl
from xlr.runtime import resolve_device, scoring_precision

TESTS = ("language", "quality", "english_labels")
LENGTH = "length"
SCORE_CHUNK = 128  # (prompt, answer) pairs per scoring call between cache checkpoints
TRANSLATE_CHUNK = 32  # answers per translation call between cache checkpoints


class ProbeError(XlrError, ValueError):
    """A probe that cannot run as asked; the message names the file or field and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# items


def select_ids(available: Sequence[int], n: int, seed: int) -> list[int]:
    """A seeded subset of ``n`` instruction ids (sorted; all of them when n >= len). For X-AlpacaEval's ids 1..805 it
    is :func:`xlr.data.xalpacaeval_ids` (n, seed)."""
    ids = sorted(available)
    if n >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, n))


def probe_languages(params: Any) -> list[str]:
    """The training languages, English first (the pivot every test needs)."""
    return list(dict.fromkeys(["en", *params.languages.train]))


def build_comparisons(params: Any, data_dir: Any = None) -> tuple[list[dict[str, Any]], dict[str, dict[int, str]], dict[str, Any]]:
    """The probe's comparisons (a = the answer expected to win, b = the other), the instructions per language
    (lang -> id -> instruction) and the counts of what was used and skipped.

    A language without GPT-4-turbo references (or without X-AlpacaEval prompts) is an error naming the file; a language
    without ``probe.weaker_generator``'s outputs is a counted skip of its quality test. Identical a and b are skipped,
    counted per test and language."""
    from xlr import data
    from xlr.paths import data_root

    pp = params.probe
    data_dir = data_dir if data_dir is not None else params.data.data_dir
    root = data_root(data_dir, required=True)
    langs = probe_languages(params)
    en_prompts = data.load_xalpacaeval("en", None, None, root)
    ids = select_ids([int(i) for i in en_prompts["id"]], pp.n_items, params.seed)
    instructions: dict[str, dict[int, str]] = {}
    refs: dict[str, dict[int, str]] = {}
    for lang in langs:
        rows = data.load_xalpacaeval(lang, ids, pp.reference_generator, root)
        instructions[lang] = {int(r["id"]): r["instruction"] for r in rows}
        refs[lang] = {int(r["id"]): r["reference_output"] for r in rows}
    comps: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    skipped_items: Counter = Counter()

    def add(test: str, lang: str, i: int, a: str, b: str, a_src: str, b_src: str, **extra: Any) -> None:
        if a.strip() == b.strip():
            skipped_items[f"{test}/{lang}: identical answers"] += 1
            return
        comps.append({"test": test, "lang": lang, "id": i, "a": a, "b": b, "a_source": a_src, "b_source": b_src, "cluster": i, **extra})

    ref = pp.reference_generator
    if "language" in pp.tests:
        for lang in langs:
            if lang != "en":
                for i in ids:
                    add("language", lang, i, refs[lang][i], refs["en"][i], f"{ref}/{lang}", f"{ref}/en")
    if "quality" in pp.tests:
        weak = pp.weaker_generator
        for lang in langs:
            path = root / data.XAE_OUTPUTS / weak / f"{lang}.json"
            if not path.is_file():
                skipped[f"quality/{lang}"] = f"{path}: no {weak} outputs for '{lang}' (the quality test needs them; other tests still run)"
                continue
            outs = data.load_xalpacaeval_outputs(weak, lang, ids, root)
            for i in ids:
                add("quality", lang, i, refs[lang][i], outs[i], f"{ref}/{lang}", f"{weak}/{lang}")
        if "quality/en" in skipped:
            skipped["quality/transfer"] = "no English quality test: transfer ratios not computed"
    counts: dict[str, Any] = {"instructions": len(ids), "languages": langs}
    if "english_labels" in pp.tests and pp.n_english_label_pairs > 0:
        label_comps, label_counts = english_label_comparisons(params, ids, instructions["en"], root)
        for c in label_comps:
            add("english_labels", "en", c.pop("id"), c.pop("a"), c.pop("b"), c.pop("a_source"), c.pop("b_source"), **c)
        counts["english_labels"] = label_counts
    counts["comparisons"] = dict(Counter(f"{c['test']}/{c['lang']}" for c in comps))
    counts["skipped"] = skipped
    counts["skipped_items"] = dict(skipped_items)
    counts["ids"] = ids
    return comps, instructions, counts


def english_label_comparisons(
    params: Any, ids: Sequence[int], instructions_en: dict[int, str], root: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Balanced clear-verdict pairs of AlpacaEval 2's annotations whose instruction is one of ``ids``: a = the output
    GPT-4-turbo preferred. Half the pairs (rounded down) have output_1 preferred, half output_2; when one class has
    fewer candidates both are cut to it (counted as ``shortfall``)."""
    from xlr import data

    pp = params.probe
    files = data.alpaca_annotation_files(root)
    unknown = [f for f in pp.english_label_files if f not in files]
    if unknown:
        raise ProbeError(
            f"probe.english_label_files: {unknown} not found under {root / data.ALPACA_ANNOTATIONS}; "
            f"shipped: {', '.join(list(files)[:8])}, ... Fix: use names of files there (without .json.gz)."
        )
    by_text = {t.strip(): i for i, t in instructions_en.items()}
    cand: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    counts: dict[str, Any] = {
        "files": list(pp.english_label_files),
        "clear_margin": pp.clear_margin,
        "candidates_in_selected_instructions": 0,
        "not_clear": 0,
        "no_preference": 0,
        "empty_or_identical": 0,
    }
    for name in pp.english_label_files:
        df, _ = data.load_alpaca_annotations(files[name])
        for r in df.itertuples(index=False):
            i = by_text.get(str(r.instruction).strip())
            if i is None:
                continue
            counts["candidates_in_selected_instructions"] += 1
            pref = float(r.preference)
            if not math.isfinite(pref):
                counts["no_preference"] += 1
                continue
            if abs(pref - 1.5) < pp.clear_margin:
                counts["not_clear"] += 1
                continue
            o1, o2 = str(r.output_1), str(r.output_2)
            if not o1.strip() or not o2.strip() or o1.strip() == o2.strip():
                counts["empty_or_identical"] += 1
                continue
            g1, g2 = getattr(r, "generator_1", "output_1"), r.generator_2
            winner = 1 if pref < 1.5 else 2
            a, b, sa, sb = (o1, o2, g1, g2) if winner == 1 else (o2, o1, g2, g1)
            cand[winner].append(
                {
                    "id": i,
                    "a": a,
                    "b": b,
                    "a_source": f"{sa} ({name})",
                    "b_source": f"{sb} ({name})",
                    "preference": pref,
                    "preferred": f"output_{winner}",
                    "annotation_file": name,
                    "record": int(r.record),
                }
            )
    rng = random.Random(params.seed)
    half = pp.n_english_label_pairs // 2
    k = min(half, len(cand[1]), len(cand[2]))
    chosen = []
    for w in (1, 2):
        pool = list(cand[w])
        rng.shuffle(pool)
        chosen += pool[:k]
    counts.update(clear_output_1=len(cand[1]), clear_output_2=len(cand[2]), selected=2 * k, asked=2 * half, shortfall=2 * (half - k))
    chosen.sort(key=lambda c: (c["id"], c["annotation_file"]))
    return chosen, counts


# ----------------------------------------------------------------------------------------------------------------
# caches (resume: scores and translations keyed by model fingerprint)


def _key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


class _Cache:
    """key -> value, persisted as JSONL (atomically rewritten at each checkpoint) in a file named by fingerprint."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {r["k"]: r["v"] for r in read_jsonl(path)} if path.is_file() else {}

    def save(self) -> None:
        atomic_write_jsonl(self.path, ({"k": k, "v": v} for k, v in self.data.items()))


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Models:
    """pi0 and pi_ref, loaded on first use (a rerun with everything cached loads nothing)."""

    def __init__(self, pi0_spec: str, pi_ref_spec: str, dtype: Any, device: str, trust_remote_code: bool):
        self.args = (pi0_spec, pi_ref_spec, dtype, device, trust_remote_code)
        self._loaded: tuple[Any, Any, Any] | None = None

    def get(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            from xlr.models import load_model

            pi0_spec, pi_ref_spec, dtype, device, trc = self.args
            policy, tok = load_model(pi0_spec, dtype=dtype, device=device, trust_remote_code=trc)
            reference, tok_ref = load_model(pi_ref_spec, dtype=dtype, device=device, trust_remote_code=trc)
            if tok.get_vocab() != tok_ref.get_vocab():
                raise ProbeError(
                    f"pi0 ({pi0_spec}) and pi_ref ({pi_ref_spec}) have different tokenizers; the implicit reward compares "
                    "log-probabilities of the same tokens. Fix: use a pi0 trained from pi_ref."
                )
            self._loaded = (policy, reference, tok)
        return self._loaded


def translation_settings(params: Any) -> dict[str, Any]:
    """The probe's R_t translation settings: the style of training (reward.rt_style) and the cap
    (probe.translate_max_new_tokens, None = reward.rt_max_new_tokens)."""
    return {"style": params.reward.rt_style, "max_new_tokens": params.probe.translate_max_new_tokens or params.reward.rt_max_new_tokens}


def translation_fingerprint(pi0_record: Any, dtype_name: str, settings: dict[str, Any]) -> str:
    """Names the translation cache: pi0, its precision, the style and the cap (a change of any one retranslates)."""
    return _fingerprint(pi0_record, dtype_name, settings["max_new_tokens"], settings["style"], "translations")


def _tkey(lang: str, text: str, style: str, names: dict[str, str]) -> str:
    """Translation cache key: the translation request itself (in style reference it does not depend on L)."""
    from xlr.rewards import translation_message

    return _key(translation_message(text, lang, style, names))


def _translate(
    models: _Models, cache: _Cache, todo: list[tuple[str, str]], settings: dict[str, Any], names: dict[str, str], batch_size: int
) -> int:
    """Translations of (lang, text) into English with pi0, cached; returns how many were generated now. The bar counts
    the token budget (answers x the cap) and moves at every decoding step (:class:`xlr.sampling.Progress`)."""
    from xlr.rewards import translate_to_english
    from xlr.sampling import HFBackend, Progress

    style, cap = settings["style"], settings["max_new_tokens"]
    wanted: dict[str, tuple[str, str]] = {}
    for lg, t in todo:
        wanted.setdefault(_tkey(lg, t, style, names), (lg, t))
    missing = sorted(((k, v) for k, v in wanted.items() if k not in cache.data), key=lambda kv: len(kv[1][1]))
    if not missing:
        return 0
    policy, _, tok = models.get()
    desc = "probe R_t: pi0 translates answers into English"
    with Progress(desc, total=len(missing) * cap, items=len(missing), item_unit="answers") as bar:
        backend = HFBackend(policy, tok)
        for k in range(0, len(missing), TRANSLATE_CHUNK):
            part = missing[k : k + TRANSLATE_CHUNK]
            tr = translate_to_english(
                backend, [t for _, (_, t) in part], [lg for _, (lg, _) in part], cap, names, batch_size, style, progress=bar
            )
            for j, (key, _) in enumerate(part):
                cache.data[key] = {"text": tr.texts[j], "n_tokens": tr.n_tokens[j], "truncated": tr.truncated[j], "status": tr.status[j]}
            cache.save()
            bar.reach((k + len(part)) * cap, k + len(part))  # texts not generated (plain style's English) count as done
    return len(missing)


def _score(
    models: _Models,
    cache: _Cache,
    pairs: list[tuple[str, str]],
    desc: str,
    batch_tokens: int,
    parity: str | None,
    fp32_head: bool,
    share_prompts: bool,
) -> int:
    """(pi0, pi_ref) log-probs of (user prompt, answer) pairs via :func:`xlr.rewards.score_models`, cached; returns how
    many were scored now. Pairs are sorted by prompt, so the answers of one prompt share its forward pass. The bar
    counts the tokens through pi0 and pi_ref, every chunk's (:func:`xlr.rewards.score_work`) known up front, and moves
    at every forward pass and within it (:func:`xlr.rewards.score_models`)."""
    from xlr.rewards import score_models, score_work
    from xlr.sampling import Progress

    missing = sorted({p for p in pairs if _key(*p) not in cache.data})
    if not missing:
        return 0
    policy, reference, tok = models.get()
    chunks = [missing[k : k + SCORE_CHUNK] for k in range(0, len(missing), SCORE_CHUNK)]
    total = sum(
        score_work([policy, reference], tok, [p for p, _ in part], [y for _, y in part], batch_tokens, share_prompts=share_prompts)
        for part in chunks
    )
    with Progress(desc, total=total, items=len(missing), item_unit="answers") as bar:
        for part in chunks:
            pol, ref = score_models(
                [policy, reference],
                tok,
                [p for p, _ in part],
                [y for _, y in part],
                batch_tokens=batch_tokens,
                parity=parity,
                fp32_head=fp32_head,
                progress=bar,
                share_prompts=share_prompts,
            )
            for p, lp, lr in zip(part, pol, ref, strict=True):
                cache.data[_key(*p)] = [lp, lr]
            cache.save()
    return len(missing)


# ----------------------------------------------------------------------------------------------------------------
# entry point


def _precision(dtype: Any, params: Any) -> tuple[Any, bool, str]:
    """(torch dtype, LM head in fp32, name) from run_probe's ``dtype``: None = reward.dtype, a reward.dtype name, or a
    torch dtype (then the head runs in fp32)."""
    import torch

    if dtype is None:
        dtype = params.reward.dtype
    if isinstance(dtype, str):
        if dtype not in ("fp32", "bf16", "bf16-fp32head"):
            raise ProbeError(f"dtype {dtype!r}: use fp32, bf16, bf16-fp32head (as reward.dtype), a torch dtype, or None")
        # bf16 only where it is fast (runtime.bf16); the probe stage records the choice in the manifest
        torch_dtype, head, used, _ = scoring_precision(dtype, "reward.dtype", resolve_device(params.runtime.device), params.runtime.bf16)
        return torch_dtype, head, used
    if isinstance(dtype, torch.dtype):
        return dtype, True, str(dtype).removeprefix("torch.")
    raise ProbeError(f"dtype {dtype!r}: use None, a reward.dtype name or a torch dtype")


def _win(a: float, b: float) -> float:
    return 1.0 if a > b else 0.5 if a == b else 0.0


def run_probe(params: Any, pi0_spec: str, pi_ref_spec: str, out_dir: Path, dtype: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Run the probe (module docstring) and write ``out_dir/probe.json`` and ``out_dir/probe_items.jsonl``.

    Returns {"artifacts": [probe.json, probe_items.jsonl], "counts": {...}, "summary": [rows], "paired": [rows],
    "hypotheses": [rows]}. Summary rows: test, lang, variant, n, fraction, ci95, n_ties, mean_margin (score(a) −
    score(b): nats for the rewards, characters for length), and for quality rows transfer_ratio(_ci95),
    transfer_excess(_ci95). ``dtype``: None = reward.dtype (fp32 by default), a reward.dtype name, or a torch dtype."""
    from xlr.models import model_record
    from xlr.rewards import reward_prompt

    pp = params.probe
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_dtype, fp32_head, dtype_name = _precision(dtype, params)
    parity = None if params.reward.parity == "none" else params.reward.parity
    names = params.languages.names
    comps, instructions, counts = build_comparisons(params)
    ids = counts.pop("ids")
    records = {"pi0": model_record(pi0_spec), "pi_ref": model_record(pi_ref_spec)}
    fp_scores = _fingerprint(records, dtype_name, parity, "scores")
    tsettings = translation_settings(params)
    fp_trans = translation_fingerprint(records["pi0"], dtype_name, tsettings)
    score_cache = _Cache(out_dir / "cache" / f"scores-{fp_scores}.jsonl")
    trans_cache = _Cache(out_dir / "cache" / f"translations-{fp_trans}.jsonl")
    models = _Models(pi0_spec, pi_ref_spec, torch_dtype, device, params.models.trust_remote_code)
    batch_tokens = pp.batch_tokens or params.reward.batch_tokens
    counts.update(scored_now={}, cache_hits={}, translations_now=0)

    def prompt_of(variant: str, c: dict[str, Any]) -> str:
        return reward_prompt(variant, c["lang"], instructions[c["lang"]][c["id"]], instructions["en"][c["id"]], names)

    items: list[dict[str, Any]] = []
    for variant in dict.fromkeys(pp.variants):
        if variant == "R_t":
            todo = [(c["lang"], t) for c in comps if c["lang"] != "en" for t in (c["a"], c["b"])]
            counts["translations_now"] = _translate(models, trans_cache, todo, tsettings, names, params.sampling.batch_size)
            tr = {(lg, t): trans_cache.data[_tkey(lg, t, tsettings["style"], names)] for lg, t in todo}
        scored = []
        for c in comps:
            p = prompt_of(variant, c)
            ya, yb = c["a"], c["b"]
            if variant == "R_t" and c["lang"] != "en":
                ya, yb = tr[(c["lang"], ya)]["text"], tr[(c["lang"], yb)]["text"]
            scored.append((p, ya, yb))
        pairs = [(p, y) for p, ya, yb in scored for y in (ya, yb)]
        n_unique = len(set(pairs))
        n_new = _score(
            models,
            score_cache,
            pairs,
            f"probe {variant}: log-probs under (pi0, pi_ref)",
            batch_tokens,
            parity,
            fp32_head,
            params.reward.share_prompts,
        )
        counts["scored_now"][variant], counts["cache_hits"][variant] = n_new, n_unique - n_new
        for k, (c, (p, ya, yb)) in enumerate(zip(comps, scored, strict=True)):
            (pa, ra), (pb, rb) = score_cache.data[_key(p, ya)], score_cache.data[_key(p, yb)]
            row = _item(c, k, variant, pa - ra, pb - rb)
            row.update(reward_prompt=p, policy_logp_a=pa, reference_logp_a=ra, policy_logp_b=pb, reference_logp_b=rb)
            if variant == "R_t" and c["lang"] != "en":
                ta, tb = tr[(c["lang"], c["a"])], tr[(c["lang"], c["b"])]
                row.update(
                    translation_a=ta["text"],
                    translation_b=tb["text"],
                    translation_truncated_a=ta["truncated"],
                    translation_truncated_b=tb["truncated"],
                    translation_status_a=ta["status"],
                    translation_status_b=tb["status"],
                )
            items.append(row)
    for k, c in enumerate(comps):
        items.append(_item(c, k, LENGTH, float(len(c["a"])), float(len(c["b"]))))
    if "R_t" in pp.variants:
        used = {_tkey(c["lang"], t, tsettings["style"], names) for c in comps if c["lang"] != "en" for t in (c["a"], c["b"])}
        counts["translation_settings"] = tsettings
        counts["translations"] = len(used)
        counts["translations_truncated"] = sum(bool(trans_cache.data[k]["truncated"]) for k in used)
        counts["translation_status"] = dict(Counter(trans_cache.data[k]["status"] for k in used))
    variants = [*dict.fromkeys(pp.variants), LENGTH]
    summary = summarize(items, variants, pp.bootstrap, params.seed)
    paired = paired_comparisons(items, variants, pp.bootstrap, pp.permutations, params.seed)
    hypotheses = fig3_hypotheses(summary, paired)
    items_path = atomic_write_jsonl(out_dir / "probe_items.jsonl", items)
    doc = {
        "what": "cross-lingual reward probe (xlr.probe): pi0/pi_ref implicit reward on fixed answer pairs, no judge",
        "models": records,
        "ids": ids,
        "dtype": dtype_name,
        "parity": params.reward.parity,
        "device": device,
        "seed": params.seed,
        "settings": pp.model_dump(mode="json"),
        "batch_tokens": batch_tokens,
        "definitions": DEFINITIONS,
        "counts": counts,
        "summary": summary,
        "paired": paired,
        "hypotheses": hypotheses,
    }
    json_path = atomic_write_json(out_dir / "probe.json", doc)
    return {"artifacts": [json_path, items_path], "counts": counts, "summary": summary, "paired": paired, "hypotheses": hypotheses}


DEFINITIONS = {
    "language": "L != en: under the variant's reward prompt for L, GPT-4-turbo's answer in L (a) vs its answer in English (b); fraction = P(score(a) > score(b)).",
    "quality": "GPT-4-turbo's answer (a) vs the weaker generator's (b) to the same instruction in L; fraction = P(score(a) > score(b)).",
    "english_labels": "English: AlpacaEval 2 GPT-4-turbo verdicts, clear and balanced; a = the preferred output; fraction = agreement.",
    "win": "1 if score(a) > score(b), 0.5 on an exact tie, else 0; fraction = mean win.",
    "R_c": "both answers scored under G(x) = language prefix for L + English instruction (English: x alone)",
    "R_m": "both answers scored under the instruction in L",
    "R_t": "both answers translated into English by pi0 as in training (reward.rt_style; greedy, capped), scored under the English instruction; "
    "English answers untranslated",
    "length": "score = characters of the original answer (longer wins)",
    "transfer_ratio": "acc_L / acc_en on the instructions of both languages (same variant); CI from one bootstrap over instructions for both",
    "transfer_excess": "(acc_L - 0.5) / (acc_en - 0.5): share of English's above-chance accuracy kept in L; None when acc_en <= 0.5",
    "ci95": "percentile bootstrap over instructions (cluster bootstrap for english_labels)",
    "paired": "diff = fraction(a) - fraction(b) on the same items; paired bootstrap CI; two-sided sign-flip permutation p-value",
}


def _item(c: dict[str, Any], k: int, variant: str, score_a: float, score_b: float) -> dict[str, Any]:
    row = {
        "test": c["test"],
        "lang": c["lang"],
        "id": c["id"],
        "pair": k,
        "variant": variant,
        "a_source": c["a_source"],
        "b_source": c["b_source"],
        "score_a": score_a,
        "score_b": score_b,
        "win": _win(score_a, score_b),
        "len_a": len(c["a"]),
        "len_b": len(c["b"]),
        "cluster": c["cluster"],
    }
    for extra in ("preference", "preferred", "annotation_file", "record"):
        if extra in c:
            row[extra] = c[extra]
    return row


# ----------------------------------------------------------------------------------------------------------------
# summaries (pure functions of the item rows)


def _groups(items: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in items:
        out.setdefault((r["test"], r["lang"], r["variant"]), []).append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r["pair"])
    return out


def summarize(items: Sequence[dict[str, Any]], variants: Sequence[str], n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (test, lang, variant): n, fraction, ci95, n_ties, mean_margin; quality rows of L != en also carry
    the transfer from English (module docstring)."""
    from xlr.stats import bootstrap_ci

    groups = _groups(items)
    rows = []
    for test in TESTS:
        langs = list(dict.fromkeys(lang for (t, lang, _) in groups if t == test))
        for lang in langs:
            for v in variants:
                g = groups.get((test, lang, v))
                if not g:
                    continue
                wins = [r["win"] for r in g]
                lo, hi = bootstrap_ci(wins, n_boot, seed, clusters=[r["cluster"] for r in g] if test == "english_labels" else None)
                row = {
                    "test": test,
                    "lang": lang,
                    "variant": v,
                    "n": len(g),
                    "fraction": float(np.mean(wins)),
                    "ci95": [lo, hi],
                    "n_ties": sum(r["win"] == 0.5 for r in g),
                    "mean_margin": float(np.mean([r["score_a"] - r["score_b"] for r in g])),
                    "margin_unit": "characters" if v == LENGTH else "nats",
                }
                if test == "quality" and lang != "en" and groups.get(("quality", "en", v)):
                    row.update(_transfer(g, groups[("quality", "en", v)], n_boot, seed))
                rows.append(row)
    return rows


def _transfer(rows_l: list[dict[str, Any]], rows_en: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """acc_L / acc_en and (acc_L - 0.5) / (acc_en - 0.5) on the instructions both languages have, with bootstrap CIs
    (one resample of the instructions for both languages)."""
    from xlr.stats import bootstrap_statistic

    wl = {r["id"]: r["win"] for r in rows_l}
    we = {r["id"]: r["win"] for r in rows_en}
    common = sorted(set(wl) & set(we))
    if not common:
        return {"transfer_n": 0, "transfer_ratio": None, "transfer_ratio_ci95": None, "transfer_excess": None, "transfer_excess_ci95": None}
    a = np.array([wl[i] for i in common])
    e = np.array([we[i] for i in common])

    def ratio(idx: np.ndarray) -> float:
        d = e[idx].mean()
        return float(a[idx].mean() / d) if d > 0 else math.nan

    def excess(idx: np.ndarray) -> float:
        d = e[idx].mean() - 0.5
        return float((a[idx].mean() - 0.5) / d) if d > 0 else math.nan

    full = np.arange(len(common))
    r, x = ratio(full), excess(full)
    out: dict[str, Any] = {"transfer_n": len(common), "acc_en_common": float(e.mean()), "acc_l_common": float(a.mean())}
    out["transfer_ratio"] = r if math.isfinite(r) else None
    out["transfer_ratio_ci95"] = list(bootstrap_statistic(ratio, len(common), n_boot, seed)) if out["transfer_ratio"] is not None else None
    out["transfer_excess"] = x if math.isfinite(x) else None
    out["transfer_excess_ci95"] = (
        list(bootstrap_statistic(excess, len(common), n_boot, seed)) if out["transfer_excess"] is not None else None
    )
    return out


def paired_comparisons(
    items: Sequence[dict[str, Any]], variants: Sequence[str], n_boot: int = 1000, n_perm: int = 10000, seed: int = 0
) -> list[dict[str, Any]]:
    """Every pair of variants on the same items, per test and language (:func:`xlr.stats.paired_difference`)."""
    from xlr.stats import paired_difference

    groups = _groups(items)
    rows = []
    keys = list(dict.fromkeys((t, lang) for (t, lang, _) in groups))
    for test, lang in keys:
        for v1, v2 in itertools.combinations(variants, 2):
            g1, g2 = groups.get((test, lang, v1)), groups.get((test, lang, v2))
            if not g1 or not g2:
                continue
            b = {r["pair"]: r for r in g2}
            common = [r for r in g1 if r["pair"] in b]
            res = paired_difference(
                [r["win"] for r in common],
                [b[r["pair"]]["win"] for r in common],
                n_boot,
                n_perm,
                seed,
                clusters=[r["cluster"] for r in common] if test == "english_labels" else None,
            )
            rows.append({"test": test, "lang": lang, "variant_a": v1, "variant_b": v2, **res})
    return rows


def fig3_hypotheses(summary: Sequence[dict[str, Any]], paired: Sequence[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Per test and language with R_c, R_m and R_t: does the paper's Fig. 3 ordering R_c > R_m > R_t hold in the point
    estimates, and which of its two steps are significant (paired p < alpha)? English rows are equal by construction."""
    frac = {(r["test"], r["lang"], r["variant"]): r["fraction"] for r in summary}
    pv = {(r["test"], r["lang"], r["variant_a"], r["variant_b"]): r for r in paired}
    out = []
    for test, lang in dict.fromkeys((r["test"], r["lang"]) for r in summary):
        f = {v: frac.get((test, lang, v)) for v in ("R_c", "R_m", "R_t")}
        if any(x is None for x in f.values()):
            continue
        steps = {}
        for a, b in (("R_c", "R_m"), ("R_m", "R_t")):
            p = pv.get((test, lang, a, b))
            steps[f"{a}>{b}"] = (
                {"diff": p["diff"], "p_value": p["p_value"], "significant": bool(p["diff"] > 0 and p["p_value"] < alpha)} if p else None
            )
        out.append(
            {
                "test": test,
                "lang": lang,
                "R_c": f["R_c"],
                "R_m": f["R_m"],
                "R_t": f["R_t"],
                "order_holds": bool(f["R_c"] > f["R_m"] > f["R_t"]),
                "steps": steps,
                "note": "English: the variants coincide" if lang == "en" else "",
            }
        )
    return out


def read_probe(path: Path) -> dict[str, Any] | None:
    """probe.json from a probe directory, a run directory (``<run>/probe/probe.json``) or the file itself; None when absent."""
    path = Path(path)
    for p in (path, path / "probe.json", path / "probe" / "probe.json"):
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    return None
