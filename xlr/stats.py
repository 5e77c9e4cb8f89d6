"""Small statistics helpers shared by the study's analyses: bootstrap CIs over items (optionally over clusters of
items, e.g. several pairs of one instruction) and paired comparisons of two scores on the same items.

Every function is seeded (numpy ``default_rng(seed)``): the same inputs give the same interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0, clusters: Sequence[Any] | None = None) -> list[np.ndarray]:
    """``n_boot`` resamples (with replacement) of the item indices 0..n-1. With ``clusters`` (one label per item) whole
    clusters are resampled, so items that share a cluster (pairs of one instruction) move together."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return []
    if clusters is None:
        return list(rng.integers(0, n, size=(n_boot, n)))
    if len(clusters) != n:
        raise ValueError(f"clusters: {len(clusters)} labels for {n} items")
    groups: dict[Any, list[int]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(c, []).append(i)
    members = [np.asarray(v) for v in groups.values()]
    draws = rng.integers(0, len(members), size=(n_boot, len(members)))
    return [np.concatenate([members[k] for k in row]) for row in draws]


def percentile_ci(draws: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap draws, ignoring non-finite draws (nan, nan when none is finite)."""
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(d, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95, clusters: Sequence[Any] | None = None
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling items, or whole clusters of items)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (math.nan, math.nan)
    return percentile_ci([v[idx].mean() for idx in bootstrap_indices(v.size, n_boot, seed, clusters)], level)


def bootstrap_statistic(
    stat: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    clusters: Sequence[Any] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of any statistic of a resample: ``stat(indices)`` -> float (nan draws are ignored), e.g.
    the LC win rate refitted per resample (xlr.evaluate.model_metrics). Without clusters the resamples are one
    ``(n_boot, n)`` draw, the same indices as ``n_boot`` draws of ``rng.integers(0, n, n)`` one after another, so this
    gives the numbers of the LC CI's former ``xlr.winrate.bootstrap_stat_ci`` (tests/test_winrate.py checks it)."""
    return percentile_ci([stat(idx) for idx in bootstrap_indices(n, n_boot, seed, clusters)], level)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    n_boot: int = 1000,
    n_perm: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    clusters: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """mean(a) - mean(b) for two scores of the SAME items (e.g. two rewards' win indicators on the same pairs): the
    difference, its paired bootstrap CI, a two-sided sign-flip permutation p-value (H0: the per-item differences are
    symmetric about 0), and how many items a beats b on, b beats a on, and ties."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.size} vs {y.size} values; the two scores must be of the same items")
    d = x - y
    if d.size == 0:
        return {"n": 0, "diff": math.nan, "ci95": [math.nan, math.nan], "p_value": math.nan, "a_better": 0, "b_better": 0, "equal": 0}
    lo, hi = bootstrap_ci(d, n_boot, seed, level, clusters)
    return {
        "n": int(d.size),
        "diff": float(d.mean()),
        "ci95": [lo, hi],
        "p_value": sign_flip_pvalue(d, n_perm, seed),
        "a_better": int((d > 0).sum()),
        "b_better": int((d < 0).sum()),
        "equal": int((d == 0).sum()),
    }


def sign_flip_pvalue(diffs: Sequence[float], n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(diffs) = 0 by random sign flips, with the +1 correction (never 0).
    All-zero differences give 1.0."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    signs = rng.choice([-1.0, 1.0], size=(n_perm, d.size))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + (null >= observed - 1e-12).sum()) / (n_perm + 1))


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (scipy's ``binomtest(...).proportion_ci(method="wilson")``). Unlike a
    percentile bootstrap it does not collapse at small n: 2 of 2 gives [0.34, 1.00], where the bootstrap gives [1, 1]."""
    from scipy.stats import binomtest

    if n <= 0:
        return (math.nan, math.nan)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def binom_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of k successes in n trials under p = 1/2: 2 * P(X <= min(k, n-k)), at most 1."""
    if n == 0:
        return 1.0
    m = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(b: int, c: int, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test from the discordant counts of paired binary outcomes (b: first passes and second fails,
    c: the reverse). ``exact`` None: the exact binomial test when b + c < 25, else the chi-square statistic with
    continuity correction, (|b - c| - 1)^2 / (b + c), on 1 degree of freedom. Two-sided p-values."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar: counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if exact is None:
        exact = n < 25
    if exact:
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": binom_two_sided_p(min(b, c), n), "method": "exact binomial"}
    chi2 = (abs(b - c) - 1) ** 2 / n if n else 0.0
    return {
        "b": b,
        "c": c,
        "statistic": float(chi2),
        "p_value": float(math.erfc(math.sqrt(chi2 / 2))),
        "method": "chi-square, continuity corrected",
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr, ties by average rank); nan with fewer than 2 pairs or when
    either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"spearman: {a.size} vs {b.size} values")
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


# ----------------------------------------------------------------------------------------------------------------
# Power calculation: how many items a per-language fraction needs (the sizes of params/cpu.yaml are chosen by these)

Z95 = 1.959963984540054  # the normal quantile of 0.975
Z80 = 0.8416212335729143  # of 0.80: 80% power


def ci_halfwidth(p: float, n: int, z: float = Z95) -> float:
    """Half-width of the normal-approximation 95% CI of a fraction ``p`` measured on ``n`` items: z * sqrt(p(1-p)/n).
    The study's CIs are percentile bootstraps over items, which this matches for fractions away from 0 and 1
    (tests/test_stats_power.py compares the two)."""
    if n <= 0:
        raise ValueError(f"n = {n}: a fraction needs at least one item")
    return z * math.sqrt(p * (1 - p) / n)


def n_for_halfwidth(halfwidth: float, p: float = 0.5, z: float = Z95) -> int:
    """The fewest items whose 95% CI of a fraction near ``p`` is no wider than +-``halfwidth`` (p = 0.5, the widest,
    unless a measured rate says otherwise): ceil(z^2 p(1-p) / h^2)."""
    if not 0 < halfwidth < 1:
        raise ValueError(f"halfwidth {halfwidth}: use a fraction in (0, 1), e.g. 0.10 for +-10 points")
    return math.ceil(z * z * p * (1 - p) / (halfwidth * halfwidth))


def mcnemar_detectable_difference(n: int, discordant: float, z_alpha: float = Z95, z_beta: float = Z80) -> float:
    """The smallest difference of two paired pass rates (e.g. LPR of pi2 and pi0 on the same prompts) that McNemar's
    test finds at two-sided level 5% with 80% power, for ``n`` pairs of which a fraction ``discordant`` disagree
    (Connor 1987's normal approximation, equal-size cells: delta = (z_a + z_b) * sqrt(discordant / n))."""
    if n <= 0 or not 0 < discordant <= 1:
        raise ValueError(f"n {n}, discordant {discordant}: need n > 0 and 0 < discordant <= 1")
    return (z_alpha + z_beta) * math.sqrt(discordant / n)
