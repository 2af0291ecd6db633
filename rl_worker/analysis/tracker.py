"""Trading performance as the learning log goes by: per arm, what operators watch in /metrics and /health.

Fed every applied outcome in log order (so every worker shows the same figures for the log it
applied): per arm the positions, win rate over all and over the last `window` trades, mean and
total pnl, per-trade Sharpe (running mean and variance), and the max drawdown of the arm's own
equity curve (running sum of pnl_pct, as in `rl_worker.analysis.performance`); per arm and agent
the action mix (meta: strategy; sizing: leverage) and the overrides (the stack traded another
action than the published one). Arm names outside `arms` are counted as `other`, so metric
labels stay bounded whatever the log holds.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS
from rl_worker.core.outcome import Outcome

__all__ = ["ArmPerformance", "PerformanceTracker"]

OTHER_ARM = "other"


@dataclass
class ArmPerformance:
    """Running figures of one arm."""

    window: int
    positions: int = 0
    wins: int = 0
    total_pnl_pct: float = 0.0
    max_drawdown_pct: float = 0.0
    overrides: Counter[str] = field(default_factory=Counter)
    strategies: Counter[str] = field(default_factory=Counter)
    leverages: Counter[str] = field(default_factory=Counter)
    _mean: float = 0.0
    _m2: float = 0.0
    _equity: float = 0.0
    _peak: float = 0.0
    _recent: deque[bool] = field(default_factory=deque)

    def record(self, pnl_pct: float, strategy: str, leverage: int, overridden: tuple[str, ...]) -> None:
        self.positions += 1
        win = pnl_pct > 0.0
        self.wins += win
        self._recent.append(win)
        if len(self._recent) > self.window:
            self._recent.popleft()
        # Welford: the running mean and sum of squared deviations
        delta = pnl_pct - self._mean
        self._mean += delta / self.positions
        self._m2 += delta * (pnl_pct - self._mean)
        self.total_pnl_pct += pnl_pct
        self._equity += pnl_pct
        self._peak = max(self._peak, self._equity)
        self.max_drawdown_pct = max(self.max_drawdown_pct, self._peak - self._equity)
        self.strategies[strategy] += 1
        self.leverages[str(leverage)] += 1
        for agent in overridden:
            self.overrides[agent] += 1

    @property
    def win_rate(self) -> float:
        return self.wins / self.positions if self.positions else math.nan

    @property
    def rolling_win_rate(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else math.nan

    @property
    def mean_pnl_pct(self) -> float:
        return self._mean if self.positions else math.nan

    @property
    def sharpe_per_trade(self) -> float:
        if self.positions < 2 or self._m2 <= 0.0:
            return math.nan
        return self._mean / math.sqrt(self._m2 / (self.positions - 1))

    def as_dict(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "positions": self.positions,
            "win_rate": clean(self.win_rate),
            "rolling_win_rate": clean(self.rolling_win_rate),
            "mean_pnl_pct": clean(self.mean_pnl_pct),
            "total_pnl_pct": self.total_pnl_pct,
            "sharpe_per_trade": clean(self.sharpe_per_trade),
            "max_drawdown_pct": self.max_drawdown_pct,
            "overrides": dict(self.overrides),
            "action_mix": {"meta": dict(self.strategies), "sizing": dict(self.leverages)},
        }


class PerformanceTracker:
    """Per-arm `ArmPerformance` of the applied outcomes (see the module docstring)."""

    def __init__(self, arms: tuple[str, ...], window: int = 100) -> None:
        self.known = tuple(arms)
        self.window = window
        self.arms: dict[str, ArmPerformance] = {}

    def label(self, policy: str) -> str:
        return policy if policy in self.known else OTHER_ARM

    def record(self, outcome: Outcome) -> tuple[str, ArmPerformance]:
        """Count one applied outcome; returns its arm label and figures."""
        arm = self.label(outcome.policy)
        performance = self.arms.get(arm)
        if performance is None:
            performance = self.arms[arm] = ArmPerformance(self.window)
        overridden = tuple(
            agent
            for agent, step in (("meta", outcome.meta), ("sizing", outcome.sizing))
            if step.decided_action_index is not None
        )
        performance.record(
            outcome.pnl_pct,
            META_ACTIONS[outcome.meta.action_index].strategy,
            SIZING_ACTIONS[outcome.sizing.action_index].leverage,
            overridden,
        )
        return arm, performance

    def as_dict(self) -> dict[str, Any]:
        return {arm: performance.as_dict() for arm, performance in self.arms.items()}
