"""The worker's in-process state: the model replica, the position joiner, checkpoints and health.

Kafka-free on purpose: the Faust layer (app.py) feeds it records and sends what it returns,
so this part is exercised by the unit tests without a broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rl_worker.contract import InvalidEventError, decode_event
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import encode_replica
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import CheckpointStore, restore_newest_valid
from rl_worker.stream.exceptions import CheckpointStoreError
from rl_worker.stream.metrics import WorkerMetrics
from rl_worker.stream.positions import Emit, JoinResult, PositionJoiner

__all__ = ["DeadLetter", "WorkerRuntime", "dead_letter_headers"]

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    error_class: str
    message: str


def dead_letter_headers(topic: str, partition: int, offset: int, error: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        ("rl.original_topic", topic.encode()),
        ("rl.original_partition", str(partition).encode()),
        ("rl.original_offset", str(offset).encode()),
        ("rl.error_class", error.error_class.encode()),
        ("rl.error_message", error.message[:2000].encode()),
        ("rl.failed_at_ms", str(now_ms()).encode()),
    ]


class WorkerRuntime:
    def __init__(self, settings: Settings, store: CheckpointStore) -> None:
        self.settings = settings
        self.store = store
        self.metrics = WorkerMetrics()
        self.replica = ModelReplica(settings.core)
        self.joiner = PositionJoiner(self.replica, settings.policy, now_ms)
        self.ready = asyncio.Event()
        t = settings.topics
        self.expected_type = {
            t.signals: "SIGNAL_GENERATED",
            t.executions: "TRADE_EXECUTED",
            t.closes: "POSITION_CLOSED",
        }
        self.restored_from: int | None = None
        self.restore_skipped: list[str] = []
        self.checkpoint_offset: int | None = None
        self.checkpoint_error: str | None = None
        self.checkpoint_last_ok_ms: int | None = None
        self._applied_since_checkpoint = 0
        self._last_checkpoint_s = time.monotonic()
        self._pending: tuple[int, bytes] | None = None
        self._pending_event = asyncio.Event()
        self.started_ms = now_ms()
        self._event_counters: dict[tuple[str, str], Any] = {}  # labelled children, looked up once
        self._decision_counters: dict[tuple[str, bool], Any] = {}
        self.first_decision_ms: int | None = None

    # ---- start-up ------------------------------------------------------------------------------

    async def restore(self, log_end: int | None = None) -> None:
        """Newest valid checkpoint, if the store can be read; else start empty (the log is replayed).

        A checkpoint at or past `log_end` (the outcomes log's end offset) belongs to another
        log (a broker that was reset, a topic recreated): it is reported and skipped."""
        try:
            result = await restore_newest_valid(
                self.store, self.settings.core, None if log_end is None else log_end - 1
            )
        except CheckpointStoreError as exc:
            log.error("checkpoint store unreachable at start-up, replaying the whole log: %s", exc)
            self.metrics.redis_up.set(0)
            self.checkpoint_error = str(exc)
            return
        self.metrics.redis_up.set(1)
        self.restore_skipped = result.skipped
        if result.replica is not None:
            self.set_replica(result.replica)
            self.restored_from = result.offset
            self.checkpoint_offset = result.offset
            log.info("restored replica from checkpoint at outcomes offset %s", result.offset)

    def set_replica(self, replica: ModelReplica) -> None:
        self.replica = replica
        self.joiner.replica = replica
        self._update_gauges()

    # ---- the input path -----------------------------------------------------------------------

    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        row_of: Any,
        event_ms: int | None = None,
    ) -> tuple[str | None, JoinResult | None, DeadLetter | None]:
        """Validate and join one input record. Returns (position id, join result, dead letter)."""
        try:
            if key is None:
                raise InvalidEventError("record has no key; the key must be the position_id", "MissingKey")
            try:
                position_id = key.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEventError("record key is not UTF-8", "InvalidKey") from None
            if len(key) > 256:
                raise InvalidEventError(f"record key of {len(key)} bytes exceeds 256", "InvalidKey")
            event = decode_event(value, self.expected_type.get(topic), self.settings.max_record_bytes)
            if event.position_id != position_id:
                raise InvalidEventError(
                    f"record key {position_id[:64]!r} differs from position_id {event.position_id[:64]!r}",
                    "KeyMismatch",
                )
            result = self.joiner.handle(row_of(position_id), event, (topic, partition, offset), event_ms)
        except InvalidEventError as exc:
            self.metrics.dead_letters.labels(topic, exc.kind).inc()
            return None, None, DeadLetter(exc.kind, exc.reason)
        except Exception as exc:  # a bug, not bad input: keep the record (dead letter) and the worker
            log.exception("%s[%d]@%d could not be processed", topic, partition, offset)
            kind = f"Unexpected{type(exc).__name__}"
            self.metrics.dead_letters.labels(topic, kind).inc()
            return None, None, DeadLetter(kind, f"{exc!r}")
        counter = self._event_counters.get((topic, result.status))
        if counter is None:
            counter = self._event_counters[(topic, result.status)] = self.metrics.events.labels(topic, result.status)
        counter.inc()
        return position_id, result, None

    def count_emits(self, emits: list[Emit], message_ts_ms: int | None) -> None:
        for emit in emits:
            if emit.kind == "outcome":
                self.metrics.outcomes_published.inc()
                continue
            if emit.agent is None or emit.explored is None:
                record = json.loads(emit.value)
                agent, explored = record["agent"], record["explored"]
            else:
                agent, explored = emit.agent, emit.explored
            counter = self._decision_counters.get((agent, explored))
            if counter is None:
                counter = self._decision_counters[(agent, explored)] = self.metrics.decisions.labels(
                    agent, "true" if explored else "false"
                )
            counter.inc()
            if message_ts_ms:
                self.metrics.latency.observe(max(0.0, (now_ms() - message_ts_ms) / 1000))
            if self.first_decision_ms is None:
                self.first_decision_ms = now_ms()
                log.info("first decision %.2f s after start", (self.first_decision_ms - self.started_ms) / 1000)

    # ---- the outcomes log -----------------------------------------------------------------------

    def apply_record(self, offset: int, value: bytes | None) -> bool:
        """Apply one `rl.outcomes` record to the replica (every worker does the same, in order)."""
        if offset <= self.replica.log_offset:
            return False
        try:
            outcome = Outcome.model_validate_json(value or b"")
        except ValidationError as exc:
            # Every replica skips the same unreadable record, so they stay identical.
            log.error("outcomes[0]@%d unreadable, skipped: %s", offset, exc)
            self.replica.log_offset = offset
            self.metrics.outcomes_ignored.labels("unreadable").inc()
            return False
        applied = self.replica.apply(outcome, offset)
        if applied is None:
            self.metrics.outcomes_ignored.labels("already_applied").inc()
            return False
        self.metrics.outcomes_applied.inc()
        self._applied_since_checkpoint += 1
        return True

    def after_batch(self) -> None:
        self._update_gauges()
        cfg = self.settings.checkpoint
        due = self._applied_since_checkpoint >= cfg.every_outcomes or (
            self._applied_since_checkpoint > 0 and time.monotonic() - self._last_checkpoint_s >= cfg.interval_s
        )
        # While the writer still holds a snapshot (a slow or absent Redis), encoding another
        # would only be thrown away: wait for it, the next batch checks again.
        if due and self._pending is None:
            self.snapshot_now()

    def snapshot_now(self) -> None:
        """Encode the replica now (consistent) and hand it to the writer task."""
        self._pending = (self.replica.log_offset, encode_replica(self.replica))
        self._pending_event.set()
        self._applied_since_checkpoint = 0
        self._last_checkpoint_s = time.monotonic()

    async def write_checkpoints(self, stopping: Any) -> None:
        """Write the newest pending snapshot; on failure back off and retry (decisions go on)."""
        cfg = self.settings.checkpoint
        delay = cfg.retry_initial_s
        while not stopping():
            if self._pending is None:
                self._pending_event.clear()
                try:
                    await asyncio.wait_for(self._pending_event.wait(), 1.0)
                except TimeoutError:
                    continue
                continue
            offset, data = self._pending
            if await self.write_one(offset, data):
                if self._pending is not None and self._pending[0] == offset:
                    self._pending = None
                delay = cfg.retry_initial_s
            else:
                await asyncio.sleep(delay)
                delay = min(cfg.retry_max_s, delay * 2)

    async def write_final_checkpoint(self, timeout_s: float) -> None:
        """On shutdown: checkpoint what the last checkpoint does not hold yet, if the store answers in time."""
        if self.replica.n_updates == 0 or self.replica.log_offset == self.checkpoint_offset:
            return
        offset, data = self.replica.log_offset, encode_replica(self.replica)
        try:
            await asyncio.wait_for(self.write_one(offset, data), timeout_s)
        except TimeoutError:
            log.error("final checkpoint at %d not written: the store did not answer", offset)

    async def write_one(self, offset: int, data: bytes) -> bool:
        try:
            await self.store.save(offset, data)
        except CheckpointStoreError as exc:
            if self.checkpoint_error is None:
                log.error("checkpoint write failed, retrying with backoff: %s", exc)
            self.checkpoint_error = str(exc)
            self.metrics.checkpoint_failures.inc()
            self.metrics.redis_up.set(0)
            return False
        if self.checkpoint_error is not None:
            log.info("checkpoint store is back; wrote offset %d", offset)
        self.checkpoint_error = None
        self.checkpoint_offset = offset
        self.checkpoint_last_ok_ms = now_ms()
        self.metrics.checkpoint_writes.inc()
        self.metrics.checkpoint_offset.set(offset)
        self.metrics.redis_up.set(1)
        return True

    # ---- reporting ------------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        r = self.replica
        m = self.metrics
        m.model_version.set(r.model_version)
        m.epsilon.set(r.epsilon)
        m.q_states.labels("meta").set(len(r.meta_table))
        m.q_states.labels("sizing").set(len(r.sizing_table))
        if r.n_updates:
            m.mean_reward.labels("meta").set(r.meta_reward_total / r.n_updates)
            m.mean_reward.labels("sizing").set(r.size_reward_total / r.n_updates)

    def health(self) -> dict[str, Any]:
        r = self.replica
        degraded = self.checkpoint_error is not None
        return {
            "status": "degraded" if degraded else ("ok" if self.ready.is_set() else "starting"),
            "app_id": self.settings.app_id,
            "ready": self.ready.is_set(),
            "model_version": r.model_version,
            "outcomes_applied": r.n_updates,
            "epsilon": r.epsilon,
            "mean_reward": {
                "meta": r.meta_reward_total / r.n_updates if r.n_updates else None,
                "sizing": r.size_reward_total / r.n_updates if r.n_updates else None,
            },
            "q_states": {"meta": len(r.meta_table), "sizing": len(r.sizing_table)},
            "checkpoint": {
                "offset": self.checkpoint_offset,
                "restored_from": self.restored_from,
                "restore_skipped": self.restore_skipped,
                "last_ok_ms": self.checkpoint_last_ok_ms,
                "pending_offset": None if self._pending is None else self._pending[0],
                "store_error": self.checkpoint_error,
            },
            "first_decision_after_s": None
            if self.first_decision_ms is None
            else (self.first_decision_ms - self.started_ms) / 1000,
        }
