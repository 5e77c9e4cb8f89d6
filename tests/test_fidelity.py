"""Language Confusion Benchmark metrics (xlr.fidelity): definitions on hand-computed cases, the JSON shape, a
published figure reproduced on a shipped file, bad input, the paired McNemar test, and the LCB data readers."""

import gzip
import json
import logging
from pathlib import Path

import pytest

from xlr import fidelity as F
from xlr import langid
from xlr.data import DataError, lcb_english_words, lcb_languages, load_lcb_outputs, load_lcb_prompts
from xlr.stats import binom_two_sided_p, mcnemar

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
OUTPUTS = SHARED / "language-confusion" / "outputs"
COLUMNS = "id,model,completion,task,source,language"


@pytest.fixture
def fake_detector(monkeypatch):
    """Line language = the line's first token (so verdicts are known by construction); a tiny English word list."""
    monkeypatch.setattr(langid, "line_languages", lambda lines, detector="fasttext", extra_codes=(): [ln.split()[0] for ln in lines])
    monkeypatch.setattr(langid, "detect_text", lambda texts, detector="fasttext", extra_codes=(): [None] * len(texts))
    monkeypatch.setattr(F, "_english_words", lambda data_dir: frozenset({"house", "table"}))


# ----------------------------------------------------------------------------------------------------------------
# one text


def test_normalize_as_the_benchmark():
    assert F.normalize("  Hello, world! (yes)\nsecond line.\nQ: a follow-up question") == "Hello world yes\nsecond line"
    assert F.normalize("uno—dos") == "uno dos"
    assert F.normalize("مرحبا، بك") == "مرحبا بك"
    assert F.normalize("你好，世界。") == "你好，世界。"  # only ASCII punctuation is removed


def test_scored_lines_keep_lines_of_five_tokens_or_more():
    text = "one two three four\none two three four five\n\nsix seven eight nine ten eleven"
    assert [line for line, _ in F.scored_lines(text, "en")] == ["one two three four five", "six seven eight nine ten eleven"]


def test_tokenizers():
    assert F.tokenize("他来到了网易杭研大厦", "zh") == ("他", "来到", "了", "网易", "杭研", "大厦")  # jieba's HMM result
    assert F.tokenize("a b", "zh") == ("a", " ", "b")  # whitespace tokens kept, as jieba.cut keeps them
    ja = F.tokenize("今日は良い天気です。This is a pen", "ja")
    assert ja[:3] == ("今日", "は", "良い") and "This" in ja and all(t.strip() for t in ja)  # no whitespace tokens (MeCab has none)
    assert F.tokenize("Привет,  мир", "ru") == ("Привет,", "мир")


def test_verdicts_and_rates_by_hand(fake_detector):
    texts = [
        "ru a b c d\nru e f g h",  # all lines ru, no English word: line pass, word pass
        "ru a b c d\nen e f g h",  # a line in English: line error
        "ru a b c house",  # English word (of the list): line pass, word error
        "ru a b",  # no line of >= 5 tokens: skipped
        "ru a b c d\nunknown e f g h i",  # an 'unknown' line is an error
        "ru a b c Table",  # case kept: 'Table' is not 'table': word pass
    ]
    p = F.output_passes(texts, "ru")
    assert [x["line_pass"] for x in p] == [True, False, True, None, False, True]
    assert [x["word_pass"] for x in p] == [True, None, False, None, None, True]
    assert p[2]["english_words"] == ["house"] and p[1]["line_errors"] == 1 and p[3]["n_lines"] == 0
    r = F.pass_rates(p, "ru")
    # scored 5, line errors 2, word errors 1: LPR = 1 - 2/5, WPR = 1 - 1/(5 - 2)
    assert r["lpr"] == pytest.approx(0.6) and r["wpr"] == pytest.approx(2 / 3) and (r["n"], r["n_scored"]) == (6, 5)
    # a Latin-script language has no word check
    q = F.output_passes(["de a b c house"], "de")
    assert q[0]["word_pass"] is None and F.pass_rates(q, "de")["wpr"] is None
    # all skipped: the benchmark's max(1, .) gives LPR 1
    assert F.pass_rates(F.output_passes(["ru a"], "ru"), "ru")["lpr"] == 1.0


