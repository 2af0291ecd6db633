"""The worker's in-process state: the model replica, the input path (validate, join, count), the
outcomes log applied to the replica, and health.

Kafka-free on purpose: the Faust layer (app.py) and the outcomes follower feed it records and
send what it returns, so this part is exercised by the unit tests without a broker.
Checkpointing (restore, cadence, writer, final checkpoint) is `self.checkpointer`'s.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rl_worker.contract import MAX_POSITION_ID_BYTES, InvalidEventError, decode_event
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import ModelReplica
from rl_worker.positions import Emit, JoinResult, PositionJoiner, RowReader
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import Checkpointer, CheckpointStore, now_ms
from rl_worker.stream.metrics import WorkerMetrics
from rl_worker.stream.topics import event_type_by_topic

__all__ = ["DeadLetter", "WorkerRuntime", "dead_letter_headers", "now_ms"]

log = logging.getLogger(__name__)


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
        self.metrics = WorkerMetrics()
        self.replica = ModelReplica(settings.core)
        self.joiner = PositionJoiner(self.replica, settings.policy, now_ms)
        self.checkpointer = Checkpointer(self.replica, store, settings.checkpoint, self.metrics)
        self.ready = asyncio.Event()
        self.expected_type = event_type_by_topic(settings.topics)
        self.started_ms = now_ms()
        self._event_counters: dict[tuple[str, str], Any] = {}  # labelled children, looked up once
        self._decision_counters: dict[tuple[str, bool], Any] = {}
        self.first_decision_ms: int | None = None

    # ---- start-up ------------------------------------------------------------------------------

    async def restore(self, log_end: int | None = None) -> None:
        """The newest valid checkpoint into the replica (see Checkpointer.restore)."""
        await self.checkpointer.restore(log_end)
        self.update_gauges()

    # ---- the input path -----------------------------------------------------------------------

    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        row_of: RowReader,
        event_ms: int | None = None,
    ) -> JoinResult | DeadLetter:
        """Validate and join one input record: the join's result, or why it goes to the dead letters."""
        try:
            if key is None:
                raise InvalidEventError("record has no key; the key must be the position_id", "MissingKey")
            try:
                position_id = key.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEventError("record key is not UTF-8", "InvalidKey") from None
            if len(key) > MAX_POSITION_ID_BYTES:
                raise InvalidEventError(
                    f"record key of {len(key)} bytes exceeds {MAX_POSITION_ID_BYTES}", "InvalidKey"
                )
            event = decode_event(value, self.expected_type.get(topic), self.settings.max_record_bytes)
            if event.position_id != position_id:
                raise InvalidEventError(
                    f"record key {position_id[:64]!r} differs from position_id {event.position_id[:64]!r}",
                    "KeyMismatch",
                )
            result = self.joiner.handle(row_of(position_id), event, (topic, partition, offset), event_ms)
        except InvalidEventError as exc:
            self.metrics.dead_letters.labels(topic, exc.kind).inc()
            return DeadLetter(exc.kind, exc.reason)
        except Exception as exc:  # a bug, not bad input: keep the record (dead letter) and the worker
            log.exception("%s[%d]@%d could not be processed", topic, partition, offset)
            kind = f"Unexpected{type(exc).__name__}"
            self.metrics.dead_letters.labels(topic, kind).inc()
            return DeadLetter(kind, f"{exc!r}")
        counter = self._event_counters.get((topic, result.status))
        if counter is None:
            counter = self._event_counters[(topic, result.status)] = self.metrics.events.labels(topic, result.status)
        counter.inc()
        return result

    def count_emits(self, emits: list[Emit], message_ts_ms: int | None) -> None:
        for emit in emits:
            if emit.kind == "outcome":
                self.metrics.outcomes_published.inc()
                continue
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
            self.replica.skip(offset)
            self.metrics.outcomes_ignored.labels("unreadable").inc()
            return False
        applied = self.replica.apply(outcome, offset)
        if applied is None:
            self.metrics.outcomes_ignored.labels("already_applied").inc()
            return False
        self.metrics.outcomes_applied.inc()
        self.checkpointer.note_applied()
        return True

    def after_batch(self) -> None:
        self.update_gauges()
        self.checkpointer.after_batch()

    # ---- reporting ------------------------------------------------------------------------------

    def update_gauges(self) -> None:
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
        degraded = self.checkpointer.error is not None
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
            "checkpoint": self.checkpointer.health(),
            "first_decision_after_s": None
            if self.first_decision_ms is None
            else (self.first_decision_ms - self.started_ms) / 1000,
        }
