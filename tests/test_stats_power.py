"""The power calculation that sizes params/cpu.yaml (xlr.stats.ci_halfwidth, n_for_halfwidth,
mcnemar_detectable_difference), each checked against an independent computation: the percentile bootstrap the report
itself uses, and a simulation of McNemar's test."""

from __future__ import annotations

import numpy as np
import pytest

from xlr import stats


@pytest.mark.parametrize("n,p", [(32, 0.5), (96, 0.5), (96, 0.8), (200, 0.73)])
def test_planned_halfwidth_matches_the_bootstrap_the_report_uses(n, p):
    k = round(p * n)
    values = [1.0] * k + [0.0] * (n - k)
    lo, hi = stats.bootstrap_ci(values, n_boot=4000, seed=1)
    planned = stats.ci_halfwidth(k / n, n)
    assert (hi - lo) / 2 == pytest.approx(planned, rel=0.12)


@pytest.mark.parametrize("h,p", [(0.10, 0.5), (0.10, 0.8), (0.05, 0.5), (0.15, 0.7)])
def test_n_for_halfwidth_is_the_fewest_items(h, p):
    n = stats.n_for_halfwidth(h, p)
    assert stats.ci_halfwidth(p, n) <= h < stats.ci_halfwidth(p, n - 1)


def test_known_sizes():
    # the textbook figure: +-10 points at 95% need 97 items at p = 0.5 (1.96^2 / 4 / 0.01 = 96.04)
    assert stats.n_for_halfwidth(0.10) == 97
    with pytest.raises(ValueError):
        stats.n_for_halfwidth(0.0)


@pytest.mark.parametrize("n,discordant", [(96, 0.2), (60, 0.3)])
def test_mcnemar_detectable_difference_has_80_percent_power_in_simulation(n, discordant):
    """Simulate paired pass/fail outcomes whose discordant cells differ by the detectable difference and count how often
    xlr's McNemar test rejects at 5%: about 80% (the approximation is rough for small cells: +-10 points)."""
    delta = stats.mcnemar_detectable_difference(n, discordant)
    rng = np.random.default_rng(0)
    probs = [discordant / 2 + delta / 2, discordant / 2 - delta / 2, 1 - discordant]  # b, c, concordant
    assert probs[1] > 0
    draws = rng.multinomial(n, probs, size=2000)
    power = np.mean([stats.mcnemar(int(b), int(c))["p_value"] < 0.05 for b, c, _ in draws])
    assert 0.70 <= power <= 0.90, power


def test_the_shipped_sizes_give_the_cis_their_headers_state():
    """params/cpu.yaml's header states +-14 points at p = 0.5 and +-11 at p = 0.8 for its 48 probe instructions and LCB
    prompts per language; params/cpu-power.yaml's 97 meet +-10 at p = 0.5."""
    from pathlib import Path

    from xlr.config import load_params

    repo = Path(__file__).resolve().parents[1]
    cpu, power = load_params(repo / "params/cpu.yaml"), load_params(repo / "params/cpu-power.yaml")
    for n in (cpu.probe.n_items, cpu.evaluation.lcb_n_prompts):
        assert round(100 * stats.ci_halfwidth(0.5, n)) == 14 and round(100 * stats.ci_halfwidth(0.8, n)) == 11
    for n in (power.probe.n_items, power.evaluation.lcb_n_prompts):
        assert stats.ci_halfwidth(0.5, n) <= 0.10
    assert round(100 * stats.mcnemar_detectable_difference(cpu.evaluation.lcb_n_prompts, 0.2)) == 18
