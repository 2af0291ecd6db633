"""The seed's go-live criteria: each branch of pass / fail / not enough data."""

from __future__ import annotations

import dataclasses

import numpy as np

from rl_worker.analysis.comparison import BootstrapInterval, ProportionTest, SampleSize, compare_arms
from rl_worker.analysis.criteria import TableReading, Verdict, evaluate_criteria, overall_verdict
from rl_worker.analysis.performance import ArmStatistics, ArmTrades, summarize_arm


def stats_of(arm: str, n: int, win_rate: float, sharpe: float, drawdown: float) -> ArmStatistics:
    return ArmStatistics(arm, n, int(win_rate * n), win_rate, 0.1, 0.1 * n, 1.0, sharpe, sharpe * 15.9, drawdown,
                         0.0, 0.0)


def comparison(win_p: float, win_diff: float, sharpe_ci: tuple[float, float], dd_ci: tuple[float, float],
               dd_estimate: float):  # type: ignore[no-untyped-def]
    base = compare_arms(ArmTrades("control", np.zeros(0)), ArmTrades("rl", np.zeros(0)), np.random.default_rng(0))
    return dataclasses.replace(
        base,
        win_rate=ProportionTest(win_diff, 0.0, win_p),
        sharpe_difference=BootstrapInterval(sum(sharpe_ci) / 2, *sharpe_ci, 0.95, 100),
        max_drawdown_difference=BootstrapInterval(dd_estimate, *dd_ci, 0.95, 100, length=500),
        positions_needed_pnl=SampleSize(None, None),
    )


GROWING = (TableReading(100, 10, 8, 200), TableReading(600, 12, 8, 1200))


def verdicts(control, rl, comp, **kw):  # type: ignore[no-untyped-def]
    args = dict(epsilon=0.05, outcomes_applied=6000, maturity_outcomes=5000, tables=GROWING, critical_errors=0)
    args.update(kw)
    return {c.name: c.verdict for c in evaluate_criteria(control, rl, comp, **args)}


def test_all_pass() -> None:
    control = stats_of("control", 500, 0.50, 0.10, 30.0)
    rl = stats_of("rl", 500, 0.55, 0.15, 25.0)
    result = verdicts(control, rl, comparison(0.1, 0.05, (0.01, 0.09), (-9.0, 1.0), -5.0))
    assert set(result.values()) == {Verdict.PASS}
    assert len(result) == 6


def test_significantly_behind_fails_and_insignificantly_behind_needs_data() -> None:
    control = stats_of("control", 500, 0.55, 0.15, 25.0)
    rl = stats_of("rl", 500, 0.50, 0.10, 30.0)
    behind = verdicts(control, rl, comparison(0.01, -0.05, (-0.09, -0.01), (1.0, 9.0), 5.0))
    assert behind["win rate >= v1"] == Verdict.FAIL
    assert behind["Sharpe >= v1"] == Verdict.FAIL
    assert behind["max drawdown <= v1"] == Verdict.FAIL
    unsure = verdicts(control, rl, comparison(0.3, -0.05, (-0.09, 0.03), (-1.0, 9.0), 5.0))
    assert unsure["win rate >= v1"] == Verdict.NOT_ENOUGH_DATA
    assert unsure["Sharpe >= v1"] == Verdict.NOT_ENOUGH_DATA
    assert unsure["max drawdown <= v1"] == Verdict.NOT_ENOUGH_DATA


def test_small_arms_epsilon_tables_errors() -> None:
    control = stats_of("control", 40, 0.50, 0.10, 30.0)
    rl = stats_of("rl", 500, 0.55, 0.15, 25.0)
    comp = comparison(0.1, 0.05, (0.01, 0.09), (-9.0, 1.0), -5.0)
    small = verdicts(control, rl, comp)
    assert small["win rate >= v1"] == small["Sharpe >= v1"] == small["max drawdown <= v1"] == Verdict.NOT_ENOUGH_DATA
    assert verdicts(control, rl, comp, outcomes_applied=100)["epsilon < 0.1 at maturity"] == Verdict.NOT_ENOUGH_DATA
    assert verdicts(control, rl, comp, epsilon=0.1)["epsilon < 0.1 at maturity"] == Verdict.FAIL
    shrinking = (TableReading(100, 10, 8, 200), TableReading(600, 9, 8, 1200))
    assert verdicts(control, rl, comp, tables=shrinking)["Q-tables growing"] == Verdict.FAIL
    assert verdicts(control, rl, comp, tables=None)["Q-tables growing"] == Verdict.NOT_ENOUGH_DATA
    assert verdicts(control, rl, comp, critical_errors=3)["no critical errors"] == Verdict.FAIL
    assert verdicts(control, rl, comp, critical_errors=None)["no critical errors"] == Verdict.NOT_ENOUGH_DATA


def test_overall_and_real_statistics() -> None:
    rng = np.random.default_rng(3)
    control = ArmTrades("control", rng.normal(0.0, 1.0, 400))
    rl = ArmTrades("rl", rng.normal(0.5, 1.0, 400))
    comp = compare_arms(control, rl, np.random.default_rng(0), n_resamples=300)
    criteria = evaluate_criteria(
        summarize_arm(control, 252), summarize_arm(rl, 252), comp, epsilon=0.05, outcomes_applied=800,
        maturity_outcomes=500, tables=GROWING, critical_errors=0,
    )
    assert overall_verdict(criteria) == Verdict.PASS, [c.as_dict() for c in criteria]
    worse = evaluate_criteria(
        summarize_arm(rl, 252), summarize_arm(control, 252), compare_arms(rl, control, np.random.default_rng(0),
                                                                           n_resamples=300),
        epsilon=0.05, outcomes_applied=800, maturity_outcomes=500, tables=GROWING, critical_errors=0,
    )
    assert overall_verdict(worse) == Verdict.FAIL
    assert overall_verdict(evaluate_criteria(
        summarize_arm(control, 252), summarize_arm(rl, 252), comp, epsilon=None, outcomes_applied=0,
        maturity_outcomes=500, tables=GROWING, critical_errors=0,
    )) == Verdict.NOT_ENOUGH_DATA
