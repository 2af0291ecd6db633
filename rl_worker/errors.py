"""The root of rl_worker's exception tree.

    RlWorkerError
    ├── core.exceptions.CoreError
    │   ├── ConfigError            invalid hyperparameters, bins or masks
    │   ├── NoAllowedActionError   masks (regime, risk limits) leave no action
    │   └── SnapshotError          corrupt or incompatible checkpoint bytes
    ├── contract.InvalidEventError an input record that cannot be used (dead-lettered)
    └── stream.exceptions.InfrastructureError  Kafka / Redis trouble (retried, never dead-lettered)
"""

from __future__ import annotations

__all__ = ["RlWorkerError"]


class RlWorkerError(Exception):
    """Base class of every error raised by rl_worker."""
