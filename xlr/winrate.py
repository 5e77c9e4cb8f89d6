"""Win rate, length-controlled win rate (AlpacaEval's GLM) and bootstrap CIs.

Conventions: ``p`` is the judge's soft preference for the MODEL's output over the baseline's (reference) output, in
[0, 1] (AlpacaEval's ``preference`` is ``1 + p``: 1 = baseline wins, 2 = model wins). Win rate = mean(p) x 100.

The length-controlled win rate is AlpacaEval 2's GLM (``alpaca_eval.metrics.glm_winrate``, ``length_controlled_v1``):
a logistic regression without intercept of the preference on ``tanh(std_delta_len)`` (character length of baseline
minus model output, divided by its standard deviation), the instruction's difficulty and a ``not_gamed_baseline``
indicator, fitted with sklearn's ``LogisticRegressionCV`` (L1, liblinear, 5 group folds, soft labels by duplication),
regularised toward two gamed baselines (``df_gamed.csv``, weight lambda = 0.2 / 2); the LC win rate is its mean
prediction with the length term at zero. Written here rather than called because alpaca_eval fetches
``df_gamed.csv`` from the Hugging Face hub inside the function (no offline switch), and without that file it cannot run at
all; tests/test_winrate.py checks that this code gives alpaca_eval's own numbers (when alpaca_eval imports).

Variants, always named in results and tables:
- ``length_controlled_v1`` (official): needs AlpacaEval's ``df_gamed.csv`` (which also carries the instruction
  difficulty); pass ``gamed``.
- ``length_controlled_noreg``: instruction difficulty given (``difficulty``), no gamed-baseline regulariser.
- ``length_controlled_minimal``: neither file: length term + ``not_gamed_baseline`` only (alpaca_eval's own name for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FEATURES_V1 = ["np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)"]
FEATURES_MINIMAL = ["np.tanh(std_delta_len)", "not_gamed_baseline.astype(float)"]
REGULARIZE_TO_BASELINE_LAMBDA = 0.2  # alpaca_eval GLM_INFO["length_controlled_v1"]


class WinRateError(ValueError):
    pass


def win_rates(p: Sequence[float]) -> dict[str, float]:
    """Soft win rate (mean p x 100), discrete win rate (wins 1, ties 0.5), counts and the standard error (as alpaca_eval)."""
    x = np.asarray(p, dtype=float)
    if x.size == 0:
        raise WinRateError("win rate of zero judged items")
    if np.isnan(x).any() or (x < 0).any() or (x > 1).any():
        raise WinRateError("preferences must be in [0, 1] with no NaN (unjudgeable items are counted and left out before this)")
    return {
        "win_rate": float(x.mean() * 100),
        "standard_error": float(x.std(ddof=1) / np.sqrt(x.size) * 100) if x.size > 1 else float("nan"),
        "discrete_win_rate": float((np.where(x > 0.5, 1.0, np.where(x < 0.5, 0.0, 0.5))).mean() * 100),
        "n_wins": int((x > 0.5).sum()), "n_wins_base": int((x < 0.5).sum()), "n_draws": int((x == 0.5).sum()), "n_total": int(x.size),
    }


def _logistic_cv(X: np.ndarray, y_soft: np.ndarray, sample_weight: np.ndarray | None, n_splits: int = 5) -> Any:
    """alpaca_eval's ``fit_LogisticRegressionCV(is_ytrue_proba=True)``: each row twice (label 1 weighted by p, label 0
    by 1 - p), L1 logistic regression without intercept, C chosen by 5-fold GroupKFold on the soft log loss."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(y_soft)
    X2 = np.concatenate([X, X])
    y2 = np.concatenate([np.ones(n), np.zeros(n)])
    true_prob = np.concatenate([y_soft, 1 - y_soft])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    true_weight = None if sample_weight is None else np.concatenate([sample_weight, sample_weight])
    weight = true_prob if true_weight is None else true_prob * true_weight

    def soft_logloss(y_true: np.ndarray, y_pred: np.ndarray, true_prob: np.ndarray, true_sample_weight: np.ndarray | None = None) -> float:
        y = np.where(y_true == 1, true_prob, 1 - true_prob)
        q = np.clip(y_pred, 1e-15, 1 - 1e-15)
        ll = y * np.log(q) + (1 - y) * np.log(1 - q)
        if true_sample_weight is not None:
            ll = ll * true_sample_weight
        return -float(np.mean(ll))

    import warnings

    # sklearn 1.8-1.9 deprecates penalty=/legacy attributes (FutureWarning); alpaca_eval 0.6.6 passes them as here
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scorer = make_scorer(soft_logloss, response_method="predict_proba", greater_is_better=False).set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=n_splits), scoring=scorer, random_state=123, dual=False, penalty="l1",
                                     solver="liblinear", n_jobs=None, fit_intercept=False)
        model.set_fit_request(sample_weight=True)
        model.fit(X2, y2, sample_weight=weight, groups=groups, true_sample_weight=true_weight, true_prob=true_prob)
    return model


