"""Judge validation against GPT-4-turbo's AlpacaEval 2 verdicts: balanced sampling, metrics (checked by hand and
against scipy), baselines, the informative rule, and validate() end to end with the tiny judge and the API mock."""

import math

import numpy as np
import pandas as pd
import pytest

from xlr import judge as J
from xlr import judge_validation as V
from xlr.config import JudgeParams
from xlr.mock_openai import MockServer

KEY_ENV = "XLR_TEST_JUDGE_KEY"


def frame(n_models=6, per_cell=30, seed=0):
    """Synthetic comparisons: models x datasets, preferences spread over [0, 1] with plenty of clear verdicts of both sides."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_models):
        for d in range(3):
            for k in range(per_cell):
                p = float(rng.uniform())
                lm, lb = int(rng.integers(50, 2000)), int(rng.integers(50, 2000))
                rows.append(
                    {
                        "key": f"m{m}:{d}:{k}",
                        "model": f"m{m}",
                        "record": k,
                        "dataset": f"d{d}",
                        "instruction": f"q{d}-{k}",
                        "output": "x" * lm,
                        "baseline_output": "y" * lb,
                        "preference": 1 + p,
                        "p_gpt4": p,
                        "len_model": lm,
                        "len_baseline": lb,
                    }
                )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# sampling


def test_balanced_sample_counts_clear_verdicts_stratified_and_seeded():
    df = frame()
    s = V.balanced_sample(df, 36, seed=3)
    assert len(s) == 36 and s["model_wins"].sum() == 18  # balanced
    assert (np.abs(s["p_gpt4"] - 0.5) >= 0.2).all()  # clear verdicts only
    assert s["model_wins"].equals(s["p_gpt4"] > 0.5)
    for cls in (True, False):  # equal shares of models (18 over 6 models = 3 each), datasets round robin within a model
        part = s[s["model_wins"] == cls]
        assert part.groupby("model").size().tolist() == [3] * 6
        assert (part.groupby("model")["dataset"].nunique() == 3).all()
    again = V.balanced_sample(df, 36, seed=3)
    assert again["key"].tolist() == s["key"].tolist()
    assert V.balanced_sample(df, 36, seed=4)["key"].tolist() != s["key"].tolist()
    # sizes nest: a smaller sample is a prefix of the larger one, class by class
    small = V.balanced_sample(df, 12, seed=3)
    for cls in (True, False):
        big = s[s["model_wins"] == cls]["key"].tolist()
        assert small[small["model_wins"] == cls]["key"].tolist() == big[:6]
    # a wider margin keeps only clearer verdicts
    assert (np.abs(V.balanced_sample(df, 20, seed=3, margin=0.4)["p_gpt4"] - 0.5) >= 0.4).all()


def alpaca_eval_switch(instruction, output_1, output_2, seed, columns=("instruction",)):
    """alpaca_eval 0.6.6's order draw, re-implemented (RandomSwitchTwoColumnsProcessor.preprocess, src/alpaca_eval/
    processors.py:121-129, utils.random_seeded_choice; random_seed_column ("instruction",) by default,
    annotators/pairwise_evaluator.py:346): output_1 the reference, output_2 the model, switched = model first."""
    import random

    row = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
    return random.Random("is_switched_outputs" + "".join(row[c] for c in sorted(columns)) + str(seed)).choices([False, True], k=1)[0]


def test_balanced_sample_stays_balanced_when_a_class_runs_short_and_orders_are_those_of_judge_pairs(tmp_path):
    df = frame(n_models=2, per_cell=5)
    df.loc[df.index[:-3], "p_gpt4"] = np.minimum(df["p_gpt4"][:-3], 0.1)  # only 3 items can be model-won
    df.loc[df.index[-3:], "p_gpt4"] = 0.95
    s = V.balanced_sample(df, 40, seed=0)
    assert len(s) == 6 and s["model_wins"].sum() == 3
    want = [alpaca_eval_switch(r.instruction, r.baseline_output, r.output, 0) for r in s.itertuples()]
    assert s["model_first"].tolist() == want
    # another order seed and the outputs in the draw: still what judge_pairs presents
    jp = JudgeParams(protocol="pairwise", order_seed=7, order_seed_columns="instruction_outputs")
    s2 = V.balanced_sample(df, 40, seed=0, jp=jp)
    assert s2["model_first"].tolist() == [
        alpaca_eval_switch(r.instruction, r.baseline_output, r.output, 7, ("instruction", "output_1", "output_2")) for r in s2.itertuples()
    ]
    items = [
        {"key": r.key, "instruction": r.instruction, "output": r.output, "baseline_output": r.baseline_output} for r in s2.itertuples()
    ]
    recs, _ = J.judge_pairs(_LabelStub(), items, J.JudgeCache(tmp_path / "c.jsonl"), jp, J.protocol_template(True))
    assert [r["model_first"] for r in recs] == s2["model_first"].tolist()


class _LabelStub:
    id = "stub"

    def __call__(self, prompts, progress=None, sink=None):
        out = [{"logprob_m": -0.5, "logprob_M": -1.0, "tokens_in": 1, "tokens_out": 1} for _ in prompts]
        for i, r in enumerate(out):
            if sink:
                sink(i, r)
        return out


def test_length_matched_sample_and_preferred_items_and_length_cap():
    df = frame()
    bal = V.balanced_sample(df, 40, seed=1)
    lm = V.balanced_sample(df, 20, seed=1, length_tol=0.2, prefer=list(bal["key"]))
    assert len(lm) == 20 and lm["model_wins"].sum() == 10
    a, b = lm["len_model"], lm["len_baseline"]
    assert (np.abs(a - b) <= 0.2 * np.maximum(a, b)).all()
    shared = set(bal["key"][V.length_matched(bal["len_model"], bal["len_baseline"])]) & set(bal["key"])
    for cls in (True, False):  # the balanced sample's own length-matched items are taken first
        mine = [k for k in bal[bal["model_wins"] == cls]["key"] if k in shared][:10]
        assert set(mine) <= set(lm["key"])
    assert V.length_matched([100, 100, 100], [80, 79, 125]).tolist() == [True, False, True]
    capped = V.balanced_sample(df, 20, seed=1, max_chars=600)
    assert (capped[["len_model", "len_baseline"]] <= 600).all().all()


def test_ranking_sample_shares_instructions_across_models():
    df = frame(n_models=4, per_cell=6)
    r = V.ranking_sample(df, 3, seed=0)
    assert r["instruction"].nunique() == 3 and r.groupby("instruction")["model"].nunique().eq(4).all()
    assert V.ranking_sample(df, 3, seed=0)["key"].tolist() == r["key"].tolist()


def test_shipped_annotations_and_the_baselines_the_issue_quotes():
    df, report = V.load_comparisons()
    assert report["files"] == 52 and df["model"].nunique() == 51 and V.BASELINE_MODEL not in set(df["model"])
    assert report["kept"] + sum(report["skipped"].values()) == report["rows"]
    pop = V.population_baselines(df)
    assert pop["baseline_won_share"] == pytest.approx(0.90, abs=0.01)
    assert pop["length_balanced"] == pytest.approx(0.678, abs=0.01)  # "the longer output wins" on balanced clear verdicts
    s = V.balanced_sample(df, 200, seed=0)
    assert len(s) == 200 and s["model_wins"].sum() == 100 and s["model"].nunique() == 51
    base = V.baseline_preferences(s)
    assert V.agreement_metrics(base["always_baseline"], s["p_gpt4"], n_boot=50)["agreement"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# metrics


def test_agreement_metrics_against_hand_computations():
    p = [0.7, 0.2, 0.5, 0.9, math.nan]
    q = [0.8, 0.9, 0.1, 0.3, 0.9]
    assert V.hard_agreement(p[:4], q[:4]).tolist() == [1.0, 0.0, 0.5, 0.0]
    assert V.soft_agreement(p[:4], q[:4]) == pytest.approx([0.9, 0.3, 0.6, 0.4])
    orders = [[0.7, 0.6], [0.2, 0.9], [0.5, 0.4], [0.9, 0.8], [math.nan, math.nan]]
    m = V.agreement_metrics(p, q, orders, n_boot=200, seed=0)
    assert m["n_items"] == 4 and m["unjudgeable"] == 1
    assert m["agreement"] == pytest.approx(1.5 / 4) and m["soft_agreement"] == pytest.approx(2.2 / 4)
    # consistency: both orders on the same side of 0.5 (item 1 flips, item 3 is 0.5 vs 0.4: not > 0.5 both times -> same)
    assert m["position_consistency"] == pytest.approx(3 / 4)
    assert m["ci95"][0] <= m["agreement"] <= m["ci95"][1]


def test_spearman_equals_scipy():
    from scipy.stats import spearmanr

    from xlr.stats import spearman

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=30), rng.normal(size=30)
    y[:5] = y[5]  # ties
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))


def test_ranking_metrics_are_spearman_of_per_model_win_rates():
    from scipy.stats import spearmanr

    df = frame(n_models=5, per_cell=4)
    r = V.ranking_sample(df, 4, seed=0)
    board = pd.DataFrame(
        {"win_rate": [10, 20, 30, 40, 50], "length_controlled_winrate": [50, 40, 30, 20, 10]}, index=[f"m{i}" for i in range(5)]
    )
    p = np.random.default_rng(0).uniform(size=len(r))
    out = V.ranking_metrics(r, p, board, n_boot=50)
    wr = pd.Series(p).groupby(r["model"].to_numpy()).mean()
    assert out["spearman_wr"] == pytest.approx(spearmanr(wr.to_numpy(), board.loc[wr.index, "win_rate"]).statistic)
    assert out["spearman_lc"] == pytest.approx(-out["spearman_wr"])
    assert out["n_models"] == 5 and out["win_rate"]["m0"] == pytest.approx(wr["m0"] * 100)


def test_baselines_and_the_informative_rule():
    s = pd.DataFrame({"len_model": [10, 5, 7], "len_baseline": [5, 10, 7], "model_first": [True, False, True]})
    b = V.baseline_preferences(s)
    assert (
        b["length"].tolist() == [1.0, 0.0, 0.5]
        and b["always_first"].tolist() == [1.0, 0.0, 1.0]
        and b["always_baseline"].tolist() == [0, 0, 0]
    )
    yes = V.informative({"agreement": 0.8, "ci95": [0.72, 0.88]}, {"agreement": 0.5, "ci95": [0.3, 0.7]}, 0.678)
    assert yes["informative"] and "above the length baseline" in yes["reason"]
    lm = V.informative({"agreement": 0.6, "ci95": [0.5, 0.7]}, {"agreement": 0.7, "ci95": [0.55, 0.85]}, 0.678)
    assert lm["informative"] and "length-matched" in lm["reason"]
    no = V.informative({"agreement": 0.6, "ci95": [0.5, 0.7]}, {"agreement": 0.5, "ci95": [0.4, 0.6]}, 0.678)
    assert not no["informative"] and "0.500 <= length baseline 0.678" in no["reason"]


# ---------------------------------------------------------------------------------------------------------------
# validate() end to end


@pytest.fixture
def smoke_params():
    from pathlib import Path

    from xlr.config import load_params

    return load_params(Path(__file__).resolve().parents[1] / "params" / "smoke.yaml")


def test_validate_with_the_tiny_judge_writes_results_and_reruns_free(smoke_params, tmp_path):
    protocols = ["pairwise", "pairwise_both", "pointwise_score"]
    kw = dict(n_items=6, protocols=protocols, xae_items=1, rank_items=1, rank_models=4, uf_items=2, max_chars=800, n_boot=50)
    res = V.validate(smoke_params, V.ValidationSettings.from_params(smoke_params, **kw), out_dir=tmp_path / "out")
    assert set(res["protocols"]) == set(protocols) and res["sizes"]["balanced"] == 6 and res["sizes"]["balanced_model_won"] == 3
    for e in res["protocols"].values():
        assert e["balanced"]["n_items"] + e["balanced"]["unjudgeable"] == 6
        assert isinstance(e["informative"], bool) and e["reason"]
        assert e["ultrafeedback"]["n_items"] == 2
        assert set(e["xalpacaeval"]["languages"]) == {"de", "en", "es", "fr", "ru"}
        assert e["ranking"]["n_models"] == 4
    assert 0 <= res["protocols"]["pairwise"]["balanced"]["position_consistency"] <= 1
    assert math.isnan(res["protocols"]["pointwise_score"]["balanced"]["position_consistency"])  # order-free
    assert res["protocols"]["pairwise"]["calls_per_comparison"] == 1 and res["protocols"]["pairwise_both"]["calls_per_comparison"] == 2
    assert {"length", "always_first", "always_baseline", "gpt4_turbo_itself"} <= set(res["baselines"])
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"judge_validation.json", "judge_validation_sample.jsonl", "judge_validation_pairwise.jsonl"} <= names
    text = V.format_report(res)
    for needle in (
        "agreement (balanced)",
        "(length)",
        "(always first)",
        "Held-out UltraFeedback",
        "X-AlpacaEval (pairwise",
        "paper WR",
        "comparisons/s",
    ):
        assert needle in text
    again = V.validate(smoke_params, V.ValidationSettings.from_params(smoke_params, **kw))  # everything from the judge cache
    assert all(e["stats"]["calls"] == 0 for e in again["protocols"].values())
    assert again["protocols"]["pointwise_score"]["balanced"] == res["protocols"]["pointwise_score"]["balanced"]


def test_validate_through_the_api_judge_on_the_mock(smoke_params, tmp_path, monkeypatch):
    """The API path: pairwise protocols judged by the loopback server; the mock never answers a digit, so every
    pointwise_score item is unjudgeable: counted and reported, no crash."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with MockServer() as server:
        judge = J.APIJudge(server.base_url, "mock-judge", KEY_ENV, concurrency=4, max_retries=0, timeout_s=5)
        cache = J.JudgeCache(tmp_path / "c.jsonl")
        only = {"xae_items": 0, "rank_items": 0, "uf_items": 0}
        settings = V.ValidationSettings.from_params(smoke_params, n_items=6, protocols="all", n_boot=50, **only)
        res = V.validate(smoke_params, settings, judge=judge, cache=cache)
        assert "loglik" not in res["protocols"]  # an endpoint gives no log-likelihood of a given text
        with pytest.raises(V.ValidationError, match="local judge"):
            V.validate(
                smoke_params,
                V.ValidationSettings.from_params(smoke_params, n_items=6, protocols=["loglik"], **only),
                judge=judge,
                cache=cache,
            )
        assert res["protocols"]["pairwise"]["balanced"]["n_items"] == 6
        assert res["protocols"]["pairwise"]["stats"]["calls"] == 2 * res["sizes"]["judged_comparisons"]  # both orders of each
        sc = res["protocols"]["pointwise_score"]
        assert sc["balanced"]["n_items"] == 0 and sc["balanced"]["unjudgeable"] == 6 and sc["stats"]["unjudgeable"] > 0
        assert "unjudgeable" in V.format_report(res)
        server.default = "nolabels"
        settings = V.ValidationSettings.from_params(smoke_params, n_items=8, protocols=["pairwise"], n_boot=50, **only)
        res2 = V.validate(smoke_params, settings, judge=judge, cache=cache)
        assert res2["protocols"]["pairwise"]["stats"]["unjudgeable"] > 0
        m = res2["protocols"]["pairwise"]["balanced"]
        assert m["n_items"] + m["unjudgeable"] == 8 and m["unjudgeable"] >= 1


