"""Trading performance per arm, as the log goes by, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl_worker.analysis.tracker import PerformanceTracker
from rl_worker.core import CoreConfig
from rl_worker.sim.events import make_outcome


def outcome(i: int, pnl: float, policy: str, **step: int):  # type: ignore[no-untyped-def]
    base = make_outcome(np.random.default_rng(i), CoreConfig(), i, pnl_pct=pnl, policy=policy)
    if step:
        base = base.model_copy(update={"sizing": base.sizing.model_copy(update=step), "overridden": True})
    return base


def test_per_arm_figures_by_hand() -> None:
    tracker = PerformanceTracker(("rl", "control"), window=2)
    for i, pnl in enumerate([1.0, -2.0, 3.0, -1.0]):
        tracker.record(outcome(i, pnl, "rl"))
    tracker.record(outcome(9, 0.5, "control", decided_action_index=0))
    tracker.record(outcome(10, 0.5, "legacy-v0"))
    rl = tracker.arms["rl"]
    # curve 0, 1, -1, 2, 1: max drawdown 2; mean 0.25; sample variance (0.5625 + 5.0625 + 7.5625 + 1.5625) / 3
    assert rl.positions == 4 and rl.win_rate == 0.5 and rl.rolling_win_rate == 0.5  # last two: win, loss
    assert rl.mean_pnl_pct == pytest.approx(0.25)
    assert rl.sharpe_per_trade == pytest.approx(0.25 / math.sqrt(14.75 / 3))
    assert rl.max_drawdown_pct == 2.0 and rl.total_pnl_pct == pytest.approx(1.0)
    assert sum(rl.strategies.values()) == 4 and sum(rl.leverages.values()) == 4
    assert tracker.arms["control"].overrides == {"sizing": 1}
    assert set(tracker.arms) == {"rl", "control", "other"}  # unknown arms share one label
    assert tracker.as_dict()["control"]["sharpe_per_trade"] is None  # one trade: no spread