def length_controlled_winrate(
    p: Sequence[float],
    len_model: Sequence[int],
    len_baseline: Sequence[int],
    index: Sequence[int] | None = None,
    difficulty: Any = None,
    gamed: Any = None,
) -> dict[str, Any]:
    """LC win rate of the model over the baseline from soft preferences and character lengths.

    ``index``: AlpacaEval instruction index (0..804, its row order) per item, needed with ``difficulty`` or ``gamed``.
    ``difficulty``: a pandas Series index -> instruction difficulty (AlpacaEval's ``instruction_difficulty.csv``).
    ``gamed``: AlpacaEval's ``df_gamed.csv`` as a DataFrame (columns preference (0..1), index, std_delta_len,
    instruction_difficulty, not_gamed_baseline [, model]). Returns the LC win rate, its standard error, the variant and
    the GLM weights."""
    import pandas as pd

    y = np.asarray(p, dtype=float)
    if not (len(y) == len(len_model) == len(len_baseline)):
        raise WinRateError("p, len_model and len_baseline must have the same length")
    if len(y) < 10:
        raise WinRateError(f"length-controlled win rate needs at least 10 judged items for 5-fold CV, got {len(y)}")
    delta = np.asarray(len_baseline, dtype=float) - np.asarray(len_model, dtype=float)  # output_1 (baseline) - output_2 (model)
    sd = pd.Series(delta).std()
    std_delta = delta / sd if sd > 0 else np.zeros_like(delta)
    if gamed is not None or difficulty is not None:
        if index is None:
            raise WinRateError("instruction difficulty needs the AlpacaEval index of every item")
        if gamed is not None:
            # exactly alpaca_eval's lookup: first row per index, looked up by the file's row label
            diff_map = gamed.reset_index(drop=True).drop_duplicates("index")["instruction_difficulty"]
        else:
            diff_map = difficulty
        try:
            diff = np.asarray([float(diff_map[int(i)]) for i in index])
        except KeyError as e:
            raise WinRateError(f"instruction difficulty has no entry for AlpacaEval index {e}") from None
        features, variant = FEATURES_V1, "length_controlled_v1" if gamed is not None else "length_controlled_noreg"
        X = np.column_stack([np.tanh(std_delta), diff, np.ones_like(y)])
        X_test = np.column_stack([np.zeros_like(y), diff, np.ones_like(y)])
    else:
        features, variant = FEATURES_MINIMAL, "length_controlled_minimal"
        X = np.column_stack([np.tanh(std_delta), np.ones_like(y)])
        X_test = np.column_stack([np.zeros_like(y), np.ones_like(y)])
    weight = None
    if gamed is not None:
        g = gamed
        gX = np.column_stack([np.tanh(g["std_delta_len"].to_numpy(float)), g["instruction_difficulty"].to_numpy(float),
                              g["not_gamed_baseline"].astype(bool).to_numpy().astype(float)])
        gy = g["preference"].to_numpy(float)  # df_gamed's preferences are already in [0, 1] (alpaca_eval uses them as they are)
        not_gamed = np.concatenate([g["not_gamed_baseline"].astype(bool).to_numpy(), np.ones(len(y), dtype=bool)])
        weight = not_gamed.astype(float) + (REGULARIZE_TO_BASELINE_LAMBDA * (~not_gamed)).astype(float) / 2
        X, y_fit = np.concatenate([gX, X]), np.concatenate([gy, y])
        keep = ~np.isnan(y_fit)
        X, y_fit, weight = X[keep], y_fit[keep], weight[keep]
    else:
        y_fit = y
    model = _logistic_cv(X, y_fit, weight)
    pred = model.predict_proba(X_test)[:, 1]
    return {
        "length_controlled_winrate": float(pred.mean() * 100),
        "lc_standard_error": float(pd.Series(pred).sem() * 100),
        "variant": variant,
        "weights": dict(zip(features, map(float, model.coef_[0]), strict=True)),
    }


def bootstrap_stat_ci(stat: Any, n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(idx)`` over resamples of the n items (``stat`` takes an index array)."""
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=float)
    vals = vals[~np.isnan(vals)]
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))
