"""The Faust app: wires the runtime, the positions table, the outcomes follower and the web pages.

Input topics deliver raw bytes; our own loop decodes them with pydantic inside a per-event
guard (`WorkerRuntime.process`), so a bad record goes to the dead-letter topic instead of
ending the stream (an exception escaping a Faust agent would ack the event and restart the agent).
The Faust internals this relies on are in `rl_worker.stream.internals`, patched by the entry point.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import CheckpointStore, RedisCheckpointStore
from rl_worker.stream.connections import faust_broker_options
from rl_worker.stream.follower import OutcomesFollower, follower_service
from rl_worker.stream.handover import Handover
from rl_worker.stream.internals import guard_producer_flush, refetch_gaps_of
from rl_worker.stream.positions_table import PositionsTable
from rl_worker.stream.runtime import DeadLetter, WorkerRuntime, dead_letter_headers, now_ms
from rl_worker.stream.web import add_pages

__all__ = ["SendGuard", "create_app"]

log = logging.getLogger(__name__)


class SendGuard:
    """Makes a failed send stop the worker before any later offset commit.

    aiokafka retries a send until its delivery timeout; a send that still fails is remembered
    here, the producer's next flush raises it (Faust flushes before every offset commit, so
    the commit does not happen), and the app is crashed: the worker exits and the group
    redelivers everything after the last commit.
    """

    def __init__(self, app: faust.App, runtime: WorkerRuntime) -> None:
        self.app = app
        self.runtime = runtime
        self.error: BaseException | None = None

    def watch(self, fut: Any) -> None:
        fut.add_done_callback(self._on_sent)

    def _on_sent(self, fut: asyncio.Future[Any]) -> None:
        error = None if fut.cancelled() else fut.exception()
        if error is None or self.error is not None:
            return
        self.error = error
        log.error("send failed after retries, stopping before the next commit: %r", error)
        self.runtime.metrics.send_failures.inc()
        asyncio.ensure_future(self.app.crash(error))  # noqa: RUF006 - the app owns its end

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def guard_flush(self, producer: Any, before: Any = None) -> None:
        guard_producer_flush(producer, self.raise_error, before)


def create_app(
    settings: Settings, partitions: int, store: CheckpointStore | None = None
) -> tuple[faust.App, WorkerRuntime]:
    """Build the Faust app and its runtime; `partitions` is the input topics' partition count."""
    if store is None:
        store = RedisCheckpointStore.from_settings(settings)
    runtime = WorkerRuntime(settings, store)
    t = settings.topics
    app = faust.App(
        settings.app_id,
        **faust_broker_options(settings),  # broker URLs and credentials (TLS / SASL)
        store="memory://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.002,
        # Measured with scripts/bench_worker.py: a stream buffer of 4096 (the default) makes Faust
        # pause and resume fetching all the time (-40 % events/s); 64 KB producer batches need
        # fewer produce requests under load than 16 KB and cost no latency when idle.
        stream_buffer_maxsize=16384,
        producer_max_batch_size=65536,
        broker_commit_interval=1.0,
        # The memory store is rebuilt from the changelog in every process, so this check (a store
        # persisted ahead of its changelog) guards nothing here; on tansu, whose end offsets are low
        # by up to a batch, it crashed a worker that kept a partition across a rebalance.
        recovery_consistency_check=False,
    )
    guard = SendGuard(app, runtime)
    handover = Handover(app, settings, runtime.metrics)
    refetch_gaps_of({t.signals, t.executions, t.closes})
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inputs = app.topic(t.signals, t.executions, t.closes, allow_empty=True, **raw)
    decisions = app.topic(t.decisions, partitions=partitions, **raw)
    dead_letters = app.topic(t.dead_letter, partitions=partitions, **raw)
    outcomes = app.topic(t.outcomes, partitions=1, **raw)
    positions = PositionsTable(
        app.Table(
            "positions",
            default=None,
            schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
            partitions=partitions,
        ),
        runtime.metrics,
    )

    @app.agent(inputs, name="rl-inputs")
    async def on_input(stream: faust.StreamT[bytes]) -> None:
        # Sends go straight to Faust's producer (not through Topic.send / Table.__setitem__, whose
        # per-record futures, buffers and sensors cost more than the decision itself). Same
        # guarantee: Faust flushes this producer before it commits an offset, so every decision,
        # outcome and changelog record of an event is written before the event counts as done.
        producer = app.producer
        guard.guard_flush(producer, handover.wait_deferred)
        watch = guard.watch
        send = producer.send
        changelog = positions.changelog_topic
        observe, row_of, put = positions.observe, positions.row_of, positions.put
        process = runtime.process
        count_emits = runtime.count_emits
        dead_letter_topic = dead_letters.get_topic_name()
        decisions_topic, outcomes_topic = decisions.get_topic_name(), outcomes.get_topic_name()
        ready = runtime.ready
        take, published, send_decision, send_outcome = (
            handover.take, handover.published, handover.send_decision, handover.send_outcome
        )
        async for event in stream.events():
            if not ready.is_set():
                await ready.wait()
            msg = event.message
            partition = msg.partition
            await take(msg.topic, partition, msg.offset)  # the partition's published decisions are read back
            event_ms = int(msg.timestamp * 1000) if msg.timestamp else now_ms()
            observe(partition, event_ms)
            result = process(
                msg.topic, partition, msg.offset, msg.key, msg.value, row_of, event_ms, published(partition)
            )
            if isinstance(result, DeadLetter):
                log.warning(
                    "%s[%d]@%d dead-lettered: %s: %s",
                    msg.topic, msg.partition, msg.offset, result.error_class, result.message,
                )
                watch(await send(
                    dead_letter_topic, msg.key, msg.value, None, None,
                    dead_letter_headers(msg.topic, msg.partition, msg.offset, result),
                ))
                continue
            key = msg.key
            if result.status == "applied":
                changelog_key, value = put(result.position_id, result.row)
                watch(await send(changelog, changelog_key, value, msg.partition, None, None))
            for emit in result.emits:
                if emit.kind == "decision":
                    watch(await send_decision(
                        send, decisions_topic, key, emit.value, partition, result.position_id, emit.agent, result.row
                    ))
                else:
                    await send_outcome(send, watch, outcomes_topic, key, emit.value, result.position_id)
            count_emits(result.emits, int(msg.timestamp * 1000) if msg.timestamp else None)

    @app.timer(settings.expiry_interval_s)
    async def expire_positions() -> None:
        if not runtime.ready.is_set() or app.consumer is None:
            return
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == t.signals}
        await positions.expire(owned, settings.position_ttl_s * 1000, settings.completed_retention_s * 1000)

    app.service(follower_service(OutcomesFollower(settings, runtime)))
    app.service(handover.service())
    add_pages(app, runtime, t.signals, handover.health, settings.web_snapshot_token)
    return app, runtime
