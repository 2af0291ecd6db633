"""The reward engine: meta and sizing rewards and their four components.

    meta_reward = pnl_pct - w_dd * max_drawdown_pct + w_sharpe * sharpe_signal
                  + w_align * regime_alignment                       (defaults 0.5, 0.2, 0.15)
    size_reward = pnl_pct - w_risk * risk_penalty + w_vol * volatility_adjustment
                                                                     (defaults 0.4, 0.1)

All pnl and drawdown figures are in percent units (1.5 = +1.5 %).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from rl_worker.core.config import RewardConfig
from rl_worker.core.types import LEVERAGE_LEVELS, SIZE_MULTIPLIERS

__all__ = [
    "PnlWindow",
    "meta_reward",
    "pnl_spread",
    "regime_alignment",
    "risk_penalty",
    "sharpe_signal",
    "size_reward",
    "volatility_adjustment",
]

_MAX_EXPOSURE = max(SIZE_MULTIPLIERS) * max(LEVERAGE_LEVELS)
# Bits of the square root before its single rounding to a float: 2 * 53 + 3 (see _sqrt_of_ratio).
_SQRT_BITS = 109


def _sqrt_of_ratio(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator), correctly rounded (numerator >= 0, denominator > 0).

    An integer square root with at least 54 significant bits, rounded to odd (the lowest
    bit set when anything was cut off), then rounded once to the nearest float: the
    round-to-odd intermediate cannot cause a double rounding.
    """
    shift = (numerator.bit_length() - denominator.bit_length() - _SQRT_BITS) // 2
    if shift >= 0:
        scaled = denominator << 2 * shift
        root = math.isqrt(numerator // scaled)
        root |= root * root * scaled != numerator
        return float(root << shift)
    scaled = numerator << -2 * shift
    root = math.isqrt(scaled // denominator)
    root |= root * root * denominator != scaled
    return root / (1 << -shift)


class PnlWindow:
    """The pnl of the recent trades (newest last, at most `maxlen`) and their exact spread.

    Besides the values it keeps exact integer sums of p and p^2 (in units of 2**-bits, the
    finest step of any value so far; a finite float is a dyadic rational), updated in O(1)
    per trade, so the sample standard deviation is exact before its one rounding.
    """

    __slots__ = ("_bits", "_exact", "_squares", "_sum", "_values")

    def __init__(self, maxlen: int | None, values: Iterable[float] = ()) -> None:
        self._values: deque[float] = deque(maxlen=maxlen)
        self._exact: deque[int] = deque(maxlen=maxlen)
        self._bits = 0
        self._sum = 0
        self._squares = 0
        for value in values:
            self.append(value)

    @property
    def maxlen(self) -> int | None:
        return self._values.maxlen

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[float]:
        return iter(self._values)

    def __getitem__(self, index: int) -> float:
        return self._values[index]

    def append(self, pnl_pct: float) -> None:
        numerator, denominator = pnl_pct.as_integer_ratio()
        bits = denominator.bit_length() - 1
        if bits > self._bits:  # a finer value: rescale everything, exactly
            shift = bits - self._bits
            self._sum <<= shift
            self._squares <<= 2 * shift
            self._exact = deque((e << shift for e in self._exact), maxlen=self._exact.maxlen)
            self._bits = bits
        exact = numerator << (self._bits - bits)
        window = self._exact
        if len(window) == window.maxlen:
            oldest = window[0]
            self._sum -= oldest
            self._squares -= oldest * oldest
        self._sum += exact
        self._squares += exact * exact
        window.append(exact)
        self._values.append(pnl_pct)

    def sample_std(self) -> float:
        """sqrt(sum (p - mean)^2 / (n - 1)) over the window, correctly rounded; 0.0 below two trades.

        With S = sum p and Q = sum p^2 (exact): sum (p - mean)^2 = (n Q - S^2) / n.
        """
        n = len(self._exact)
        if n < 2:
            return 0.0
        return _sqrt_of_ratio(n * self._squares - self._sum * self._sum, (n * (n - 1)) << 2 * self._bits)

    def to_list(self) -> list[float]:
        return list(self._values)


def pnl_spread(recent_pnl_pct: Sequence[float] | PnlWindow, floor: float) -> float:
    """The spread of `sharpe_signal`: the sample std of the recent pnl, at least `floor`."""
    window = recent_pnl_pct if isinstance(recent_pnl_pct, PnlWindow) else PnlWindow(None, recent_pnl_pct)
    std = window.sample_std()  # 0.0 below two trades
    return std if std > floor else floor


def sharpe_signal(pnl_pct: float, recent_pnl_pct: Sequence[float] | PnlWindow, config: RewardConfig) -> float:
    """This trade's pnl in units of the spread of recent trades' pnl, clipped to +-sharpe_clip.

    spread = sample std of `recent_pnl_pct` (the trades before this one, newest last),
    floored at `sharpe_floor` so that a quiet history cannot blow the signal up; the std is
    computed exactly and rounded once (`PnlWindow.sample_std`), so it is the same on every
    platform. A per-trade Sharpe: positive for a gain that is large against the usual noise.
    """
    window = recent_pnl_pct if isinstance(recent_pnl_pct, PnlWindow) else PnlWindow(None, recent_pnl_pct)
    std = window.sample_std()  # 0.0 below two trades
    floor = config.sharpe_floor
    clip = config.sharpe_clip
    return max(-clip, min(clip, pnl_pct / (std if std > floor else floor)))


def regime_alignment(regime: str, strategy: str, config: RewardConfig) -> float:
    """1.0 when the chosen strategy is native to the regime at entry (config table), else 0.0."""
    return 1.0 if strategy in config.aligned_strategies.get(regime, ()) else 0.0


def risk_penalty(max_drawdown_pct: float, size_multiplier: float, leverage: float, config: RewardConfig) -> float:
    """The drawdown scaled by the exposure taken: dd * (size_multiplier * leverage) / reference.

    Equals the drawdown at the reference exposure (default 5x), grows linearly above it.
    """
    return max_drawdown_pct * size_multiplier * leverage / config.risk_reference_leverage


def volatility_adjustment(volatility: float, size_multiplier: float, leverage: float) -> float:
    """(1 - 2 * volatility) * exposure / max exposure, in [-1, 1].

    Rewards large exposure in calm markets (volatility < 0.5) and punishes it in
    volatile ones; a small position is barely affected either way.
    """
    return (1.0 - 2.0 * volatility) * (size_multiplier * leverage) / _MAX_EXPOSURE


def meta_reward(
    pnl_pct: float, max_drawdown_pct: float, sharpe: float, alignment: float, config: RewardConfig
) -> float:
    return (
        pnl_pct
        - config.meta_drawdown_weight * max_drawdown_pct
        + config.meta_sharpe_weight * sharpe
        + config.meta_alignment_weight * alignment
    )


def size_reward(pnl_pct: float, risk: float, vol_adjustment: float, config: RewardConfig) -> float:
    return pnl_pct - config.size_risk_weight * risk + config.size_volatility_weight * vol_adjustment
