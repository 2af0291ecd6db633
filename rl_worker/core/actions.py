"""The two action spaces (meta 3x4x5 = 60, sizing 5x8 = 40) and their masks.

A mask is the ascending array of allowed action indices. Meta actions are masked by the
regime table; sizing actions by the risk limits: the configured maxima, tightened by the
per-event limits, never loosened. `ActionMask` carries the same indices in the plain-Python
forms that the per-decision hot paths read (a numpy fancy index costs ~1 us; these ~0.1 us).
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from rl_worker.core.config import CoreConfig, RiskLimits
from rl_worker.core.exceptions import NoAllowedActionError
from rl_worker.core.types import LEVERAGE_LEVELS, MODELS, SIZE_MULTIPLIERS, STRATEGIES, WEIGHTS

__all__ = [
    "META_ACTIONS",
    "N_META_ACTIONS",
    "N_SIZING_ACTIONS",
    "SIZING_ACTIONS",
    "ActionMask",
    "MetaAction",
    "SizingAction",
    "effective_limits",
    "meta_action_mask",
    "sizing_action_mask",
]

IndexArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class MetaAction:
    strategy: str
    model: str
    weight: float

    def as_dict(self) -> dict[str, str | float]:
        return {"strategy": self.strategy, "model": self.model, "weight": self.weight}


@dataclass(frozen=True, slots=True)
class SizingAction:
    size_multiplier: float
    leverage: int

    def as_dict(self) -> dict[str, float | int]:
        return {"size_multiplier": self.size_multiplier, "leverage": self.leverage}


# index = (strategy * 4 + model) * 5 + weight, and multiplier * 8 + leverage
META_ACTIONS: tuple[MetaAction, ...] = tuple(
    MetaAction(s, m, w) for s, m, w in itertools.product(STRATEGIES, MODELS, WEIGHTS)
)
SIZING_ACTIONS: tuple[SizingAction, ...] = tuple(
    SizingAction(m, lev) for m, lev in itertools.product(SIZE_MULTIPLIERS, LEVERAGE_LEVELS)
)
N_META_ACTIONS = len(META_ACTIONS)
N_SIZING_ACTIONS = len(SIZING_ACTIONS)
META_INDEX = {a: i for i, a in enumerate(META_ACTIONS)}  # action -> index (core.arms maps the stack's choice)
SIZING_INDEX = {a: i for i, a in enumerate(SIZING_ACTIONS)}


def _frozen(indices: list[int]) -> IndexArray:
    array = np.asarray(indices, dtype=np.intp)
    array.setflags(write=False)
    return array


def _values_getter(members: tuple[int, ...]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    if len(members) == 1:  # itemgetter of one index returns the item, not a 1-tuple
        only = members[0]
        return lambda row: (row[only],)
    return itemgetter(*members)


@dataclass(frozen=True, slots=True, eq=False)
class ActionMask:
    """The allowed actions as a read-only index array, an ascending tuple, a set, and a getter.

    `values_of(row)` is `tuple(row[a] for a in members)` for a list `row`, in C. Masks
    compare and hash by identity: the functions below hand out one object per mask.
    """

    indices: IndexArray
    members: tuple[int, ...]
    allowed: frozenset[int]
    values_of: Callable[[Sequence[float]], tuple[float, ...]]

    @classmethod
    def of(cls, indices: IndexArray) -> ActionMask:
        members = tuple(int(a) for a in indices)
        if not members:
            raise NoAllowedActionError("an action mask must allow at least one action")
        if any(b <= a for a, b in itertools.pairwise(members)):
            raise ValueError(f"a mask is an ascending array of distinct action indices, got {members}")
        return cls(_frozen(list(members)), members, frozenset(members), _values_getter(members))

    def __len__(self) -> int:
        return len(self.members)


@lru_cache(maxsize=64)
def _meta_action_mask(allowed: tuple[str, ...]) -> ActionMask:
    return ActionMask.of(_frozen([i for i, a in enumerate(META_ACTIONS) if a.strategy in allowed]))


def meta_action_mask(regime: str, config: CoreConfig) -> ActionMask:
    """The meta actions whose strategy the regime table allows (one object per set of strategies)."""
    return _meta_action_mask(tuple(sorted(set(config.regime_strategies[regime]))))


def effective_limits(
    configured: RiskLimits,
    max_size_multiplier: float | None = None,
    max_leverage: float | None = None,
) -> tuple[float, float]:
    """The tighter of the configured and the per-event limits (an event can never loosen them)."""
    size = configured.max_size_multiplier
    leverage = configured.max_leverage
    if max_size_multiplier is not None:
        size = min(size, max_size_multiplier)
    if max_leverage is not None:
        leverage = min(leverage, max_leverage)
    return size, leverage


@lru_cache(maxsize=64)
def _sizing_action_mask(n_multipliers: int, n_leverages: int) -> ActionMask:
    size, leverage = SIZE_MULTIPLIERS[n_multipliers - 1], LEVERAGE_LEVELS[n_leverages - 1]
    return ActionMask.of(
        _frozen([i for i, a in enumerate(SIZING_ACTIONS) if a.size_multiplier <= size and a.leverage <= leverage])
    )


def sizing_action_mask(max_size_multiplier: float, max_leverage: float) -> ActionMask:
    """The sizing actions within the given (already effective) limits; NoAllowedActionError when nothing fits.

    Limits are first snapped down to the levels they admit, so arbitrary per-event limits
    share a handful of cached masks.
    """
    # bisect_right counts the levels <= the limit; a NaN limit admits nothing.
    n_multipliers = bisect_right(SIZE_MULTIPLIERS, max_size_multiplier) if max_size_multiplier >= 0 else 0
    n_leverages = bisect_right(LEVERAGE_LEVELS, max_leverage) if max_leverage >= 0 else 0
    if n_multipliers == 0 or n_leverages == 0:
        raise NoAllowedActionError(
            f"risk limits size<={max_size_multiplier} leverage<={max_leverage} admit no sizing action"
        )
    return _sizing_action_mask(n_multipliers, n_leverages)
