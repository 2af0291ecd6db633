"""Replays an app id's learning log into a fresh replica, for the commands that judge it offline.

`ab-test report` and `evaluate` need the rewards the live replicas computed, which depend on
every record before them: so the log is read from offset 0 to its end (one partition, no
consumer group, nothing committed or written) and applied in order, control records included
(a hyperparameter change as the replicas apply it; a reset loads the named checkpoint from
Redis and checks its sha256). Each applied outcome goes to a `LogTally`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from rl_worker.analysis.learning_log import LogTally
from rl_worker.core.control import HyperparametersRecord, ResetRecord, decode_log_record
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica
from rl_worker.errors import RlWorkerError
from rl_worker.ops.learning_log import open_store
from rl_worker.settings import Settings, redis_namespace
from rl_worker.stream.connections import kafka_options, probe_kafka
from rl_worker.stream.exceptions import ConnectionConfigError, InfrastructureError

__all__ = ["LearningLogError", "ReplayResult", "replay_learning_log"]

log = logging.getLogger(__name__)


class LearningLogError(RlWorkerError):
    """The learning log cannot be read (missing topic, unreachable broker, a reset that cannot load)."""


@dataclass
class ReplayResult:
    replica: ModelReplica
    tally: LogTally
    end_offset: int  # the offset after the last record read


async def _load_reset(settings: Settings, record: ResetRecord) -> ModelReplica:
    store = open_store(settings, redis_namespace(record.app_id))
    try:
        data = await store.load(record.checkpoint_offset)
    finally:
        await store.close()
    if data is None or hashlib.sha256(data).hexdigest() != record.sha256:
        raise LearningLogError(
            f"the log resets to checkpoint {record.app_id}@{record.checkpoint_offset}, which Redis no longer holds "
            "as written (missing or another sha256): the replay cannot follow the live replicas past it"
        )
    return decode_replica(data, settings.core)


async def replay_learning_log(settings: Settings, tally: LogTally, timeout_s: float = 10.0) -> ReplayResult:
    """Read the whole learning log of `settings.app_id`'s topic into a fresh replica and `tally`."""
    topic = settings.topics.outcomes
    tp = TopicPartition(topic, 0)
    try:
        # a refusal (credentials, TLS) raises ConnectionConfigError naming its cause
        await probe_kafka(settings, timeout_s)
    except ConnectionConfigError:
        raise
    except InfrastructureError as exc:
        raise LearningLogError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}") from None
    consumer = AIOKafkaConsumer(
        **kafka_options(settings),
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        await consumer.start()
    except Exception as exc:  # aiokafka raises several kinds for an unreachable broker
        raise LearningLogError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}") from None
    replica = ModelReplica(settings.core)
    end = 0
    try:
        if topic not in await consumer.topics():
            raise LearningLogError(f"no learning log: topic {topic!r} does not exist on {settings.kafka_bootstrap}")
        consumer.assign([tp])
        consumer.seek(tp, 0)
        reported = (await consumer.end_offsets([tp]))[tp]
        # the reported end is a lower bound (tansu): read on until a fetch comes back empty
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500 if end >= reported else 2000, max_records=5000)
            records = batch.get(tp, [])
            if not records:
                if end >= reported:
                    break
                continue
            for message in records:
                offset = message.offset
                end = offset + 1
                try:
                    record = decode_log_record(message.value or b"")
                except ValidationError as exc:
                    log.warning("%s[0]@%d unreadable, skipped: %s", topic, offset, exc.errors()[:1])
                    replica.skip(offset)
                    tally.skip(offset)
                    continue
                if isinstance(record, HyperparametersRecord):
                    replica.apply_hyperparameters(record.hyperparameters, offset)
                    tally.control(offset)
                elif isinstance(record, ResetRecord):
                    replica.reset_to(await _load_reset(settings, record), offset)
                    tally.control(offset)
                else:
                    tally.add(record, replica.apply(record, offset), replica, offset)
    finally:
        await consumer.stop()
    return ReplayResult(replica, tally, end)
