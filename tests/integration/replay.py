"""Rebuild a replica from the learning log, the way every worker does, for bit-for-bit comparisons."""

from __future__ import annotations

import asyncio

from rl_worker.core import CoreConfig
from rl_worker.core.snapshot import encode_replica
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import CheckpointStore, MemoryCheckpointStore, RedisCheckpointStore
from rl_worker.stream.runtime import WorkerRuntime
from tests.integration.harness import read_topic, run


def replay_outcomes(
    bootstrap: str, topic: str, expect: int | None, redis_url: str | None = None
) -> tuple[bytes, int]:
    """(snapshot bytes of a fresh replica fed the whole log from offset 0, records in the log).

    `expect=None` reads until the log has been quiet for two seconds. With `redis_url`, reset
    records load their checkpoints from there, as the workers do."""
    records = run(read_topic(bootstrap, topic, expect=expect, timeout_s=30))

    async def replay() -> bytes:
        store: CheckpointStore = (
            MemoryCheckpointStore() if redis_url is None else RedisCheckpointStore(redis_url, "rl_worker:replay")
        )
        runtime = WorkerRuntime(Settings(core=CoreConfig()), store)  # the workers' config
        try:
            for record in sorted(records, key=lambda r: r.offset):
                runtime.apply_record(record.offset, record.value)
                if runtime.pending_reset is not None:
                    await runtime.apply_pending_reset()
        finally:
            await store.close()
        return encode_replica(runtime.replica)

    return asyncio.run(replay()), len(records)


def assert_matches_full_replay(
    workers: list, bootstrap: str, topic: str, timeout_s: float = 60.0, redis_url: str | None = None
) -> int:
    """Every worker's replica equals a fresh replay of the whole log, bit for bit; returns the log size.

    The log may still grow a little (a redelivery re-publishing an outcome), so read it, wait
    for the workers to reach its end, and start over if they went past it.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        replayed, size = replay_outcomes(bootstrap, topic, expect=None, redis_url=redis_url)
        versions = [w.wait_model_version(size)["model_version"] for w in workers]
        if all(v == size for v in versions):
            for worker in workers:
                assert worker.snapshot() == replayed, f"replica of {worker.log_path} differs from the replay"
            return size
        assert time.monotonic() < deadline, f"log of {size} records, workers at {versions}"
