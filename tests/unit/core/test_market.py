"""Market tools: volatility, efficiency ratio, regimes, pressure, win rate, equity slope and health."""

from __future__ import annotations

import math
from bisect import bisect_right

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.config import MarketConfig
from rl_worker.core.market import (
    EquityCurve,
    WinRateTracker,
    compute_market_features,
    detect_regime,
    estimate_market_pressure,
    estimate_trend_strength,
    estimate_volatility,
)

DEFAULT = MarketConfig()


class TestVolatility:
    def test_sample_std_over_cap(self) -> None:
        # mean 1/150; deviations 1/300, -5/300, 4/300; sum of squares 42/90000; /(n-1) = 7/30000
        assert estimate_volatility([0.01, -0.01, 0.02], cap=0.03) == pytest.approx(
            math.sqrt(7 / 30000) / 0.03, rel=1e-12
        )

    def test_clipped_to_one(self) -> None:
        assert estimate_volatility([0.2, -0.2, 0.2], cap=0.03) == 1.0

    @pytest.mark.parametrize("returns", [[], [0.05]])
    def test_fewer_than_two_returns_is_zero(self, returns: list[float]) -> None:
        assert estimate_volatility(returns, cap=0.03) == 0.0

    def test_constant_returns_have_no_volatility(self) -> None:
        assert estimate_volatility([0.01] * 10, cap=0.03) == 0.0


class TestTrendStrength:
    def test_efficiency_ratio(self) -> None:
        # |0.01 + 0.01 - 0.01| / (0.01 + 0.01 + 0.01)
        assert estimate_trend_strength([0.01, 0.01, -0.01]) == pytest.approx(1 / 3, rel=1e-12)

    def test_straight_line_is_one(self) -> None:
        assert estimate_trend_strength([-0.02, -0.01, -0.03]) == pytest.approx(1.0)

    @pytest.mark.parametrize("returns", [[], [0.0, 0.0]])
    def test_no_movement_is_zero(self, returns: list[float]) -> None:
        assert estimate_trend_strength(returns) == 0.0


class TestRegime:
    @pytest.mark.parametrize(
        ("volatility", "trend", "regime"),
        [
            (0.7, 0.9, "BREAKOUT"),
            (0.6, 0.45, "BREAKOUT"),  # both thresholds are inclusive
            (0.59, 0.45, "TREND"),
            (0.0, 1.0, "TREND"),
            (0.35, 0.44, "RANGE"),  # range_volatility is inclusive
            (0.0, 0.0, "RANGE"),
            (0.36, 0.1, "MEAN_REVERSION"),
            (1.0, 0.44, "MEAN_REVERSION"),
        ],
    )
    def test_branches(self, volatility: float, trend: float, regime: str) -> None:
        assert detect_regime(volatility, trend, DEFAULT) == regime

    def test_thresholds_come_from_config(self) -> None:
        config = MarketConfig(trend_threshold=0.9, range_volatility=0.1)
        assert detect_regime(0.2, 0.5, config) == "MEAN_REVERSION"
        assert detect_regime(0.2, 0.5, DEFAULT) == "TREND"


class TestPressure:
    def test_from_volumes(self) -> None:
        assert estimate_market_pressure([0.01], buy_volume=30.0, sell_volume=10.0) == 0.5
        assert estimate_market_pressure([0.01], buy_volume=0.0, sell_volume=4.0) == -1.0

    def test_from_prices_when_volumes_are_missing_or_zero(self) -> None:
        # sum r / sum |r| = 0.01 / 0.03
        expected = pytest.approx(1 / 3, rel=1e-12)
        assert estimate_market_pressure([0.02, -0.01]) == expected
        assert estimate_market_pressure([0.02, -0.01], buy_volume=5.0) == expected
        assert estimate_market_pressure([0.02, -0.01], buy_volume=0.0, sell_volume=0.0) == expected

    def test_from_prices_signed(self) -> None:
        assert estimate_market_pressure([-0.01, -0.02]) == pytest.approx(-1.0)
        assert estimate_market_pressure([]) == 0.0

    def test_bad_volumes_stay_in_range(self) -> None:
        # A negative volume is bad data: fall back to prices rather than leave [-1, 1] (was 1.5).
        assert estimate_market_pressure([0.01, -0.03], buy_volume=5.0, sell_volume=-1.0) == pytest.approx(-0.5)
        assert estimate_market_pressure([0.01], buy_volume=-2.0, sell_volume=3.0) == 1.0


