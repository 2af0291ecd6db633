"""`rl-worker backfill`: a bounded replay of the trading stack's history into a new model namespace.

It reads a bounded range of the three input topics and of the decisions topic (a batch job with
its own assigned partitions, not a consumer group), joins the events of each position with the
worker's own join (`PositionJoiner`), takes for each position the actions that were traded,
learns from the completed positions in a deterministic order, writes them to the target's
learning log, and writes a checkpoint to the target's namespace.

Which actions: the published decisions, matched by `decision_id` (`<position_id>:meta`,
`<position_id>:sizing`), with the state they were taken in; or, for positions older than the
worker, the actions the events carry themselves (the signal's `strategy`/`model`/`weight`, the
execution's `size_multiplier`/`leverage`), in the state this replay computes at that event.
`--actions decisions|events|both` (default both: decisions first). Positions with neither are
counted and skipped.

Order: each input partition is read in offset order, as the live worker reads it, and the
partitions are merged by (record timestamp, topic: signals before executions before closes,
partition, offset) -- the order of a sort by that key whenever a partition's timestamps grow with
its offsets; a position is learned from when its last event arrives, as the live worker learns
from it when it completes. The merge streams: it holds one fetch per partition, the open
positions' rows and the decisions not yet used, never the range. So the same range always
gives the same learning log and a byte-identical checkpoint; a history traded one position at
a time gives the live replica's tables bit for bit, and one with many positions open at once
gives the same visit counts per state and action, with Q-values that differ only by the order
in which positions that closed within the same moments were learned.

Why learning from logged actions is sound, and what it assumes: Q-learning is off-policy, its
target `r + gamma * max_a' Q(s', a')` does not depend on the policy that chose the action, so
any behaviour policy that tried the actions gives an estimate of the greedy policy's values. It
assumes that the reward of a position depends only on the position and the actions taken (not on
what the model would have done elsewhere), that the logged state is the state the action was
taken in (true for published decisions; for event actions the state is rebuilt from the same
events and the replay's own trackers, which is what a worker would have seen had it been
running), and that the behaviour policy covers the actions whose values matter: a table learned
from a stack that always traded one strategy knows nothing about the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import struct
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rl_worker.contract import InvalidEventError, PositionClosed, SignalGenerated, TradeExecuted, decode_event
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS
from rl_worker.core.config import CoreConfig
from rl_worker.core.market import MarketFeatures
from rl_worker.core.outcome import Outcome
from rl_worker.core.qlearning import Selection
from rl_worker.core.replica import Decision, ModelReplica
from rl_worker.core.snapshot import encode_replica
from rl_worker.core.state import MetaState, SizingState
from rl_worker.errors import RlWorkerError
from rl_worker.ops.exceptions import CommandError
from rl_worker.ops.learning_log import open_store
from rl_worker.positions import PositionJoiner, PositionRow
from rl_worker.settings import Settings, check_app_id, learning_log_name, redis_namespace
from rl_worker.stream.connections import kafka_options
from rl_worker.stream.exceptions import CheckpointStoreError
from rl_worker.stream.topics import event_type_by_topic

__all__ = [
    "ActionsMode",
    "BackfillCounts",
    "BackfillResult",
    "InputRecord",
    "LoggedActions",
    "LoggedPolicyReplica",
    "NoLoggedActionError",
    "parse_range",
    "replay_order",
    "replay_positions",
    "run_backfill",
]

ActionsMode = Literal["decisions", "events", "both"]
_TOPIC_RANK = {"SIGNAL_GENERATED": 0, "TRADE_EXECUTED": 1, "POSITION_CLOSED": 2}
_IDLE_FETCH_MS = 200  # a fetch this long that returns nothing, past the reported end: the partition's end


class NoLoggedActionError(RlWorkerError):
    """No action was logged for this decision: the position is skipped."""


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    state: dict[str, str | float]
    action_index: int
    explored: bool
    propensity: float
    epsilon: float


@dataclass
class LoggedActions:
    """The actions that were traded, by decision id: published decisions and the events' own."""

    mode: ActionsMode = "both"
    decisions: dict[str, LoggedDecision] = field(default_factory=dict)
    event_actions: dict[str, int] = field(default_factory=dict)

    def add_decision_record(self, value: bytes | None) -> bool:
        """One `rl.decisions` record; False if it is not a decision this version can use."""
        try:
            record = json.loads(value or b"")
            agent = record["agent"]
            index = int(record["action_index"])
            n_actions = len(META_ACTIONS) if agent == "meta" else len(SIZING_ACTIONS)
            if agent not in ("meta", "sizing") or not 0 <= index < n_actions:
                return False
            self.decisions[str(record["decision_id"])] = LoggedDecision(
                dict(record["state"]), index, bool(record["explored"]), float(record["propensity"]),
                float(record["epsilon"]),
            )
        except (ValueError, KeyError, TypeError):
            return False
        return True

    def forget(self, position_id: str) -> None:
        """Drop a position's actions once it is learned (or skipped): the memory held is the open positions'."""
        for agent in ("meta", "sizing"):
            decision_id = f"{position_id}:{agent}"
            self.decisions.pop(decision_id, None)
            self.event_actions.pop(decision_id, None)

    def add_event_actions(self, position_id: str, event: SignalGenerated | TradeExecuted | PositionClosed) -> None:
        """The actions an input event says the stack used (signal and execution: strategy/model/weight;
        execution and close: size_multiplier/leverage; a later event's overrides an earlier one's)."""
        # attributes read by type: a missing one on a pydantic model costs a __getattr__ and an exception
        if not isinstance(event, PositionClosed):
            strategy, model, weight = event.strategy, event.model, event.weight
            if strategy is not None and model is not None and weight is not None:
                index = _META_INDEX.get((strategy, model, round(weight, 6)))
                if index is not None:
                    self.event_actions[f"{position_id}:meta"] = index
        if not isinstance(event, SignalGenerated):
            size, leverage = event.size_multiplier, event.leverage
            if size is not None and leverage is not None:
                index = _SIZING_INDEX.get((round(size, 6), round(leverage, 6)))
                if index is not None:
                    self.event_actions[f"{position_id}:sizing"] = index