def test_aggregate_means_over_sources_then_languages():
    rates = {
        ("monolingual", "s1", "ru"): {"lpr": 0.5, "wpr": 1.0},
        ("monolingual", "s2", "ru"): {"lpr": 1.0, "wpr": 0.5},
        ("monolingual", "s1", "de"): {"lpr": 0.2, "wpr": None},
        ("crosslingual", "s1", "fr"): {"lpr": 0.9, "wpr": None},
    }
    a = F.aggregate(rates)
    assert list(a) == ["monolingual", "crosslingual"] and list(a["monolingual"]) == ["all", "de", "ru"]
    ru, de, al = a["monolingual"]["ru"], a["monolingual"]["de"], a["monolingual"]["all"]
    assert ru["lpr"] == pytest.approx(75.0) and ru["wpr"] == pytest.approx(75.0) and ru["lcpr"] == pytest.approx(75.0)
    assert de == {"lpr": pytest.approx(20.0), "wpr": None, "lcpr": None}
    # all: LPR over languages (75 + 20) / 2, WPR over ru only; LCPR = 2 * 47.5 * 75 / (47.5 + 75)
    assert al["lpr"] == pytest.approx(47.5) and al["wpr"] == pytest.approx(75.0) and al["lcpr"] == pytest.approx(7125 / 122.5)
    assert a["crosslingual"]["all"] == {"lpr": pytest.approx(90.0), "wpr": None, "lcpr": None}


