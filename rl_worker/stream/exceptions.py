"""Errors of the Kafka / Redis shell: infrastructure trouble, retried and reported, never dead-lettered."""

from __future__ import annotations

from rl_worker.errors import RlWorkerError

__all__ = ["CheckpointStoreError", "ConnectionConfigError", "InfrastructureError", "TopicLayoutError"]


class InfrastructureError(RlWorkerError):
    """Kafka or Redis did not do what was asked."""


class CheckpointStoreError(InfrastructureError):
    """The checkpoint store could not be read or written."""


class TopicLayoutError(InfrastructureError):
    """The input topics are not co-partitioned (their partition counts differ)."""


class ConnectionConfigError(InfrastructureError):
    """Kafka or Redis refuses this client as configured (credentials, TLS trust, protocol, group
    settings): retrying cannot fix it, so the process stops with this message instead."""