def test_spread_models_spans_the_leaderboard():
    board = pd.DataFrame({"win_rate": [5, 1, 9, 3, 7]}, index=list("abcde"))
    assert V.spread_models(list("abcde"), board, 3) == ["b", "a", "c"]  # weakest, middle, strongest
    assert V.spread_models(list("abcde"), board, 9) == ["b", "d", "a", "e", "c"]


def test_validate_defaults_come_from_the_params(smoke_params, tmp_path):
    """Sizes left None come from judge.validation_*; protocols None is judge.protocol (the study's own)."""
    p = smoke_params.model_copy(
        update={
            "judge": smoke_params.judge.model_copy(
                update={"validation_items": 4, "validation_rank_items": 0, "validation_xae_items": 0, "protocol": "pointwise_yes"}
            )
        }
    )
    res = V.validate(p, V.ValidationSettings.from_params(p, uf_items=0, n_boot=20))
    assert list(res["protocols"]) == ["pointwise_yes"] and res["sizes"]["balanced"] == 4 and res["sizes"]["ranking_items"] == 0
    s = V.ValidationSettings.from_params(p, n_items=None, seed=None, protocols=["pairwise", "loglik"])  # None keeps the params' value
    assert (s.n_items, s.seed, s.protocols) == (4, p.seed, ("pairwise", "loglik"))
    assert (s.uf_items, s.n_boot, s.max_chars) == (p.judge.n_validation_pairs, p.evaluation.bootstrap, None)