def test_a_language_the_detector_cannot_detect_is_reported_not_scored(caplog):
    """Amharic under lingua (no model for it), Zulu under fastText (no lid.176 label): before, their texts ran through the
    detector, no line could ever be labelled 'am' / 'zu', and the language read LPR 0 (100 when every text was
    skipped) as if measured. Now each verdict, rate, summary and aggregate marks it not scored with the reason, it is
    left out of "all" and listed there, and a warning is logged."""
    import pandas as pd

    am = "ዛሬ በጣም ጥሩ ቀን ነው እና ወደ ገበያ እንሄዳለን"
    with caplog.at_level(logging.WARNING, logger="xlr.fidelity"):
        p = F.output_passes([am, am + "\n" + am, "ሰላም"], "am", detector="lingua")
    assert [x["line_pass"] for x in p] == [None, None, None] and [x["word_pass"] for x in p] == [None, None, None]
    assert all("lingua" in x["unsupported"] and "no model for 'am'" in x["unsupported"] for x in p)
    assert [x["n_lines"] for x in p] == [1, 2, 0]
    assert any("'am'" in r.getMessage() and "not scored" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    r = F.pass_rates(p, "am")
    assert r["lpr"] is None and r["wpr"] is None and r["unsupported"] == p[0]["unsupported"] and (r["n"], r["n_scored"]) == (3, 0)
    s = F.fidelity_summary(p, n_boot=20)
    assert s["lpr"] is None and s["lcpr"] is None and s["n"] == 3 and s["unsupported"] == p[0]["unsupported"]
    rows = [{"lang": "am", **s}, {"lang": "de", **F.fidelity_summary([_p(True)], n_boot=0)}]
    assert F.unsupported_of(rows) == {"am": p[0]["unsupported"]}
    # the same language is scored by the detector that has it
    assert all(x["unsupported"] is None and x["line_pass"] is not None for x in F.output_passes([am], "am", detector="fasttext"))
    zu = "Namuhla izulu lihle kakhulu futhi sihamba siye emakethe"
    df = pd.DataFrame(
        [
            {"task": "monolingual", "source": "s", "language": lang, "completion": c}
            for lang, c in (("zu", zu), ("zu", zu), ("de", "Das Wetter ist heute schön und wir gehen spazieren."))
        ]
    )
    a = F.aggregate(F.group_rates(df, "fasttext"))["monolingual"]
    assert set(a) == {"all", "de", "zu"}  # present, not dropped
    assert a["zu"]["lpr"] is None and a["zu"]["lcpr"] is None and "lid.176 has no label 'zu'" in a["zu"]["unsupported"]
    assert a["all"]["lpr"] == a["de"]["lpr"] == 100.0 and a["all"]["unsupported_languages"] == {"zu": a["zu"]["unsupported"]}
    only_de = F.aggregate(F.group_rates(df[df["language"] == "de"], "fasttext"))["monolingual"]
    assert "unsupported" not in a["de"] and "unsupported_languages" not in only_de["all"]


@needs_shared
def test_real_detector_verdicts():
    de = "Das Wetter ist heute sehr schön und wir gehen im Park spazieren."
    en = "The weather is lovely today and we are going for a walk in the park."
    ru = "Сегодня мы много говорили о том, как работает современный computer в нашей лаборатории."
    p = F.output_passes([de, en, de + "\n" + en], "de")
    assert [x["line_pass"] for x in p] == [True, False, False] and p[0]["detected"] == "de" and p[1]["detected"] == "en"
    (r,) = F.output_passes([ru], "ru")
    assert r["line_pass"] is True and r["word_pass"] is False and r["english_words"] == ["computer"]
    (r,) = F.output_passes([ru], "ru", detector="lingua")
    assert r["line_pass"] is True and r["word_pass"] is False


# ----------------------------------------------------------------------------------------------------------------
# the shipped completions against the published figures, and the JSON shape


@needs_shared
def test_published_figures_reproduced_on_a_shipped_file():
    """llama-2-instruct's whole file (6.5k completions, a few seconds): every 'all' figure within 1.5 points of the
    benchmark script's (monolingual LPR 48.27 / WPR 97.94, cross-lingual 38.38 / 84.20), and our own values locked."""
    m = F.benchmark_file_metrics(OUTPUTS / "llama-2-instruct.csv.gz")
    published = {"monolingual": (48.27, 97.94), "crosslingual": (38.38, 84.20)}
    for task, (lpr, wpr) in published.items():
        assert abs(m[task]["all"]["lpr"] - lpr) <= 1.5 and abs(m[task]["all"]["wpr"] - wpr) <= 1.5
    assert m["monolingual"]["all"]["lpr"] == pytest.approx(48.37, abs=0.01) and m["crosslingual"]["all"]["wpr"] == pytest.approx(
        84.33, abs=0.01
    )
    # JSON shape: task -> "all" and each language -> lpr / wpr / lcpr (percent; wpr, lcpr None for Latin scripts)
    assert set(m) == {"monolingual", "crosslingual"}
    assert set(m["monolingual"]) == {"all", *lcb_languages("monolingual")} and set(m["crosslingual"]) == {
        "all",
        *lcb_languages("crosslingual"),
    }
    for by_lang in m.values():
        assert next(iter(by_lang)) == "all"
        for lang, v in by_lang.items():
            assert set(v) == {"lpr", "wpr", "lcpr"} and type(v["lpr"]) is float and 0 <= v["lpr"] <= 100
            if lang in F.WPR_LANGUAGES or lang == "all":
                assert type(v["wpr"]) is float and v["lcpr"] == pytest.approx(2 * v["lpr"] * v["wpr"] / (v["lpr"] + v["wpr"]))
            else:
                assert v["wpr"] is None and v["lcpr"] is None
    assert json.loads(json.dumps(m)) == m


def _write_csv(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_outputs_reader_bad_input(tmp_path):
    ok = _write_csv(tmp_path / "ok.csv.gz", [COLUMNS, '0,m,"Hola, ¿qué tal?",monolingual,okapi,es', "1,m,NA,crosslingual,okapi,ja"])
    df = load_lcb_outputs(ok)
    assert list(df.columns) == COLUMNS.split(",") and df["completion"].tolist() == ["Hola, ¿qué tal?", "NA"]  # 'NA' stays text
    bad_lang = _write_csv(tmp_path / "lang.csv.gz", [COLUMNS, "0,m,hello,monolingual,okapi,es", "1,m,hello,monolingual,okapi,xx"])
    with pytest.raises(DataError, match=r"lang\.csv\.gz \(row 2, id '1'\): field 'language' is 'xx'.*Fix: use one of ar, de"):
        load_lcb_outputs(bad_lang)
    with pytest.raises(DataError, match=r"lang\.csv\.gz \(row 2"):
        F.benchmark_file_metrics(bad_lang)
    no_col = _write_csv(tmp_path / "nocol.csv.gz", ["id,model,completion,task,source", "0,m,hello,monolingual,okapi"])
    with pytest.raises(DataError, match=r"nocol\.csv\.gz: column 'language' missing.*Fix: write the benchmark's columns"):
        load_lcb_outputs(no_col)
    bad_task = _write_csv(tmp_path / "task.csv.gz", [COLUMNS, "0,m,hello,multilingual,okapi,es"])
    with pytest.raises(DataError, match=r"row 1, id '0'\): field 'task' is 'multilingual'"):
        load_lcb_outputs(bad_task)
    two = _write_csv(tmp_path / "two.csv.gz", [COLUMNS, "0,a,hello,monolingual,okapi,es", "0,b,hello,monolingual,okapi,es"])
    with pytest.raises(DataError, match="2 models"):
        F.benchmark_file_metrics(two)
    with pytest.raises(DataError, match="not found"):
        load_lcb_outputs(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown language detector"):
        F.output_passes(["hello world this is a test"], "en", detector="cld3")


# ----------------------------------------------------------------------------------------------------------------
# summaries and the paired test


def _p(line, word=None):
    return {"line_pass": line, "word_pass": word}


def test_fidelity_summary_by_hand():
    passes = [_p(True, True), _p(True, False), _p(True, True), _p(False), _p(None)]
    s = F.fidelity_summary(passes, n_boot=200, seed=1)
    assert (s["n"], s["n_scored"], s["n_wpr"]) == (5, 4, 3)
    assert (
        s["lpr"] == pytest.approx(75.0)
        and s["wpr"] == pytest.approx(200 / 3)
        and s["lcpr"] == pytest.approx(2 * 75 * (200 / 3) / (75 + 200 / 3))
    )
    assert s["lpr_ci95"][0] <= s["lpr"] <= s["lpr_ci95"][1] and s == F.fidelity_summary(passes, n_boot=200, seed=1)
    latin = F.fidelity_summary([_p(True), _p(False)], n_boot=50)
    assert latin["lpr"] == 50.0 and latin["wpr"] is None and latin["lcpr"] is None and latin["wpr_ci95"] is None


def test_mcnemar_exact_against_hand_computed_binomial():
    # b = 1, c = 7: two-sided exact p = 2 * P(X <= 1 | n = 8, 1/2) = 2 * (C(8,0) + C(8,1)) / 2^8 = 18 / 256
    assert binom_two_sided_p(1, 8) == pytest.approx(18 / 256)
    r = mcnemar(1, 7)
    assert r["method"] == "exact binomial" and r["p_value"] == pytest.approx(0.0703125)
    assert mcnemar(4, 4)["p_value"] == 1.0 and mcnemar(0, 0)["p_value"] == 1.0
    # large counts: chi-square with continuity correction, (|30 - 10| - 1)^2 / 40 = 9.025 on 1 df
    big = mcnemar(30, 10)
    assert big["method"].startswith("chi-square") and big["statistic"] == pytest.approx(9.025)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert big["p_value"] == pytest.approx(scipy_stats.chi2.sf(9.025, 1))
    assert mcnemar(30, 10, exact=True)["p_value"] == pytest.approx(scipy_stats.binomtest(10, 40, 0.5).pvalue)


def test_paired_test_counts_discordant_prompts():
    a = [_p(True), _p(True), _p(True), _p(False), _p(None), _p(True), _p(False)]
    b = [_p(False), _p(False), _p(True), _p(True), _p(True), _p(False), _p(False)]
    r = F.paired_test(a, b)
    # used: 6 prompts (one dropped: a skipped); b = a pass & b fail = 3; c = a fail & b pass = 1
    assert (r["n"], r["n_dropped"], r["b"], r["c"]) == (6, 1, 3, 1)
    assert r["p_value"] == pytest.approx(2 * (1 + 4) / 16) and r["diff"] == pytest.approx(100 * 2 / 6)
    assert r["pass_a"] == pytest.approx(400 / 6) and r["pass_b"] == pytest.approx(200 / 6)
    w = F.paired_test([_p(True, True), _p(True, False)], [_p(True, False), _p(False)], field="word_pass")
    assert (w["n"], w["b"], w["c"]) == (1, 1, 0)
    with pytest.raises(ValueError, match="same prompts"):
        F.paired_test(a, b[:-1])


# ----------------------------------------------------------------------------------------------------------------
# LCB prompts and word list


@needs_shared
def test_lcb_prompts_and_words():
    assert lcb_languages("crosslingual") == ["ar", "de", "es", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "tr", "vi", "zh"]
    assert "en" in lcb_languages("monolingual")
    rows = load_lcb_prompts("crosslingual", ["de", "ja"])
    de = [r for r in rows if r["lang"] == "de"]
    assert len(de) == 299 and {r["source"] for r in de} == {"complex_prompts", "okapi", "sharegpt"}  # 99 + 100 + 100
    assert len({r["id"] for r in de}) == len(de) and set(rows[0]) == {"id", "task", "source", "lang", "prompt", "index"}
    sub = load_lcb_prompts("crosslingual", ["de"], n_per_lang=10, seed=3)
    assert len(sub) == 10 and sub == load_lcb_prompts("crosslingual", ["de"], n_per_lang=10, seed=3)
    assert [r["id"] for r in sub] != [r["id"] for r in load_lcb_prompts("crosslingual", ["de"], n_per_lang=10, seed=4)]
    assert [r["id"] for r in sub] == [r["id"] for r in de if r["id"] in {s["id"] for s in sub}]  # file order kept
    with pytest.raises(DataError, match=r"no crosslingual prompts for language 'en'.*Fix: drop 'en'"):
        load_lcb_prompts("crosslingual", ["en"])
    with pytest.raises(DataError, match="use one of monolingual, crosslingual"):
        load_lcb_prompts("bilingual", ["de"])
    words = lcb_english_words()
    assert "computer" in words and "the" not in words and all(w.islower() and len(w) > 3 for w in words)
