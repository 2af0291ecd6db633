"""The Faust app: a thin I/O shell around the runtime (agents, the positions table, services, web).

Input topics deliver raw bytes; our own loop decodes them with pydantic inside a per-event
guard, so a bad record goes to the dead-letter topic instead of ending the stream (an
exception escaping a Faust agent would ack the event and restart the agent).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service
from mode.services import WaitResults
from prometheus_client import generate_latest

from rl_worker.core.snapshot import encode_replica
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import CheckpointStore, RedisCheckpointStore
from rl_worker.stream.runtime import WorkerRuntime, dead_letter_headers, now_ms

__all__ = ["create_app", "speed_up_message_delivery", "tune_worker_consumer"]

log = logging.getLogger(__name__)

_FETCH_MAX_WAIT_MS = {"value": 1500}


def tune_worker_consumer(fetch_max_wait_ms: int) -> None:
    """Set the fetch wait of Faust's worker consumer, which Faust hard-codes to 1500 ms.

    On brokers whose idle fetches sleep (tansu), 1500 ms turns into ~400 ms of latency
    for the first event after a quiet spell; 20 ms costs a few percent of a core when idle.
    """
    _FETCH_MAX_WAIT_MS["value"] = fetch_max_wait_ms
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_rl_worker_tuned", False):
        return
    original = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS["value"]
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread_cls._rl_worker_tuned = True  # type: ignore[attr-defined]


async def _resume(coro: Any, yielded: Any) -> Any:
    """Run an already started coroutine, suspended on `yielded`, to its end, as its Task would."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await asyncio.wait((yielded,))
        except asyncio.CancelledError as exc:
            if yielded is not None:
                yielded.cancel()
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


def speed_up_message_delivery() -> None:
    """Deliver each fetched record to the streams without four tasks per record when it cannot block.

    Faust's fetch loop hands every record to the streams with
    `wait_first(deliver(record), suspend_flow.wait())`: four tasks and an `asyncio.wait` per
    record, about a tenth of the worker's CPU. Delivery only blocks when a stream buffer is
    full or flow control holds it; otherwise it finishes in its first step. So the delivery
    coroutine is started in place: when it finishes at once the result is the one
    `wait_first` would have returned; when it has to wait, the rest of it goes to Faust's own
    `wait_first` (cancelled by a flow suspension exactly as before).
    """
    consumer_cls = faust_consumer.Consumer
    if getattr(consumer_cls, "_rl_worker_fast_delivery", False):
        return
    original = consumer_cls.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if len(coros) != 2 or not asyncio.iscoroutine(coros[0]) or self._stopped.is_set() or self._crashed.is_set():
            return await original(self, *coros, timeout=timeout)
        deliver, other = coros
        try:
            yielded = deliver.send(None)
        except StopIteration as stop:
            if asyncio.iscoroutine(other):
                other.close()
            return WaitResults([deliver], [stop.value], False)
        except BaseException:
            if asyncio.iscoroutine(other):
                other.close()
            raise
        return await original(self, _resume(deliver, yielded), other, timeout=timeout)

    consumer_cls.wait_first = wait_first  # type: ignore[method-assign]
    consumer_cls._rl_worker_fast_delivery = True  # type: ignore[attr-defined]


def _encode_key(position_id: str) -> bytes:
    """A positions-table key exactly as Faust's table writes it (its "json" key codec): same bytes,
    so changelog compaction and Faust's own tombstones (expiry) address the same key."""
    return json.dumps(position_id).encode()


def _encode_row(row: dict[str, Any]) -> bytes:
    """A positions-table value in JSON, which Faust's changelog recovery reads back (its "json" codec)."""
    return json.dumps(row, separators=(",", ":")).encode()


def _expiry_of(row: dict[str, Any]) -> tuple[int, bool, int]:
    return int(row["updated_ms"]), "outcome" in row, int(row["partition"])


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

    def guard_flush(self, producer: Any) -> None:
        original = producer.flush

        async def flush() -> None:
            await original()
            if self.error is not None:
                raise self.error

        producer.flush = flush


