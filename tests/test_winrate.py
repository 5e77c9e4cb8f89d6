"""Win rates and the length-controlled GLM, checked against alpaca_eval's own functions on the same annotations."""

import numpy as np
import pandas as pd
import pytest

from xlr import winrate as W

N = 60


def synthetic(seed=0, n=N):
    """Annotations where longer model outputs win more often (the bias LC removes)."""
    rng = np.random.default_rng(seed)
    len_base = rng.integers(200, 1500, n)
    len_model = rng.integers(50, 2500, n)
    z = 0.0015 * (len_model - len_base) + rng.normal(0, 1, n) - 0.5
    p = 1 / (1 + np.exp(-z))
    index = rng.choice(100, n, replace=False)
    return p, len_model, len_base, index


def gamed_frame(seed=1, n_index=100):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, n_index)
    rows = []
    for model, not_gamed in (("gamed_concise", False), ("gamed_verbose", False)):
        for i in range(n_index):
            rows.append(
                {
                    "model": model,
                    "preference": float(rng.uniform()),
                    "index": i,
                    "std_delta_len": float(rng.normal()),
                    "instruction_difficulty": difficulty[i],
                    "not_gamed_baseline": not_gamed,
                }
            )
    return pd.DataFrame(rows), pd.Series(difficulty)


def alpaca_eval_lc(p, len_model, len_base, index, glm_name, gamed_csv, monkeypatch):
    """alpaca_eval 0.6.6's get_length_controlled_winrate, its hub download pointed at a local df_gamed.csv."""
    gw = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    monkeypatch.setattr(gw, "hf_hub_download", lambda **kw: str(gamed_csv))
    df = pd.DataFrame(
        {
            "preference": 1 + np.asarray(p),
            "output_1": ["x" * int(n) for n in len_base],
            "output_2": ["y" * int(n) for n in len_model],
            "index": index,
            "generator_1": "gpt4_turbo",
            "generator_2": "model",
            "annotator": "weighted_alpaca_eval_gpt4_turbo",
        }
    )
    return gw.get_length_controlled_winrate(df, glm_name=glm_name, save_weights_dir=None, is_warn_extreme_changes=False)


def test_win_rates_equal_an_independent_computation():
    p = np.array([0.9, 0.1, 0.5, 0.7, 0.2])
    out = W.win_rates(p)
    assert out["win_rate"] == pytest.approx(48.0)
    assert out["discrete_win_rate"] == pytest.approx((1 + 0 + 0.5 + 1 + 0) / 5 * 100)
    assert out["standard_error"] == pytest.approx(pd.Series(p).sem() * 100)
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"]) == (2, 2, 1)
    with pytest.raises(W.WinRateError):
        W.win_rates([0.5, float("nan")])


def test_win_rates_match_alpaca_eval():
    winrate = pytest.importorskip("alpaca_eval.metrics.winrate")
    p, *_ = synthetic()
    theirs = winrate.get_winrate([{"preference": 1 + x} for x in p])
    ours = W.win_rates(p)
    for k in ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_total"):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-9), k