def test_the_informative_rule_does_not_trust_a_collapsed_bootstrap_at_small_n():
    """2 of 2 length-matched items agreeing: the percentile bootstrap CI is [1, 1] (every resample agrees), which lies
    'above 0.5' for no reason but n; the Wilson interval (scipy, an independent formula: 2/2 -> [0.342, 1]) does not."""
    from xlr.stats import wilson_ci

    lo, hi = wilson_ci(2, 2)
    z = 1.959963984540054  # Wilson by hand: (p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n); p = 1, n = 2: 1 / (1 + z^2/2)
    assert abs(lo - 1 / (1 + z * z / 2)) < 1e-9 and hi == 1.0
    small = V.informative({"agreement": 0.33, "ci95": [0.0, 0.67], "n_items": 6}, {"agreement": 1.0, "ci95": [1.0, 1.0], "n_items": 2}, 0.5)
    assert not small["informative"] and "length-matched CI lower end 0.342 <= 0.5" in small["reason"]
    large = V.informative(
        {"agreement": 0.33, "ci95": [0.0, 0.67], "n_items": 6}, {"agreement": 0.9, "ci95": [0.82, 0.96], "n_items": 60}, 0.5
    )
    assert large["informative"] and "length-matched" in large["reason"]  # at n 60 Wilson's lower end (0.80) is also above 0.5