def create_app(
    settings: Settings, partitions: int, store: CheckpointStore | None = None
) -> tuple[faust.App, WorkerRuntime]:
    """Build the Faust app and its runtime; `partitions` is the input topics' partition count."""
    tune_worker_consumer(settings.fetch_max_wait_ms)
    speed_up_message_delivery()
    if store is None:
        store = RedisCheckpointStore(
            settings.redis_url.get_secret_value(), settings.redis_namespace, settings.checkpoint.retention
        )
    runtime = WorkerRuntime(settings, store)
    t = settings.topics
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",")],
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
    )
    guard = SendGuard(app, runtime)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inputs = app.topic(t.signals, t.executions, t.closes, allow_empty=True, **raw)
    decisions = app.topic(t.decisions, partitions=partitions, **raw)
    dead_letters = app.topic(t.dead_letter, partitions=partitions, **raw)
    outcomes = app.topic(t.outcomes, partitions=1, **raw)
    positions = app.Table(
        "positions",
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
        partitions=partitions,
    )

    # The table's in-memory values are the rows' changelog bytes (JSON), not dicts: a row as
    # bytes is one object the cyclic GC never scans, where a dict row is a dozen tracked
    # containers; with tens of thousands of positions held for their retention, full GC
    # passes over dict rows stall the event loop for tens of milliseconds. Rows restored by
    # Faust's changelog recovery arrive as dicts and are read as they are. `expiry` keeps what
    # the expiry scan needs per row (updated_ms, completed, partition) so it never parses rows.
    # `rows` is the memory store's own dict: the Store's get / [] go through three Python-level
    # mapping layers, about a microsecond per lookup (per event, and per row in each expiry pass).
    rows: dict[str, Any] = positions.data.data  # type: ignore[attr-defined]
    expiry: dict[str, tuple[int, bool, int]] = {}
    # Stream time: the newest input record timestamp seen per partition. Expiry compares rows
    # with it, not with the wall clock, so a worker back from a long outage does not expire
    # the positions whose closes are still waiting in its backlog.
    stream_time: dict[int, int] = {}

    def row_of(position_id: str) -> dict[str, Any] | None:
        value = rows.get(position_id)
        if value is None or isinstance(value, dict):
            return value
        return json.loads(value)  # type: ignore[no-any-return]

    @app.agent(inputs, name="rl-inputs")
    async def on_input(stream: faust.StreamT[bytes]) -> None:
        # Sends go straight to Faust's producer (not through Topic.send / Table.__setitem__, whose
        # per-record futures, buffers and sensors cost more than the decision itself). Same
        # guarantee: Faust flushes this producer before it commits an offset, so every decision,
        # outcome and changelog record of an event is written before the event counts as done.
        producer = app.producer
        guard.guard_flush(producer)
        watch = guard.watch
        send = producer.send
        changelog = positions.changelog_topic.get_topic_name()
        process = runtime.process
        count_emits = runtime.count_emits
        dead_letter_topic = dead_letters.get_topic_name()
        decisions_topic, outcomes_topic = decisions.get_topic_name(), outcomes.get_topic_name()
        ready = runtime.ready
        async for event in stream.events():
            if not ready.is_set():
                await ready.wait()
            msg = event.message
            event_ms = int(msg.timestamp * 1000) if msg.timestamp else now_ms()
            if event_ms > stream_time.get(msg.partition, 0):
                stream_time[msg.partition] = event_ms
            position_id, result, dead = process(
                msg.topic, msg.partition, msg.offset, msg.key, msg.value, row_of, event_ms
            )
            if dead is not None:
                log.warning(
                    "%s[%d]@%d dead-lettered: %s: %s",
                    msg.topic, msg.partition, msg.offset, dead.error_class, dead.message,
                )
                watch(await send(
                    dead_letter_topic, msg.key, msg.value, None, None,
                    dead_letter_headers(msg.topic, msg.partition, msg.offset, dead),
                ))
                continue
            assert position_id is not None and result is not None
            key = msg.key
            if result.status == "applied":
                # What `positions[position_id] = row` does, minus the sensors: the changelog
                # record (JSON key as Faust writes it, JSON value, the event's partition).
                row = result.row
                value = _encode_row(row)
                rows[position_id] = value
                expiry[position_id] = _expiry_of(row)
                watch(await send(changelog, _encode_key(position_id), value, msg.partition, None, None))
            for emit in result.emits:
                if emit.kind == "decision":
                    watch(await send(decisions_topic, key, emit.value, None, None, None))
                else:
                    watch(await send(outcomes_topic, key, emit.value, 0, None, None))
            count_emits(result.emits, int(msg.timestamp * 1000) if msg.timestamp else None)

    @app.timer(settings.expiry_interval_s)
    async def expire_positions() -> None:
        if not runtime.ready.is_set() or app.consumer is None:
            return
        open_ttl = settings.position_ttl_s * 1000
        done_ttl = settings.completed_retention_s * 1000
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == t.signals}
        keys = list(rows)
        for i, key in enumerate(keys):
            if i and i % 1000 == 0:
                # A big table is scanned in slices with events processed in between: one pass
                # over 25,000 rows in one go held the event loop ~30 ms (a p99 latency spike).
                await asyncio.sleep(0.001)
            value = rows.get(key)
            if value is None:
                continue
            if isinstance(value, dict):
                updated_ms, done, partition = _expiry_of(value)
            else:
                updated_ms, done, partition = expiry.get(key) or _expiry_of(json.loads(value))
            if partition not in owned:
                # left over from before a rebalance: the partition's new owner has the row
                del rows[key]
                expiry.pop(key, None)
                continue
            now = stream_time.get(partition)
            if now is None or now - updated_ms < (done_ttl if done else open_ttl):
                continue
            del rows[key]
            expiry.pop(key, None)
            positions.send_changelog(partition, key, None)
            runtime.metrics.positions_expired.labels("completed" if done else "incomplete").inc()
            if not done:
                row = value if isinstance(value, dict) else json.loads(value)
                log.warning("position %s expired incomplete (has %s)", key, sorted(
                    s for s in ("signal", "execution", "close") if s in row))
        if len(expiry) > len(rows):  # rows Faust dropped itself (partitions moved away)
            for key in [k for k in expiry if k not in rows]:
                del expiry[key]

    @app.service
    class OutcomesFollower(Service):
        """Replays `rl.outcomes` into this worker's replica and checkpoints it."""

        consumer: AIOKafkaConsumer | None = None

        async def on_start(self) -> None:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                enable_auto_commit=False,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                # never jump over records: a position outside the log is an error, not a reset
                auto_offset_reset="none",
            )
            await self.consumer.start()
            self.tp = TopicPartition(t.outcomes, 0)
            self.consumer.assign([self.tp])
            await runtime.restore(await self._log_end())
            self.consumer.seek(self.tp, runtime.replica.log_offset + 1)
            await self._catch_up()
            # Everything built so far (modules, Faust's services, the replica) lives as long as
            # the process: take it out of the cyclic GC's full collections, whose pauses (tens of
            # ms with a big heap) would otherwise show up in the decision latency.
            gc.collect()
            gc.freeze()
            runtime.ready.set()

        async def _log_end(self) -> int:
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

        async def _catch_up(self) -> None:
            assert self.consumer is not None
            started = time.monotonic()
            end = (await self.consumer.end_offsets([self.tp]))[self.tp]  # a lower bound: _follow does the rest
            while runtime.replica.log_offset + 1 < end:
                if time.monotonic() - started > settings.catch_up_timeout_s:
                    log.warning("start-up catch-up stopped at %d of %d", runtime.replica.model_version, end)
                    return
                await self._apply_batch(500)
            log.info("replica caught up: model version %d", runtime.replica.model_version)

        async def _apply_batch(self, timeout_ms: int) -> None:
            assert self.consumer is not None
            batch = await self.consumer.getmany(self.tp, timeout_ms=timeout_ms, max_records=5000)
            for record in batch.get(self.tp, ()):
                runtime.apply_record(record.offset, record.value)
            runtime.after_batch()

        @Service.task
        async def _follow(self) -> None:
            while not self.should_stop:
                try:
                    await self._apply_batch(200)
                except ConsumerStoppedError:
                    return
                except KafkaError as exc:
                    log.error("outcomes fetch failed, retrying: %r", exc)
                    await asyncio.sleep(1.0)

        @Service.task
        async def _write_checkpoints(self) -> None:
            await runtime.write_checkpoints(lambda: self.should_stop)

        async def on_stop(self) -> None:
            if self.consumer is not None:
                await self.consumer.stop()
            await runtime.write_final_checkpoint(timeout_s=3.0)
            await runtime.store.close()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        body = runtime.health()
        body["assigned_partitions"] = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == t.signals
        ) if app.consumer else []
        return web.json(body)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(runtime.metrics.registry), content_type="text/plain; version=0.0.4")

    @app.page("/snapshot")
    async def snapshot(web: Any, request: Any) -> Any:
        """The replica as checkpoint bytes, as of now: for operators and the replay tests."""
        return web.bytes(encode_replica(runtime.replica), content_type="application/json")

    app.rl_runtime = runtime  # type: ignore[attr-defined]
    return app, runtime