_META_INDEX = {(a.strategy, a.model, round(a.weight, 6)): i for i, a in enumerate(META_ACTIONS)}
_SIZING_INDEX = {(round(a.size_multiplier, 6), round(float(a.leverage), 6)): i for i, a in enumerate(SIZING_ACTIONS)}


class LoggedPolicyReplica(ModelReplica):
    """A replica that learns like any other but decides nothing: it answers with the logged actions.

    The joiner asks it for decisions exactly as it asks the live replica; the answer is the
    action that was traded, in the state it was traded in (a published decision's state, its
    key rebuilt with this model's bins) or, for an event's own action, the state this replay is
    in at that event. A decision with no logged action raises NoLoggedActionError.
    """

    def __init__(self, config: CoreConfig, logged: LoggedActions) -> None:
        super().__init__(config)
        self.logged = logged
        self.from_decisions = 0
        self.from_events = 0

    def _logged(self, decision_id: str) -> LoggedDecision | None:
        return None if self.logged.mode == "events" else self.logged.decisions.get(decision_id)

    def _event_action(self, decision_id: str) -> int:
        action = None if self.logged.mode == "decisions" else self.logged.event_actions.get(decision_id)
        if action is None:
            raise NoLoggedActionError(decision_id)
        self.from_events += 1
        return action

    def decide_meta(
        self, market: MarketFeatures, confidence: float, decision_id: str, stack: int | None = None
    ) -> Decision:
        logged = self._logged(decision_id)
        if logged is not None:
            self.from_decisions += 1
            state = MetaState(**logged.state)  # type: ignore[arg-type]
            selection = Selection(logged.action_index, logged.explored, logged.propensity)
            return Decision(state, self._meta_keys.key(*state), selection, logged.epsilon, self.model_version)
        action = self._event_action(decision_id)
        decision = super().decide_meta(market, confidence, decision_id, stack)
        return decision._replace(selection=Selection(action, False, 1.0))

    def decide_sizing(
        self,
        signal_confidence: float,
        portfolio_exposure: float,
        volatility: float,
        decision_id: str,
        max_size_multiplier: float | None = None,
        max_leverage: float | None = None,
        regime: str | None = None,
        meta_action: int | None = None,
        edge: int | None = None,
    ) -> Decision:
        logged = self._logged(decision_id)
        if logged is not None:
            self.from_decisions += 1
            state = SizingState(**logged.state)  # type: ignore[arg-type]
            selection = Selection(logged.action_index, logged.explored, logged.propensity)
            key = self._edge_prefix(edge) + self._sizing_keys.key(*state)  # this replay's edge, as the join read it
            return Decision(state, key, selection, logged.epsilon, self.model_version)
        action = self._event_action(decision_id)
        decision = super().decide_sizing(
            signal_confidence,
            portfolio_exposure,
            volatility,
            decision_id,
            max_size_multiplier,
            max_leverage,
            regime,
            meta_action,
            edge,
        )
        return decision._replace(selection=Selection(action, False, 1.0))


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record of an input topic as read from the broker."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass
class BackfillCounts:
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    applied: int = 0
    skipped: int = 0  # positions without a logged action
    incomplete: int = 0  # positions whose events in range never completed them
    skipped_ids: set[str] = field(default_factory=set)


