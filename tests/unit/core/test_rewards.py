"""Reward components and the meta and sizing rewards, hand-computed."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.config import RewardConfig
from rl_worker.core.exact import PnlWindow
from rl_worker.core.rewards import (
    meta_reward,
    pnl_spread,
    regime_alignment,
    risk_penalty,
    sharpe_signal,
    size_reward,
    volatility_adjustment,
)

DEFAULT = RewardConfig()


class TestSharpeSignal:
    def test_pnl_over_recent_spread(self) -> None:
        # recent mean 0.5; squared deviations 0.25 + 2.25 + 2.25 + 0.25 = 5; std = sqrt(5 / 3)
        assert sharpe_signal(1.5, [1.0, -1.0, 2.0, 0.0], DEFAULT) == pytest.approx(1.5 / (5 / 3) ** 0.5, rel=1e-12)

    def test_spread_is_floored(self) -> None:
        assert sharpe_signal(1.0, [], DEFAULT) == 2.0  # 1.0 / floor 0.5
        assert sharpe_signal(1.0, [3.0], DEFAULT) == 2.0  # one trade has no spread
        assert sharpe_signal(-0.4, [1.0, 1.0, 1.0], DEFAULT) == pytest.approx(-0.8)

    def test_clipped(self) -> None:
        assert sharpe_signal(10.0, [], DEFAULT) == 3.0
        assert sharpe_signal(-10.0, [], DEFAULT) == -3.0
        assert sharpe_signal(10.0, [], RewardConfig(sharpe_clip=5.0)) == 5.0


class TestRegimeAlignment:
    @pytest.mark.parametrize(
        ("regime", "strategy", "alignment"),
        [
            ("TREND", "dual_momentum", 1.0),
            ("TREND", "breakout", 0.0),
            ("BREAKOUT", "breakout", 1.0),
            ("RANGE", "mean_reversion", 1.0),
            ("MEAN_REVERSION", "mean_reversion", 1.0),
            ("MEAN_REVERSION", "dual_momentum", 0.0),
        ],
    )
    def test_default_table(self, regime: str, strategy: str, alignment: float) -> None:
        assert regime_alignment(regime, strategy, DEFAULT) == alignment

    def test_regime_missing_from_the_table_aligns_nothing(self) -> None:
        config = RewardConfig(aligned_strategies={"TREND": ("breakout",)})
        assert regime_alignment("TREND", "breakout", config) == 1.0
        assert regime_alignment("RANGE", "mean_reversion", config) == 0.0


def test_risk_penalty() -> None:
    # 2.0 % drawdown at 0.6 x 10 = 6x exposure, reference 5x
    assert risk_penalty(2.0, 0.6, 10, DEFAULT) == pytest.approx(2.4, rel=1e-12)
    assert risk_penalty(2.0, 1.0, 5, DEFAULT) == 2.0  # the reference exposure: the drawdown itself
    assert risk_penalty(0.0, 1.0, 25, DEFAULT) == 0.0


def test_volatility_adjustment() -> None:
    # (1 - 2 * 0.2) * (0.5 * 10) / (1.0 * 25)
    assert volatility_adjustment(0.2, 0.5, 10) == pytest.approx(0.12, rel=1e-12)
    assert volatility_adjustment(0.5, 1.0, 25) == 0.0
    assert volatility_adjustment(0.0, 1.0, 25) == 1.0
    assert volatility_adjustment(1.0, 1.0, 25) == -1.0


def test_meta_reward() -> None:
    # 1.2 - 0.5 * 0.8 + 0.2 * 1.5 + 0.15 * 1.0
    assert meta_reward(1.2, 0.8, 1.5, 1.0, DEFAULT) == pytest.approx(1.25, rel=1e-12)
    weights = RewardConfig(meta_drawdown_weight=1.0, meta_sharpe_weight=0.0, meta_alignment_weight=2.0)
    assert meta_reward(1.2, 0.8, 1.5, 1.0, weights) == pytest.approx(2.4, rel=1e-12)


def test_size_reward() -> None:
    # 1.2 - 0.4 * 2.4 + 0.1 * 0.12
    assert size_reward(1.2, 2.4, 0.12, DEFAULT) == pytest.approx(0.252, rel=1e-12)
    weights = RewardConfig(size_risk_weight=0.0, size_volatility_weight=1.0)
    assert size_reward(1.2, 2.4, 0.12, weights) == pytest.approx(1.32, rel=1e-12)


def is_correctly_rounded_sqrt(result: float, square: Fraction) -> bool:
    """`result` is the float nearest to sqrt(square): square lies between the squared midpoints."""
    if square == 0:
        return result == 0.0
    below, above = math.nextafter(result, 0.0), math.nextafter(result, math.inf)
    low = (Fraction(below) + Fraction(result)) / 2
    high = (Fraction(result) + Fraction(above)) / 2
    return low * low <= square <= high * high


pnl_values = st.one_of(
    st.floats(-20.0, 20.0),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-9, 3.3]),
    st.floats(-1e6, 1e6),
    st.floats(1e-12, 1e-6),
)


@given(values=st.lists(pnl_values, max_size=40), window=st.integers(1, 25))
def test_pnl_window_std_is_exact_then_rounded_once(values: list[float], window: int) -> None:
    pnl = PnlWindow(window)
    for k, value in enumerate(values, start=1):
        pnl.append(value)
        kept = list(pnl)
        assert kept == values[:k][-window:]
        n = len(kept)
        if n < 2:
            assert pnl.sample_std() == 0.0
            continue
        exact = [Fraction(v) for v in kept]
        mean = sum(exact) / n
        variance = sum((v - mean) ** 2 for v in exact) / (n - 1)
        std = pnl.sample_std()
        assert is_correctly_rounded_sqrt(std, variance)
        # incremental sums (with rescaling) give what a fresh window gives
        assert PnlWindow(window, kept).sample_std() == std


@given(values=st.lists(pnl_values, max_size=25), pnl=st.floats(-10, 10))
def test_sharpe_signal_of_a_list_equals_that_of_a_window(values: list[float], pnl: float) -> None:
    window = PnlWindow(20, values)
    assert sharpe_signal(pnl, list(window), DEFAULT) == sharpe_signal(pnl, window, DEFAULT)
    assert pnl_spread(window, 0.5) == max(0.5, window.sample_std())


def test_pnl_window_behaves_like_its_values() -> None:
    window = PnlWindow(3, [1.0, 2.5, -0.25, 4.0])
    assert list(window) == window.to_list() == [2.5, -0.25, 4.0]
    assert len(window) == 3
    assert window[-1] == 4.0
    assert window.maxlen == 3
