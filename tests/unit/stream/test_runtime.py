"""The worker runtime without a broker: the outcomes log, checkpoint retries, restore choices."""

from __future__ import annotations

import asyncio

import numpy as np

from rl_worker.core import CoreConfig, ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica
from rl_worker.settings import CheckpointSettings, Settings
from rl_worker.sim.events import make_outcomes
from rl_worker.stream.checkpoints import MemoryCheckpointStore, RestoreResult, restore_newest_valid
from rl_worker.stream.exceptions import CheckpointStoreError
from rl_worker.stream.runtime import WorkerRuntime


def settings(**checkpoint: float) -> Settings:
    return Settings(core=CoreConfig(), checkpoint=CheckpointSettings(**checkpoint))


def test_log_records_apply_in_order_and_unreadable_ones_are_skipped_alike() -> None:
    records = make_outcomes(np.random.default_rng(1), CoreConfig(), 5)
    values = [r.model_dump_json().encode() for r in records]
    log = [values[0], b"{broken", values[1], values[1], values[2]]  # one unreadable, one re-published
    a = WorkerRuntime(settings(), MemoryCheckpointStore())
    b = WorkerRuntime(settings(), MemoryCheckpointStore())
    for offset, value in enumerate(log):
        a.apply_record(offset, value)
    for offset, value in enumerate(log):
        b.apply_record(offset, value)
        b.apply_record(offset, value)  # a re-read offset changes nothing
    assert a.replica.model_version == 5 and a.replica.n_updates == 3
    assert encode_replica(a.replica) == encode_replica(b.replica)
    reference = ModelReplica(CoreConfig())
    for offset, record in zip((0, 2, 4), records[:3], strict=True):
        reference.apply(record, offset)
    assert encode_replica(reference) == encode_replica(a.replica)


class FlakyStore(MemoryCheckpointStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def save(self, offset: int, data: bytes) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise CheckpointStoreError("redis is down")
        await super().save(offset, data)


def test_checkpoint_writes_retry_until_the_store_is_back() -> None:
    async def scenario() -> tuple[WorkerRuntime, FlakyStore, list[str | None]]:
        store = FlakyStore(failures=3)
        runtime = WorkerRuntime(settings(every_outcomes=2, retry_initial_s=0.01, retry_max_s=0.02), store)
        for offset, record in enumerate(make_outcomes(np.random.default_rng(2), CoreConfig(), 4)):
            runtime.apply_record(offset, record.model_dump_json().encode())
        runtime.after_batch()
        stop = asyncio.Event()
        writer = asyncio.create_task(runtime.checkpointer.write_pending(stop.is_set))
        errors = []
        for _ in range(200):
            await asyncio.sleep(0.01)
            errors.append(runtime.health()["checkpoint"]["store_error"])
            if runtime.checkpointer.offset == 3:
                break
        stop.set()
        await writer
        return runtime, store, errors

    runtime, store, errors = asyncio.run(scenario())
    assert store.attempts == 4
    assert "redis is down" in {e for e in errors if e}
    assert runtime.checkpointer.offset == 3 and runtime.health()["status"] != "degraded"
    restored = decode_replica(store.data[3], CoreConfig())
    assert encode_replica(restored) == encode_replica(runtime.replica)


def test_restore_skips_corrupt_and_incompatible_checkpoints() -> None:
    async def scenario() -> RestoreResult:
        store = MemoryCheckpointStore(retention=5)
        replica = ModelReplica(CoreConfig())
        for offset, record in enumerate(make_outcomes(np.random.default_rng(3), CoreConfig(), 3)):
            replica.apply(record, offset)
        await store.save(2, encode_replica(replica))
        await store.save(7, encode_replica(ModelReplica(CoreConfig(seed=9))))  # another configuration
        await store.save(9, b"not a snapshot")
        return await restore_newest_valid(store, CoreConfig())

    result = asyncio.run(scenario())
    assert result.offset == 2 and result.replica is not None
    assert [s.split(":")[0] for s in result.skipped] == ["9", "7"]


def test_memory_store_keeps_the_last_k_and_the_pointer_only_moves_forward() -> None:
    async def scenario() -> MemoryCheckpointStore:
        store = MemoryCheckpointStore(retention=2)
        for offset in (5, 9, 7, 11):
            await store.save(offset, b"x")
        return store

    store = asyncio.run(scenario())
    assert sorted(store.data) == [9, 11] and store.latest == 11


def test_restore_before_an_offset_passes_newer_checkpoints_over_without_calling_them_foreign() -> None:
    async def scenario() -> RestoreResult:
        store = MemoryCheckpointStore(retention=5)
        replica = ModelReplica(CoreConfig())
        for offset, record in enumerate(make_outcomes(np.random.default_rng(3), CoreConfig(), 3)):
            replica.apply(record, offset)
            await store.save(offset, encode_replica(replica))
        await store.save(40, encode_replica(replica))  # past the log's end: another log's
        return await restore_newest_valid(store, CoreConfig(), 2, before=2)

    result = asyncio.run(scenario())
    assert result.offset == 1 and result.replica is not None
    assert [s.split(":")[0] for s in result.skipped] == ["40"]  # 2 is inside the window, not an error


def test_restore_before_zero_finds_nothing_and_reports_nothing() -> None:
    async def scenario() -> RestoreResult:
        store = MemoryCheckpointStore(retention=5)
        await store.save(0, encode_replica(ModelReplica(CoreConfig())))
        return await restore_newest_valid(store, CoreConfig(), 0, before=0)

    result = asyncio.run(scenario())
    assert result.replica is None and result.skipped == []
