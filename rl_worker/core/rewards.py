"""The reward engine: the meta and sizing rewards, then their four components.

All pnl and drawdown figures are in percent units (1.5 = +1.5 %). The exact arithmetic behind
the Sharpe spread lives in `rl_worker.core.exact`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rl_worker.core.config import RewardConfig
from rl_worker.core.exact import PnlWindow
from rl_worker.core.types import LEVERAGE_LEVELS, SIZE_MULTIPLIERS

__all__ = [
    "meta_reward",
    "pnl_spread",
    "regime_alignment",
    "risk_penalty",
    "sharpe_signal",
    "size_reward",
    "volatility_adjustment",
]

_MAX_EXPOSURE = max(SIZE_MULTIPLIERS) * max(LEVERAGE_LEVELS)


def meta_reward(
    pnl_pct: float, max_drawdown_pct: float, sharpe: float, alignment: float, config: RewardConfig
) -> float:
    """The meta agent's reward (strategy, model, weight):

        meta_reward = pnl_pct - w_dd * max_drawdown_pct + w_sharpe * sharpe_signal + w_align * regime_alignment

    with w_dd, w_sharpe, w_align = `config.meta_drawdown_weight`, `meta_sharpe_weight`,
    `meta_alignment_weight` (defaults 0.5, 0.2, 0.15).
    """
    return (
        pnl_pct
        - config.meta_drawdown_weight * max_drawdown_pct
        + config.meta_sharpe_weight * sharpe
        + config.meta_alignment_weight * alignment
    )


def size_reward(pnl_pct: float, risk: float, vol_adjustment: float, config: RewardConfig) -> float:
    """The sizing agent's reward (size multiplier, leverage):

        size_reward = pnl_pct - w_risk * risk_penalty + w_vol * volatility_adjustment

    with w_risk, w_vol = `config.size_risk_weight`, `size_volatility_weight` (defaults 0.4, 0.1).
    """
    return pnl_pct - config.size_risk_weight * risk + config.size_volatility_weight * vol_adjustment


def sharpe_signal(pnl_pct: float, recent_pnl_pct: Sequence[float] | PnlWindow, config: RewardConfig) -> float:
    """This trade's pnl in units of the spread of recent trades' pnl, clipped:

        sharpe_signal = clip(pnl_pct / pnl_spread(recent), -sharpe_clip, +sharpe_clip)

    `recent_pnl_pct` are the trades before this one, newest last. A per-trade Sharpe: positive
    for a gain that is large against the usual noise.
    """
    clip = config.sharpe_clip
    return max(-clip, min(clip, pnl_pct / pnl_spread(recent_pnl_pct, config.sharpe_floor)))


def pnl_spread(recent_pnl_pct: Sequence[float] | PnlWindow, floor: float) -> float:
    """The spread of `sharpe_signal`: max(sample std of the recent pnl, floor).

    The floor (`sharpe_floor`) keeps a quiet history from blowing the signal up; the std is
    computed exactly and rounded once (`PnlWindow.sample_std`), so it is the same on every platform.
    """
    window = recent_pnl_pct if isinstance(recent_pnl_pct, PnlWindow) else PnlWindow(None, recent_pnl_pct)
    std = window.sample_std()  # 0.0 below two trades
    return std if std > floor else floor


def regime_alignment(regime: str, strategy: str, config: RewardConfig) -> float:
    """1.0 when the chosen strategy is native to the regime at entry (`config.aligned_strategies`), else 0.0."""
    return 1.0 if strategy in config.aligned_strategies.get(regime, ()) else 0.0


def risk_penalty(max_drawdown_pct: float, size_multiplier: float, leverage: float, config: RewardConfig) -> float:
    """The drawdown scaled by the exposure taken:

        risk_penalty = max_drawdown_pct * size_multiplier * leverage / risk_reference_leverage

    Equals the drawdown at the reference exposure (default 5x), grows linearly above it.
    """
    return max_drawdown_pct * size_multiplier * leverage / config.risk_reference_leverage


def volatility_adjustment(volatility: float, size_multiplier: float, leverage: float) -> float:
    """In [-1, 1]:

        volatility_adjustment = (1 - 2 * volatility) * size_multiplier * leverage / max exposure

    Rewards large exposure in calm markets (volatility < 0.5) and punishes it in volatile
    ones; a small position is barely affected either way.
    """
    return (1.0 - 2.0 * volatility) * (size_multiplier * leverage) / _MAX_EXPOSURE