@pytest.mark.parametrize("variant", ["length_controlled_minimal", "length_controlled_noreg", "length_controlled_v1"])
def test_lc_equals_alpaca_evals_glm(variant, tmp_path, monkeypatch):
    p, len_model, len_base, index = synthetic()
    gamed, difficulty = gamed_frame()
    csv = tmp_path / "df_gamed.csv"
    gamed.to_csv(csv, index=False)
    theirs = alpaca_eval_lc(p, len_model, len_base, index, variant, csv, monkeypatch)
    loaded = pd.read_csv(csv).drop(columns=["model"])
    kwargs = {
        "length_controlled_minimal": {},
        "length_controlled_noreg": {"difficulty": difficulty},
        "length_controlled_v1": {"gamed": loaded},
    }[variant]
    ours = W.length_controlled_winrate(p, len_model, len_base, index, **kwargs)
    assert ours["variant"] == variant
    assert ours["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=0.1)  # the bar
    assert ours["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-6)  # in fact identical
    assert ours["lc_standard_error"] == pytest.approx(theirs["lc_standard_error"], abs=1e-6)


def test_lc_removes_a_pure_length_effect():
    """Preferences driven only by length: the raw WR is far from 50, the LC WR is near 50 (GLM's purpose)."""
    rng = np.random.default_rng(3)
    n = 400
    len_base = rng.integers(300, 1200, n)
    len_model = len_base + rng.integers(200, 1500, n)  # model always longer
    std = (len_base - len_model) / np.std(len_base - len_model, ddof=1)
    p = 1 / (1 + np.exp(2.0 * np.tanh(std)))  # no quality difference at all
    raw = W.win_rates(p)["win_rate"]
    lc = W.length_controlled_winrate(p, len_model, len_base)["length_controlled_winrate"]
    assert raw > 75 and abs(lc - 50) < 3


def test_lc_needs_enough_items_and_indices():
    with pytest.raises(W.WinRateError, match="at least 10"):
        W.length_controlled_winrate([0.5] * 5, [1] * 5, [2] * 5)
    with pytest.raises(W.WinRateError, match="index"):
        W.length_controlled_winrate([0.5] * 12, [1] * 12, [2] * 12, difficulty=pd.Series([0.0]))


def test_the_lc_bootstrap_brackets_the_mean_and_draws_as_it_always_did():
    """The LC CI's bootstrap (xlr.stats.bootstrap_statistic, once winrate.bootstrap_stat_ci): resamples drawn one after
    another as rng.integers(0, n, n) from default_rng(seed), the percentile interval of the statistics that are not NaN."""
    from xlr.stats import bootstrap_statistic

    x = np.random.default_rng(0).normal(0, 1, 200)
    lo, hi = bootstrap_statistic(lambda idx: x[idx].mean(), len(x), n_boot=500, seed=0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)

    def stat(idx):  # a refit that fails now and then: NaN, left out
        return np.nan if idx[0] % 5 == 0 else float(x[idx].mean())

    for n, seed in ((len(x), 7), (13, 3)):
        rng = np.random.default_rng(seed)
        vals = np.array([stat(rng.integers(0, n, n)) for _ in range(300)])
        vals = vals[~np.isnan(vals)]
        a = (1 - 0.95) / 2
        assert bootstrap_statistic(stat, n, n_boot=300, seed=seed) == (float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)))


# ----------------------------------------------------------------------------------------------------------------
# AlpacaEval 2 annotations (xlr.data) and the published leaderboard

import gzip  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from xlr import data as D  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "alpaca-eval").is_dir(), reason="../shared/data/alpaca-eval not present")


def write_annotations(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(records)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def record(i=0, pref=1.7, **kw):
    r = {
        "instruction": f"Say {i}",
        "output_1": "base " * (i % 5 + 1),
        "output_2": "model " * (i % 7 + 1),
        "generator_1": "base",
        "generator_2": "m",
        "dataset": "d",
        "annotator": "a",
        "preference": pref,
    }
    r.update(kw)
    return r


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_alpaca_annotations_read_json_and_gz(tmp_path, suffix):
    path = write_annotations(
        tmp_path / f"a{suffix}", [record(0, 1.0), record(1, "2.0"), record(2, 0), record(3, None), record(4, float("nan"))]
    )
    df, rep = D.load_alpaca_annotations(path)
    assert list(df["record"]) == [1, 2, 3, 4, 5]
    assert df["preference"].iloc[:3].tolist() == [1.0, 2.0, 1.5]  # string accepted; legacy draw 0 -> 1.5 (alpaca_eval)
    assert df["preference"].iloc[3:].isna().all()  # kept in the frame (row order / lengths), not judged
    assert rep.kept == 3 and rep.skipped[D.SKIP_NO_PREFERENCE] == 2
    assert {"generator_1", "dataset"} <= set(df.columns)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"drop": "output_2"}, r"record 2.*'output_2' missing"),
        ({"preference": 2.5}, r"record 2.*'preference' is 2.5, outside \[1, 2\]"),
        ({"preference": "a lot"}, r"record 2.*'preference' is 'a lot', not a number"),
        ({"preference": [1]}, r"record 2.*'preference' should be a number"),
        ({"output_1": None}, r"record 2.*'output_1' should be a string"),
    ],
)
def test_alpaca_annotations_bad_input_is_named(tmp_path, bad, match):
    r = record(1)
    if "drop" in bad:
        del r[bad["drop"]]
    else:
        r.update(bad)
    path = write_annotations(tmp_path / "bad.json", [record(0), r])
    with pytest.raises(D.DataError, match=match) as e:
        D.load_alpaca_annotations(path)
    assert str(path) in str(e.value) and "Fix" in str(e.value)


