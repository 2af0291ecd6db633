"""The worker's in-process state: the model replica, the input path (validate, join, count), the
outcomes log applied to the replica, and health.

Kafka-free on purpose: the Faust layer (app.py) and the outcomes follower feed it records and
send what it returns, so this part is exercised by the unit tests without a broker.
Checkpointing (restore, cadence, writer, final checkpoint) is `self.checkpointer`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rl_worker.analysis.tracker import PerformanceTracker
from rl_worker.contract import MAX_POSITION_ID_BYTES, InvalidEventError, decode_event
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS
from rl_worker.core.control import Hyperparameters, HyperparametersRecord, ResetRecord, decode_log_record
from rl_worker.core.exceptions import ConfigError, SnapshotError
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica
from rl_worker.positions import Emit, JoinResult, PositionJoiner, Published, RowReader
from rl_worker.settings import Settings, redis_namespace
from rl_worker.stream.checkpoints import Checkpointer, CheckpointStore, now_ms
from rl_worker.stream.exceptions import CheckpointStoreError
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
        ab = settings.ab
        self.joiner = PositionJoiner(
            self.replica, settings.policy, now_ms, ab.control_share, ab.control_policy, ab.baseline
        )
        self.performance = PerformanceTracker((settings.policy, ab.control_policy))
        self._explored = {"meta": [0, 0], "sizing": [0, 0]}  # RL-arm decisions: explored, all
        self.checkpointer = Checkpointer(self.replica, store, settings.checkpoint, self.metrics)
        self.ready = asyncio.Event()
        self.expected_type = event_type_by_topic(settings.topics)
        self.started_ms = now_ms()
        self._event_counters: dict[tuple[str, str], Any] = {}  # labelled children, looked up once
        self._decision_counters: dict[tuple[str, bool], Any] = {}
        self.first_decision_ms: int | None = None
        self.pending_reset: tuple[int, ResetRecord] | None = None
        self._gauged_hyperparameters: Hyperparameters | None = None

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
        published: Published | None = None,
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
                raise InvalidEventError(f"record key of {len(key)} bytes exceeds {MAX_POSITION_ID_BYTES}", "InvalidKey")
            event = decode_event(value, self.expected_type.get(topic), self.settings.max_record_bytes)
            if event.position_id != position_id:
                raise InvalidEventError(
                    f"record key {position_id[:64]!r} differs from position_id {event.position_id[:64]!r}",
                    "KeyMismatch",
                )
            row, source = row_of(position_id), (topic, partition, offset)
            result = (
                self.joiner.handle(row, event, source, event_ms)
                if published is None
                else self.joiner.handle(row, event, source, event_ms, published)
            )
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
            self.metrics.decisions_by_arm.labels(agent, self.performance.label(emit.policy)).inc()
            if emit.policy == self.settings.policy and agent in self._explored:
                tally = self._explored[agent]
                tally[0] += explored
                tally[1] += 1
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
        """Apply one learning-log record to the replica (every worker does the same, in order).

        An outcome or a hyperparameter record is applied here; a reset record needs its
        checkpoint from the store first: it is left in `pending_reset` for the caller to
        `await apply_pending_reset()` before the next record. True when an outcome was applied.
        """
        if offset <= self.replica.log_offset:
            return False
        try:
            record = decode_log_record(value or b"")
        except ValidationError as exc:
            # Every replica skips the same unreadable record, so they stay identical.
            log.error("learning log@%d unreadable, skipped: %s", offset, exc)
            self.replica.skip(offset)
            self.metrics.outcomes_ignored.labels("unreadable").inc()
            return False
        if record.__class__ is not Outcome:
            self._apply_control(offset, record)  # type: ignore[arg-type]
            return False
        applied = self.replica.apply(record, offset)  # type: ignore[arg-type]
        if applied is None:
            self.metrics.outcomes_ignored.labels("already_applied").inc()
            return False
        self.metrics.outcomes_applied.inc()
        self.checkpointer.note_applied()
        outcome: Outcome = record  # type: ignore[assignment]
        arm, _ = self.performance.record(outcome)
        m = self.metrics
        m.actions.labels("meta", META_ACTIONS[outcome.meta.action_index].strategy, arm).inc()
        m.actions.labels("sizing", str(SIZING_ACTIONS[outcome.sizing.action_index].leverage), arm).inc()
        for agent, step in (("meta", outcome.meta), ("sizing", outcome.sizing)):
            if step.decided_action_index is not None:
                m.overrides.labels(agent, arm).inc()
        return True

    def _apply_control(self, offset: int, record: HyperparametersRecord | ResetRecord) -> None:
        if isinstance(record, HyperparametersRecord):
            before = self.replica.hyperparameters
            self.replica.apply_hyperparameters(record.hyperparameters, offset)
            self.metrics.control_records.labels("hyperparameters", "applied").inc()
            log.info(
                "learning log@%d: hyperparameters in force from here (%s): %s",
                offset,
                record.reason or "no reason given",
                {k: f"{a} -> {b}" for k, (a, b) in before.changed(record.hyperparameters).items()} or "unchanged",
            )
            self.update_hyperparameter_gauges()
            self.checkpointer.note_applied()
        else:
            self.pending_reset = (offset, record)

    async def apply_pending_reset(self, retry_initial_s: float = 0.5, retry_max_s: float = 10.0) -> None:
        """Load the checkpoint the pending reset record names and reset the replica to it.

        The store being unreachable is retried with backoff for as long as it takes: applying
        the records after a reset without it would make this replica differ from the others. A
        checkpoint that is missing, does not hash to the record's sha256, or is of another model
        is the same for every replica (pinned checkpoints never change): the record is skipped,
        loudly, by all of them alike.
        """
        if self.pending_reset is None:
            return
        offset, record = self.pending_reset
        namespace = redis_namespace(record.app_id)
        delay = retry_initial_s
        while True:
            try:
                data = await self.checkpointer.store.load_from(namespace, record.checkpoint_offset)
                break
            except CheckpointStoreError as exc:
                log.error("learning log@%d: reset checkpoint unreadable, retrying: %s", offset, exc)
                self.metrics.redis_up.set(0)
                await asyncio.sleep(delay)
                delay = min(retry_max_s, delay * 2)
        self.pending_reset = None
        problem = None
        if data is None:
            problem = f"checkpoint {namespace}@{record.checkpoint_offset} does not exist"
        elif hashlib.sha256(data).hexdigest() != record.sha256:
            problem = f"checkpoint {namespace}@{record.checkpoint_offset} is not the one the record names (sha256)"
        else:
            try:
                source = decode_replica(data, self.replica.config)
                before = self.replica.hyperparameters
                self.replica.reset_to(source, offset)
            except (SnapshotError, ConfigError) as exc:
                problem = f"checkpoint {namespace}@{record.checkpoint_offset} cannot be loaded: {exc}"
        if problem is not None:
            log.error("learning log@%d: reset record skipped: %s", offset, problem)
            self.replica.skip(offset)
            self.metrics.control_records.labels("reset", "skipped").inc()
            return
        log.warning(
            "learning log@%d: model reset to %s@%d (%s): %d outcomes, hyperparameters %s",
            offset,
            namespace,
            record.checkpoint_offset,
            record.reason or "no reason given",
            self.replica.n_updates,
            {k: f"{a} -> {b}" for k, (a, b) in before.changed(self.replica.hyperparameters).items()} or "unchanged",
        )
        self.metrics.control_records.labels("reset", "applied").inc()
        self.update_gauges()
        self.checkpointer.note_applied()

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
        m.winrate.set(r.winrate.winrate)
        m.account_health.set(r.equity.health)
        for agent, (explored, total) in self._explored.items():
            if total:
                m.explored_share.labels(agent).set(explored / total)
        for arm, performance in self.performance.arms.items():
            m.arm_positions.labels(arm).set(performance.positions)
            m.arm_win_rate.labels(arm).set(performance.win_rate)
            m.arm_rolling_win_rate.labels(arm).set(performance.rolling_win_rate)
            m.arm_sharpe.labels(arm).set(performance.sharpe_per_trade)
            m.arm_max_drawdown.labels(arm).set(performance.max_drawdown_pct)
            m.arm_pnl_total.labels(arm).set(performance.total_pnl_pct)
        summaries = r.episodes.summaries
        m.episodes.set(r.episodes.episode)
        if summaries:
            last = summaries[-1]
            m.episode_reward.set(last.total_reward)
            m.episode_steps.set(last.steps)
            m.episode_duration.set(last.duration_ms / 1000)
        m.agent_epsilon.labels("meta").set(r.meta_epsilon)
        m.agent_epsilon.labels("sizing").set(r.sizing_epsilon)
        if self._gauged_hyperparameters is not r.hyperparameters:
            self.update_hyperparameter_gauges()

    def update_hyperparameter_gauges(self) -> None:
        r = self.replica
        self._gauged_hyperparameters = r.hyperparameters
        for agent in ("meta", "sizing"):
            for name, value in getattr(r.hyperparameters, agent).model_dump().items():
                self.metrics.hyperparameter.labels(agent, name).set(value)
        offset = r.hyperparameters_offset
        self.metrics.hyperparameters_offset.set(-1 if offset is None else offset)

    def hyperparameters_health(self) -> dict[str, Any]:
        """The hyperparameters in force, per agent, and the learning-log offset they took effect at."""
        r = self.replica
        return {
            **r.hyperparameters.model_dump(mode="json"),
            "in_force_since_offset": r.hyperparameters_offset,
            "source": "configuration" if r.hyperparameters_offset is None else "learning log",
            "epsilon_now": {"meta": r.meta_epsilon, "sizing": r.sizing_epsilon},
        }

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
            "hyperparameters": self.hyperparameters_health(),
            "mean_reward": {
                "meta": r.meta_reward_total / r.n_updates if r.n_updates else None,
                "sizing": r.size_reward_total / r.n_updates if r.n_updates else None,
            },
            "q_states": {"meta": len(r.meta_table), "sizing": len(r.sizing_table)},
            "trading": {
                "winrate": r.winrate.winrate,
                "account_health": r.equity.health,
                "explored_share": {
                    agent: explored / total if total else None for agent, (explored, total) in self._explored.items()
                },
                "control_share": self.settings.ab.control_share,
                "arms": self.performance.as_dict(),
                "since": "the log this worker applied since it started (after its restored checkpoint)",
            },
            "episodes": {
                "ended": r.episodes.episode,
                "last": [summary.as_dict() for summary in list(r.episodes.summaries)[-5:]],
            },
            "checkpoint": self.checkpointer.health(),
            "first_decision_after_s": None
            if self.first_decision_ms is None
            else (self.first_decision_ms - self.started_ms) / 1000,
        }
