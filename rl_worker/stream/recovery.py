"""Reading back the decisions already published for the partitions a worker is given.

On every assignment (new partitions, and retained ones: Faust seeks them back to their committed
offsets too) the worker reads, per partition, the `rl.decisions` records from the recovery start
(the `rl.recover_from` header of the partition's last record; see `published.py`) to the end of
the partition, with the input offsets committed for it, before it processes a record of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from rl_worker.settings import Settings
from rl_worker.stream.connections import kafka_options
from rl_worker.stream.published import (
    TRIGGERS_HEADER,
    PublishedDecision,
    PublishedDecisions,
    decode_triggers,
    recover_from_header,
)

__all__ = ["DecisionRecovery"]

log = logging.getLogger(__name__)

_IDLE_FETCH_MS = 200  # a fetch this long that returns nothing ends a read at the partition's end


class DecisionRecovery:
    """Owns a plain consumer (the group's id, never joining it) for reading decisions back and
    reading the group's committed offsets and the inputs' end offsets."""

    def __init__(
        self, settings: Settings, ledger: PublishedDecisions, on_read_back: Callable[[int], None] | None = None
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.on_read_back = on_read_back
        self.consumer: AIOKafkaConsumer | None = None
        self._start_lock = asyncio.Lock()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self.last_recovery_s: float | None = None
        self.last_recovered: int = 0

    async def start(self) -> None:
        """Start the consumer (idempotent: Faust's table recovery may need it before the app's
        services are started)."""
        async with self._start_lock:
            if self.consumer is None:
                self.consumer = await self._new_consumer()

    async def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **kafka_options(self.settings),  # TLS / SASL as every client
            group_id=self.settings.app_id,  # for the committed offsets only: it never subscribes
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        return consumer

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        if self.consumer is not None:
            await self.consumer.stop()

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """A new assignment: everything known about earlier ones is void (the input is read
        again from the committed offsets); read the assigned partitions back in one go."""
        for task in set(self._tasks.values()):
            task.cancel()
        self.ledger.forget()
        wanted = set(partitions)
        self._tasks = {}
        if wanted:
            task = asyncio.ensure_future(self._recover(wanted))
            self._tasks = dict.fromkeys(wanted, task)

    async def ensure(self, partition: int) -> None:
        """Wait until the partition is read back (starting that now if no assignment did)."""
        while not self.ledger.is_ready(partition):
            task = self._tasks.get(partition)
            if task is None or task.cancelled():
                task = self._tasks[partition] = asyncio.ensure_future(self._recover({partition}))
            elif task.done() and task.exception() is not None:
                log.error("reading back decisions of partition %d failed, retrying: %r", partition, task.exception())
                await asyncio.sleep(1.0)
                task = self._tasks[partition] = asyncio.ensure_future(self._recover({partition}))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # we are cancelled ourselves
                # the read was superseded by a newer assignment: wait for that one
            except Exception:  # noqa: S110 - reported and retried by the next turn of the loop
                pass

    async def committed_inputs(self, partitions: Iterable[int]) -> dict[int, dict[str, int]]:
        """The group's committed input offsets (topic -> next offset to read) per partition."""
        assert self.consumer is not None
        t = self.settings.topics
        out: dict[int, dict[str, int]] = {}
        tps = [TopicPartition(topic, p) for p in partitions for topic in (t.signals, t.executions, t.closes)]
        # No committed offset, or one below the log's start (retention): the group reads from the
        # log's start (auto_offset_reset "earliest"), where the next commit must start.
        starts = await self.consumer.beginning_offsets(tps)
        for tp in tps:
            offset = await self.consumer.committed(tp)
            out.setdefault(tp.partition, {})[tp.topic] = max(offset or 0, starts.get(tp, 0))
        return out

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self.consumer is not None
        return dict(await self.consumer.end_offsets(tps))

    async def true_ends(self, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The offset after the last record of each partition, read rather than trusted: tansu
        reports the base offset of the last batch + 1, which would end a table's changelog
        recovery before the rows written last (those of the records just before a kill)."""
        await self.start()
        assert self.consumer is not None
        wanted = [TopicPartition(topic, partition) for topic, partition in tps]
        if not wanted:
            return {}
        async with self._lock:
            consumer = self.consumer
            reported = await consumer.end_offsets(wanted)
            consumer.assign(wanted)
            for tp in wanted:
                consumer.seek(tp, max(0, reported[tp] - 1))
            tail = await self._read_to_end(wanted, reported)
        return {
            (tp.topic, tp.partition): max(reported[tp], tail[tp][-1].offset + 1 if tail[tp] else 0) for tp in wanted
        }

    async def _recover(self, partitions: set[int]) -> None:
        await self.start()
        assert self.consumer is not None
        async with self._lock:
            started = time.monotonic()
            committed = await self.committed_inputs(partitions)
            decisions = self.settings.topics.decisions
            tps = {p: TopicPartition(decisions, p) for p in partitions}
            consumer = self.consumer
            consumer.assign(list(tps.values()))
            reported = await consumer.end_offsets(list(tps.values()))
            # 1. The tail of each partition, from just before the reported end (tansu reports the
            #    last batch's base offset + 1: read on to the true end), for its last record.
            for tp in tps.values():
                consumer.seek(tp, max(0, reported[tp] - 1))
            tail = await self._read_to_end(list(tps.values()), reported)
            start: dict[TopicPartition, int] = {}
            for tp in tps.values():
                records = tail[tp]
                if not records:
                    start[tp] = reported[tp]  # an empty partition (or one reported exactly)
                    continue
                recover_from = recover_from_header(records[-1].headers)
                if recover_from is None:
                    log.warning(
                        "%s[%d]@%d has no %s header (written by an older worker?): reading the "
                        "partition from its beginning", tp.topic, tp.partition, records[-1].offset,
                        "rl.recover_from",
                    )
                    recover_from = 0
                start[tp] = recover_from
            # 2. From each recovery start to the end.
            again = [tp for tp in tps.values() if tail[tp] and start[tp] < tail[tp][0].offset]
            if again:
                for tp in again:
                    consumer.seek(tp, start[tp])
                more = await self._read_to_end(again, reported)
                for tp in again:
                    tail[tp] = more[tp]
            count = 0
            for partition, tp in tps.items():
                records = [r for r in tail[tp] if r.offset >= start[tp]]
                end = records[-1].offset + 1 if records else reported[tp]
                self.ledger.begin(partition, (self._decode(tp, r) for r in records), end, committed[partition])
                count += len(records)
            self.last_recovery_s = time.monotonic() - started
            self.last_recovered = count
            if self.on_read_back is not None:
                self.on_read_back(count)
            log.info(
                "read back %d decisions of partitions %s in %.2f s (starts %s)",
                count, sorted(partitions), self.last_recovery_s,
                {tp.partition: start[tp] for tp in tps.values()},
            )

    async def _read_to_end(
        self, tps: list[TopicPartition], reported: dict[TopicPartition, int]
    ) -> dict[TopicPartition, list]:  # type: ignore[type-arg]
        assert self.consumer is not None
        out: dict[TopicPartition, list] = {tp: [] for tp in tps}  # type: ignore[type-arg]
        while True:
            batch = await self.consumer.getmany(*tps, timeout_ms=_IDLE_FETCH_MS, max_records=10000)
            for tp, records in batch.items():
                out[tp].extend(records)
            if not batch:
                positions = [await self.consumer.position(tp) for tp in tps]
                if all(pos >= reported[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return out

    @staticmethod
    def _decode(tp: TopicPartition, record: object) -> PublishedDecision:
        value = record.value or b""  # type: ignore[attr-defined]
        try:
            decision_id = json.loads(value)["decision_id"]
        except (ValueError, KeyError, TypeError):
            decision_id = ""
            log.error("%s[%d]@%d is not a decision record", tp.topic, tp.partition, record.offset)  # type: ignore[attr-defined]
        headers = dict(record.headers or ())  # type: ignore[attr-defined]
        return PublishedDecision(
            offset=record.offset,  # type: ignore[attr-defined]
            decision_id=decision_id,
            value=value,
            triggers=decode_triggers(headers.get(TRIGGERS_HEADER)),
        )
