"""Every Faust / mode / aiokafka internal the worker relies on, in one place.

Each entry of `INTERNALS` names the internal, why we touch it, what it gained when it was
measured, and the versions it was checked against; `check_internals()` verifies that each one
is still there with the shape we rely on (tests/unit/stream/test_internals.py runs it, so an
upgrade that removes or changes one fails with the name of the internal, not with a
slow or hung worker). The class-level patches are applied once, at the entry point
(`apply_patches`, called by `rl_worker.__main__`); the per-instance accessors below are what
the Faust app and the operator tools call instead of reaching into objects themselves.

Checked against: faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0
(pyproject pins faust-streaming < 0.16). The gains were measured with scripts/bench_worker.py
when the changes were introduced (commit 208452c: together, with the bigger stream buffer,
2.2x the decision rate and p99 from 32 ms to 18 ms); they were not re-measured one by one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

__all__ = [
    "CHECKED_VERSIONS",
    "INTERNALS",
    "Internal",
    "apply_patches",
    "check_internals",
    "fetch_position",
    "guard_producer_flush",
    "memory_rows",
    "refetch_gaps_of",
    "refresh_metadata",
]

CHECKED_VERSIONS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}


@dataclass(frozen=True)
class Internal:
    name: str
    why: str
    gain: str
    check: Callable[[], None]  # raises AssertionError naming what changed


# ---- class-level patches (applied once by apply_patches) -----------------------------------------

_settings: dict[str, int] = {"fetch_max_wait_ms": 1500}


def _tune_worker_consumer() -> None:
    """Set the fetch wait of Faust's worker consumer, which Faust hard-codes to 1500 ms.

    On brokers whose idle fetches sleep (tansu), 1500 ms turns into ~400 ms of latency
    for the first event after a quiet spell; 20 ms costs a few percent of a core when idle.
    """
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_rl_worker_tuned", False):
        return
    original = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _settings["fetch_max_wait_ms"]
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


def _speed_up_message_delivery() -> None:
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
        if (
            len(coros) != 2
            or not asyncio.iscoroutine(coros[0])
            or self._stopped.is_set()
            or self._crashed.is_set()
            # While a rebalance holds the flow, Faust's own wait_first drops the record (it is
            # fetched again after the seek to the committed offset); delivering it here would
            # put a record of the old assignment into a stream buffer that was just cleared.
            or self.suspend_flow.is_set()
        ):
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


def _stop_app_option_scan() -> None:
    """Stop Faust's command line from taking any argument that starts with `--app` for `--app`.

    `faust.cli.base._Group._maybe_import_app` scans sys.argv for `-A`/`--app` with
    `arg.startswith("--app")`, so `tune --apply` and `checkpoint import --app-id X` made it try to
    import "--meta-alpha" / "X" as the app module. `python -m rl_worker` builds the app before the
    command line (app.main()), so the scan has nothing to do here.
    """
    from faust.cli import base

    base._Group._maybe_import_app = lambda self, argv=None: None  # type: ignore[method-assign]


def _report_commits() -> None:
    """Tell the app (`app.rl_on_committed(offsets)`) which input offsets a commit stored, once
    the broker accepted it. Faust records its committed offsets even when the broker refused
    the commit (a rebalance in between); the ledger of published decisions must only count
    offsets the broker has."""
    consumer_cls = faust_consumer.ThreadDelegateConsumer
    if getattr(consumer_cls, "_rl_worker_commit_report", False):
        return
    original = consumer_cls._commit

    async def _commit(self: Any, offsets: Any) -> bool:
        done = await original(self, offsets)
        listener = getattr(self.app, "rl_on_committed", None)
        if done and listener is not None:
            listener(offsets)
        return bool(done)

    consumer_cls._commit = _commit  # type: ignore[method-assign]
    consumer_cls._rl_worker_commit_report = True  # type: ignore[attr-defined]


def _read_changelog_ends() -> None:
    """Make a table's changelog recovery run to the last record, not to the end a broker reports.

    tansu reports a partition's end as its last batch's base offset + 1: Faust's recovery then
    stopped inside the last batch, and the rows written just before a kill were missing from the
    restored table (a committed close was forgotten, its position never completed). The app's
    `rl_true_ends(tps)` reads each changelog partition on from the reported end.
    """
    from faust.tables.recovery import Recovery

    if getattr(Recovery, "_rl_worker_true_ends", False):
        return
    original = Recovery._build_highwaters

    async def _build_highwaters(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await original(self, consumer, tps, destination, title)
        finder = getattr(self.app, "rl_true_ends", None)
        if finder is None or not tps:
            return
        ends = await finder([(tp.topic, tp.partition) for tp in tps])
        for tp in tps:
            end = ends.get((tp.topic, tp.partition))
            if end is not None and end - 1 > destination[tp]:
                destination[tp] = end - 1

    Recovery._build_highwaters = _build_highwaters  # type: ignore[method-assign]
    Recovery._rl_worker_true_ends = True  # type: ignore[attr-defined]


_gap_topics: set[str] = set()


def _treat_gaps_as_undelivered() -> None:
    """No acknowledgement of offset gaps in the input topics: records not delivered stay uncommitted.

    When a fetched record's offset jumps past the last one delivered, Faust takes the offsets in
    between as a gap (compaction, transaction markers) and acknowledges them, so its next commit
    goes past them. After a rebalance on tansu and on Apache Kafka, such a jump also happens when
    records fetched before Faust's seek to the committed offsets were dropped: the commit then
    went past records never processed (decisions lost for good). For the input topics the gap is
    left unacknowledged instead: the partition's commits stop there, the app is told
    (`app.rl_on_hole`) and seeks the partition back to its committed offset (the stall watch would
    after its timeout), and the records are fetched again.
    Input topics must therefore have no gaps of their own (no transactional producer, no
    compaction), which is how a trading stack's event topics are written.
    """
    consumer_cls = faust_consumer.Consumer
    if getattr(consumer_cls, "_rl_worker_gaps", False):
        return
    original = consumer_cls._add_gap

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        if tp.topic in _gap_topics:
            on_hole = getattr(self.app, "rl_on_hole", None)
            if on_hole is not None:
                on_hole(tp, offset_to)
            return
        await original(self, tp, offset_from, offset_to)

    consumer_cls._add_gap = _add_gap  # type: ignore[method-assign]
    consumer_cls._rl_worker_gaps = True  # type: ignore[attr-defined]


def _commit_only_from_the_committed_offset() -> None:
    """An input partition's commit must start at the offset the broker has committed: no commit
    over a hole at its head.

    Faust's `_new_offset` commits the first run of consecutive acknowledged offsets, and refuses
    only when that run starts more than one past the committed offset (`min(acked) - committed
    > 1`), although its committed offset is the next offset to read: a run starting one past it
    was committed over the record at the committed offset itself, never processed. After a
    rebalance its fetch loop also takes a first record one past the committed offset for "no
    gap" (its read offset means the next record there, the last record delivered elsewhere), and
    when its seek to the committed offsets fails (`IllegalStateError: No current assignment`
    inside a second rebalance) it knows no committed offset at all and commits any run. Seen on
    tansu in scripts/soak.py: a position's signal, at the committed offset of its partition when
    the partition changed hands, was committed unprocessed (both decisions lost for good).

    So for the input topics the run must start at or below the committed offset the app knows
    from the broker (`app.rl_committed_offset(topic, partition)`: read at the assignment,
    advanced by each accepted commit) or Faust's own, whichever is higher; otherwise nothing is
    committed, the stall watch sees the partition's commits stop and seeks it back, and the
    record is fetched again. Sooner than that: the app is told (`app.rl_on_hole(tp, base)`), and
    seeks the partition back to `base` at once.
    """
    consumer_cls = faust_consumer.Consumer
    if getattr(consumer_cls, "_rl_worker_commit_base", False):
        return
    original = consumer_cls._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        if tp.topic not in _gap_topics:
            return original(self, tp)  # type: ignore[no-any-return]
        acked = self._acked.get(tp)
        if not acked:
            return None
        base = committed_base(self, tp)
        if base is None:
            return None
        if min(acked) > base:
            on_hole = getattr(self.app, "rl_on_hole", None)
            if on_hole is not None:
                on_hole(tp, min(acked))
            return None
        offset = original(self, tp)
        return None if offset is None or offset <= base else offset

    consumer_cls._new_offset = _new_offset  # type: ignore[method-assign]
    consumer_cls._rl_worker_faust_new_offset = original  # type: ignore[attr-defined]
    consumer_cls._rl_worker_commit_base = True  # type: ignore[attr-defined]


def committed_base(consumer: Any, tp: Any) -> int | None:
    """The offset an input partition's next commit must start from (see
    `_commit_only_from_the_committed_offset`); None while no committed offset is known."""
    finder = getattr(consumer.app, "rl_committed_offset", None)
    known = None if finder is None else finder(tp.topic, tp.partition)
    faust_view = consumer._committed_offset.get(tp)
    candidates = [x for x in (known, faust_view) if x is not None]
    return max(candidates) if candidates else None


def refetch_gaps_of(topics: set[str]) -> None:
    """The topics whose offset gaps are records not delivered (see `_treat_gaps_as_undelivered`)."""
    _gap_topics.update(topics)


def apply_patches(fetch_max_wait_ms: int) -> None:
    """Apply the class-level patches (idempotent); called once by the entry point."""
    _settings["fetch_max_wait_ms"] = fetch_max_wait_ms
    _tune_worker_consumer()
    _speed_up_message_delivery()
    _stop_app_option_scan()
    _report_commits()
    _read_changelog_ends()
    _treat_gaps_as_undelivered()
    _commit_only_from_the_committed_offset()


# ---- per-instance accessors ----------------------------------------------------------------------


def memory_rows(table: Any) -> dict[Any, Any]:
    """The dict inside a Faust table's memory store (`table.data.data`).

    The Store's get / [] go through three Python-level mapping layers, about a microsecond per
    lookup (per event, and per row in each expiry pass); the dict is the store itself, so
    changelog recovery and Faust's own partition revocation see what we write.
    """
    return table.data.data  # type: ignore[no-any-return]


def guard_producer_flush(
    producer: Any, check: Callable[[], None], before: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Make `producer.flush()` (awaited by Faust before every offset commit) await `before` (sends
    still to be made), then flush, then call `check`, so an error `check` raises prevents the
    commit. Replaces the bound method on the instance: Faust's producer has no hook for it."""
    original: Callable[[], Awaitable[None]] = producer.flush

    async def flush() -> None:
        if before is not None:
            await before()
        await original()
        check()

    producer.flush = flush


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """The next offset the aiokafka consumer inside Faust's consumer thread will hand out for `tp`
    (None when it has none, or the shape is not as checked). Read from the main thread: an int
    read, no call into the consumer thread."""
    try:
        subscription = consumer._thread._consumer._subscription.subscription
        state = subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))
    except AttributeError:
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Fetch cluster metadata now, so `partitions_for_topic` sees a topic created a moment ago
    (aiokafka only refreshes on its own schedule; its public `topics()` does not update the
    cluster view that `partitions_for_topic` reads)."""
    await consumer._client.force_metadata_update()


# ---- checks -----------------------------------------------------------------------------------------


def _check_wait_first() -> None:
    method = getattr(faust_consumer.Consumer, "wait_first", None)
    assert method is not None, "faust.transport.consumer.Consumer.wait_first is gone"
    params = list(inspect.signature(getattr(method, "__wrapped__", method)).parameters)
    assert params[:2] == ["self", "coros"] and "timeout" in params, (
        f"Consumer.wait_first(self, *coros, timeout=None) changed: now {params}"
    )
    assert tuple(WaitResults._fields) == ("done", "results", "stopped"), (
        f"mode.services.WaitResults fields changed: {WaitResults._fields}"
    )
    from mode import Service

    source = inspect.getsource(Service)
    for attr in ("self._stopped", "self._crashed"):
        assert attr in source, f"mode Service no longer has {attr} (the patched wait_first reads it)"
    assert "self.suspend_flow" in inspect.getsource(faust_consumer.Consumer), (
        "faust Consumer.suspend_flow is gone (the patched wait_first reads it)"
    )


def _check_commit_report() -> None:
    method = getattr(faust_consumer.ThreadDelegateConsumer, "_commit", None)
    assert method is not None, "faust ThreadDelegateConsumer._commit is gone"
    params = list(inspect.signature(getattr(method, "__wrapped__", method)).parameters)
    assert params == ["self", "offsets"], f"ThreadDelegateConsumer._commit(self, offsets) changed: now {params}"
    assert "_committed_offset.update(committable_offsets)" in inspect.getsource(faust_consumer.Consumer), (
        "faust Consumer._commit_offsets no longer records committed offsets as checked"
    )


def _check_gaps() -> None:
    method = getattr(faust_consumer.Consumer, "_add_gap", None)
    assert method is not None, "faust Consumer._add_gap is gone"
    params = list(inspect.signature(getattr(method, "__wrapped__", method)).parameters)
    assert params == ["self", "tp", "offset_from", "offset_to"], (
        f"Consumer._add_gap(self, tp, offset_from, offset_to) changed: now {params}"
    )
    assert "await self._add_gap(tp, r_offset + 1, offset)" in inspect.getsource(faust_consumer.Consumer), (
        "faust's fetch loop no longer reports gaps through _add_gap as checked"
    )


def _check_commit_base() -> None:
    method = getattr(faust_consumer.Consumer, "_new_offset", None)
    assert method is not None, "faust Consumer._new_offset is gone"
    params = list(inspect.signature(getattr(method, "__wrapped__", method)).parameters)
    assert params == ["self", "tp"], f"Consumer._new_offset(self, tp) changed: now {params}"
    source = inspect.getsource(faust_consumer.Consumer)
    for attr in ("self._acked = defaultdict(list)", "self._committed_offset = defaultdict(lambda: None)"):
        assert attr in source, f"faust Consumer no longer keeps `{attr}` (the commit rule reads it)"
    assert "offset = self._new_offset(tp)" in source, (
        "faust's commit no longer asks _new_offset for each partition's offset"
    )


def _check_changelog_ends() -> None:
    from faust.tables.recovery import Recovery

    method = getattr(Recovery, "_build_highwaters", None)
    assert method is not None, "faust Recovery._build_highwaters is gone"
    params = list(inspect.signature(method).parameters)
    assert params == ["self", "consumer", "tps", "destination", "title"], (
        f"Recovery._build_highwaters(self, consumer, tps, destination, title) changed: now {params}"
    )
    assert "value - 1" in inspect.getsource(Recovery), "faust's recovery no longer takes highwater - 1 as its target"


def _check_worker_consumer() -> None:
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    method = getattr(thread_cls, "_create_worker_consumer", None)
    assert method is not None, "faust AIOKafkaConsumerThread._create_worker_consumer is gone"
    params = list(inspect.signature(method).parameters)
    assert params == ["self", "transport"], f"_create_worker_consumer(self, transport) changed: now {params}"
    source = inspect.getsource(AIOKafkaConsumer.__init__)
    assert "self._fetch_max_wait_ms" in source, "aiokafka AIOKafkaConsumer no longer keeps _fetch_max_wait_ms"


def _check_memory_rows() -> None:
    from faust.stores.memory import Store

    source = inspect.getsource(Store)
    assert "self.data" in source, "faust memory Store no longer keeps its rows in `self.data`"


def _check_producer_flush() -> None:
    from faust.transport.drivers.aiokafka import Producer

    flush = getattr(Producer, "flush", None)
    assert flush is not None and inspect.iscoroutinefunction(flush), "faust aiokafka Producer.flush changed"


def _check_metadata() -> None:
    from aiokafka.client import AIOKafkaClient

    method = getattr(AIOKafkaClient, "force_metadata_update", None)
    assert method is not None and list(inspect.signature(method).parameters) == ["self"], (
        "aiokafka AIOKafkaClient.force_metadata_update() is gone or changed"
    )
    assert "self._client" in inspect.getsource(AIOKafkaConsumer.__init__), "AIOKafkaConsumer._client is gone"


def _check_fetch_position() -> None:
    from aiokafka.consumer.subscription_state import Assignment, TopicPartitionState

    assert hasattr(Assignment, "state_value"), "aiokafka Assignment.state_value is gone"
    source = inspect.getsource(TopicPartitionState)
    for attr in ("def has_valid_position", "def position", "def paused"):
        assert attr in source, f"aiokafka TopicPartitionState no longer has `{attr}`"
    assert "self._subscription" in inspect.getsource(AIOKafkaConsumer.__init__), (
        "AIOKafkaConsumer._subscription is gone"
    )
    thread_source = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread)
    assert "self._consumer" in thread_source, "faust AIOKafkaConsumerThread._consumer is gone"
    consumer_source = inspect.getsource(faust_consumer.Consumer)
    for attr in ("self._read_offset", "self._paused_partitions", "self._buffered_partitions"):
        assert attr in consumer_source, f"faust Consumer no longer keeps {attr}"


def _check_app_option_scan() -> None:
    from faust.cli import base

    method = getattr(base._Group, "_maybe_import_app", None)
    assert method is not None, "faust.cli.base._Group._maybe_import_app is gone"
    assert "self._maybe_import_app()" in inspect.getsource(base._Group.make_context), (
        "faust's _Group.make_context no longer calls _maybe_import_app"
    )


INTERNALS = (
    Internal(
        "faust Consumer.wait_first (+ mode WaitResults, Service._stopped/_crashed)",
        "record delivery without four asyncio tasks and an asyncio.wait per record",
        "about a tenth of the worker's CPU per record (py-spy, commit 208452c)",
        _check_wait_first,
    ),
    Internal(
        "faust AIOKafkaConsumerThread._create_worker_consumer, aiokafka AIOKafkaConsumer._fetch_max_wait_ms",
        "Faust hard-codes a 1500 ms fetch wait; RL_FETCH_MAX_WAIT_MS (20 ms) instead",
        "~400 ms less latency for the first event after a quiet spell on tansu",
        _check_worker_consumer,
    ),
    Internal(
        "faust memory Store.data (table.data.data)",
        "rows read and written in the store's own dict",
        "about 1 us per lookup (per event, and per row in each expiry pass)",
        _check_memory_rows,
    ),
    Internal(
        "faust Producer.flush, replaced on the instance",
        "a send that failed after retries must fail the flush Faust awaits before committing",
        "correctness, not speed: no offset commit past a lost decision (direct sends are the speed-up)",
        _check_producer_flush,
    ),
    Internal(
        "faust ThreadDelegateConsumer._commit, wrapped",
        "the ledger of published decisions drops a decision only after a commit the broker accepted",
        "correctness: 0 repeated decision ids after a kill (scripts/soak.py)",
        _check_commit_report,
    ),
    Internal(
        "faust Consumer._add_gap, wrapped",
        "offset gaps in the input topics are records not delivered: left uncommitted, fetched again",
        "correctness: no commit past records never processed after a rebalance (scripts/soak.py)",
        _check_gaps,
    ),
    Internal(
        "faust Consumer._new_offset, wrapped",
        "an input partition's commit starts at its committed offset: never over a record not processed",
        "correctness: no position's records committed unprocessed after a rebalance (scripts/soak.py, tansu)",
        _check_commit_base,
    ),
    Internal(
        "faust Recovery._build_highwaters, wrapped",
        "a table's changelog recovery reads to the last record (tansu reports ends low by a batch)",
        "correctness: no completed position forgotten by a restored positions table (scripts/soak.py)",
        _check_changelog_ends,
    ),
    Internal(
        "aiokafka AIOKafkaConsumer._client.force_metadata_update",
        "see a topic's partitions right after it was created (simulator, test harness)",
        "start-up of the simulator without polling for seconds",
        _check_metadata,
    ),
    Internal(
        "aiokafka subscription state (fetch position) inside faust's consumer thread; faust Consumer "
        "_read_offset / _paused_partitions / _buffered_partitions, read",
        "records the fetcher handed out that never reached the agent are noticed in seconds",
        "recovery time: a swallowed batch waited for the stall watch's 10 s (scripts/soak.py)",
        _check_fetch_position,
    ),
    Internal(
        "faust cli _Group._maybe_import_app, made a no-op",
        "it reads any argument starting with --app as --app: `tune --apply`, `checkpoint import --app-id`",
        "correctness: the seed's `--apply` flag works",
        _check_app_option_scan,
    ),
)


def check_internals() -> list[str]:
    """One message per internal that is gone or changed (empty when all are as checked)."""
    problems = []
    for internal in INTERNALS:
        try:
            internal.check()
        except AssertionError as exc:
            problems.append(f"{internal.name}: {exc} (checked: {CHECKED_VERSIONS}; used for: {internal.why})")
    return problems
