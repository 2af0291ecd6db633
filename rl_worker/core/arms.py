"""A/B arms: which arm serves a position (a stable hash of its position id), and what the control arm decides.

    bucket(position_id) = (u64 >> 11) / 2**53,   u64 = the 8-byte digest, little-endian, of
                          BLAKE2b(position_id as UTF-8, digest_size=8, person=b"rl-ab-arm")
    arm(position_id)    = "control" if bucket(position_id) < control_share else "rl"

The hash depends on nothing but the position id (no seed, no process hash salt, no worker
id), so both decisions of a position land in one arm, on every worker, across restarts and
replays; `person` keeps the buckets independent of every other BLAKE2b use in the project
(the exploration draws hash the decision ids with another key). Raising the share only moves
positions from the RL arm into the control arm, never the other way.

The control arm decides what the trading stack would have done without RL:
its own choice carried by the event, put on the action grid:

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

import hashlib
from bisect import bisect_right
from typing import Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from rl_worker.core.actions import META_INDEX, SIZING_INDEX, ActionMask, MetaAction, SizingAction
from rl_worker.core.qlearning import UniformSource
from rl_worker.core.types import LEVERAGE_LEVELS, MODELS, SIZE_MULTIPLIERS, STRATEGIES, WEIGHTS

__all__ = [
    "ARMS",
    "CONTROL_ARM",
    "RL_ARM",
    "Arm",
    "BaselinePolicy",
    "ControlDecision",
    "arm_bucket",
    "assign_arm",
    "control_meta",
    "control_sizing",
    "meta_action_of",
    "sizing_action_within",
]

Arm = Literal["rl", "control"]
RL_ARM: Final = "rl"
CONTROL_ARM: Final = "control"
ARMS: Final = (RL_ARM, CONTROL_ARM)

_PERSON: Final = b"rl-ab-arm"
_TWO_POW_MINUS_53: Final = 1.0 / (1 << 53)


def arm_bucket(position_id: str) -> float:
    """The position's place in [0, 1): uniform over ids, the same on every machine."""
    digest = hashlib.blake2b(position_id.encode(), digest_size=8, person=_PERSON).digest()
    # the top 53 bits: exact in a float, and never rounds up to 1.0
    return (int.from_bytes(digest, "little") >> 11) * _TWO_POW_MINUS_53


def assign_arm(position_id: str, control_share: float) -> Arm:
    """`control` for a stable `control_share` of the position ids, `rl` for the rest."""
    if not 0.0 <= control_share <= 1.0:
        raise ValueError(f"control_share must lie in [0, 1], got {control_share}")
    if control_share <= 0.0:
        return RL_ARM
    if control_share >= 1.0:
        return CONTROL_ARM
    return CONTROL_ARM if arm_bucket(position_id) < control_share else RL_ARM


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
