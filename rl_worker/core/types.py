"""Shared names and aliases of the core: regimes, action values, array types."""

from __future__ import annotations

from typing import Final

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
]

REGIMES: Final = ("TREND", "RANGE", "BREAKOUT", "MEAN_REVERSION")
STRATEGIES: Final = ("dual_momentum", "mean_reversion", "breakout")
MODELS: Final = ("xgb", "lgbm", "nhits", "lstm")
WEIGHTS: Final = (0.3, 0.4, 0.5, 0.6, 0.7)
SIZE_MULTIPLIERS: Final = (0.2, 0.4, 0.6, 0.8, 1.0)
LEVERAGE_LEVELS: Final = (1, 3, 5, 8, 10, 15, 20, 25)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
