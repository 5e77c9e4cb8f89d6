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


# The model check (stage "models", `xlr models try`): one smoke prompt per language, the same question.
CHECK_PROMPTS = {
    "en": "What is the capital of France? Answer in one sentence.",
    "es": "¿Cuál es la capital de Francia? Responde en una frase.",
    "de": "Was ist die Hauptstadt von Frankreich? Antworte in einem Satz.",
    "ru": "Какая столица Франции? Ответь одним предложением.",
    "fr": "Quelle est la capitale de la France ? Réponds en une phrase.",
    "zh": "法国的首都是哪里？请用一句话回答。",
    "it": "Qual è la capitale della Francia? Rispondi con una frase.",
    "ja": "フランスの首都はどこですか？一文で答えてください。",
    "ko": "프랑스의 수도는 어디입니까? 한 문장으로 답하세요.",
    "ar": "ما هي عاصمة فرنسا؟ أجب بجملة واحدة.",
    "bn": "ফ্রান্সের রাজধানী কী? এক বাক্যে উত্তর দাও।",
    "sw": "Mji mkuu wa Ufaransa ni upi? Jibu kwa sentensi moja.",
    "th": "เมืองหลวงของฝรั่งเศสคืออะไร ตอบเป็นประโยคเดียว",
}