def replay_order(records: Iterable[InputRecord], expected_type: dict[str, str]) -> list[InputRecord]:
    """The deterministic replay order of records held in memory: `merge_in_replay_order` of their partitions."""
    by_partition: dict[tuple[str, int], list[InputRecord]] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition), []).append(record)
    for partition in by_partition.values():
        partition.sort(key=lambda r: r.offset)
    rank = {topic: _TOPIC_RANK[kind] for topic, kind in expected_type.items()}
    return list(heapq.merge(*by_partition.values(), key=replay_key(rank)))


def replay_key(rank: dict[str, int]) -> Callable[[InputRecord], tuple[int, int, int, int]]:
    """The merge key: (record timestamp, signals < executions < closes, partition, offset)."""
    return lambda r: (r.timestamp_ms, rank[r.topic], r.partition, r.offset)


class PositionReplay:
    """Joins records fed in replay order and learns from each completed position as it completes.

    Invalid events are counted and left out (the live worker dead-letters them); a position with
    no logged action for a decision is counted as skipped and its later events are ignored. Only
    the open positions' rows are held; a completed position leaves its id behind (to count
    duplicates), nothing else.
    """

    def __init__(
        self,
        replica: LoggedPolicyReplica,
        expected_type: dict[str, str],
        policy: str,
        counts: BackfillCounts,
        max_record_bytes: int = 65536,
    ) -> None:
        self.replica = replica
        self.expected_type = expected_type
        self.counts = counts
        self.max_record_bytes = max_record_bytes
        self.joiner = PositionJoiner(replica, policy, lambda: 0)  # decision timestamps are not learned from
        self.rows: dict[str, PositionRow] = {}
        self.done: set[str] = set()

    def feed(self, records: Iterable[InputRecord]) -> Iterator[tuple[str, bytes]]:
        """Yields (position id, learning-log record) for each position `records` complete, in that order."""
        counts, rows, done, skipped = self.counts, self.rows, self.done, self.counts.skipped_ids
        replica, joiner, expected_type, max_bytes = self.replica, self.joiner, self.expected_type, self.max_record_bytes
        logged = replica.logged
        wants_events = logged.mode != "decisions"
        for record in records:
            counts.events += 1
            try:
                key = record.key
                if key is None or len(key) > 256:
                    raise InvalidEventError("record key is missing or too long", "InvalidKey")
                position_id = key.decode("utf-8")
                event = decode_event(record.value, expected_type.get(record.topic), max_bytes)
                if event.position_id != position_id:
                    raise InvalidEventError("record key differs from position_id", "KeyMismatch")
            except (InvalidEventError, UnicodeDecodeError):
                counts.invalid += 1
                continue
            if position_id in done:
                counts.duplicates += 1
                continue
            if position_id in skipped:
                continue
            if wants_events:
                logged.add_event_actions(position_id, event)
            try:
                result = joiner.handle(
                    rows.get(position_id), event, (record.topic, record.partition, record.offset), record.timestamp_ms
                )
            except NoLoggedActionError:
                counts.skipped += 1
                skipped.add(position_id)
                rows.pop(position_id, None)
                logged.forget(position_id)
                continue
            except InvalidEventError:
                counts.invalid += 1
                continue
            if result.status != "applied":
                counts.duplicates += 1
                continue
            rows[position_id] = result.row
            for emit in result.emits:
                if emit.kind == "outcome":
                    # the Outcome the join built (its JSON is `emit.value`): the values a replica
                    # reading the log validates back, without the round trip
                    replica.apply(emit.outcome if emit.outcome is not None else Outcome.model_validate_json(emit.value))
                    counts.applied += 1
                    done.add(position_id)
                    del rows[position_id]  # only that it completed matters from here on
                    logged.forget(position_id)
                    yield position_id, emit.value
        counts.incomplete = len(rows)


