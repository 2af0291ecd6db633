"""Per-arm figures against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl_worker.analysis.performance import ArmTrades, equity_curve, max_drawdown, sharpe_ratio, summarize_arm

PNL = [1.0, -2.0, 3.0, -1.0, -1.0, 2.0]


def test_equity_curve_and_drawdown_by_hand() -> None:
    # curve 0, 1, -1, 2, 1, 0, 2; running peak 0, 1, 1, 2, 2, 2, 2; drawdowns 0, 0, 2, 0, 1, 2, 0
    assert equity_curve(np.array(PNL)).tolist() == [0, 1, -1, 2, 1, 0, 2]
    assert max_drawdown(np.array(PNL)) == 2.0
    assert max_drawdown(np.array([1.0, 2.0])) == 0.0
    assert max_drawdown(np.array([-3.0])) == 3.0  # from the starting point 0
    rows = np.array([PNL, [-1.0, -1.0, 5.0, -4.0, 0.0, 0.0]])
    assert max_drawdown(rows).tolist() == [2.0, 4.0]


def test_summary_by_hand() -> None:
    trades = ArmTrades("rl", np.array(PNL), np.array([1, 2, 3, 4, 5, 6.0]), np.array([0, 0, 0, 0, 0, 3.0]))
    s = summarize_arm(trades, trades_per_year=252)
    # mean 2/6; squared deviations sum to 58/3, so the sample variance is 58/15
    sharpe = (1 / 3) / math.sqrt(58 / 15)
    assert (s.positions, s.wins, s.win_rate) == (6, 3, 0.5)
    assert s.mean_pnl_pct == pytest.approx(1 / 3)
    assert s.total_pnl_pct == pytest.approx(2.0)
    assert s.pnl_std == pytest.approx(math.sqrt(58 / 15))
    assert s.sharpe_per_trade == pytest.approx(sharpe)
    assert s.sharpe_annualised == pytest.approx(sharpe * math.sqrt(252))
    assert s.max_drawdown_pct == 2.0
    assert s.mean_meta_reward == pytest.approx(3.5)
    assert s.mean_size_reward == pytest.approx(0.5)


def test_degenerate_arms() -> None:
    empty = summarize_arm(ArmTrades("control", np.zeros(0)), 252)
    assert empty.positions == 0 and math.isnan(empty.win_rate) and math.isnan(empty.sharpe_per_trade)
    assert empty.as_dict()["win_rate"] is None
    flat = summarize_arm(ArmTrades("control", np.ones(5)), 252)
    assert math.isnan(flat.sharpe_per_trade)  # zero spread: no Sharpe
    assert math.isnan(sharpe_ratio(np.array([1.0])))


def test_bad_columns() -> None:
    with pytest.raises(ValueError, match="finite"):
        ArmTrades("rl", np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="meta_reward"):
        ArmTrades("rl", np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="trades_per_year"):
        summarize_arm(ArmTrades("rl", np.array([1.0])), 0)
