"""The cross-lingual reward probe (xlr.probe) on the tiny model and a small synthetic data root."""

import gzip
import json
import math

import pytest
from conftest import independent_seq_logp

from xlr.config import load_params
from xlr.languages import LANGUAGE_NAMES
from xlr.probe import ProbeError, build_comparisons, read_probe, run_probe, select_ids, summarize
from xlr.rewards import G_PREFIX

REF = "gpt-4-turbo-2024-04-09"
WEAK = "gpt-3.5-turbo-0125"
IDS = [1, 2, 3, 4, 5, 6]
INSTR = {
    "en": {i: f"Name {i} colours and say why you like them." for i in IDS},
    "de": {i: f"Nenne {i} Farben und sag, warum du sie magst." for i in IDS},
    "sw": {i: f"Taja rangi {i} na sema kwa nini unazipenda." for i in IDS},
    "bn": {i: f"{i}টি রঙের নাম বলুন।" for i in IDS},
}
ANS = {
    "en": {i: f"Here are {i} colours: red, blue and green. I like them because they are bright." for i in IDS},
    "de": {i: f"Hier sind {i} Farben: Rot, Blau und Grün. Ich mag sie, weil sie hell sind." for i in IDS},
    "sw": {i: f"Hizi ni rangi {i}: nyekundu, bluu na kijani." for i in IDS},
}
WEAK_ANS = {
    "en": {i: "Red." for i in IDS},
    "de": {i: ("Rot." if i != 3 else ANS["de"][3]) for i in IDS},  # id 3: identical to the reference (a counted skip)
}
# AlpacaEval-style annotations of English instructions: (id, output_1, output_2, preference)
ANNOTATIONS = [
    (1, "Blue, because of the sky.", "no", 1.0),
    (1, "Red and blue.", "Blue and red.", 1.5),
    (2, "Green and red.", "idk", 1.02),
    (3, "a", "Three colours: cyan, magenta and yellow, all vivid.", 2.0),
    (4, "x", "Four: red, blue, green, black.", 1.95),
    (5, "Five colours, all lovely.", "five", 1.2),
    (6, "?", "Six colours, listed with reasons.", 1.99),
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-data")

    def dump(rel, obj):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")

    for lang, ins in INSTR.items():
        dump(f"x-alpacaeval/prompts/{lang}.json", [{"id": i, "dataset": "toy", "instruction": ins[i]} for i in IDS])
    for lang, ans in ANS.items():  # no bn references; the English file has no ids (joined by row order, as the shipped one)
        dump(
            f"x-alpacaeval/references/{REF}/{lang}.json",
            [
                {"generator": REF, "dataset": "toy", **({} if lang == "en" else {"id": i}), "instruction": INSTR[lang][i], "output": ans[i]}
                for i in IDS
            ],
        )
    for lang, ans in WEAK_ANS.items():  # no sw outputs
        dump(
            f"x-alpacaeval/outputs/{WEAK}/{lang}.json",
            [{"generator": WEAK, "dataset": "toy", "id": i, "instruction": INSTR[lang][i], "output": ans[i]} for i in IDS],
        )
    ann = [
        {
            "instruction": INSTR["en"][i],
            "output_1": o1,
            "generator_1": "gpt4_1106_preview",
            "output_2": o2,
            "generator_2": "toy",
            "dataset": "toy",
            "annotator": "weighted_alpaca_eval_gpt4_turbo",
            "preference": str(p),
        }
        for i, o1, o2, p in ANNOTATIONS
    ]
    path = root / "alpaca-eval/annotations/toy.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(ann, f)
    return root


def _params(root, **probe):
    over = {
        "data": {"data_dir": str(root)},
        "languages": {"train": probe.pop("train", ["en", "de", "sw"])},
        "reward": probe.pop("reward", {}),
        "probe": {
            "n_items": 6,
            "english_label_files": ["toy"],
            "n_english_label_pairs": 4,
            "translate_max_new_tokens": 6,
            "bootstrap": 200,
            "permutations": 200,
            **probe,
        },
    }
    from xlr.paths import REPO_ROOT

    return load_params(REPO_ROOT / "params" / "smoke.yaml", over)


@pytest.fixture(scope="module")
def probe_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-out") / "probe"
    params = _params(data_root)
    return params, out, run_probe(params, "tiny:1", "tiny:0", out)


@pytest.fixture(scope="module")
def models():
    from xlr.models import load_model

    pi0, tok = load_model("tiny:1")
    ref, _ = load_model("tiny:0")
    return pi0, ref, tok


_LOGP: dict = {}


def _logp(model, tok, prompt, response):
    """log p(response + end-of-turn | prompt), one sequence, full logits, plain log_softmax: independent of xlr.rewards."""
    key = (id(model), prompt, response)
    if key not in _LOGP:
        _LOGP[key] = independent_seq_logp(model, tok, prompt, response)
    return _LOGP[key]


def _expected_prompt(variant, lang, i):
    if variant == "R_c":
        return INSTR["en"][i] if lang == "en" else G_PREFIX.format(language=LANGUAGE_NAMES[lang]) + INSTR["en"][i]
    if variant == "R_m":
        return INSTR[lang][i]
    return INSTR["en"][i]


def _items(out):
    return [json.loads(line) for line in (out / "probe_items.jsonl").read_text().splitlines()]


def test_prompts_per_variant_and_fractions_match_an_independent_computation(probe_run, models):
    params, out, res = probe_run
    pi0, ref, tok = models
    items = _items(out)
    wins: dict[tuple, list[float]] = {}
    for r in items:
        if r["variant"] not in ("R_c", "R_m"):
            continue
        assert r["reward_prompt"] == _expected_prompt(r["variant"], r["lang"], r["id"]), r
        a, b = _texts(r)
        ra = _logp(pi0, tok, r["reward_prompt"], a) - _logp(ref, tok, r["reward_prompt"], a)
        rb = _logp(pi0, tok, r["reward_prompt"], b) - _logp(ref, tok, r["reward_prompt"], b)
        assert math.isclose(r["score_a"], ra, rel_tol=1e-4, abs_tol=1e-3) and math.isclose(r["score_b"], rb, rel_tol=1e-4, abs_tol=1e-3), (
            r,
            ra,
            rb,
        )
        wins.setdefault((r["test"], r["lang"], r["variant"]), []).append(1.0 if ra > rb else 0.5 if ra == rb else 0.0)
    summary = {(s["test"], s["lang"], s["variant"]): s for s in res["summary"]}
    assert set(wins) <= set(summary) and len(wins) >= 8
    for key, w in wins.items():
        assert summary[key]["n"] == len(w)
        assert math.isclose(summary[key]["fraction"], sum(w) / len(w)), key


def _texts(r):
    """The original answers a and b of an item row, from the synthetic data."""
    if r["test"] == "language":
        return ANS[r["lang"]][r["id"]], ANS["en"][r["id"]]
    if r["test"] == "quality":
        return ANS[r["lang"]][r["id"]], WEAK_ANS[r["lang"]][r["id"]]
    i, o1, o2, p = next(a for a in ANNOTATIONS if a[0] == r["id"] and abs(a[3] - r["preference"]) < 1e-9)
    return (o1, o2) if p < 1.5 else (o2, o1)


def test_length_score_and_english_skipped_in_language_test(probe_run):
    _, out, res = probe_run
    items = _items(out)
    assert {r["lang"] for r in items if r["test"] == "language"} == {"de", "sw"}  # English is never compared with itself
    for r in items:
        if r["variant"] == "length":
            a, b = _texts(r)
            assert (r["score_a"], r["score_b"]) == (len(a), len(b)) and r["win"] == (
                1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0
            )
    assert ("language", "en") not in {(s["test"], s["lang"]) for s in res["summary"]}


def test_missing_outputs_are_a_counted_skip_and_identical_answers_are_counted(probe_run, data_root):
    _, out, res = probe_run
    c = res["counts"]
    assert str(data_root / f"x-alpacaeval/outputs/{WEAK}/sw.json") in c["skipped"]["quality/sw"]
    assert c["skipped_items"] == {"quality/de: identical answers": 1}
    assert c["comparisons"]["quality/de"] == 5 and c["comparisons"]["language/sw"] == 6 and "quality/sw" not in c["comparisons"]
    assert not [r for r in _items(out) if r["test"] == "quality" and r["lang"] == "sw"]


def test_language_without_references_is_an_error_naming_the_file(data_root, tmp_path):
    from xlr.data import DataError

    with pytest.raises(DataError, match=f"references/{REF}/bn.json"):
        run_probe(_params(data_root, train=["en", "bn"]), "tiny:1", "tiny:0", tmp_path / "p")
    with pytest.raises(ProbeError, match="alpaca-eval/annotations"):
        build_comparisons(_params(data_root, english_label_files=["no-such-model"]))


def test_english_labels_clear_and_balanced(probe_run):
    _, out, res = probe_run
    rows = [r for r in _items(out) if r["test"] == "english_labels" and r["variant"] == "R_c"]
    assert len(rows) == 4 and sum(r["preferred"] == "output_1" for r in rows) == 2  # balanced
    assert all(abs(r["preference"] - 1.5) >= 0.4 for r in rows)  # clear verdicts only (not 1.5, not 1.2)
    assert {r["reward_prompt"] for r in rows} <= set(INSTR["en"].values())
    e = res["counts"]["english_labels"]
    assert (e["clear_output_1"], e["clear_output_2"], e["not_clear"], e["selected"]) == (2, 3, 2, 4)


def test_r_t_translates_with_pi0_and_scores_under_the_english_instruction(probe_run, models):
    from xlr.rewards import translate_to_english
    from xlr.sampling import HFBackend

    params, out, res = probe_run
    pi0, ref, tok = models
    rows = [r for r in _items(out) if r["variant"] == "R_t"]
    by_key = {(r["test"], r["lang"], r["id"], r.get("preference"), r["variant"]): r for r in _items(out)}
    backend = HFBackend(pi0, tok)
    checked = 0
    for r in rows:
        assert r["reward_prompt"] == INSTR["en"][r["id"]]
        if r["lang"] == "en":  # nothing to translate: R_t = R_c in English
            assert "translation_a" not in r and r["score_a"] == by_key[(r["test"], "en", r["id"], r.get("preference"), "R_c")]["score_a"]
            continue
        a, _ = _texts(r)
        if checked < 3:
            want = translate_to_english(backend, [a], [r["lang"]], params.probe.translate_max_new_tokens, style=params.reward.rt_style)
            assert (r["translation_a"], r["translation_status_a"], r["translation_truncated_a"]) == (
                want.texts[0],
                want.status[0],
                want.truncated[0],
            )
            ra = _logp(pi0, tok, r["reward_prompt"], r["translation_a"]) - _logp(ref, tok, r["reward_prompt"], r["translation_a"])
            assert math.isclose(r["score_a"], ra, rel_tol=1e-4, abs_tol=1e-3)
            checked += 1
    assert checked == 3
    c = res["counts"]
    assert c["translation_settings"] == {
        "style": "reference",
        "max_new_tokens": 6,
    }  # the default style; the cap of probe.translate_max_new_tokens
    # style reference: the request names no source language, so an answer is translated once whatever its L
    assert (
        c["translations"] == len({t for r in rows if r["lang"] != "en" for t in _texts(r)})
        and 0 <= c["translations_truncated"] <= c["translations"]
    )
    assert sum(c["translation_status"].values()) == c["translations"] and set(c["translation_status"]) <= {
        "tagged",
        "tagged_empty",
        "untagged",
        "error",
    }


def test_probe_r_t_translates_in_the_training_style_with_the_params_cap(data_root, tmp_path, monkeypatch):
    import xlr.sampling
    from xlr.probe import translation_fingerprint, translation_settings

    calls = []

    class Recording(xlr.sampling.HFBackend):
        def generate(self, prompts, cfg, seed=None, progress=None):
            calls.append((list(prompts), cfg))
            return super().generate(prompts, cfg, seed=seed, progress=progress)

    monkeypatch.setattr(xlr.sampling, "HFBackend", Recording)
    fps = {}
    for style in ("reference", "plain"):
        calls.clear()
        params = _params(
            data_root,
            train=["en", "de"],
            variants=["R_t"],
            tests=["language"],
            n_items=2,
            translate_max_new_tokens=None,
            reward={"rt_style": style, "rt_max_new_tokens": 5},
        )
        assert translation_settings(params) == {
            "style": style,
            "max_new_tokens": 5,
        }  # probe.translate_max_new_tokens None: reward.rt_max_new_tokens
        out = tmp_path / style
        res = run_probe(params, "tiny:1", "tiny:0", out)
        prompts = [p for ps, _ in calls for p in ps]
        assert prompts and all(cfg.max_new_tokens == 5 and not cfg.do_sample and cfg.n == 1 for _, cfg in calls)
        if style == "reference":
            assert all(p.endswith("</translated>.\n<|im_end|>\n<|im_start|>assistant\n<translated>\n") for p in prompts)  # primed answer
            assert len(prompts) == 4  # 2 German answers + 2 English ones (the language test's b), each once
        else:
            plain = "Translate the following German text into English. Output only the translation."
            assert all(plain in p and not p.endswith("<translated>\n") for p in prompts)
        doc = read_probe(out)
        fps[style] = translation_fingerprint(doc["models"]["pi0"], doc["dtype"], {"style": style, "max_new_tokens": 5})
        assert (out / "cache" / f"translations-{fps[style]}.jsonl").is_file()
        assert sum(res["counts"]["translation_status"].values()) == res["counts"]["translations"] == 4
    assert fps["reference"] != fps["plain"]  # the style is part of the translation cache's name


def test_cis_contain_the_point_estimate_and_paired_comparisons(probe_run):
    _, _, res = probe_run
    for s in res["summary"]:
        lo, hi = s["ci95"]
        assert lo <= s["fraction"] <= hi, s
        if s["test"] == "quality" and s["lang"] == "de":
            assert s["transfer_ratio"] == pytest.approx(s["acc_l_common"] / s["acc_en_common"])
    variants = {s["variant"] for s in res["summary"]}
    assert variants == {"R_c", "R_m", "R_t", "length"}
    p = [r for r in res["paired"] if r["test"] == "quality" and r["lang"] == "en" and {r["variant_a"], r["variant_b"]} == {"R_c", "R_m"}]
    assert p and p[0]["diff"] == 0 and p[0]["p_value"] == 1.0  # in English the variants coincide
    assert {h["lang"] for h in res["hypotheses"] if h["test"] == "language"} == {"de", "sw"}


def test_artifacts_rerun_from_cache_and_resume(probe_run, tmp_path):
    from xlr import plots
    from xlr.report import probe_table

    params, out, res = probe_run
    assert [p.name for p in res["artifacts"]] == ["probe.json", "probe_items.jsonl"] and all(p.is_file() for p in res["artifacts"])
    doc = read_probe(out.parent)
    assert doc["summary"] == res["summary"] and doc["models"]["pi0"]["spec"] == "tiny:1"
    n_comp = sum(res["counts"]["comparisons"].values())
    assert len(_items(out)) == n_comp * 4
    fig = plots.probe(out.parent)
    assert fig is not None and fig.axes[0].get_ylabel() and all(ax.get_title() for ax in fig.axes)
    table = probe_table(out.parent)
    assert {"R_c", "R_m", "R_t", "length"} <= set(table.columns) and len(table) == len({(s["test"], s["lang"]) for s in res["summary"]})
    assert probe_table(out.parent, "transfer") is not None and probe_table(out.parent, "paired") is not None
    assert plots.probe(tmp_path) is None and probe_table(tmp_path) is None
    # resume: a cache that lost some scores (an interrupted run) is completed, not redone; the result is the same
    cache = next((out / "cache").glob("scores-*.jsonl"))
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-5]) + "\n")
    again = run_probe(params, "tiny:1", "tiny:0", out)
    assert sum(again["counts"]["scored_now"].values()) == 5 and again["counts"]["translations_now"] == 0
    assert again["summary"] == res["summary"]


