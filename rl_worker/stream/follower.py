"""The outcomes follower: reads `rl.outcomes` (one partition, the learning log) into this worker's
replica, from its restored checkpoint to the end and then as the log grows.

`OutcomesFollower` needs no Faust app: the worker runs it inside a mode Service
(`follower_service`), the benchmark and the tests build the real one on a runtime of their own.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from rl_worker.settings import Settings
from rl_worker.stream.connections import kafka_options
from rl_worker.stream.runtime import WorkerRuntime

__all__ = ["OutcomesFollower", "follower_service"]

log = logging.getLogger(__name__)


class OutcomesFollower:
    """Applies the outcomes log to `runtime` in order; `runtime.checkpointer` decides when to checkpoint."""

    def __init__(self, settings: Settings, runtime: WorkerRuntime, topic: str | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.tp = TopicPartition(topic or settings.topics.outcomes, 0)
        self.consumer: AIOKafkaConsumer | None = None

    async def connect(self) -> None:
        """Start the consumer on the log's one partition (no group, no commits: the replica holds the offset)."""
        self.consumer = AIOKafkaConsumer(
            **kafka_options(self.settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # never jump over records: a position outside the log is an error, not a reset
            auto_offset_reset="none",
        )
        await self.consumer.start()
        self.consumer.assign([self.tp])

    def seek_to_replica(self) -> None:
        """Read on from the record after the last one the replica holds."""
        assert self.consumer is not None
        self.consumer.seek(self.tp, self.runtime.replica.log_offset + 1)

    async def start(self) -> None:
        """Connect, restore the newest usable checkpoint, and catch up with the log before deciding."""
        await self.connect()
        await self.runtime.restore(await self.log_end())
        self.seek_to_replica()
        await self.catch_up()

    async def log_end(self) -> int:
        """The offset after the log's last record.

        The end offset a broker reports is only trusted as a lower bound: tansu 0.6 reports
        the base offset of the last batch + 1 (36 for a log of 40 records whose last batch
        starts at 35). So read on from just before it to the last record there is; a low
        end would make start-up skip a good checkpoint as "past the end".
        """
        assert self.consumer is not None
        reported = (await self.consumer.end_offsets([self.tp]))[self.tp]
        end = reported
        self.consumer.seek(self.tp, max(0, reported - 1))
        while True:
            batch = await self.consumer.getmany(self.tp, timeout_ms=300, max_records=5000)
            records = batch.get(self.tp, [])
            if not records:
                return end
            end = max(end, records[-1].offset + 1)

    async def catch_up(self) -> None:
        assert self.consumer is not None
        replica = self.runtime.replica
        started = time.monotonic()
        end = (await self.consumer.end_offsets([self.tp]))[self.tp]  # a lower bound: follow() does the rest
        while replica.log_offset + 1 < end:
            if time.monotonic() - started > self.settings.catch_up_timeout_s:
                log.warning("start-up catch-up stopped at %d of %d", replica.model_version, end)
                return
            await self.apply_batch(500)
        log.info("replica caught up: model version %d", replica.model_version)

    async def apply_batch(self, timeout_ms: int) -> None:
        """Fetch what the log has (up to 5000 records), apply it, then let the checkpointer look."""
        assert self.consumer is not None
        batch = await self.consumer.getmany(self.tp, timeout_ms=timeout_ms, max_records=5000)
        runtime = self.runtime
        apply_record = runtime.apply_record
        for record in batch.get(self.tp, ()):
            apply_record(record.offset, record.value)
            if runtime.pending_reset is not None:  # a reset record: its checkpoint comes from the store
                await runtime.apply_pending_reset()
        runtime.after_batch()

    async def follow(self, stopping: Callable[[], bool]) -> None:
        """Apply the log as it grows until `stopping()`; a failed fetch is logged and retried."""
        while not stopping():
            try:
                await self.apply_batch(200)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                log.error("outcomes fetch failed, retrying: %r", exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def follower_service(follower: OutcomesFollower) -> type[Service]:
    """A mode Service class (what `app.service` takes) running `follower` and the checkpoint writer
    for the life of the app; it marks the runtime ready once the replica has caught up."""
    runtime = follower.runtime
    checkpointer = runtime.checkpointer

    class OutcomesFollowerService(Service):
        async def on_start(self) -> None:
            await follower.start()
            # Everything built so far (modules, Faust's services, the replica) lives as long as
            # the process: take it out of the cyclic GC's full collections, whose pauses (tens of
            # ms with a big heap) would otherwise show up in the decision latency.
            gc.collect()
            gc.freeze()
            runtime.ready.set()

        @Service.task
        async def _follow(self) -> None:
            await follower.follow(lambda: self.should_stop)

        @Service.task
        async def _write_checkpoints(self) -> None:
            await checkpointer.write_pending(lambda: self.should_stop)

        async def on_stop(self) -> None:
            await follower.stop()
            await checkpointer.write_final(timeout_s=3.0)
            await checkpointer.store.close()

    return OutcomesFollowerService
