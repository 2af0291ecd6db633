"""Between-arm tests against hand-computed values and scipy's own equivalents."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rl_worker.analysis.comparison import (
    compare_arms,
    positions_needed_for_means,
    positions_needed_for_proportions,
    two_proportion_test,
    welch_test,
)
from rl_worker.analysis.performance import ArmTrades


def test_welch_by_hand() -> None:
    # means 2.5 and 5, variances 5/3 and 20/3, n = 4: se^2 = 25/12, t = -2.5 / sqrt(25/12) = -sqrt(3)
    # dof = (25/12)^2 / ((5/12)^2 / 3 + (20/12)^2 / 3) = 1875 / 425
    test = welch_test(np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8]))
    assert test is not None
    assert test.difference == -2.5
    assert test.statistic == pytest.approx(-math.sqrt(3))
    assert test.dof == pytest.approx(1875 / 425)
    assert test.p_value == pytest.approx(2 * stats.t.sf(math.sqrt(3), 1875 / 425))
    half = stats.t.ppf(0.975, 1875 / 425) * math.sqrt(25 / 12)
    assert (test.ci_low, test.ci_high) == pytest.approx((-2.5 - half, -2.5 + half))
    assert welch_test(np.array([1.0]), np.array([1.0, 2.0])) is None


def test_welch_without_spread() -> None:
    same = welch_test(np.ones(3), np.ones(4))
    apart = welch_test(np.ones(3) * 2, np.ones(4))
    assert same is not None and same.p_value == 1.0
    assert apart is not None and apart.p_value == 0.0 and apart.difference == 1.0


def test_two_proportions_by_hand() -> None:
    # 60/100 vs 45/100: pooled 0.525, se = sqrt(0.525 * 0.475 * 0.02), z = 0.15 / se = 2.1240
    test = two_proportion_test(60, 100, 45, 100)
    assert test is not None
    assert test.difference == pytest.approx(0.15)
    assert test.statistic == pytest.approx(0.15 / math.sqrt(0.525 * 0.475 * 0.02))
    assert test.statistic == pytest.approx(2.1240, abs=1e-4)
    chi2 = stats.chi2_contingency([[60, 40], [45, 55]], correction=False)
    assert test.p_value == pytest.approx(chi2.pvalue)  # the same test as the uncorrected 2x2 chi-square
    assert two_proportion_test(5, 5, 3, 3) is not None and two_proportion_test(5, 5, 3, 3).p_value == 1.0
    assert two_proportion_test(0, 0, 1, 2) is None


def test_sample_sizes_match_the_textbook() -> None:
    # effect size 0.5, alpha 0.05 two-sided, power 0.8: 63 per group (Cohen's tables give 64 with the t correction)
    assert positions_needed_for_means(0.5, 1.0, 1.0, ratio=1.0).as_dict() == {"control": 63, "rl": 63, "total": 126}
    # 0.5 vs 0.6: (1.96 sqrt(2 * 0.55 * 0.45) + 0.8416 sqrt(0.25 + 0.24))^2 / 0.01 = 387.3
    assert positions_needed_for_proportions(0.5, 0.6, ratio=1.0).control == 388
    # a smaller control arm (k = 4 RL positions per control one) needs fewer RL positions than 4x
    unequal = positions_needed_for_means(0.5, 1.0, 1.0, ratio=4.0)
    assert unequal.control == math.ceil((1.959964 + 0.841621) ** 2 * (1 + 1 / 4) / 0.25)
    assert unequal.rl is not None and unequal.control is not None and unequal.rl >= 4 * unequal.control - 4
    assert positions_needed_for_means(0.0, 1.0, 1.0, 1.0).total is None


def arm(name: str, pnl: np.ndarray) -> ArmTrades:
    return ArmTrades(name, pnl, pnl + 0.1, pnl - 0.1)


def test_compare_identical_and_different_arms() -> None:
    rng = np.random.default_rng(7)
    control = arm("control", rng.normal(0.0, 1.0, 2000))
    same = arm("rl", rng.normal(0.0, 1.0, 2000))
    better = arm("rl", rng.normal(0.3, 1.0, 2000))

    null = compare_arms(control, same, np.random.default_rng(1), n_resamples=500)
    assert null.pnl is not None and null.pnl.p_value > 0.05
    assert null.sharpe_difference is not None and not null.sharpe_difference.excludes_zero
    assert "no significant difference" in null.verdict

    result = compare_arms(control, better, np.random.default_rng(1), n_resamples=500)
    assert result.pnl is not None and result.pnl.p_value < 1e-10 and result.pnl_significant
    assert result.meta_reward is not None and result.meta_reward.difference == pytest.approx(result.pnl.difference)
    assert result.sharpe_difference is not None and result.sharpe_difference.ci_low > 0.1
    assert result.sharpe_difference.ci_low <= result.sharpe_difference.estimate <= result.sharpe_difference.ci_high
    assert result.win_rate is not None and result.win_rate.difference > 0
    assert result.verdict.startswith("RL arm has the higher mean pnl")
    needed = result.positions_needed_pnl.control
    assert needed is not None and needed < 2000  # the difference was detected with 2,000 each
    assert result.as_dict()["welch"]["pnl_pct"]["p_value"] == result.pnl.p_value


def test_drawdowns_compare_equally_long_curves() -> None:
    control = arm("control", np.array([-1.0, -1.0]))
    rl = arm("rl", np.array([5.0, -3.0, 1.0]))
    result = compare_arms(control, rl, np.random.default_rng(0), n_resamples=200)
    dd = result.max_drawdown_difference
    # over the last m = 2 trades: RL [-3, 1] falls 3, control [-1, -1] falls 2
    assert dd is not None and dd.length == 2 and dd.estimate == 1.0


def test_too_few_positions() -> None:
    result = compare_arms(arm("control", np.zeros(0)), arm("rl", np.array([1.0, 2.0])), np.random.default_rng(0))
    assert result.pnl is None and result.sharpe_difference is None and result.win_rate is None
    assert result.verdict.startswith("not enough data")
    assert result.positions_needed_pnl.total is None