def test_alpaca_annotations_bad_files(tmp_path):
    with pytest.raises(D.DataError, match="not found"):
        D.load_alpaca_annotations(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(D.DataError, match="not a readable JSON"):
        D.load_alpaca_annotations(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"a": 1}')
    with pytest.raises(D.DataError, match="JSON list"):
        D.load_alpaca_annotations(tmp_path / "y.json")


@needs_shared
def test_shipped_alpaca_files_and_leaderboard():
    files = D.alpaca_annotation_files(SHARED)
    assert len(files) == 52 and {"gpt4_gamed", "phi-2", "NullModel"} <= set(files)
    lb = D.load_alpaca_leaderboard(SHARED)
    assert lb.index.name == "model" and "length_controlled_winrate" in lb.columns
    assert set(files) - set(lb.index) == {"text_davinci_003"}  # an AlpacaEval 1 model: no AlpacaEval 2 row
    df, rep = D.load_alpaca_annotations(files["phi-2"])
    assert len(df) == rep.kept == int(lb.loc["phi-2", "n_total"]) == 803


# ----------------------------------------------------------------------------------------------------------------
# win rates of AlpacaEval annotation files, and the LC files rebuilt offline


def test_alpaca_win_rates_match_alpaca_eval_with_ties_and_nan():
    winrate = pytest.importorskip("alpaca_eval.metrics.winrate")
    rng = np.random.default_rng(5)
    pref = list(1 + rng.uniform(size=50)) + [1.5, 1.5, 0, 1.0, 2.0, float("nan"), float("nan")]
    theirs = winrate.get_winrate([{"preference": x} for x in pref])
    ours = W.alpaca_win_rates(pref)
    for k in ("win_rate", "standard_error", "discrete_win_rate", "n_wins", "n_wins_base", "n_draws", "n_total"):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-9), k
    assert ours["n_total"] == 55 and ours["n_draws"] == 3


@needs_shared
@pytest.mark.parametrize("model", ["phi-2", "claude-2.1", "gpt4_gamed"])
def test_shipped_win_rates_equal_the_published_leaderboard(model):
    lb = D.load_alpaca_leaderboard(SHARED)
    [row] = W.annotation_winrates([D.alpaca_annotation_files(SHARED)[model]], variant="minimal", data_dir=SHARED)
    pub = lb.loc[model]
    assert row["win_rate"] == pytest.approx(pub["win_rate"], abs=1e-6)  # the goal is 0.05 points; in fact identical
    assert row["standard_error"] == pytest.approx(pub["standard_error"], abs=1e-6)
    assert (row["n"], row["n_wins"], row["n_wins_base"], row["n_draws"]) == (
        pub["n_total"],
        pub["n_wins"],
        pub["n_wins_base"],
        pub["n_draws"],
    )
    assert row["discrete_win_rate"] == pytest.approx(pub["discrete_win_rate"], abs=1e-6)
    assert row["lc_variant"] == "length_controlled_minimal"


