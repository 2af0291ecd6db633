"""Errors raised by the pure RL core."""

from __future__ import annotations

from rl_worker.errors import RlWorkerError

__all__ = ["ConfigError", "CoreError", "NoAllowedActionError", "SnapshotError"]


class CoreError(RlWorkerError):
    """Base class of the core's errors."""


class ConfigError(CoreError):
    """Hyperparameters, bins or masks that cannot work together."""


class NoAllowedActionError(CoreError):
    """The masks (regime, risk limits) leave no action to choose from."""


class SnapshotError(CoreError):
    """Snapshot bytes that are corrupt, or written by an incompatible schema."""
