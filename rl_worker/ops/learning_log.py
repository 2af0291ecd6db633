"""The learning log of one app id as the operator commands use it: read into a replica up to its
end (from the newest usable checkpoint), and appended to with a control record."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from rl_worker.core.control import decode_log_record
from rl_worker.core.outcome import Outcome
from rl_worker.core.tuning import WindowObserver
from rl_worker.ops.exceptions import CommandError
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import CheckpointStore, RedisCheckpointStore, restore_newest_valid
from rl_worker.stream.connections import kafka_options, redis_options
from rl_worker.stream.exceptions import CheckpointStoreError
from rl_worker.stream.follower import OutcomesFollower
from rl_worker.stream.runtime import WorkerRuntime

__all__ = ["LearningLog", "open_store"]

log = logging.getLogger(__name__)


def open_store(settings: Settings, namespace: str | None = None) -> RedisCheckpointStore:
    """The checkpoint store of `namespace` (default this app id's) with the settings' Redis credentials and TLS."""
    return RedisCheckpointStore(
        settings.redis_url.get_secret_value(), namespace or settings.redis_namespace, settings.checkpoint.retention,
        options=redis_options(settings),
    )


class LearningLog:
    """`async with LearningLog(settings) as log:` the log of `settings.app_id` and its checkpoint store."""

    def __init__(self, settings: Settings, store: CheckpointStore | None = None) -> None:
        self.settings = settings
        self.topic = settings.topics.outcomes
        self.store = store or open_store(settings)
        self.runtime = WorkerRuntime(settings, self.store)
        self.follower = OutcomesFollower(settings, self.runtime)
        self.end = 0

    async def __aenter__(self) -> LearningLog:
        try:
            await asyncio.wait_for(self.follower.connect(), 20.0)
            assert self.follower.consumer is not None
            topics = await self.follower.consumer.topics()
            if self.topic not in topics:
                raise CommandError(
                    f"learning log {self.topic} does not exist on {self.settings.kafka_bootstrap}: "
                    "is RL_APP_ID (or RL_TOPICS__OUTCOMES) the model's?"
                )
            self.end = await self.follower.log_end()
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.close()
            raise CommandError(f"broker {self.settings.kafka_bootstrap} unreachable: {exc!r}", 1) from exc
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.follower.stop()
        await self.store.close()

    async def catch_up(self, window: int = 0) -> WindowObserver:
        """Bring the runtime's replica to the log's end, from the newest checkpoint that leaves the
        last `window` records to replay; those are observed (rewards, TD errors, unseen states)."""
        replica = self.runtime.replica
        window_start = max(0, self.end - window)
        try:
            restored = await restore_newest_valid(self.store, replica.config, self.end - 1, before=window_start)
        except CheckpointStoreError as exc:
            raise CommandError(f"checkpoint store unreachable: {exc}", 1) from exc
        if restored.replica is not None:
            replica.import_state(restored.replica.export_state())
        self.follower.seek_to_replica()
        observer = WindowObserver()
        consumer, tp, runtime = self.follower.consumer, self.follower.tp, self.runtime
        assert consumer is not None
        idle = 0
        while replica.log_offset + 1 < self.end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            records = batch.get(tp, [])
            idle = 0 if records else idle + 1
            if idle > 20:
                raise CommandError(f"learning log {self.topic} stopped at {replica.log_offset + 1} of {self.end}", 1)
            for record in records:
                if record.offset >= window_start and record.offset > replica.log_offset:
                    try:
                        decoded = decode_log_record(record.value or b"")
                    except ValueError:
                        decoded = None
                    if isinstance(decoded, Outcome):
                        observer.observe_apply(replica, decoded, record.offset)
                        continue
                runtime.apply_record(record.offset, record.value)
                if runtime.pending_reset is not None:
                    await runtime.apply_pending_reset()
        return observer

    async def append(self, record: BaseModel) -> int:
        """Append one control record; returns its offset."""
        producer = AIOKafkaProducer(**kafka_options(self.settings), acks="all")
        try:
            await producer.start()
            metadata = await producer.send_and_wait(
                self.topic, record.model_dump_json().encode(), key=b"control", partition=0
            )
        except KafkaError as exc:
            raise CommandError(f"control record not written to {self.topic}: {exc!r}", 1) from exc
        finally:
            await producer.stop()
        return int(metadata.offset)
