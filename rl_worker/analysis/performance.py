"""Trading performance of one arm: win rate, pnl, Sharpe, max drawdown, mean rewards.

An arm's equity curve is its own: the running sum of its trades' `pnl_pct`, in log order,
starting at 0 (percentage points of one position's margin per trade). Summing, not
compounding, keeps each trade's weight independent of the other arm's trades and of the
account size; the account's own equity, which mixes both arms, is not used.

    win rate          = #(pnl_pct > 0) / n
    Sharpe per trade  = mean(pnl_pct) / std(pnl_pct, ddof=1)
    Sharpe annualised = Sharpe per trade * sqrt(trades per year)
    max drawdown      = max_t (max_{u<=t} E_u - E_t),  E_t = sum_{k<=t} pnl_pct_k,  E_0 = 0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rl_worker.core.types import FloatArray

__all__ = ["ArmStatistics", "ArmTrades", "equity_curve", "max_drawdown", "sharpe_ratio", "summarize_arm"]


def _column(values: Any) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError("trade columns must be finite")
    return array


@dataclass(frozen=True)
class ArmTrades:
    """The completed positions of one arm, in learning-log order (columns of equal length)."""

    arm: str
    pnl_pct: FloatArray
    meta_reward: FloatArray = field(default_factory=lambda: np.zeros(0))
    size_reward: FloatArray = field(default_factory=lambda: np.zeros(0))
    closed_at_ms: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        pnl = _column(self.pnl_pct)
        n = pnl.size
        object.__setattr__(self, "pnl_pct", pnl)
        for name in ("meta_reward", "size_reward"):
            column = _column(getattr(self, name))
            if column.size == 0:
                column = np.full(n, np.nan)
            elif column.size != n:
                raise ValueError(f"{name} has {column.size} values for {n} trades")
            object.__setattr__(self, name, column)
        closed = np.asarray(self.closed_at_ms, dtype=np.int64).reshape(-1)
        if closed.size == 0:
            closed = np.zeros(n, dtype=np.int64)
        elif closed.size != n:
            raise ValueError(f"closed_at_ms has {closed.size} values for {n} trades")
        object.__setattr__(self, "closed_at_ms", closed)

    def __len__(self) -> int:
        return int(self.pnl_pct.size)

    @property
    def has_rewards(self) -> bool:
        return len(self) > 0 and not np.isnan(self.meta_reward).any() and not np.isnan(self.size_reward).any()


def equity_curve(pnl_pct: FloatArray) -> FloatArray:
    """E_0 = 0, E_t = E_{t-1} + pnl_pct_t along the last axis (so one more point than trades)."""
    pnl = np.asarray(pnl_pct, dtype=np.float64)
    zeros = np.zeros((*pnl.shape[:-1], 1))
    return np.concatenate([zeros, np.cumsum(pnl, axis=-1)], axis=-1)


def max_drawdown(pnl_pct: FloatArray) -> FloatArray | float:
    """The largest fall of the equity curve from a previous peak (>= 0), along the last axis."""
    curve = equity_curve(pnl_pct)
    drawdown = np.max(np.maximum.accumulate(curve, axis=-1) - curve, axis=-1)
    return float(drawdown) if np.ndim(drawdown) == 0 else drawdown


def sharpe_ratio(pnl_pct: FloatArray) -> FloatArray | float:
    """mean / sample std along the last axis; NaN below two trades or for a zero spread."""
    pnl = np.asarray(pnl_pct, dtype=np.float64)
    if pnl.shape[-1] < 2:
        out = np.full(pnl.shape[:-1], np.nan)
    else:
        std = pnl.std(axis=-1, ddof=1)
        mean = pnl.mean(axis=-1)
        out = np.divide(mean, std, out=np.full(np.shape(mean), np.nan), where=std > 0)
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class ArmStatistics:
    """One arm's figures; NaN where a figure needs more trades than the arm has."""

    arm: str
    positions: int
    wins: int
    win_rate: float
    mean_pnl_pct: float
    total_pnl_pct: float
    pnl_std: float
    sharpe_per_trade: float
    sharpe_annualised: float
    max_drawdown_pct: float
    mean_meta_reward: float
    mean_size_reward: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def summarize_arm(trades: ArmTrades, trades_per_year: float) -> ArmStatistics:
    """The figures of the module docstring for one arm."""
    if trades_per_year <= 0:
        raise ValueError("trades_per_year must be positive")
    n = len(trades)
    pnl = trades.pnl_pct
    nan = float("nan")
    wins = int(np.count_nonzero(pnl > 0.0))
    sharpe = float(sharpe_ratio(pnl)) if n else nan
    return ArmStatistics(
        arm=trades.arm,
        positions=n,
        wins=wins,
        win_rate=wins / n if n else nan,
        mean_pnl_pct=float(pnl.mean()) if n else nan,
        total_pnl_pct=float(pnl.sum()),
        pnl_std=float(pnl.std(ddof=1)) if n >= 2 else nan,
        sharpe_per_trade=sharpe,
        sharpe_annualised=sharpe * math.sqrt(trades_per_year),
        max_drawdown_pct=float(max_drawdown(pnl)),
        mean_meta_reward=float(np.mean(trades.meta_reward)) if n else nan,
        mean_size_reward=float(np.mean(trades.size_reward)) if n else nan,
    )
