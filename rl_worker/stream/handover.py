"""Partitions changing hands: what a worker does so that a kill or a rebalance repeats and loses nothing.

Owns the ledger of published decisions (`published.py`), their read-back on every assignment
(`recovery.py`) and the stall watch (`stalls.py`), and gives the input agent three calls:
`take` before a record is processed (waits for the partition's read-back), `send_decision`
(to the record's partition, with the ledger's headers) and `send_outcome` (only once the
decisions it credits are acknowledged). The argument is in the README's design section.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from rl_worker.positions import Published
from rl_worker.settings import Settings
from rl_worker.stream.internals import fetch_position
from rl_worker.stream.metrics import WorkerMetrics
from rl_worker.stream.published import PublishedDecisions, Trigger
from rl_worker.stream.recovery import DecisionRecovery
from rl_worker.stream.stalls import StallWatch, records_dropped_on_the_way

__all__ = ["STALL_EXIT_STATUS", "Handover"]

log = logging.getLogger(__name__)

STALL_EXIT_STATUS = 70
HOLE_RESEEK_S = 5.0  # a partition sought back for a hole is not sought again sooner
START_CHECK_S = 2.0  # after an assignment's streams resumed: every waiting partition has delivered
Send = Callable[..., Awaitable[Any]]


class Handover:
    def __init__(self, app: faust.App, settings: Settings, metrics: WorkerMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        t = settings.topics
        self.input_topics = {t.signals, t.executions, t.closes}
        self.ledger = PublishedDecisions()
        self.recovery = DecisionRecovery(settings, self.ledger, metrics.decisions_read_back.inc)
        self.stall_watch = StallWatch(settings.stall_timeout_s)
        self.last_taken: dict[tuple[str, int], int] = {}  # input (topic, partition) -> offset last taken
        self.unacked: dict[str, asyncio.Future[Any]] = {}  # position id -> its last decision send, until acked
        self.deferred: set[asyncio.Future[Any]] = set()  # outcome sends waiting for their decisions
        self._resynced: set[str] = set()
        self._seeks: set[asyncio.Future[Any]] = set()
        self._taken_at_assignment: dict[tuple[str, int], int] = {}
        self._started_since: float | None = None  # when the current assignment's streams resumed
        self._start_checked = True
        self._handed_out: dict[tuple[str, int], tuple[int, int, int]] = {}  # last look of _check_swallowed
        app.rl_on_committed = self._on_committed  # type: ignore[attr-defined]
        app.rl_true_ends = self.recovery.true_ends  # type: ignore[attr-defined]
        app.rl_committed_offset = self.committed_offset  # type: ignore[attr-defined]
        app.rl_on_hole = self.on_hole  # type: ignore[attr-defined]
        self._hole_seeks: dict[tuple[str, int], float] = {}  # input (topic, partition) -> last seek
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    # ---- the input agent's calls -----------------------------------------------------------------

    async def take(self, topic: str, partition: int, offset: int) -> None:
        """Before a record is processed: its partition's published decisions must be read back."""
        self.last_taken[(topic, partition)] = offset
        ledger = self.ledger
        if ledger.any_held:
            ledger.on_taken(partition, topic, offset)
        if not ledger.is_ready(partition):
            await self.recovery.ensure(partition)

    def published(self, partition: int) -> Published:
        return partial(self.ledger.published, partition)

    async def send_decision(
        self, send: Send, topic: str, key: bytes | None, value: bytes, partition: int,
        position_id: str, agent: str, row: Any,
    ) -> Any:
        """Send a decision to its input record's partition (co-partitioned: the partition's next
        owner finds it there) with the headers of published.py; returns the send's future."""
        triggers = _triggers(row, agent)
        decision_id = f"{position_id}:{agent}"
        self.ledger.on_sending(partition, decision_id, value)
        fut: Any = await send(topic, key, value, partition, None, self.ledger.headers(partition, triggers))
        self.unacked[position_id] = fut
        fut.add_done_callback(partial(self._on_decision_sent, partition, triggers, position_id, decision_id))
        return fut

    async def send_outcome(self, send: Send, watch: Callable[[Any], None], topic: str, key: bytes | None,
                           value: bytes, position_id: str) -> None:
        """An outcome names the decisions it credits: it goes out only once they are on the
        decisions topic (waiting off the agent's path), so a kill cannot leave a learned action
        that was never published. The producer flush before each commit waits for it."""
        pending = self.unacked.get(position_id)
        if pending is None:
            watch(await send(topic, key, value, 0, None, None))
            return
        task = asyncio.ensure_future(self._send_after(pending, send, watch, topic, key, value))
        self.deferred.add(task)
        task.add_done_callback(self.deferred.discard)

    async def wait_deferred(self) -> None:
        """Before a producer flush (so before an offset commit): every deferred outcome is sent."""
        while self.deferred:
            for result in await asyncio.gather(*list(self.deferred), return_exceptions=True):
                if isinstance(result, BaseException):
                    log.error("a deferred outcome send failed: %r", result)

    async def _send_after(self, pending: asyncio.Future[Any], send: Send, watch: Callable[[Any], None],
                          topic: str, key: bytes | None, value: bytes) -> None:
        await asyncio.wait((pending,))
        watch(await send(topic, key, value, 0, None, None))

    def _on_decision_sent(
        self, partition: int, triggers: tuple[Trigger, ...], position_id: str, decision_id: str, fut: Any
    ) -> None:
        if self.unacked.get(position_id) is fut:
            del self.unacked[position_id]
        if not fut.cancelled() and fut.exception() is None:
            self.ledger.on_sent(partition, fut.result().offset, triggers, decision_id)

    def committed_offset(self, topic: str, partition: int) -> int | None:
        """The input offset the broker has committed for `topic[partition]` as this worker knows it
        (read at the assignment, advanced by each accepted commit); None before the read-back."""
        ledger = self.ledger.partitions.get(partition)
        return None if ledger is None else ledger.committed.get(topic)

    def on_hole(self, tp: Any, offset: int) -> None:
        """Records of an input partition were delivered past one that was not (internals: a commit
        refused over a hole at the committed offset, or an offset gap): seek the partition back to
        its committed offset now rather than after the stall watch's timeout. What comes again was
        decided and published already or never: the ledger is held until it has come again."""
        app: Any = self.app
        key = (tp.topic, tp.partition)
        now = time.monotonic()
        if now - self._hole_seeks.get(key, -HOLE_RESEEK_S) < HOLE_RESEEK_S:
            return  # sought back a moment ago: the records are on their way
        if app.consumer is None or getattr(app, "rebalancing", False) or tp not in app.consumer.assignment():
            return  # a rebalance seeks every partition to its committed offset anyway
        committed = self.committed_offset(tp.topic, tp.partition)
        if committed is None:
            return
        self._hole_seeks[key] = now
        self.metrics.hole_seeks.inc()
        log.warning(
            "%s[%d]: a record from the committed offset %d on was not delivered (next seen: %d): "
            "seeking back to %d", tp.topic, tp.partition, committed, offset, committed,
        )
        self.ledger.hold(tp.partition, tp.topic, committed)
        task = asyncio.ensure_future(app.consumer.seek(tp, committed))
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    # ---- Faust's hooks ---------------------------------------------------------------------------

    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        self.recovery.on_assigned({tp.partition for tp in assigned if tp.topic in self.input_topics})
        # for the first look once the assignment runs (`_check_started`): what was taken before it
        self._taken_at_assignment = dict(self.last_taken)
        self._started_since = None
        self._start_checked = False

    def _on_committed(self, offsets: Any) -> None:
        app: Any = self.app
        # settled: the streams were sought to their committed offsets after the last rebalance
        settled = app.tables.recovery.completed.is_set() and not app.rebalancing
        self.ledger.on_committed({(tp.topic, tp.partition): offset for tp, offset in offsets.items()}, settled)

    # ---- the service: read-back consumer, stall watch ------------------------------------------

    def service(self) -> type[Service]:
        handover = self

        class HandoverService(Service):
            """Reads published decisions back on assignment; watches assigned partitions for stalls."""

            async def on_start(self) -> None:
                await handover.recovery.start()

            async def on_stop(self) -> None:
                await handover.recovery.stop()

            @Service.task
            async def _watch_stalls(self) -> None:
                interval = max(0.5, handover.settings.stall_timeout_s / 4)
                while not self.should_stop:
                    await self.sleep(interval)
                    await handover.check_stalls()

        return HandoverService

    async def check_stalls(self) -> None:
        app: Any = self.app
        if app.consumer is None or not app.consumer.assignment():
            if not getattr(app, "rebalancing", False):
                return
        assigned = [tp for tp in (app.consumer.assignment() if app.consumer else ()) if tp.topic in self.input_topics]
        recovering = bool(app.tables.recovery.in_recovery)
        if recovering:
            # restoring the positions table, the inputs wait by design: watched as a whole, with
            # a longer limit (stalls.RECOVERY_FACTOR)
            assigned = []
        committed: dict[tuple[str, int], int | None] = {}
        for tp in assigned:
            part = self.ledger.partitions.get(tp.partition)
            committed[(tp.topic, tp.partition)] = None if part is None else part.committed.get(tp.topic, 0)
        try:
            ends = await asyncio.wait_for(
                self.recovery.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in assigned]), 10.0
            )
        except (KafkaError, TimeoutError) as exc:
            log.warning("stall watch: end offsets unavailable: %r", exc)
            return
        self._check_started(assigned, ends)
        self._check_swallowed(assigned)
        stalls = self.stall_watch.check(
            time.monotonic(),
            committed,
            {(tp.topic, tp.partition): end for tp, end in ends.items()},
            bool(getattr(app, "rebalancing", False)),
            recovering,
        )
        self.metrics.partitions_stalled.set(len(stalls))
        if not stalls:
            self._resynced.clear()
            return
        log.error("stalled: %s", "; ".join(s.describe() for s in stalls))
        # First remedy: seek each stalled partition back to its committed offset. Seen on tansu
        # with Faust 0.15.3: records fetched between Faust's seek to the committed offsets and the
        # end of its rebalance were dropped, with the fetch position already past them, until the
        # next rebalance. What comes again was never decided or is in the published set (held
        # there until it comes again), so nothing is sent twice.
        for stall in stalls:
            tp = next((x for x in assigned if f"{x.topic}[{x.partition}]" == stall.what), None)
            if tp is None or stall.committed is None or stall.what in self._resynced:
                continue
            part = self.ledger.partitions.get(tp.partition)
            if part is None or part.committed.get(tp.topic, 0) != stall.committed:
                continue  # it moved meanwhile
            self._resynced.add(stall.what)
            log.warning("%s: seeking back to its committed offset %d", stall.what, stall.committed)
            self.ledger.hold(tp.partition, tp.topic, stall.committed)
            await app.consumer.seek(tp, stall.committed)
        since = self.stall_watch.stalled_since
        exit_after = self.settings.stall_exit_after_s
        if exit_after > 0 and since is not None and time.monotonic() - since >= exit_after:
            log.critical(
                "still stalled %.0f s after the seek: exiting (status %d) so that the partitions are "
                "reassigned", exit_after, STALL_EXIT_STATUS,
            )
            # The uncommitted input goes to the next owner, which reads this worker's decisions
            # back: nothing is repeated or lost by leaving now.
            logging.shutdown()
            os._exit(STALL_EXIT_STATUS)

    def _check_started(self, assigned: list[Any], ends: dict[Any, int]) -> None:
        """Once per assignment, `START_CHECK_S` after its streams resumed: an input partition with
        records waiting after its committed offset of which nothing was taken since the assignment
        is sought back to that offset. Seen on tansu and Apache Kafka with Faust 0.15.3: records
        fetched around the end of a rebalance were never delivered, with the fetch position
        already past them, until a seek (the stall watch's, after RL_STALL_TIMEOUT_S, or the next
        rebalance). Seeking a partition whose records were merely slow costs a redelivery, which
        repeats nothing (the ledger is held until the record sought back to comes again)."""
        app: Any = self.app
        if self._start_checked or not assigned:
            return
        if getattr(app, "rebalancing", False) or not app.tables.recovery.completed.is_set():
            self._started_since = None
            return
        now = time.monotonic()
        if self._started_since is None:
            self._started_since = now
        if now - self._started_since < START_CHECK_S:
            return
        self._start_checked = True
        idle = []
        for tp in assigned:
            key = (tp.topic, tp.partition)
            committed = self.committed_offset(tp.topic, tp.partition)
            end = ends.get(tp)
            if committed is None or end is None or end <= committed:
                continue
            if key in self.last_taken and self.last_taken[key] != self._taken_at_assignment.get(key):
                continue  # records of it were taken since the assignment
            idle.append((tp, committed))
        for tp, committed in idle:
            log.warning(
                "%s[%d]: nothing taken since the assignment, records waiting after the committed offset "
                "%d: seeking back to it", tp.topic, tp.partition, committed,
            )
            self.metrics.hole_seeks.inc()
            self._hole_seeks[(tp.topic, tp.partition)] = now
            self.ledger.hold(tp.partition, tp.topic, committed)
            task = asyncio.ensure_future(app.consumer.seek(tp, committed))
            self._seeks.add(task)
            task.add_done_callback(self._seeks.discard)

    def _check_swallowed(self, assigned: list[Any]) -> None:
        """Records the fetcher handed out that never reached the agent: seek back at once.

        Seen in the soak's stall diagnostics (Faust 0.15.3, tansu): the consumer's fetch position
        tens of records past Faust's read offset, every record Faust delivered of the partition
        already taken by the agent, the flow active, the partition neither paused nor buffered:
        a batch dropped in Faust's fetch loop around a rebalance, found by the stall watch only
        after its timeout. A partition seen so on two looks in a row (unchanged) is sought back
        to its committed offset; records merely on their way change between two looks."""
        app: Any = self.app
        consumer = app.consumer
        if (
            getattr(app, "rebalancing", False)
            or not app.tables.recovery.completed.is_set()
            or not consumer.flow_active
        ):
            self._handed_out = {}
            return
        seen: dict[tuple[str, int], tuple[int, int, int]] = {}
        now = time.monotonic()
        for tp in assigned:
            key = (tp.topic, tp.partition)
            position = fetch_position(consumer, tp)
            read = consumer._read_offset.get(tp)
            taken = self.last_taken.get(key)
            if not records_dropped_on_the_way(position, read, taken):
                continue  # unknown, all taken, or records of it still in the stream
            if tp in consumer._paused_partitions or tp in consumer._buffered_partitions:
                continue
            assert position is not None and read is not None and taken is not None
            seen[key] = look = (position, read, taken)
            if self._handed_out.get(key) != look:
                continue  # first look, or it moved
            committed = self.committed_offset(tp.topic, tp.partition)
            if committed is None or now - self._hole_seeks.get(key, -HOLE_RESEEK_S) < HOLE_RESEEK_S:
                continue
            log.warning(
                "%s[%d]: fetched up to %d, delivered up to %d, taken up to %d: records were dropped "
                "on their way to the agent; seeking back to the committed offset %d",
                tp.topic, tp.partition, position - 1, read, taken, committed,
            )
            self.metrics.hole_seeks.inc()
            self._hole_seeks[key] = now
            self.ledger.hold(tp.partition, tp.topic, committed)
            task = asyncio.ensure_future(consumer.seek(tp, committed))
            self._seeks.add(task)
            task.add_done_callback(self._seeks.discard)
        self._handed_out = seen

    def health(self) -> dict[str, Any]:
        return {
            "stalled": [s.describe() for s in self.stall_watch.stalls],
            "decisions_read_back": {
                "last": self.recovery.last_recovered,
                "seconds": self.recovery.last_recovery_s,
            },
        }


def _triggers(row: Any, agent: str) -> tuple[Trigger, ...]:
    """The input records that can make this decision (see published.py): the signal for meta,
    the signal and the execution for sizing (whichever comes second makes it)."""
    signal = _src(row, "signal")
    if agent == "meta":
        return (signal,)
    return (signal, _src(row, "execution"))


def _src(row: Any, slot: str) -> Trigger:
    value = row[slot] if isinstance(row, dict) else getattr(row, slot)
    src = value["src"] if isinstance(value, dict) else value.src
    return (src[0], src[2])
