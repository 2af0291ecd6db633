"""The learning report: the fraction's arithmetic, the rolling window, the per-regime strategy."""

from __future__ import annotations

import pytest

from rl_worker.sim.market import ScoredChoice
from rl_worker.sim.report import LearningReport


def _scored(
    chosen: float,
    best: float = 2.0,
    uniform: float = 0.0,
    regime: str = "TREND",
    strategy: str = "dual_momentum",
    detected: str | None = None,
) -> ScoredChoice:
    return ScoredChoice(
        hidden_regime=regime,
        detected_regime=detected or regime,
        strategy=strategy,
        meta_chosen=chosen,
        meta_best=best,
        meta_uniform=uniform,
        best_meta_action=0,
        size_chosen=chosen / 2,
        size_best=best / 2,
        size_uniform=uniform / 2,
        best_sizing_action=0,
    )


def test_fraction_is_zero_for_uniform_and_one_for_best() -> None:
    report = LearningReport(window=10)
    for _ in range(10):
        report.record(_scored(0.0))
    assert report.fraction == pytest.approx(0.0)
    for _ in range(10):
        report.record(_scored(2.0))
    assert report.fraction == report.meta_fraction == report.sizing_fraction == pytest.approx(1.0)


def test_fraction_is_a_ratio_of_window_means_and_the_window_rolls() -> None:
    report = LearningReport(window=4)
    for chosen, best, uniform in [
        (9.0, 9.0, 9.0),
        (1.0, 2.0, 0.0),
        (0.0, 4.0, -1.0),
        (3.0, 3.0, 1.0),
        (-1.0, 1.0, -1.0),
    ]:
        report.record(_scored(chosen, best, uniform))
    # the first record has rolled out: means (3/4, 10/4, -1/4)
    assert report.meta_fraction == pytest.approx((3 + 1) / (10 + 1))
    assert report.positions == 5


def test_no_achievable_gap_counts_as_zero() -> None:
    report = LearningReport()
    report.record(_scored(1.0, best=1.0, uniform=1.0))
    assert report.fraction == 0.0


def test_most_chosen_strategy_per_hidden_regime_and_confusion() -> None:
    report = LearningReport(window=100)
    for strategy in ["breakout", "breakout", "dual_momentum"]:
        report.record(_scored(1.0, regime="BREAKOUT", strategy=strategy, detected="TREND"))
    report.record(_scored(1.0, regime="RANGE", strategy="mean_reversion"))
    assert report.most_chosen_strategy() == {"BREAKOUT": "breakout", "RANGE": "mean_reversion"}
    assert report.confusion["BREAKOUT"]["TREND"] == 3
    assert report.detection_accuracy() == pytest.approx(0.25)
    snapshot = report.snapshot().as_dict()
    assert snapshot["positions"] == 4 and snapshot["most_chosen_strategy"]["RANGE"] == "mean_reversion"


def test_mean_reward_prefers_the_realised_reward() -> None:
    report = LearningReport(window=2)
    report.record(_scored(1.0))  # expected: 1.0 + 0.5
    report.record(_scored(1.0), reward=-0.5)
    assert report.mean_reward == pytest.approx(0.5)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        LearningReport(window=0)
