"""Language identification of responses, with lingua (its models ship inside the wheel: no run-time download).

Used to report language fidelity (the fraction of samples, chosen and rejected responses answered in the target
language) and, optionally (``pairs.language_filter``), to drop wrong-language samples before pair selection.
Detection is restricted to the languages xlr knows (``xlr.languages``) that lingua supports, plus any extra codes
given; texts that are empty or ambiguous come back as ``None`` ("undetermined").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from xlr.languages import LANGUAGE_NAMES


@lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]) -> Any:
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    langs = []
    for c in codes:
        iso = getattr(IsoCode639_1, c.upper(), None)
        if iso is not None:
            langs.append(Language.from_iso_code_639_1(iso))
    if len(langs) < 2:
        raise ValueError(f"language detection needs at least two lingua-supported languages, got {codes}")
    return LanguageDetectorBuilder.from_languages(*langs).with_minimum_relative_distance(0.05).build()


def detect(texts: Sequence[str], extra_codes: Iterable[str] = ()) -> list[str | None]:
    """ISO 639-1 code per text (``None``: empty or undetermined)."""
    codes = tuple(sorted(set(LANGUAGE_NAMES) | set(extra_codes)))
    det = _detector(codes)
    found = det.detect_languages_in_parallel_of([t if t.strip() else "" for t in texts])
    return [None if (f is None or not t.strip()) else f.iso_code_639_1.name.lower() for f, t in zip(found, texts, strict=True)]


def fidelity(langs: Sequence[str], detected: Sequence[str | None]) -> dict[str, dict[str, float]]:
    """Per target language: n, fraction detected as the target, fraction undetermined."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for lang, d in zip(langs, detected, strict=True):
        acc[lang][0] += 1
        acc[lang][1] += int(d == lang)
        acc[lang][2] += int(d is None)
    return {lang: {"n": n, "in_target": hit / n, "undetermined": und / n} for lang, (n, hit, und) in acc.items()}
