"""The core's configuration: every hyperparameter, bin, mask, reward weight and risk limit.

These are plain frozen pydantic models; `rl_worker.settings.Settings` nests them and
fills them from the environment. The core itself never reads the environment.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rl_worker.core.types import LEVERAGE_LEVELS, REGIMES, SIZE_MULTIPLIERS, STRATEGIES

__all__ = [
    "CoreConfig",
    "MarketConfig",
    "MetaBins",
    "QLearningConfig",
    "RewardConfig",
    "RiskLimits",
    "SizingBins",
]

Edges = Annotated[tuple[float, ...], Field(description="ascending bin edges; empty = feature ignored")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _default_alignment() -> dict[str, tuple[str, ...]]:
    return {
        "TREND": ("dual_momentum",),
        "BREAKOUT": ("breakout",),
        "RANGE": ("mean_reversion",),
        "MEAN_REVERSION": ("mean_reversion",),
    }


def _check_edges(value: tuple[float, ...]) -> tuple[float, ...]:
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError(f"bin edges must be strictly ascending, got {value}")
    return value


class QLearningConfig(_Frozen):
    """Tabular Q-learning hyperparameters (shared by both agents)."""

    alpha: float = Field(default=0.01, gt=0, le=1, description="learning rate of the TD update")
    gamma: float = Field(default=0.99, ge=0, le=1, description="discount factor of the TD target")
    epsilon_start: float = Field(default=0.1, ge=0, le=1, description="exploration rate before any update")
    epsilon_min: float = Field(default=0.01, ge=0, le=1, description="floor of the decayed exploration rate")
    epsilon_decay: float = Field(
        default=0.9997, gt=0, le=1, description="multiplied into epsilon once per applied outcome"
    )
    episode_length: int = Field(
        default=50, ge=1, description="completed positions per episode; the last transition is terminal"
    )

    @model_validator(mode="after")
    def _epsilon_order(self) -> QLearningConfig:
        if self.epsilon_min > self.epsilon_start:
            raise ValueError("epsilon_min must not exceed epsilon_start")
        return self


class MetaBins(_Frozen):
    """Bin edges that discretise the meta state's continuous features into the state key."""

    volatility: Edges = (0.33, 0.66)
    market_pressure: Edges = (-0.33, 0.33)
    confidence: Edges = (0.5, 0.75)
    previous_winrate: Edges = (0.4, 0.6)
    account_health: Edges = (0.5,)

    _ascending = field_validator("*")(_check_edges)


class SizingBins(_Frozen):
    """Bin edges that discretise the sizing state's features into the state key."""

    signal_confidence: Edges = (0.5, 0.75)
    portfolio_exposure: Edges = (0.5,)
    recent_winrate: Edges = (0.4, 0.6)
    volatility: Edges = (0.33, 0.66)
    equity_curve_slope: Edges = (0.0,)

    _ascending = field_validator("*")(_check_edges)


class MarketConfig(_Frozen):
    """How the market tools turn price windows and trade history into features."""

    volatility_cap: float = Field(default=0.03, gt=0, description="per-bar log-return std that maps to volatility 1.0")
    trend_threshold: float = Field(
        default=0.45, gt=0, le=1, description="efficiency ratio at or above which a window trends"
    )
    breakout_volatility: float = Field(
        default=0.6, ge=0, le=1, description="scaled volatility at or above which a trend is a breakout"
    )
    range_volatility: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="scaled volatility at or below which a trendless window is a range",
    )
    winrate_window: int = Field(default=20, ge=1, description="trades in the rolling win rate")
    equity_window: int = Field(default=50, ge=2, description="equity points in the slope regression")
    slope_scale: float = Field(
        default=0.01, gt=0, description="equity growth per trade (fraction) that maps to slope 1.0"
    )
    health_zero_drawdown: float = Field(
        default=0.2, gt=0, le=1, description="drawdown from the equity peak at which account health is 0"
    )


