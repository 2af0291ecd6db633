"""The reward engine: meta and sizing rewards and their four components.

    meta_reward = pnl_pct - w_dd * max_drawdown_pct + w_sharpe * sharpe_signal
                  + w_align * regime_alignment                       (defaults 0.5, 0.2, 0.15)
    size_reward = pnl_pct - w_risk * risk_penalty + w_vol * volatility_adjustment
                                                                     (defaults 0.4, 0.1)

All pnl and drawdown figures are in percent units (1.5 = +1.5 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rl_worker.core.config import RewardConfig
from rl_worker.core.types import LEVERAGE_LEVELS, SIZE_MULTIPLIERS

__all__ = [
    "meta_reward",
    "regime_alignment",
    "risk_penalty",
    "sharpe_signal",
    "size_reward",
    "volatility_adjustment",
]

_MAX_EXPOSURE = max(SIZE_MULTIPLIERS) * max(LEVERAGE_LEVELS)


def sharpe_signal(pnl_pct: float, recent_pnl_pct: Sequence[float], config: RewardConfig) -> float:
    """This trade's pnl in units of the spread of recent trades' pnl, clipped to +-sharpe_clip.

    spread = sample std of `recent_pnl_pct` (the trades before this one, newest last),
    floored at `sharpe_floor` so that a quiet history cannot blow the signal up.
    A per-trade Sharpe: positive for a gain that is large against the usual noise.
    """
    n = len(recent_pnl_pct)
    spread = config.sharpe_floor
    if n >= 2:
        mean = math.fsum(recent_pnl_pct) / n
        std = math.sqrt(math.fsum([(p - mean) * (p - mean) for p in recent_pnl_pct]) / (n - 1))
        spread = max(spread, std)
    return max(-config.sharpe_clip, min(config.sharpe_clip, pnl_pct / spread))


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