@pytest.mark.parametrize("variant", ["length_controlled_minimal", "length_controlled_noreg", "length_controlled_v1"])
def test_lc_with_unjudged_items_equals_alpaca_eval(variant, tmp_path, monkeypatch):
    """NaN preferences: alpaca_eval keeps them in the length std and the mean prediction, drops them from the fit."""
    p, len_model, len_base, index = synthetic(seed=4)
    p = p.copy()
    p[[3, 17, 40]] = np.nan
    gamed, difficulty = gamed_frame()
    csv = tmp_path / "df_gamed.csv"
    gamed.to_csv(csv, index=False)
    theirs = alpaca_eval_lc(p, len_model, len_base, index, variant, csv, monkeypatch)
    kwargs = {
        "length_controlled_minimal": {},
        "length_controlled_noreg": {"difficulty": difficulty},
        "length_controlled_v1": {"gamed": pd.read_csv(csv).drop(columns=["model"])},
    }[variant]
    ours = W.length_controlled_winrate(p, len_model, len_base, index, **kwargs)
    assert ours["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-6)
    assert ours["lc_standard_error"] == pytest.approx(theirs["lc_standard_error"], abs=1e-6)


GAMED = W.GAMED_BASELINES


def make_root(root, n_instr=40, models=("m_good", "m_long", "m_bad"), gamed=True, seed=0):
    """A small data root in AlpacaEval's layout: annotations whose preferences follow a GLM with known instruction
    difficulty, length effect and model quality; the leaderboard (model names); the X-AlpacaEval English prompts."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(0, 1.0, n_instr)
    len_1 = rng.integers(300, 1500, n_instr)
    quality = {"m_good": 0.5, "m_long": -0.5, "m_bad": -2.0, GAMED[0]: 0.0, GAMED[1]: 0.0}
    scale = {"m_long": 2.0, GAMED[0]: 1.6, GAMED[1]: 0.5}
    names = [W.ALPACA_BASELINE, *models, *(GAMED if gamed else ())]
    for m in names:
        recs = []
        for i in range(n_instr):
            l2 = int(len_1[i]) if m == W.ALPACA_BASELINE else max(1, int(len_1[i] * scale.get(m, 1.0) * rng.uniform(0.6, 1.4)))
            if m == W.ALPACA_BASELINE:
                pref = 1.5
            else:
                z = quality[m] - 1.5 * np.tanh((len_1[i] - l2) / 600) - diff[i] + rng.normal(0, 0.5)
                pref = float(1 + 1 / (1 + np.exp(-z)))
            recs.append(
                {
                    "instruction": f"Instruction {i}?",
                    "output_1": "b" * int(len_1[i]),
                    "generator_1": W.ALPACA_BASELINE,
                    "output_2": "m" * l2,
                    "generator_2": m,
                    "dataset": "d",
                    "annotator": "weighted_alpaca_eval_gpt4_turbo",
                    "preference": pref,
                }
            )
        write_annotations(root / "alpaca-eval/annotations" / f"{m}.json.gz", recs)
    pd.DataFrame({"win_rate": 10.0, "length_controlled_winrate": 10.0}, index=pd.Index(names)).to_csv(root / "alpaca-eval/leaderboard.csv")
    (root / "x-alpacaeval/prompts").mkdir(parents=True, exist_ok=True)
    (root / "x-alpacaeval/prompts/en.json").write_text(
        json.dumps([{"id": i + 1, "dataset": "d", "instruction": f"Instruction {i}?"} for i in range(n_instr)])
    )
    return root


@pytest.fixture
def lc_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XLR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "alpaca-eval-lc"


def test_joint_difficulty_equals_the_notebooks_formula(tmp_path, lc_cache):
    """Our sparse port of instruction_difficulty.ipynb's joint GLM against the notebook's own recipe: patsy's formula and
    alpaca_eval's fit_LogisticRegressionCV on the same rows."""
    gw = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    patsy = pytest.importorskip("patsy")
    import sklearn

    root = make_root(tmp_path / "data")
    frames = {m: D.load_alpaca_annotations(p)[0] for m, p in D.alpaca_annotation_files(root).items()}
    glm = {m: W._rows_for_glm(df, m, not_gamed=m not in GAMED) for m, df in frames.items()}
    ours, A, info = W._joint_difficulty(glm)
    ordered = list(A["model"].unique())  # noqa: F841 - read by the formula below (patsy evaluates it in this frame)
    formula = "C(model, levels=ordered):np.tanh(std_delta_len) + C(model, levels=ordered) + C(index) + not_gamed_baseline.astype(float) - 1"
    X = patsy.dmatrix(formula, A, return_type="dataframe", eval_env=patsy.EvalEnvironment.capture(0))
    X["preference"] = A["preference"].to_numpy()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = gw.fit_LogisticRegressionCV(X, "preference", is_ytrue_proba=True, n_splits=5)
    sklearn.set_config(enable_metadata_routing=False)
    params = pd.Series(model.coef_[0], index=model.feature_names_in_)
    theirs = pd.Series({int(k.split("[T.")[-1].rstrip("]")): v for k, v in params.items() if k.startswith("C(index)")})
    theirs.loc[0] = 0.0
    theirs = theirs.sort_index()
    assert float(np.ravel(model.C_)[0]) == pytest.approx(info["C"])
    assert np.abs(ours.to_numpy() - theirs.to_numpy()).max() < 1e-3
    true = np.random.default_rng(0).normal(0, 1.0, 40)  # make_root's first draw; it lowers the model's preference
    assert np.corrcoef(ours.to_numpy(), -true)[0, 1] > 0.8  # sanity: the weights recover the true difficulty


def test_offline_lc_files_cached_reused_and_rebuilt(tmp_path, lc_cache, monkeypatch):
    root = make_root(tmp_path / "data")
    d1, g1, p1 = W.offline_lc_files(root)
    assert not p1["reused"] and len(d1) == 40 and d1.iloc[0] == 0.0
    assert list(g1.columns) == ["model", "preference", "index", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"]
    assert list(g1["model"].unique()) == list(GAMED) and not g1["not_gamed_baseline"].any() and len(g1) == 80
    assert g1["preference"].between(0, 1).all()
    out = Path(p1["dir"])
    assert out.parent == lc_cache and {f.name for f in out.iterdir()} == {"instruction_difficulty.csv", "df_gamed.csv", "provenance.json"}
    prov = json.loads((out / "provenance.json").read_text())
    assert {"inputs", "method", "source", "created", "xlr_version"} <= set(prov)
    assert all(len(i["sha256"]) == 64 for i in prov["inputs"]) and len(prov["inputs"]) == 1 + 6

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt although the inputs did not change")

    monkeypatch.setattr(W, "build_lc_files", no_rebuild)
    d2, g2, p2 = W.offline_lc_files(root)
    assert p2["reused"] and p2["cache_key"] == p1["cache_key"]
    pd.testing.assert_series_equal(d1, d2, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(g1, g2, check_exact=False, rtol=1e-12)
    monkeypatch.undo()
    monkeypatch.setenv("XLR_CACHE", str(lc_cache.parent))
    # an input changes (one preference): a new key, rebuilt
    path = root / "alpaca-eval/annotations/m_bad.json.gz"
    recs = json.load(gzip.open(path))
    recs[0]["preference"] = 2.0
    write_annotations(path, recs)
    d3, _, p3 = W.offline_lc_files(root)
    assert not p3["reused"] and p3["cache_key"] != p1["cache_key"] and len(list(lc_cache.iterdir())) == 2


def test_offline_lc_files_without_gamed_baselines(tmp_path, lc_cache):
    root = make_root(tmp_path / "data", gamed=False)
    d, g, prov = W.offline_lc_files(root)
    assert g is None and "not built" in prov["df_gamed"] and prov["df_gamed_file"] is None
    assert not (Path(prov["dir"]) / "df_gamed.csv").exists()
    from xlr.evaluate import load_lc_files

    d2, g2 = load_lc_files(None, None, root)  # the study's LC files: the offline ones, reused
    assert g2 is None and np.allclose(d2.to_numpy(), d.to_numpy())
    rows = W.annotation_winrates(sorted((root / "alpaca-eval/annotations").glob("m_*.json.gz")), data_dir=root)
    assert [r["lc_variant"] for r in rows] == ["length_controlled_noreg"] * 3
    with pytest.raises(W.WinRateError, match="df_gamed"):
        W.annotation_winrates([root / "alpaca-eval/annotations/m_bad.json.gz"], variant="v1", data_dir=root)


def test_annotation_winrates_v1_equals_alpaca_eval(tmp_path, lc_cache, monkeypatch):
    """auto -> v1 with the offline files; the number equals alpaca_eval's get_length_controlled_winrate given the same
    df_gamed.csv (its hub download pointed at ours)."""
    gw = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    root = make_root(tmp_path / "data")
    _, _, prov = W.offline_lc_files(root)
    path = root / "alpaca-eval/annotations/m_long.json.gz"
    [row] = W.annotation_winrates([path], data_dir=root)
    assert row["lc_variant"] == "length_controlled_v1" and row["lc_index"] == "matched by instruction text"
    assert row["model"] == "m_long" and row["n"] == 40 and row["n_skipped"] == 0
    monkeypatch.setattr(gw, "hf_hub_download", lambda **kw: str(Path(prov["dir"]) / "df_gamed.csv"))
    df, _ = D.load_alpaca_annotations(path)
    theirs = gw.get_length_controlled_winrate(df.drop(columns=["record"]), save_weights_dir=None, is_warn_extreme_changes=False)
    assert row["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-6)
    assert row["win_rate"] == pytest.approx(theirs["win_rate"], abs=1e-9)
    [base] = W.annotation_winrates([root / f"alpaca-eval/annotations/{W.ALPACA_BASELINE}.json.gz"], data_dir=root)
    assert base["length_controlled_winrate"] == 50.0 and base["win_rate"] == 50.0


def test_annotation_winrates_unknown_instructions_and_bad_variant(tmp_path, lc_cache):
    root = make_root(tmp_path / "data")
    other = write_annotations(tmp_path / "other.json", [record(i, 1 + (i % 10) / 10) for i in range(30)])
    [row] = W.annotation_winrates([other], data_dir=root)
    assert row["lc_variant"] == "length_controlled_minimal" and "not AlpacaEval's" in row["lc_note"]
    [row] = W.annotation_winrates([other], data_dir=root, index="row")  # alpaca_eval's own convention: position in the file
    assert row["lc_variant"] == "length_controlled_v1"
    with pytest.raises(W.WinRateError, match="needs every instruction"):
        W.annotation_winrates([other], variant="noreg", data_dir=root)
    with pytest.raises(W.WinRateError, match="use auto, v1, noreg or minimal"):
        W.annotation_winrates([other], variant="v2", data_dir=root)
    mixed = write_annotations(tmp_path / "mixed.json", [record(0), record(1, generator_2="other")])
    with pytest.raises(D.DataError, match="one file per generator_2"):
        W.annotation_winrates([mixed], variant="minimal")
    nan = write_annotations(tmp_path / "nan.json", [record(i, float("nan") if i < 2 else 1.2) for i in range(12)])
    [row] = W.annotation_winrates([nan], variant="minimal")
    assert row["n"] == 10 and row["n_skipped"] == 2 and row["n_records"] == 12
    none = write_annotations(tmp_path / "none.json", [record(i, None) for i in range(3)])
    with pytest.raises(D.DataError, match="none of its 3 annotations"):
        W.annotation_winrates([none], variant="minimal")