class TestMarketFeatures:
    def test_straight_uptrend(self) -> None:
        prices = [100.0 * 1.01**k for k in range(20)]
        features = compute_market_features(prices, DEFAULT)
        assert features.regime == "TREND"
        assert features.volatility < 1e-9
        assert features.trend_strength == pytest.approx(1.0)
        assert features.market_pressure == pytest.approx(1.0)

    def test_volatile_chop_is_mean_reversion(self) -> None:
        features = compute_market_features([100.0, 105.0, 100.0, 105.0, 100.0], DEFAULT)
        assert features.regime == "MEAN_REVERSION"
        assert features.volatility == 1.0
        assert features.trend_strength < 1e-9

    def test_calm_chop_is_range(self) -> None:
        features = compute_market_features([100.0, 100.1, 100.0, 100.1, 100.0], DEFAULT)
        assert features.regime == "RANGE"

    def test_volatile_trend_is_breakout(self) -> None:
        prices = [100.0, 103.0, 104.0, 109.0, 110.0, 116.0]
        features = compute_market_features(prices, DEFAULT)
        assert features.trend_strength == pytest.approx(1.0)
        assert features.volatility >= DEFAULT.breakout_volatility
        assert features.regime == "BREAKOUT"

    def test_volumes_override_price_pressure(self) -> None:
        prices = [100.0 * 1.01**k for k in range(5)]
        features = compute_market_features(prices, DEFAULT, buy_volume=1.0, sell_volume=3.0)
        assert features.market_pressure == -0.5


class TestWinRate:
    def test_rolling_window(self) -> None:
        tracker = WinRateTracker(3)
        assert tracker.winrate == 0.5  # no trades yet
        expected = [
            (True, 1.0),
            (False, 0.5),
            (True, 2 / 3),
            (False, 1 / 3),  # window F T F: the first True has left
            (False, 1 / 3),  # T F F
            (False, 0.0),  # F F F
            (True, 1 / 3),
        ]
        for won, winrate in expected:
            tracker.record(won)
            assert tracker.winrate == pytest.approx(winrate)
        assert tracker.to_list() == [False, False, True]

    def test_initial_outcomes_longer_than_window_keep_the_newest(self) -> None:
        tracker = WinRateTracker(2, [True, True, False, False])
        assert tracker.winrate == 0.0
        tracker.record(True)
        assert tracker.winrate == 0.5


class TestEquityCurve:
    def test_slope_and_health(self) -> None:
        curve = EquityCurve(DEFAULT)
        assert curve.slope == 0.0
        assert curve.health == 1.0
        for equity in (100.0, 101.0, 102.0):
            curve.record(equity)
        # least squares: slope 1 per trade; / mean 101 / slope_scale 0.01
        assert curve.slope == pytest.approx(1 / 101 / 0.01, rel=1e-12)
        assert curve.health == 1.0
        assert curve.peak == 102.0
        curve.record(96.9)  # 5 % below the peak: 1 - 0.05 / 0.2
        assert curve.health == pytest.approx(0.75, rel=1e-12)
        curve.record(70.0)  # 31 % below the peak, beyond health_zero_drawdown
        assert curve.health == 0.0
        assert curve.peak == 102.0

    def test_slope_is_clipped(self) -> None:
        curve = EquityCurve(DEFAULT, [100.0, 150.0])
        assert curve.slope == 1.0
        curve = EquityCurve(DEFAULT, [150.0, 100.0])
        assert curve.slope == -1.0

    def test_window_keeps_the_newest_points(self) -> None:
        curve = EquityCurve(MarketConfig(equity_window=3), peak=120.0)
        for equity in (120.0, 100.0, 101.0, 102.0):
            curve.record(equity)
        assert curve.to_list() == [100.0, 101.0, 102.0]
        assert curve.slope == pytest.approx(1 / 101 / 0.01, rel=1e-12)
        assert curve.health == pytest.approx(1.0 - (1.0 - 102.0 / 120.0) / 0.2, rel=1e-12)