def test_select_ids_is_the_eval_subset_rule():
    from xlr.data import xalpacaeval_ids

    assert select_ids(range(1, 806), 50, 7) == xalpacaeval_ids(50, 7)
    assert select_ids([3, 1, 2], 10, 0) == [1, 2, 3]


def test_summarize_ties_and_transfer_definitions():
    def item(test, lang, k, sa, sb, variant="R_c"):
        return {
            "test": test,
            "lang": lang,
            "id": k,
            "pair": k,
            "variant": variant,
            "score_a": sa,
            "score_b": sb,
            "win": 1.0 if sa > sb else 0.5 if sa == sb else 0.0,
            "cluster": k,
        }

    en = [item("quality", "en", k, s, 0.0) for k, s in enumerate([1, 1, 1, -1])]  # acc_en 0.75
    de = [item("quality", "de", k, s, 0.0) for k, s in enumerate([1, 0, -1, -1])]  # acc_de (1 + 0.5 + 0) / 4 = 0.375
    rows = {r["lang"]: r for r in summarize(en + de, ["R_c"], n_boot=200, seed=0)}
    assert rows["de"]["fraction"] == 0.375 and rows["de"]["n_ties"] == 1
    assert rows["de"]["transfer_ratio"] == pytest.approx(0.5) and rows["de"]["transfer_excess"] == pytest.approx(-0.5)
    flat = [item("quality", "en", k, s, 0.0) for k, s in enumerate([1, -1])]  # acc_en 0.5: nothing to transfer
    row = next(r for r in summarize(flat + de[:2], ["R_c"], n_boot=50) if r["lang"] == "de")
    assert row["transfer_excess"] is None and row["transfer_excess_ci95"] is None


def test_stats_paired_difference():
    from xlr.stats import bootstrap_ci, paired_difference

    r = paired_difference([1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0], n_boot=200, n_perm=2000)
    assert r["diff"] == 1 and r["ci95"] == [1.0, 1.0] and r["a_better"] == 8 and r["p_value"] < 0.02  # exact: 2 / 256
    assert paired_difference([1, 0], [1, 0])["p_value"] == 1.0
    lo, hi = bootstrap_ci([0, 1, 0, 1], n_boot=500, clusters=["x", "x", "y", "y"])  # whole clusters: every resample has mean 0.5
    assert lo == hi == 0.5
