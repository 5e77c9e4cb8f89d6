"""Language codes and their English names.

The English name is what the cross-lingual reward prompt G(x) asks for ("... using only {Language} ...").
Params may add or override names (``languages.names``), so any code present in the data files can be used.
"""

from __future__ import annotations

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic",
    "bn": "Bengali",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sw": "Swahili",
    "te": "Telugu",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def language_name(code: str, overrides: dict[str, str] | None = None) -> str:
    """English name of a language code; ``overrides`` (from params) take precedence."""
    table = {**LANGUAGE_NAMES, **(overrides or {})}
    try:
        return table[code]
    except KeyError:
        known = ", ".join(sorted(table))
        raise KeyError(
            f"unknown language code {code!r}: known codes are {known}. "
            f"Fix: use one of them, or add it under `languages.names` in the params file "
            f"(e.g. `names: {{{code}: <English name>}}`)."
        ) from None
