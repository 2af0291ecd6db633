"""The core's configuration: every hyperparameter, bin, mask, reward weight and risk limit.

These are plain frozen pydantic models; `rl_worker.settings.Settings` nests them and
fills them from the environment. The core itself never reads the environment.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rl_worker.core.types import LEVERAGE_LEVELS, REGIMES, SIZE_MULTIPLIERS, STRATEGIES

__all__ = [
    "PROFILES",
    "AgentHyperparameters",
    "CoreConfig",
    "LearningRules",
    "MarketConfig",
    "MetaBins",
    "RewardConfig",
    "RiskLimits",
    "SizingBins",
]

MetaFeature = Literal["volatility", "market_pressure", "confidence", "previous_winrate", "account_health"]
SizingFeature = Literal["signal_confidence", "portfolio_exposure", "recent_winrate", "volatility", "equity_curve_slope"]
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


class AgentHyperparameters(BaseModel):
    """One agent's learning rate, discount and epsilon schedule: the tunable part of a model.

    Meta and sizing each have their own (`CoreConfig.meta`, `CoreConfig.sizing`); the learning
    log's hyperparameter records (core.control) change them live, so they are not part of the
    fingerprint. The learning rule around them (step size, backoff, ...) is `LearningRules`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    alpha: float = Field(gt=0, le=1, description="learning rate of the TD update (its floor with step_size 'visits')")
    gamma: float = Field(ge=0, le=1, description="discount factor of the TD target")
    epsilon_start: float = Field(ge=0, le=1, description="exploration rate when this schedule takes effect")
    epsilon_min: float = Field(ge=0, le=1, description="floor of the decayed exploration rate")
    epsilon_decay: float = Field(gt=0, le=1, description="multiplied into epsilon once per applied outcome")

    @model_validator(mode="after")
    def _epsilon_order(self) -> AgentHyperparameters:
        if self.epsilon_min > self.epsilon_start:
            raise ValueError(f"epsilon_min {self.epsilon_min} exceeds epsilon_start {self.epsilon_start}")
        return self

    def epsilon(self, updates_since: int) -> float:
        """epsilon after `updates_since` outcomes applied under this schedule: max(min, start * decay ** n)."""
        return max(self.epsilon_min, self.epsilon_start * self.epsilon_decay**updates_since)


