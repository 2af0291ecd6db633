"""The control arm's decisions: what the trading stack would have done without RL.

The control decision is the stack's own choice carried by the event, put on the action grid:

- meta: the signal's `strategy` and `model` as given, its `weight` rounded to the nearest grid
  weight (0.3 .. 0.7); the regime mask does not apply (it is the RL agent's prior, not a
  limit), so the control arm may trade a strategy the RL arm would never pick;
- sizing: the execution's `size_multiplier` and `leverage`, each snapped down to the largest
  grid level within the effective risk limits (the configured ones tightened by the event's),
  and up to the smallest level when the stack asked for less: no control decision exceeds
  the limits either.

When the event carries no complete choice, the configured baseline decides: a fixed action
(clipped like the stack's), or a uniformly random allowed action (the regime mask for meta,
the limits for sizing). Propensity: 1.0 for the stack's choice and a fixed baseline, 1 / |A|
for the uniform baseline, drawn from the decision's own generator.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from rl_worker.core.actions import META_INDEX, SIZING_INDEX, ActionMask, MetaAction, SizingAction
from rl_worker.core.qlearning import UniformSource
from rl_worker.core.types import LEVERAGE_LEVELS, MODELS, SIZE_MULTIPLIERS, STRATEGIES, WEIGHTS

__all__ = [
    "BaselinePolicy",
    "ControlDecision",
    "control_meta",
    "control_sizing",
    "meta_action_of",
    "sizing_action_within",
]


class BaselinePolicy(BaseModel):
    """What the control arm does when an event carries no choice of the stack's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "uniform"] = Field("fixed", description="a fixed action, or uniformly random allowed ones")
    strategy: Literal["dual_momentum", "mean_reversion", "breakout"] = "dual_momentum"
    model: Literal["xgb", "lgbm", "nhits", "lstm"] = "xgb"
    weight: float = Field(0.5, ge=0, le=1)
    size_multiplier: float = Field(0.6, gt=0, description="snapped to the risk limits like a stack's choice")
    leverage: float = Field(3.0, gt=0)


class ControlDecision(NamedTuple):
    """The control arm's action, its propensity, and where it came from."""

    action: int
    propensity: float
    source: Literal["stack", "baseline"]


def meta_action_of(strategy: str, model: str, weight: float) -> int:
    """The meta action index of (strategy, model, the grid weight nearest to `weight`)."""
    if strategy not in STRATEGIES or model not in MODELS:
        raise ValueError(f"unknown strategy / model {strategy!r} / {model!r}")
    nearest = min(WEIGHTS, key=lambda w: (abs(w - weight), w))
    return META_INDEX[MetaAction(strategy, model, nearest)]


def _level_within(levels: tuple[float, ...], wanted: float, limit: float) -> float:
    # the largest level <= min(wanted, limit); the smallest level when the stack asked for less
    count = bisect_right(levels, min(wanted, limit))
    return levels[max(count, 1) - 1]


def sizing_action_within(
    size_multiplier: float, leverage: float, max_size_multiplier: float, max_leverage: float
) -> int:
    """The sizing action index nearest below the wanted one, inside the (effective) limits.

    The limits always admit the smallest levels (the worker rejects events whose limits do not).
    """
    multiplier = _level_within(SIZE_MULTIPLIERS, size_multiplier, max_size_multiplier)
    lever = _level_within(LEVERAGE_LEVELS, leverage, max_leverage)
    return SIZING_INDEX[SizingAction(multiplier, int(lever))]


def control_meta(
    stack_choice: tuple[str | None, str | None, float | None],
    baseline: BaselinePolicy,
    mask: ActionMask,
    rng: UniformSource,
) -> ControlDecision:
    """The signal's (strategy, model, weight) when all three are given, else the baseline."""
    strategy, model, weight = stack_choice
    if strategy is not None and model is not None and weight is not None:
        return ControlDecision(meta_action_of(strategy, model, weight), 1.0, "stack")
    if baseline.kind == "uniform":
        members = mask.members
        return ControlDecision(members[int(rng.random() * len(members))], 1.0 / len(members), "baseline")
    return ControlDecision(meta_action_of(baseline.strategy, baseline.model, baseline.weight), 1.0, "baseline")


def control_sizing(
    stack_choice: tuple[float | None, float | None],
    baseline: BaselinePolicy,
    limits: tuple[float, float],
    mask: ActionMask,
    rng: UniformSource,
) -> ControlDecision:
    """The execution's (size_multiplier, leverage) when both are given, else the baseline; always
    inside `limits` (the effective maxima, whose allowed actions are `mask`)."""
    size_multiplier, leverage = stack_choice
    if size_multiplier is not None and leverage is not None:
        return ControlDecision(sizing_action_within(size_multiplier, leverage, *limits), 1.0, "stack")
    if baseline.kind == "uniform":
        members = mask.members
        return ControlDecision(members[int(rng.random() * len(members))], 1.0 / len(members), "baseline")
    return ControlDecision(sizing_action_within(baseline.size_multiplier, baseline.leverage, *limits), 1.0, "baseline")