def reference_slope(points: list[float], config: MarketConfig) -> float:
    """The slope's definition, written out plainly (the curve computes it incrementally)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2.0
    mean_y = math.fsum(points) / n
    cov = math.fsum((i - mean_x) * (y - mean_y) for i, y in enumerate(points))
    var = n * (n * n - 1) / 12.0
    return max(-1.0, min(1.0, cov / var / mean_y / config.slope_scale))


equities = st.one_of(
    st.floats(1e3, 1e5),
    st.sampled_from([1e4, 1e4 + 0.5, 9999.999999999998, 1e4 * (1 + 2**-40)]),
    st.floats(1e-3, 1e12),
)


@st.composite
def equity_histories(draw: st.DrawFn) -> tuple[list[float], int, float]:
    window = draw(st.integers(2, 12))
    kind = draw(st.sampled_from(["random", "constant", "palindrome", "drift"]))
    n = draw(st.integers(0, 30))
    if kind == "random":
        points = draw(st.lists(equities, min_size=n, max_size=n))
    elif kind == "constant":
        points = [draw(equities)] * n
    elif kind == "palindrome":  # an exactly flat least-squares fit: the slope sits on 0.0
        half = draw(st.lists(equities, min_size=1, max_size=6))
        points = half + half[::-1]
    else:  # a tiny drift: the slope sits within ulps of a bin edge
        start, step = draw(equities), draw(st.sampled_from([1e-9, -1e-9, 1e-12, 0.0]))
        points = [start * (1.0 + step * k) for k in range(n)]
    scale = draw(st.sampled_from([0.01, 1.0, 1e-6]))
    return points, window, scale


@given(history=equity_histories(), data=st.data())
def test_slope_and_slope_bin_match_the_definition(history: tuple[list[float], int, float], data: st.DataObject) -> None:
    points, window, scale = history
    config = MarketConfig(equity_window=window, slope_scale=scale)
    curve = EquityCurve(config)
    for k, equity in enumerate(points):
        curve.record(equity)
        expected = reference_slope(points[max(0, k + 1 - window) : k + 1], config)
        near = [expected, math.nextafter(expected, 2.0), math.nextafter(expected, -2.0), 0.0]
        edges = tuple(sorted(set(data.draw(st.lists(st.sampled_from(near) | st.floats(-1, 1), max_size=3)))))
        assert curve.slope_bin(edges) == bisect_right(edges, expected)
        assert curve.slope == expected
        assert curve.slope_bin(edges) == bisect_right(edges, expected)  # from the cached slope


@given(points=st.lists(st.floats(1e-300, 1e300) | equities, min_size=1, max_size=40), window=st.integers(2, 12))
def test_the_exact_window_sum_divided_out_is_fsum(points: list[float], window: int) -> None:
    """The slope reads fsum(window) as the curve's exact integer sum over 2**scale_bits: both round the
    exact sum correctly (half to even), so they are the same float."""
    curve = EquityCurve(MarketConfig(equity_window=window))
    for k, equity in enumerate(points):
        curve.record(equity)
        assert curve._sum / (1 << curve._scale_bits) == math.fsum(points[max(0, k + 1 - window) : k + 1])


def test_restored_curve_continues_exactly() -> None:
    config = MarketConfig(equity_window=5)
    points = [100.0, 101.5, 99.25, 102.0, 103.125, 101.0, 100.5]
    whole = EquityCurve(config)
    for p in points:
        whole.record(p)
    restored = EquityCurve(config, whole.to_list(), whole.peak)
    for p in (104.0, 98.0, 0.1 + 100.0):
        whole.record(p)
        restored.record(p)
        assert restored.slope_bin((0.0, 0.5)) == whole.slope_bin((0.0, 0.5))
        assert restored.slope == whole.slope == reference_slope(whole.to_list(), config)