def replay_positions(
    records: Iterable[InputRecord],
    replica: LoggedPolicyReplica,
    expected_type: dict[str, str],
    policy: str,
    counts: BackfillCounts,
    max_record_bytes: int = 65536,
) -> Iterator[tuple[str, bytes]]:
    """`PositionReplay` over records already in replay order; yields (position id, learning-log record)."""
    return PositionReplay(replica, expected_type, policy, counts, max_record_bytes).feed(records)


# ---- the batch job -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeStart:
    kind: Literal["earliest", "time", "offsets"]
    time_ms: int | None = None
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


def _parse_time(text: str, option: str) -> int:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"{option} {text!r} is not earliest/latest, an ISO-8601 time or topic:partition:offset"
        ) from None
    if parsed.tzinfo is None:
        raise CommandError(f"{option} {text!r} needs a time zone (e.g. 2026-11-30T12:00:00Z)")
    return int(parsed.timestamp() * 1000)


def parse_range(start: str, end: str, inputs: list[str]) -> tuple[RangeStart, int | None]:
    """`--from` (earliest | ISO time | topic:partition:offset,...) and `--to` (latest | ISO time, ms)."""
    if start == "earliest":
        begin = RangeStart("earliest")
    elif ":" in start and not start[:4].isdigit():
        offsets: dict[TopicPartition, int] = {}
        for part in start.split(","):
            try:
                topic, partition, offset = part.strip().rsplit(":", 2)
                tp, at = TopicPartition(topic, int(partition)), int(offset)
            except ValueError:
                raise CommandError(f"--from {part!r} is not topic:partition:offset") from None
            if topic not in inputs:
                raise CommandError(f"--from names {topic}, which is not an input topic ({', '.join(inputs)})")
            if at < 0:
                raise CommandError(f"--from {part}: offsets start at 0")
            offsets[tp] = at
        begin = RangeStart("offsets", offsets=offsets)
    else:
        begin = RangeStart("time", time_ms=_parse_time(start, "--from"))
    to_ms = None if end == "latest" else _parse_time(end, "--to")
    if to_ms is not None and begin.time_ms is not None and to_ms <= begin.time_ms:
        raise CommandError("--to must be later than --from")
    return begin, to_ms


@dataclass
class BackfillResult:
    counts: BackfillCounts
    target_log: str
    checkpoint_offset: int
    checkpoint_sha256: str
    seconds: float
    events_read: int
    decisions_read: int
    from_decisions: int
    from_events: int
    phases: dict[str, float] = field(default_factory=dict)  # seconds: read decisions, read events + join + learn, write

    @property
    def rate(self) -> float:
        return self.counts.applied / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        c = self.counts
        return (
            f"backfill: {c.applied} positions applied, {c.skipped} skipped (no actions), {c.incomplete} incomplete, "
            f"in {self.seconds:.1f} s ({self.rate:,.0f} positions/s)"
        )


