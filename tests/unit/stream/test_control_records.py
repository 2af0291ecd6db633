"""Control records in the learning log, applied by the runtime: hyperparameters, resets, and what is refused."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest
from prometheus_client import generate_latest

from rl_worker.core import CoreConfig, ModelReplica
from rl_worker.core.config import MetaBins
from rl_worker.core.control import AgentHyperparameters, Hyperparameters, HyperparametersRecord, ResetRecord
from rl_worker.core.snapshot import decode_replica, encode_replica
from rl_worker.settings import Settings
from rl_worker.sim.events import make_outcomes
from rl_worker.stream.checkpoints import MemoryCheckpointStore
from rl_worker.stream.exceptions import CheckpointStoreError
from rl_worker.stream.runtime import WorkerRuntime

AGENT = AgentHyperparameters(alpha=0.2, gamma=0.5, epsilon_start=0.05, epsilon_min=0.01, epsilon_decay=0.99)
TUNED = Hyperparameters(meta=AGENT, sizing=AGENT.model_copy(update={"alpha": 0.3}))


def tuning_record() -> bytes:
    return HyperparametersRecord(hyperparameters=TUNED, issued_at_ms=1, reason="test").model_dump_json().encode()


def outcome_values(n: int, seed: int = 1, start: int = 0) -> list[bytes]:
    records = make_outcomes(np.random.default_rng(seed), CoreConfig(), n, start)
    return [r.model_dump_json().encode() for r in records]


def runtime(registry: dict[str, MemoryCheckpointStore], app_id: str = "live", **core: object) -> WorkerRuntime:
    settings = Settings(app_id=app_id, core=CoreConfig(**core))  # type: ignore[arg-type]
    return WorkerRuntime(settings, MemoryCheckpointStore(namespace=settings.redis_namespace, registry=registry))


def feed(rt: WorkerRuntime, values: list[bytes], start: int = 0) -> None:
    async def go() -> None:
        for offset, value in enumerate(values, start=start):
            rt.apply_record(offset, value)
            if rt.pending_reset is not None:
                await rt.apply_pending_reset(retry_initial_s=0.001)
    asyncio.run(go())


def test_hyperparameter_record_is_applied_and_reported() -> None:
    rt = runtime({})
    values = outcome_values(10)
    feed(rt, [*values[:5], tuning_record(), *values[5:]])
    assert rt.replica.hyperparameters == TUNED and rt.replica.hyperparameters_offset == 5
    assert rt.replica.model_version == 11 and rt.replica.n_updates == 10
    health = rt.health()["hyperparameters"]
    assert health["meta"]["alpha"] == 0.2 and health["sizing"]["alpha"] == 0.3
    assert health["in_force_since_offset"] == 5 and health["source"] == "learning log"
    rt.update_gauges()
    text = generate_latest(rt.metrics.registry).decode()
    assert 'rl_hyperparameter{agent="sizing",name="alpha"} 0.3' in text
    assert "rl_hyperparameters_offset 5.0" in text
    assert 'rl_control_records_total{kind="hyperparameters",result="applied"} 1.0' in text


def test_configuration_hyperparameters_are_reported_as_such() -> None:
    health = runtime({}).health()["hyperparameters"]
    assert health["in_force_since_offset"] is None and health["source"] == "configuration"


def checkpoint_of(app_id: str, registry: dict[str, MemoryCheckpointStore], values: list[bytes]) -> tuple[int, bytes]:
    source = runtime(registry, app_id)
    feed(source, values)
    data = encode_replica(source.replica)
    asyncio.run(source.checkpointer.store.save(source.replica.log_offset, data))
    return source.replica.log_offset, data


def reset_record(app_id: str, offset: int, data: bytes) -> bytes:
    record = ResetRecord(app_id=app_id, checkpoint_offset=offset, sha256=hashlib.sha256(data).hexdigest(),
                         issued_at_ms=1, reason="promote")
    return record.model_dump_json().encode()


def test_reset_to_another_namespace_then_learns_on() -> None:
    registry: dict[str, MemoryCheckpointStore] = {}
    offset, data = checkpoint_of("candidate", registry, [tuning_record(), *outcome_values(20, seed=7)])
    live = runtime(registry)
    tail = outcome_values(5, seed=9, start=100)
    feed(live, [*outcome_values(8), reset_record("candidate", offset, data), *tail])
    twin = runtime(registry, "twin")
    twin.replica.reset_to(decode_replica(data), 8)
    feed(twin, tail, start=9)
    assert live.replica.n_updates == 25 and live.replica.hyperparameters == TUNED
    assert live.replica.hyperparameters_offset == 8
    assert live.replica.meta_table.used()[0].tobytes() == twin.replica.meta_table.used()[0].tobytes()
    assert live.replica.sizing_table.used()[1].tobytes() == twin.replica.sizing_table.used()[1].tobytes()


@pytest.mark.parametrize("problem", ["missing", "sha256", "incompatible"])
def test_a_reset_that_cannot_load_is_skipped_alike(problem: str) -> None:
    registry: dict[str, MemoryCheckpointStore] = {}
    offset, data = checkpoint_of("candidate", registry, outcome_values(6, seed=7))
    if problem == "missing":
        record = reset_record("candidate", offset + 100, data)
    elif problem == "sha256":
        record = reset_record("candidate", offset, data + b" ")
    else:
        other = ModelReplica(CoreConfig(meta_bins=MetaBins(volatility=(0.5,))))
        data = encode_replica(other)
        asyncio.run(registry["rl_worker:candidate"].save(99, data))
        record = reset_record("candidate", 99, data)
    live = runtime(registry)
    before = outcome_values(4)
    feed(live, [*before, record])
    assert live.replica.log_offset == 4 and live.replica.n_updates == 4 and live.pending_reset is None
    assert 'result="skipped"} 1.0' in generate_latest(live.metrics.registry).decode()


class FlakyStore(MemoryCheckpointStore):
    def __init__(self, failures: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.failures = failures

    async def load_from(self, namespace: str, offset: int) -> bytes | None:
        if self.failures:
            self.failures -= 1
            raise CheckpointStoreError("redis is down")
        return await super().load_from(namespace, offset)


def test_a_reset_waits_for_the_store() -> None:
    registry: dict[str, MemoryCheckpointStore] = {}
    offset, data = checkpoint_of("candidate", registry, outcome_values(6, seed=7))
    settings = Settings(app_id="live")
    live = WorkerRuntime(settings, FlakyStore(3, namespace=settings.redis_namespace, registry=registry))
    feed(live, [reset_record("candidate", offset, data)])
    assert live.replica.n_updates == 6 and live.replica.log_offset == 0


def test_restore_at_start_up_keeps_the_hyperparameters_in_force() -> None:
    registry: dict[str, MemoryCheckpointStore] = {}
    first = runtime(registry)
    feed(first, [*outcome_values(3), tuning_record(), *outcome_values(3, start=10)])
    asyncio.run(first.checkpointer.store.save(first.replica.log_offset, encode_replica(first.replica)))
    second = WorkerRuntime(first.settings, registry["rl_worker:live"])
    asyncio.run(second.restore(log_end=7))
    assert second.replica.hyperparameters == TUNED and second.replica.hyperparameters_offset == 3
    assert encode_replica(second.replica) == encode_replica(first.replica)
