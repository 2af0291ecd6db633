"""Market tools: realised volatility, trend strength, regime, market pressure, win rate, equity curve.

Windows here are short (tens of prices, twenty trades), so plain-float loops beat numpy's
per-call overhead; every function is deterministic to the bit for the same inputs.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul, sub

from rl_worker.core.config import MarketConfig

__all__ = [
    "EquityCurve",
    "MarketFeatures",
    "WinRateTracker",
    "compute_market_features",
    "detect_regime",
    "estimate_market_pressure",
    "estimate_trend_strength",
    "estimate_volatility",
]


def _log_returns(prices: Sequence[float]) -> list[float]:
    return [math.log(b / a) for a, b in itertools.pairwise(prices)]


def estimate_volatility(returns: Sequence[float], cap: float) -> float:
    """Realised volatility: std of per-bar log returns divided by `cap`, clipped to [0, 1]."""
    n = len(returns)
    if n < 2:
        return 0.0
    mean = math.fsum(returns) / n
    var = math.fsum([(r - mean) * (r - mean) for r in returns]) / (n - 1)
    return min(1.0, math.sqrt(var) / cap)


def estimate_trend_strength(returns: Sequence[float]) -> float:
    """Kaufman's efficiency ratio |sum r| / sum |r| in [0, 1]: 1 = a straight line, ~0 = noise."""
    path = math.fsum(abs(r) for r in returns)
    if path == 0.0:
        return 0.0
    return min(1.0, abs(math.fsum(returns)) / path)


def estimate_market_pressure(
    returns: Sequence[float], buy_volume: float | None = None, sell_volume: float | None = None
) -> float:
    """Buy/sell pressure in [-1, 1].

    From volumes when both are given, non-negative and not both zero: (buy - sell) / (buy + sell).
    Otherwise from prices: the signed efficiency ratio sum r / sum |r|.
    """
    if (
        buy_volume is not None
        and sell_volume is not None
        and buy_volume >= 0.0
        and sell_volume >= 0.0
        and buy_volume + sell_volume > 0.0
    ):
        return (buy_volume - sell_volume) / (buy_volume + sell_volume)
    path = math.fsum(abs(r) for r in returns)
    if path == 0.0:
        return 0.0
    return max(-1.0, min(1.0, math.fsum(returns) / path))


def detect_regime(volatility: float, trend_strength: float, config: MarketConfig) -> str:
    """TREND | BREAKOUT | RANGE | MEAN_REVERSION from scaled volatility and trend strength.

    A trending window is a BREAKOUT when it is also volatile, else a TREND. A trendless
    window is a RANGE when calm, else MEAN_REVERSION (volatile chop around a level).
    """
    if trend_strength >= config.trend_threshold:
        return "BREAKOUT" if volatility >= config.breakout_volatility else "TREND"
    return "RANGE" if volatility <= config.range_volatility else "MEAN_REVERSION"


@dataclass(frozen=True, slots=True)
class MarketFeatures:
    """What one price window (plus optional volumes) says about the market."""

    regime: str
    volatility: float
    trend_strength: float
    market_pressure: float


def compute_market_features(
    prices: Sequence[float],
    config: MarketConfig,
    buy_volume: float | None = None,
    sell_volume: float | None = None,
) -> MarketFeatures:
    """Volatility, trend strength, regime and pressure of a window of closes (oldest first)."""
    returns = _log_returns(prices)
    volatility = estimate_volatility(returns, config.volatility_cap)
    trend = estimate_trend_strength(returns)
    return MarketFeatures(
        regime=detect_regime(volatility, trend, config),
        volatility=volatility,
        trend_strength=trend,
        market_pressure=estimate_market_pressure(returns, buy_volume, sell_volume),
    )


class WinRateTracker:
    """Rolling win rate over the last `window` trades (0.5 before the first trade)."""

    __slots__ = ("_outcomes", "_wins")

    def __init__(self, window: int, outcomes: Sequence[bool] = ()) -> None:
        self._outcomes: deque[bool] = deque(outcomes, maxlen=window)
        self._wins = sum(self._outcomes)

    def record(self, won: bool) -> float:
        """Add a trade; returns the new win rate."""
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self._wins -= 1
        outcomes.append(won)
        self._wins += won
        return self._wins / len(outcomes)

    @property
    def winrate(self) -> float:
        return self._wins / len(self._outcomes) if self._outcomes else 0.5

    def to_list(self) -> list[bool]:
        return list(self._outcomes)


_UNIT_ROUNDOFF = 2.0**-53
_TINY = 2.0**-1070


