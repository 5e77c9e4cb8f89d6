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
            rows.append({"model": model, "preference": float(rng.uniform()), "index": i, "std_delta_len": float(rng.normal()),
                         "instruction_difficulty": difficulty[i], "not_gamed_baseline": not_gamed})
    return pd.DataFrame(rows), pd.Series(difficulty)


def alpaca_eval_lc(p, len_model, len_base, index, glm_name, gamed_csv, monkeypatch):
    """alpaca_eval 0.6.6's get_length_controlled_winrate, its hub download pointed at a local df_gamed.csv."""
    gw = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    monkeypatch.setattr(gw, "hf_hub_download", lambda **kw: str(gamed_csv))
    df = pd.DataFrame({"preference": 1 + np.asarray(p), "output_1": ["x" * int(n) for n in len_base], "output_2": ["y" * int(n) for n in len_model],
                       "index": index, "generator_1": "gpt4_turbo", "generator_2": "model", "annotator": "weighted_alpaca_eval_gpt4_turbo"})
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
    kwargs = {"length_controlled_minimal": {}, "length_controlled_noreg": {"difficulty": difficulty}, "length_controlled_v1": {"gamed": loaded}}[variant]
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


def test_bootstrap_stat_ci_brackets_the_mean():
    x = np.random.default_rng(0).normal(0, 1, 200)
    lo, hi = W.bootstrap_stat_ci(lambda idx: x[idx].mean(), len(x), n_boot=500, seed=0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)