async def _true_ends(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset after each partition's last record. A reported end is only a lower bound (tansu
    reports the last batch's base offset + 1), so read on from just before it to the last record:
    until every partition's position has passed its reported end, then one short fetch that
    returns nothing (the last batch came whole with the first fetch past the reported end)."""
    ends = dict(await consumer.end_offsets(tps))
    wanted = [tp for tp in tps if ends[tp] > 0]
    for tp in wanted:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + 30
    while wanted:
        batch = await consumer.getmany(*wanted, timeout_ms=_IDLE_FETCH_MS, max_records=100_000)
        for tp, records in batch.items():
            if records:
                ends[tp] = max(ends[tp], records[-1].offset + 1)
        if not any(batch.values()):
            positions = [await consumer.position(tp) for tp in wanted]
            if all(position >= ends[tp] for position, tp in zip(positions, wanted, strict=True)):
                return ends
        if time.monotonic() > deadline:
            raise CommandError(f"could not read to the end of {sorted(str(tp) for tp in wanted)}", 1)
    return ends


async def _read(
    consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int],
    on_record: Callable[[TopicPartition, Any], object], on_progress: Callable[[int], None] | None = None,
) -> int:
    """Every record of [start, end) of each partition, handed to `on_record`; returns how many."""
    todo = {tp for tp in starts if starts[tp] < ends[tp]}
    for tp in todo:
        consumer.seek(tp, starts[tp])
    read = idle = 0
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=500, max_records=20000)
        idle = 0 if any(batch.values()) else idle + 1
        if idle > 20:
            raise CommandError(f"reading stalled before the end of {sorted(str(tp) for tp in todo)}", 1)
        for tp, records in batch.items():
            end = ends[tp]
            for record in records:
                if record.offset >= end:
                    todo.discard(tp)
                    break
                on_record(tp, record)
                read += 1
            if records and records[-1].offset >= end - 1:
                todo.discard(tp)
        if on_progress is not None:
            on_progress(read)
    return read


async def _read_in_replay_order(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    rank: dict[str, int],
    keep: Callable[[int], bool],
) -> AsyncIterator[tuple[list[InputRecord], int]]:
    """The records of [start, end) of every partition, merged in replay order, in chunks (with the
    count of records read so far, kept or not).

    A k-way merge: each partition is read in offset order (as the live worker reads it) and the
    merge takes the smallest (timestamp, topic rank, partition, offset) among the partitions'
    next records, so it holds one fetch per partition, never the range. When every partition's
    timestamps grow with its offsets (one stack's producer time) this is the order a sort of the
    whole range by that key would give; otherwise each partition keeps its own order. `keep`
    filters by record timestamp (the range's times) without changing the order.
    """
    key = replay_key(rank)
    buffers: dict[TopicPartition, deque[InputRecord]] = {}
    todo: set[TopicPartition] = set()  # partitions with records left to fetch
    for tp, start in starts.items():
        if start < ends[tp]:
            consumer.seek(tp, start)
            todo.add(tp)
            buffers[tp] = deque()
    heap: list[tuple[tuple[int, int, int, int], TopicPartition]] = []
    read = idle = 0
    while True:
        # every partition that may still have records needs its next one before the merge can go on
        empty = [tp for tp in todo if not buffers[tp]]
        while empty:
            batch = await consumer.getmany(*empty, timeout_ms=500, max_records=20000)
            idle = 0 if any(batch.values()) else idle + 1
            if idle > 20:
                raise CommandError(f"reading stalled before the end of {sorted(str(tp) for tp in empty)}", 1)
            for tp, records in batch.items():
                end = ends[tp]
                buffer = buffers[tp]
                was_empty = not buffer
                for r in records:
                    if r.offset >= end:
                        break
                    read += 1
                    if keep(r.timestamp):
                        buffer.append(InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value))
                if records and records[-1].offset >= end - 1:
                    todo.discard(tp)
                if was_empty and buffer:
                    heapq.heappush(heap, (key(buffer[0]), tp))
            empty = [tp for tp in todo if not buffers[tp]]
        if not heap:
            return
        chunk: list[InputRecord] = []
        while heap:
            _, tp = heap[0]
            buffer = buffers[tp]
            chunk.append(buffer.popleft())
            if buffer:
                heapq.heapreplace(heap, (key(buffer[0]), tp))
            else:
                heapq.heappop(heap)
                if tp in todo:
                    break  # its next record is not fetched yet
        yield chunk, read


async def _starts(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], begin: RangeStart, ends: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    first = dict(await consumer.beginning_offsets(tps))
    if begin.kind == "earliest":
        return first
    if begin.kind == "offsets":
        unknown = set(begin.offsets) - set(tps)
        if unknown:
            raise CommandError(f"--from names partitions that do not exist: {sorted(str(tp) for tp in unknown)}")
        starts = dict(first)
        for tp, offset in begin.offsets.items():
            if not first[tp] <= offset <= ends[tp]:
                raise CommandError(
                    f"--from {tp.topic}:{tp.partition}:{offset} is outside the partition's offsets "
                    f"[{first[tp]}, {ends[tp]}]"
                )
            starts[tp] = offset
        return starts
    assert begin.time_ms is not None
    try:
        found = await consumer.offsets_for_times({tp: begin.time_ms for tp in tps})
    except KafkaError:  # a broker without the API: read from the start, the time filter does the rest
        return first
    return {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}  # type: ignore[union-attr]


async def run_backfill(
    settings: Settings,
    start: str,
    end: str,
    target_app_id: str,
    actions: ActionsMode = "both",
    target_log: str | None = None,
    console: Console | None = None,
    show_progress: bool | None = None,
) -> BackfillResult:
    """The whole job; raises CommandError (nothing written) when it cannot complete."""
    console = console or Console(stderr=True)
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    try:
        check_app_id(target_app_id)
    except ValueError as exc:
        raise CommandError(f"--target-app-id {target_app_id!r}: {exc}") from None
    if target_app_id == settings.app_id:
        raise CommandError("--target-app-id must be a new model namespace, not the live one (RL_APP_ID)")
    topics = settings.topics
    expected_type = event_type_by_topic(topics)
    inputs = list(expected_type)
    begin, to_ms = parse_range(start, end, inputs)
    log_topic = target_log or learning_log_name(target_app_id)
    if log_topic in (settings.topics.outcomes, *inputs, topics.decisions):
        raise CommandError(f"the target learning log {log_topic} is a topic the live model uses")
    started = time.perf_counter()
    store = open_store(settings, redis_namespace(target_app_id))
    consumer = AIOKafkaConsumer(
        **kafka_options(settings), enable_auto_commit=False, fetch_max_wait_ms=100,
        max_partition_fetch_bytes=2 * 1024 * 1024, fetch_max_bytes=16 * 1024 * 1024, auto_offset_reset="none",
    )
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=10000)
    try:
        try:
            await asyncio.wait_for(consumer.start(), 20)
            await asyncio.wait_for(admin.start(), 20)
            existing = set(await admin.list_topics())
        except (KafkaError, OSError, TimeoutError) as exc:
            raise CommandError(f"broker {settings.kafka_bootstrap} unreachable: {exc!r}", 1) from exc
        missing = [t for t in inputs if t not in existing]
        if missing:
            raise CommandError(f"input topics missing on {settings.kafka_bootstrap}: {missing}")
        if actions != "events" and topics.decisions not in existing:
            raise CommandError(f"decisions topic {topics.decisions} missing (use --actions events)")
        try:
            if await store.offsets():
                raise CommandError(f"{redis_namespace(target_app_id)} already holds checkpoints: "
                                   "backfill into a new app id")
        except CheckpointStoreError as exc:
            raise CommandError(f"checkpoint store unreachable: {exc}", 1) from exc
        if log_topic in existing:
            log_tp = TopicPartition(log_topic, 0)
            if (await consumer.end_offsets([log_tp]))[log_tp] > 0:
                raise CommandError(f"target learning log {log_topic} already has records: backfill into a new app id")

        # 1. where the range starts and ends, on the input and decisions partitions alike
        partition_counts = {
            described["topic"]: len(described["partitions"])
            for described in await admin.describe_topics([*inputs, topics.decisions] if actions != "events" else inputs)
        }
        input_tps = [TopicPartition(t, p) for t in inputs for p in range(partition_counts[t])]
        decision_tps = (
            [TopicPartition(topics.decisions, p) for p in range(partition_counts[topics.decisions])]
            if actions != "events" else []
        )
        consumer.assign(input_tps + decision_tps)
        t_read = time.perf_counter()
        all_ends = await _true_ends(consumer, input_tps + decision_tps)
        input_ends = {tp: all_ends[tp] for tp in input_tps}
        input_starts = await _starts(consumer, input_tps, begin, input_ends)
        total = sum(max(0, input_ends[tp] - input_starts[tp]) for tp in input_tps)
        from_ms = begin.time_ms

        def keep(ts: int) -> bool:
            return not ((from_ms is not None and ts < from_ms) or (to_ms is not None and ts >= to_ms))

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console, disable=not show_progress,
        )
        phases: dict[str, float] = {}
        with progress, tempfile.TemporaryFile() as spool:
            # 2. the published decisions (their ids name the position and agent), held until their
            #    position is learned
            logged = LoggedActions(actions)
            decisions_read = 0
            if actions != "events":
                decision_ends = {tp: all_ends[tp] for tp in decision_tps}
                decision_begin = begin if begin.kind == "time" else RangeStart("earliest")
                decision_starts = await _starts(consumer, decision_tps, decision_begin, decision_ends)
                reading_decisions = progress.add_task(
                    "reading decisions", rate="",
                    total=sum(max(0, decision_ends[tp] - decision_starts[tp]) for tp in decision_tps),
                )
                decisions_read = await _read(
                    consumer, decision_starts, decision_ends,
                    lambda tp, r: logged.add_decision_record(r.value),
                    lambda n: progress.update(reading_decisions, completed=n),
                )
                consumer.pause(*decision_tps)  # read: no more fetches for them
            phases["read decisions"] = time.perf_counter() - t_read

            # 3. the input range, streamed in replay order: joined, learned from, and each learned
            #    position's log record spooled to a file (the log is written only once all is learned)
            replica = LoggedPolicyReplica(settings.core, logged)
            counts = BackfillCounts()
            replay = PositionReplay(replica, expected_type, settings.policy, counts, settings.max_record_bytes)
            joining = progress.add_task("events", total=total, rate="")
            t0 = time.perf_counter()
            rank = {topic: _TOPIC_RANK[kind] for topic, kind in expected_type.items()}
            events_read = 0
            n_outcomes = 0
            async for chunk, events_read in _read_in_replay_order(consumer, input_starts, input_ends, rank, keep):
                for position_id, value in replay.feed(chunk):
                    key = position_id.encode()
                    spool.write(struct.pack(">II", len(key), len(value)))
                    spool.write(key)
                    spool.write(value)
                    n_outcomes += 1
                elapsed = time.perf_counter() - t0
                progress.update(joining, completed=events_read,
                                rate=f"{counts.applied / elapsed:,.0f} positions/s" if elapsed > 0 else "")
            counts.incomplete = len(replay.rows)
            phases["read events, join and learn"] = time.perf_counter() - t0
            if not n_outcomes:
                raise CommandError(
                    f"no completed position in the range ({counts.events} events, {counts.skipped} positions "
                    f"without actions, {counts.incomplete} incomplete): nothing written"
                )

            # 4. the target's learning log, then its checkpoint
            writing = progress.add_task("writing learning log", total=n_outcomes, rate="")
            if log_topic not in existing:
                try:
                    await admin.create_topics([NewTopic(log_topic, 1, 1, topic_configs={
                        "retention.ms": "-1", "retention.bytes": "-1"})])
                except TopicAlreadyExistsError:
                    pass
            t_write = time.perf_counter()
            spool.seek(0)
            last_offset = await _write_log(settings, log_topic, _spooled(spool), n_outcomes,
                                           lambda n: progress.update(writing, completed=n))
        if last_offset != n_outcomes - 1 or replica.log_offset != last_offset:
            raise CommandError(
                f"{log_topic} took the records at offsets up to {last_offset}, expected {n_outcomes - 1}: "
                "another writer? The checkpoint was not written", 1
            )
        data = encode_replica(replica)
        try:
            await store.save(last_offset, data)
        except CheckpointStoreError as exc:
            raise CommandError(f"learning log written, checkpoint not: {exc}", 1) from exc
        phases["write"] = time.perf_counter() - t_write
    finally:
        await consumer.stop()
        await admin.close()
        await store.close()
    return BackfillResult(
        counts, log_topic, last_offset, hashlib.sha256(data).hexdigest(), time.perf_counter() - started,
        events_read, decisions_read, replica.from_decisions, replica.from_events, phases,
    )


def _spooled(spool: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each spooled learning-log record, in the order written."""
    while header := spool.read(8):
        key_size, value_size = struct.unpack(">II", header)
        yield spool.read(key_size), spool.read(value_size)


async def _write_log(
    settings: Settings, topic: str, records: Iterable[tuple[bytes, bytes]], total: int,
    on_progress: Callable[[int], None],
) -> int:
    producer = AIOKafkaProducer(
        **kafka_options(settings), acks="all", linger_ms=20, max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        await producer.start()
        last = -1
        pending = []
        for i, (key, value) in enumerate(records, start=1):
            pending.append(await producer.send(topic, value, key=key, partition=0))
            if len(pending) >= 5000 or i == total:
                for metadata in await asyncio.gather(*pending):
                    last = max(last, metadata.offset)
                pending.clear()
                on_progress(i)
        return last
    except KafkaError as exc:
        raise CommandError(f"writing {topic} failed: {exc!r}", 1) from exc
    finally:
        await producer.stop()