class EquityCurve:
    """Recent equity points, the all-time peak, and the slope and health derived from them.

    The slope is recomputed at most once per recorded point. Besides the points the curve
    keeps exact integer sums (sum y, sum i*y, in units of 2**-scale_bits, the finest step
    of any point so far), updated in O(1) per point: they bound the slope tightly enough to
    tell its bin (see `slope_bin`) without the O(window) sums.
    """

    __slots__ = (
        "_centred",
        "_config",
        "_constants",
        "_exact_points",
        "_high",
        "_low",
        "_points",
        "_scale_bits",
        "_slope",
        "_sum",
        "_weighted",
        "peak",
    )

    def __init__(self, config: MarketConfig, points: Sequence[float] = (), peak: float = 0.0) -> None:
        self._config = config
        self._points: deque[float] = deque(maxlen=config.equity_window)
        self._exact_points: deque[int] = deque(maxlen=config.equity_window)  # points * 2**scale_bits
        self._scale_bits = 0
        self._sum = 0  # exact sum of the window's points, times 2**scale_bits
        self._weighted = 0  # exact sum of i * point_i (i = 0 for the oldest), times 2**scale_bits
        # Bounds of every point ever in the window (for the error bound in `slope_bin`).
        self._high = max(peak, 0.0)
        self._low = math.inf
        self._slope: float | None = None
        self._constants: dict[int, tuple[float, float, float, float]] = {}
        self._centred: dict[int, tuple[float, ...]] = {}  # per window length n: (i - (n - 1) / 2 for i < n)
        self.peak = peak
        for point in points:
            self.record(point)
        self.peak = peak

    def record(self, equity: float) -> None:
        if equity > self.peak:
            self.peak = equity
        if equity > self._high:
            self._high = equity
        if equity < self._low:
            self._low = equity
        self._slope = None
        # A finite float is a dyadic rational: numerator / 2**bits.
        numerator, denominator = equity.as_integer_ratio()
        bits = denominator.bit_length() - 1
        if bits > self._scale_bits:  # a finer point: rescale everything, exactly
            shift = bits - self._scale_bits
            self._sum <<= shift
            self._weighted <<= shift
            self._exact_points = deque((e << shift for e in self._exact_points), maxlen=self._points.maxlen)
            self._scale_bits = bits
        exact = numerator << (self._scale_bits - bits)
        exact_points = self._exact_points
        n = len(exact_points)
        if n == exact_points.maxlen:
            # The oldest point leaves and every index drops by one:
            # sum_{i>=1} (i - 1) y_i = sum_{i>=1} i y_i - sum_{i>=1} y_i.
            self._sum -= exact_points[0]
            self._weighted -= self._sum
            n -= 1
        self._sum += exact
        self._weighted += n * exact
        exact_points.append(exact)
        self._points.append(equity)

    @property
    def slope(self) -> float:
        """Least-squares slope per trade, as a fraction of mean equity, over slope_scale, in [-1, 1]."""
        slope = self._slope
        if slope is None:
            slope = self._slope = self._compute_slope()
        return slope

    def _compute_slope(self) -> float:
        """slope = cov / var / mean_y / slope_scale, clipped to [-1, 1], with

            mean_y = fsum(y) / n,  cov = fsum((i - mean_x) * (y_i - mean_y)),  var = n (n^2 - 1) / 12.

        fsum(y) is read from the exact integer sum (an int division is correctly rounded, as fsum is), and
        the products are summed without a Python loop: a sizing decision right after an apply pays this.
        """
        points = self._points
        n = len(points)
        if n < 2:
            return 0.0
        centred = self._centred.get(n)
        if centred is None:
            mean_x = (n - 1) / 2.0
            centred = self._centred[n] = tuple(i - mean_x for i in range(n))
        mean_y = self._sum / (1 << self._scale_bits) / n
        cov = math.fsum(map(mul, centred, map(sub, points, itertools.repeat(mean_y, n))))
        var = n * (n * n - 1) / 12.0
        relative = cov / var / mean_y
        return max(-1.0, min(1.0, relative / self._config.slope_scale))

    def slope_bin(self, edges: Sequence[float]) -> int:
        """`bisect_right(edges, self.slope)`, mostly without computing the slope itself.

        The exact sums give the true (real-number) slope 12 C / ((n^2 - 1) S scale), where
        C = sum (i - mean_i) y_i and S = sum y_i. `slope` computes it in floats; as its terms
        (i - mean_i)(y_i - mean_y) sum exactly to C, it is off by at most ~2u A high / D +
        ~8u |slope| (u = 2**-53, A = sum |i - mean_i| <= n^2 / 4, high >= every point,
        D = var * mean * scale). With 64u instead, plus room for subnormal results, as the
        margin around a float estimate of the true slope: when no edge lies within it, the
        bin is known; otherwise (or outside the analysed range) the slope is computed.
        """
        if not edges:
            return 0
        n = len(self._points)
        if self._slope is None and n >= 2 and 1e-150 < self._low and self._high < 1e150:
            constants = self._constants.get(n)
            if constants is None:
                constants = self._constants[n] = self._slope_constants(n)
            squares_scale, var_scale, high_weight, subnormal_room = constants
            total = self._sum
            estimate = 6.0 * ((2 * self._weighted - (n - 1) * total) / total) / squares_scale
            denominator = var_scale * (total / (n << self._scale_bits))
            if 1e-200 < denominator < 1e200:
                margin = (
                    (high_weight * self._high + subnormal_room) / denominator
                    + 64.0 * _UNIT_ROUNDOFF * abs(estimate)
                    + 1e-300
                )
                low = bisect_right(edges, max(-1.0, min(1.0, estimate - margin)))
                if low == bisect_right(edges, max(-1.0, min(1.0, estimate + margin))):
                    return low
        return bisect_right(edges, self.slope)

    def _slope_constants(self, n: int) -> tuple[float, float, float, float]:
        scale = self._config.slope_scale
        return (
            (n * n - 1) * scale,
            n * (n * n - 1) / 12.0 * scale,
            64.0 * _UNIT_ROUNDOFF * n * n / 4.0,
            (n * n * n + 64) * _TINY,
        )

    @property
    def health(self) -> float:
        """1 at the equity peak, falling linearly to 0 at `health_zero_drawdown` below it."""
        if not self._points or self.peak <= 0.0:
            return 1.0
        drawdown = 1.0 - self._points[-1] / self.peak
        return max(0.0, min(1.0, 1.0 - drawdown / self._config.health_zero_drawdown))

    def to_list(self) -> list[float]:
        return list(self._points)