class LearningRules(_Frozen):
    """How the replica learns and decides around the seed's TD rule (both agents); see core.replica.

    Unlike `AgentHyperparameters` these change what the Q-table rows hold, so they are part of
    the fingerprint and are not tuned live.
    """

    episode_length: int = Field(
        default=50, ge=1, description="completed positions per episode; the last transition is terminal"
    )
    episode_gamma: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description="discount of the episode summaries' return R_t = sum gamma^k r_(t+k) (reporting only; each "
        "agent's TD target uses its own gamma)",
    )
    step_size: Literal["constant", "visits"] = Field(
        default="constant",
        description="'constant': alpha; 'visits': max(alpha, 1/n), n = that cell's updates so far (a sample mean "
        "until 1/n falls to alpha, then the constant rate)",
    )
    backoff_visits: float = Field(
        default=0.0,
        ge=0,
        description="decide from the finest state key whose row has at least this many updates per allowed action, "
        "else from the coarser keys of meta_backoff / sizing_backoff (0: the fine key only)",
    )
    backoff_strength: float = Field(
        default=20.0,
        gt=0,
        description="strategy first: how many updates a coarser key's strategy value counts for in a finer key's",
    )
    meta_backoff: tuple[tuple[MetaFeature, ...], ...] = Field(
        default=(),
        description="coarser meta keys, coarsest first, each as the continuous features it keeps (the regime is "
        "always kept)",
    )
    sizing_backoff: tuple[tuple[SizingFeature, ...], ...] = Field(
        default=(), description="coarser sizing keys, coarsest first, each as the features it keeps"
    )
    meta_strategy_first: bool = Field(
        default=False,
        description="the meta agent also learns each strategy's value (rows 'S:<key>') and decides greedily among "
        "the actions of the best strategy: a strategy's value learns from every position that trades it",
    )
    meta_factored: bool = Field(
        default=False,
        description="with meta_strategy_first: the model and the weight are chosen the same way as the strategy, "
        "each from its own value per (state, strategy) (rows 'M<s>:<key>', 'W<s>:<key>'), which every position "
        "trading that strategy updates; the action is (best strategy, its best model, its best weight)",
    )
    sizing_context: tuple[Literal["regime", "strategy", "model", "weight"], ...] = Field(
        default=(),
        description="what the sizing agent also knows when it decides (the execution comes after the meta "
        "decision): the signal's regime and parts of the meta action traded. Each sizing key also has a row "
        "'X:<context>|<key>' (decisions read these first, then the plain keys); the decision record's state "
        "stays the spec's five features",
    )
    meta_shrink: bool = Field(
        default=False,
        description="with meta_strategy_first: the action within the best strategy is chosen by its values shrunk "
        "from the finest key towards the coarser ones, as the strategy values, instead of from the finest key "
        "with backoff_visits updates per action",
    )
    meta_stack_margin: float = Field(
        default=0.0,
        ge=0,
        description="with meta_strategy_first: when the signal carries the stack's own choice (strategy, model, "
        "weight), a greedy decision keeps the stack's strategy unless another strategy's shrunk value beats it by "
        "more than this many standard errors of the difference (the reward spread per regime from rows "
        "'V:<coarsest key>', learnt only with this rule); 0: off (the stack's choice is not read)",
    )
    meta_stack_action: bool = Field(
        default=False,
        description="with meta_stack_margin: within the stack's strategy, also keep the stack's model and weight "
        "unless another action's value beats it by the margin",
    )
    sizing_shrink: bool = Field(
        default=False,
        description="with backoff: a sizing decision reads every allowed size's value shrunk from the finest key "
        "towards the coarser ones (each coarser estimate counts as backoff_strength updates, as the meta "
        "agent's strategy values) instead of the finest key with backoff_visits updates per action",
    )
    sizing_edge: bool = Field(
        default=False,
        description="with meta_strategy_first: the sizing key also says whether the meta agent expects the "
        "traded strategy to pay (its strategy value in the signal's state, shrunk as for the strategy choice, "
        "above 0: 'E1|<key>', else 'E0|<key>'), read when the sizing decision is made and recorded in its "
        "state key; the coarser sizing keys are learnt with and without it",
    )
    sizing_edge_levels: tuple[float, ...] = Field(
        default=(),
        description="with sizing_edge: more edge levels than the one bit. The traded strategy's value is read in "
        "units of the spread of recent pnl (the sharpe signal's spread, max(std, sharpe_floor)); the edge is how "
        "many of the thresholds 0 and these exceed ('E0|' ... 'E<n>|'; at most 9 thresholds in all). () is the "
        "one bit: above 0 or not",
    )
    sizing_edge_source: Literal["meta_value", "unit_return"] = Field(
        default="meta_value",
        description="with sizing_edge: what the edge reads. 'meta_value': the meta agent's value of the traded "
        "strategy (its reward at the size taken). 'unit_return': the traded strategy's mean return per unit of "
        "exposure (pnl / (size_multiplier * leverage)) in the signal's meta state, learnt by the sizing agent "
        "(rows 'U:<meta key>' of the sizing table: mean and mean square per strategy at every meta backoff level, "
        "shrunk as the strategy values), which the size taken does not scale; with sizing_edge_levels the "
        "thresholds are in units of that return's standard deviation",
    )
    counterfactual_sizing: bool = Field(
        default=False,
        description="also update every other sizing action within the configured limits with the reward it would "
        "have earned on the same price path (pnl and drawdown scale with exposure; see core.replica)",
    )

    @field_validator("sizing_edge_levels")
    @classmethod
    def _edge_levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        thresholds = sorted((0.0, *value))
        if len(thresholds) > 9 or any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise ValueError(f"sizing_edge_levels: at most 8 distinct thresholds other than 0, got {value}")
        return value


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
    profile: Literal["default", "seed"] = Field(
        default="default",
        description="where the learning fields not set explicitly come from: 'seed' = the seed specification's "
        "numbers exactly (alpha 0.01, gamma 0.99, epsilon 0.1 -> 0.01, plain TD on the fine key), 'default' = "
        "this project's measured defaults (see PROFILES and the README)",
    )
    # The profile fills whatever is not given (see _apply_profile); these defaults are the default profile's.
    meta: AgentHyperparameters = Field(
        default_factory=lambda: AgentHyperparameters(**PROFILES["default"]["meta"]), description="the meta agent's"
    )
    sizing: AgentHyperparameters = Field(
        default_factory=lambda: AgentHyperparameters(**PROFILES["default"]["sizing"]),
        description="the sizing agent's",
    )
    learning: LearningRules = Field(default_factory=LearningRules, description="the learning rule's refinements")
    meta_bins: MetaBins = MetaBins()
    sizing_bins: SizingBins = SizingBins()
    market: MarketConfig = MarketConfig()
    reward: RewardConfig = RewardConfig()
    risk: RiskLimits = RiskLimits()
    regime_strategies: dict[str, tuple[str, ...]] = Field(
        default_factory=_default_regime_mask,
        description="strategies the meta agent may choose in each regime (the regime mask)",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        """Fill the learning fields that are not given from the profile (given ones win, field by field)."""
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "default")
        if profile not in PROFILES:
            return data  # the Literal check reports it
        filled = dict(data)
        for name, value in PROFILES[profile].items():
            given = filled.get(name)
            if given is None:
                filled[name] = value
            elif isinstance(value, dict) and isinstance(given, dict):
                filled[name] = {**value, **given}
        return filled

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
        definitions (what a state key and a Q-value mean), the seed and the learning rules;
        not the tunable hyperparameters (alpha, gamma, epsilon schedule), which the learning
        log changes live, nor the dedupe window. So tuning never invalidates a checkpoint.
        """
        blob = json.dumps(self.model_dump(mode="json", exclude=_NOT_FINGERPRINTED), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# The tunable part of the configuration (both agents' AgentHyperparameters, which the learning log's
# control records change), the name of the profile the rest was filled from, and bookkeeping.
_NOT_FINGERPRINTED: dict[str, Any] = {"dedupe_window": True, "profile": True, "meta": True, "sizing": True}

_SEED_AGENT: dict[str, Any] = {
    "alpha": 0.01,
    "gamma": 0.99,
    "epsilon_start": 0.1,
    "epsilon_min": 0.01,
    "epsilon_decay": 0.9997,
}

# The learning fields of each profile. 'seed' is the seed specification, exactly; 'default'
# differs where a measured figure says it must (README, "Learning defaults").
PROFILES: dict[str, dict[str, Any]] = {
    "seed": {
        "meta": _SEED_AGENT,
        "sizing": _SEED_AGENT,
        "learning": {
            "episode_length": 50,
            "step_size": "constant",
            "backoff_visits": 0.0,
            "meta_backoff": (),
            "sizing_backoff": (),
            "meta_strategy_first": False,
            "meta_factored": False,
            "sizing_context": (),
            "meta_shrink": False,
            "meta_stack_margin": 0.0,
            "meta_stack_action": False,
            "sizing_shrink": False,
            "sizing_edge": False,
            "counterfactual_sizing": False,
        },
    },
    "default": {
        "meta": {**_SEED_AGENT, "gamma": 0.0},
        "sizing": {**_SEED_AGENT, "gamma": 0.0},
        "learning": {
            "episode_length": 50,
            "step_size": "visits",
            "backoff_visits": 3.0,
            "meta_backoff": ((), ("volatility", "market_pressure", "confidence")),
            "sizing_backoff": (("volatility",),),
            "meta_strategy_first": True,
            "sizing_shrink": True,
            "sizing_edge": True,
            "counterfactual_sizing": True,
        },
    },
}