class RewardConfig(_Frozen):
    """Reward weights and the constants of the reward components (see rewards.py)."""

    meta_drawdown_weight: float = 0.5
    meta_sharpe_weight: float = 0.2
    meta_alignment_weight: float = 0.15
    size_risk_weight: float = 0.4
    size_volatility_weight: float = 0.1
    sharpe_window: int = Field(default=20, ge=2, description="recent trades whose pnl spread scales sharpe_signal")
    sharpe_floor: float = Field(default=0.5, gt=0, description="lowest pnl spread (percent) used by sharpe_signal")
    sharpe_clip: float = Field(default=3.0, gt=0, description="sharpe_signal is clipped to [-clip, clip]")
    risk_reference_leverage: float = Field(
        default=5.0, gt=0, description="size_multiplier*leverage at which risk_penalty equals the drawdown"
    )
    aligned_strategies: dict[str, tuple[str, ...]] = Field(
        default_factory=_default_alignment,
        description="strategies that regime_alignment counts as native to each regime",
    )

    @field_validator("aligned_strategies")
    @classmethod
    def _known(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return _check_strategy_table(value)


class RiskLimits(_Frozen):
    """Configured maxima for sizing decisions; per-event limits can only tighten them."""

    max_size_multiplier: float = Field(default=1.0, gt=0, description="largest size multiplier ever chosen")
    max_leverage: float = Field(default=10.0, gt=0, description="largest leverage ever chosen")

    @model_validator(mode="after")
    def _something_allowed(self) -> RiskLimits:
        if self.max_size_multiplier < min(SIZE_MULTIPLIERS) or self.max_leverage < min(LEVERAGE_LEVELS):
            raise ValueError("risk limits must admit at least the smallest size and leverage")
        return self


def _check_strategy_table(value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    for regime, strategies in value.items():
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}")
        unknown = set(strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)} for {regime}")
    return value


def _default_regime_mask() -> dict[str, tuple[str, ...]]:
    # Each regime masks the one strategy that works against it; detection is noisy,
    # so stricter masks would hide the right strategy too often.
    return {
        "TREND": ("dual_momentum", "breakout"),
        "BREAKOUT": ("breakout", "dual_momentum"),
        "RANGE": ("mean_reversion", "breakout"),
        "MEAN_REVERSION": ("mean_reversion", "dual_momentum"),
    }


class CoreConfig(_Frozen):
    """Everything the pure core needs; a replica's behaviour is a function of this and its log."""

    seed: int = Field(default=0, ge=0, description="model seed; exploration draws use (seed, decision_id)")
    dedupe_window: int = Field(
        default=100_000,
        ge=1,
        description="position ids remembered to ignore a re-published outcome (oldest forgotten first)",
    )
    qlearning: QLearningConfig = QLearningConfig()
    meta_bins: MetaBins = MetaBins()
    sizing_bins: SizingBins = SizingBins()
    market: MarketConfig = MarketConfig()
    reward: RewardConfig = RewardConfig()
    risk: RiskLimits = RiskLimits()
    regime_strategies: dict[str, tuple[str, ...]] = Field(
        default_factory=_default_regime_mask,
        description="strategies the meta agent may choose in each regime (the regime mask)",
    )

    @field_validator("regime_strategies")
    @classmethod
    def _mask_complete(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        _check_strategy_table(value)
        for regime in REGIMES:
            if not value.get(regime):
                raise ValueError(f"regime mask leaves no strategy for {regime}")
        return value

    def fingerprint(self) -> str:
        """A short hash of what makes two replicas incompatible, stored in snapshots.

        It covers the action spaces and masks, the bins, the market features and the reward
        definitions (what a state key and a Q-value mean), the seed and the episode length;
        not the tunable hyperparameters (alpha, gamma, epsilon schedule), which the learning
        log changes live, nor the dedupe window. So tuning never invalidates a checkpoint.
        """
        blob = json.dumps(self.model_dump(mode="json", exclude=_NOT_FINGERPRINTED), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# The tunable part of the configuration (core.control.Hyperparameters) and bookkeeping.
_NOT_FINGERPRINTED: dict[str, Any] = {
    "dedupe_window": True,
    "qlearning": {"alpha", "gamma", "epsilon_start", "epsilon_min", "epsilon_decay"},
}
