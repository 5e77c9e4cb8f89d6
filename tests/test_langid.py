from xlr.langid import detect, fidelity


def test_detect_real_sentences():
    texts = ["The weather is lovely today and we are going for a walk.", "Das Wetter ist heute schön und wir gehen spazieren.",
             "Hace buen tiempo hoy y vamos a dar un paseo.", "Сегодня хорошая погода, и мы идём гулять.", "今天天气很好，我们去散步。", ""]
    assert detect(texts) == ["en", "de", "es", "ru", "zh", None]


def test_fidelity_fractions():
    f = fidelity(["de", "de", "de", "en"], ["de", "en", None, "en"])
    assert f["de"] == {"n": 3, "in_target": 1 / 3, "undetermined": 1 / 3} and f["en"]["in_target"] == 1.0
