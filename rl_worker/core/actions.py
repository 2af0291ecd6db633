"""The two action spaces (meta 3x4x5 = 60, sizing 5x8 = 40) and their masks.

A mask is the ascending array of allowed action indices. Meta actions are masked by the
regime table; sizing actions by the risk limits: the configured maxima, tightened by the
per-event limits, never loosened.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

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
    "MetaAction",
    "SizingAction",
    "effective_limits",
    "meta_mask",
    "sizing_mask",
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
META_INDEX = {a: i for i, a in enumerate(META_ACTIONS)}
SIZING_INDEX = {a: i for i, a in enumerate(SIZING_ACTIONS)}


def _frozen(indices: list[int]) -> IndexArray:
    array = np.asarray(indices, dtype=np.intp)
    array.setflags(write=False)
    return array


@lru_cache(maxsize=64)
def _meta_mask(allowed: tuple[str, ...]) -> IndexArray:
    return _frozen([i for i, a in enumerate(META_ACTIONS) if a.strategy in allowed])


def meta_mask(regime: str, config: CoreConfig) -> IndexArray:
    """Indices of the meta actions whose strategy the regime table allows."""
    return _meta_mask(tuple(config.regime_strategies[regime]))


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


@lru_cache(maxsize=256)
def _sizing_mask(max_size_multiplier: float, max_leverage: float) -> IndexArray:
    return _frozen(
        [
            i
            for i, a in enumerate(SIZING_ACTIONS)
            if a.size_multiplier <= max_size_multiplier and a.leverage <= max_leverage
        ]
    )


def sizing_mask(max_size_multiplier: float, max_leverage: float) -> IndexArray:
    """Indices of the sizing actions within the given (already effective) limits."""
    mask = _sizing_mask(float(max_size_multiplier), float(max_leverage))
    if mask.size == 0:
        raise NoAllowedActionError(
            f"risk limits size<={max_size_multiplier} leverage<={max_leverage} admit no sizing action"
        )
    return mask
