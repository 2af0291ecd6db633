"""Shared names and aliases of the core: regimes, action values, array types."""

from __future__ import annotations

from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "LEVERAGE_LEVELS",
    "MODELS",
    "REGIMES",
    "SIZE_MULTIPLIERS",
    "STRATEGIES",
    "WEIGHTS",
    "BoolArray",
    "FloatArray",
    "Model",
    "Regime",
    "Strategy",
]

# Declared once, as the types the contract and the outcome validate; the tuples are their values.
Regime = Literal["TREND", "RANGE", "BREAKOUT", "MEAN_REVERSION"]
Strategy = Literal["dual_momentum", "mean_reversion", "breakout"]
Model = Literal["xgb", "lgbm", "nhits", "lstm"]
REGIMES: Final[tuple[str, ...]] = get_args(Regime)
STRATEGIES: Final[tuple[str, ...]] = get_args(Strategy)
MODELS: Final[tuple[str, ...]] = get_args(Model)
WEIGHTS: Final = (0.3, 0.4, 0.5, 0.6, 0.7)
SIZE_MULTIPLIERS: Final = (0.2, 0.4, 0.6, 0.8, 1.0)
LEVERAGE_LEVELS: Final = (1, 3, 5, 8, 10, 15, 20, 25)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
