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

Order: every input record is replayed in the order of (record timestamp, topic: signals before
executions before closes, partition, offset), and a position is learned from when its last
event arrives, as the live worker learns from it when it completes. So the same range always
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

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from rl_worker.contract import InvalidEventError, decode_event
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS
from rl_worker.core.config import CoreConfig
from rl_worker.core.market import MarketFeatures
from rl_worker.core.outcome import Outcome
from rl_worker.core.qlearning import Selection
from rl_worker.core.replica import Decision, ModelReplica
from rl_worker.core.state import MetaState, SizingState, meta_state_key, sizing_state_key
from rl_worker.errors import RlWorkerError
from rl_worker.positions import PositionJoiner, Row

__all__ = [
    "ActionsMode",
    "BackfillCounts",
    "BackfillError",
    "InputRecord",
    "LoggedActions",
    "LoggedPolicyReplica",
    "NoLoggedActionError",
    "replay_positions",
]

ActionsMode = Literal["decisions", "events", "both"]
_TOPIC_RANK = {"SIGNAL_GENERATED": 0, "TRADE_EXECUTED": 1, "POSITION_CLOSED": 2}


class BackfillError(RlWorkerError):
    """A backfill that cannot run (bad range, a target that is not empty, ...): nothing was written."""


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

    def add_event_actions(self, position_id: str, event: object) -> None:
        """The actions an input event says the stack used (signal: strategy/model/weight; execution: size)."""
        strategy, model, weight = (getattr(event, name, None) for name in ("strategy", "model", "weight"))
        if strategy is not None and model is not None and weight is not None:
            index = _META_INDEX.get((strategy, model, round(weight, 6)))
            if index is not None:
                self.event_actions[f"{position_id}:meta"] = index
        size, leverage = getattr(event, "size_multiplier", None), getattr(event, "leverage", None)
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

    def decide_meta(self, market: MarketFeatures, confidence: float, decision_id: str) -> Decision:
        logged = self._logged(decision_id)
        if logged is not None:
            self.from_decisions += 1
            state = MetaState(**logged.state)  # type: ignore[arg-type]
            selection = Selection(logged.action_index, logged.explored, logged.propensity)
            return Decision(state, meta_state_key(state, self.config.meta_bins), selection, logged.epsilon,
                            self.model_version)
        action = self._event_action(decision_id)
        decision = super().decide_meta(market, confidence, decision_id)
        return decision._replace(selection=Selection(action, False, 1.0))

    def decide_sizing(
        self,
        signal_confidence: float,
        portfolio_exposure: float,
        volatility: float,
        decision_id: str,
        max_size_multiplier: float | None = None,
        max_leverage: float | None = None,
    ) -> Decision:
        logged = self._logged(decision_id)
        if logged is not None:
            self.from_decisions += 1
            state = SizingState(**logged.state)  # type: ignore[arg-type]
            selection = Selection(logged.action_index, logged.explored, logged.propensity)
            return Decision(state, sizing_state_key(state, self.config.sizing_bins), selection, logged.epsilon,
                            self.model_version)
        action = self._event_action(decision_id)
        decision = super().decide_sizing(
            signal_confidence, portfolio_exposure, volatility, decision_id, max_size_multiplier, max_leverage
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
    """The deterministic replay order: record timestamp, then signals < executions < closes, partition, offset."""
    rank = {topic: _TOPIC_RANK[kind] for topic, kind in expected_type.items()}
    return sorted(records, key=lambda r: (r.timestamp_ms, rank[r.topic], r.partition, r.offset))


def replay_positions(
    records: list[InputRecord],
    replica: LoggedPolicyReplica,
    expected_type: dict[str, str],
    policy: str,
    counts: BackfillCounts,
    max_record_bytes: int = 65536,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Join `records` (already in replay order) and learn from each completed position as it
    completes; yields (position id, learning-log record) in that order.

    Invalid events are counted and left out (the live worker dead-letters them); a position with
    no logged action for a decision is counted as skipped and its later events are ignored.
    """
    joiner = PositionJoiner(replica, policy, lambda: 0)  # decision timestamps are not learned from
    rows: dict[str, Row] = {}
    done: set[str] = set()
    logged = replica.logged
    wants_events = logged.mode != "decisions"
    for i, record in enumerate(records):
        counts.events += 1
        if on_progress is not None and i % 2000 == 0:
            on_progress(i)
        try:
            key = record.key
            if key is None or len(key) > 256:
                raise InvalidEventError("record key is missing or too long", "InvalidKey")
            position_id = key.decode("utf-8")
            event = decode_event(record.value, expected_type.get(record.topic), max_record_bytes)
            if event.position_id != position_id:
                raise InvalidEventError("record key differs from position_id", "KeyMismatch")
        except (InvalidEventError, UnicodeDecodeError):
            counts.invalid += 1
            continue
        if position_id in done:
            counts.duplicates += 1
            continue
        if position_id in counts.skipped_ids:
            continue
        if wants_events:
            logged.add_event_actions(position_id, event)
        try:
            result = joiner.handle(
                rows.get(position_id), event, (record.topic, record.partition, record.offset), record.timestamp_ms
            )
        except NoLoggedActionError:
            counts.skipped += 1
            counts.skipped_ids.add(position_id)
            rows.pop(position_id, None)
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
                replica.apply(Outcome.model_validate_json(emit.value))
                counts.applied += 1
                done.add(position_id)
                del rows[position_id]  # only that it completed matters from here on
                yield position_id, emit.value
    counts.incomplete = len(rows)
    if on_progress is not None:
        on_progress(len(records))


def now_s() -> float:
    return time.perf_counter()
