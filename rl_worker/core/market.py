"""Market tools: realised volatility, trend strength, regime, market pressure, win rate, equity curve.

Windows here are short (tens of prices, twenty trades), so plain-float loops beat numpy's
per-call overhead; every function is deterministic to the bit for the same inputs.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

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
    var = math.fsum((r - mean) ** 2 for r in returns) / (n - 1)
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

    def record(self, won: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._wins -= 1
        self._outcomes.append(won)
        self._wins += won

    @property
    def winrate(self) -> float:
        return self._wins / len(self._outcomes) if self._outcomes else 0.5

    def to_list(self) -> list[bool]:
        return list(self._outcomes)


class EquityCurve:
    """Recent equity points, the all-time peak, and the slope and health derived from them."""

    __slots__ = ("_config", "_points", "peak")

    def __init__(self, config: MarketConfig, points: Sequence[float] = (), peak: float = 0.0) -> None:
        self._config = config
        self._points: deque[float] = deque(points, maxlen=config.equity_window)
        self.peak = peak

    def record(self, equity: float) -> None:
        self._points.append(equity)
        if equity > self.peak:
            self.peak = equity

    @property
    def slope(self) -> float:
        """Least-squares slope per trade, as a fraction of mean equity, over slope_scale, in [-1, 1]."""
        n = len(self._points)
        if n < 2:
            return 0.0
        mean_x = (n - 1) / 2.0
        mean_y = math.fsum(self._points) / n
        cov = math.fsum((i - mean_x) * (y - mean_y) for i, y in enumerate(self._points))
        var = n * (n * n - 1) / 12.0
        relative = cov / var / mean_y
        return max(-1.0, min(1.0, relative / self._config.slope_scale))

    @property
    def health(self) -> float:
        """1 at the equity peak, falling linearly to 0 at `health_zero_drawdown` below it."""
        if not self._points or self.peak <= 0.0:
            return 1.0
        drawdown = 1.0 - self._points[-1] / self.peak
        return max(0.0, min(1.0, 1.0 - drawdown / self._config.health_zero_drawdown))

    def to_list(self) -> list[float]:
        return list(self._points)
