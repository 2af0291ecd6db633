"""The position join: three events of one position, in any order, into two decisions and one outcome.

Pure logic over a JSON-able row (the value of the Faust positions table); the Faust agent
owns the table, the offsets and the sends. Per position id:

- SIGNAL_GENERATED  -> the meta decision (as soon as the signal is there);
- TRADE_EXECUTED    -> the sizing decision (as soon as signal and execution are there:
                       sizing needs the signal's confidence and volatility);
- POSITION_CLOSED   -> the outcome record (as soon as both decisions and the close are there).

Duplicates (same event_id, another offset) change nothing. A redelivery (same event_id,
same topic/partition/offset, as after a crash before the offset commit) re-emits exactly
the records that event emitted the first time, with the same ids and bytes, so nothing
is lost and consumers that dedupe by id see each record once. A second, different event of
the same type for a position is a conflict and is dead-lettered.

A/B arms: a stable share of the position ids (`rl_worker.core.arms`) goes to the control arm,
whose decisions are the stack's own choices carried by the signal and the execution (or the
baseline policy), with their propensity; `policy` on each decision names the arm. The outcome
credits what was traded: the meta action as traded when the execution carries one
(`strategy` / `model` / `weight`), the sizing as traded when the close carries one
(`size_multiplier` / `leverage`); a traded action that differs from the published one marks
the outcome `overridden` and keeps the published one in `decided_action_index`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rl_worker.contract import InvalidEventError, PositionClosed, SignalGenerated, TradeExecuted
from rl_worker.core.actions import (
    META_ACTIONS,
    SIZING_ACTIONS,
    effective_limits,
    meta_action_mask,
    sizing_action_mask,
    sizing_mask,
)
from rl_worker.core.arms import (
    CONTROL_ARM,
    BaselinePolicy,
    assign_arm,
    control_meta,
    control_sizing,
    meta_action_of,
    sizing_action_within,
)
from rl_worker.core.exceptions import NoAllowedActionError
from rl_worker.core.market import MarketFeatures, compute_market_features
from rl_worker.core.outcome import Outcome
from rl_worker.core.qlearning import DecisionRandom, Selection
from rl_worker.core.replica import Decision, ModelReplica

__all__ = [
    "Emit",
    "JoinResult",
    "PositionJoiner",
    "Row",
    "RowReader",
    "Source",
    "decode_row",
    "encode_key",
    "encode_row",
]

Row = dict[str, Any]
RowReader = Callable[[str], "Row | None"]
Source = tuple[str, int, int]
_SLOT = {"SIGNAL_GENERATED": "signal", "TRADE_EXECUTED": "execution", "POSITION_CLOSED": "close"}


@dataclass(frozen=True, slots=True)
class Emit:
    kind: Literal["decision", "outcome"]
    value: bytes
    agent: str = ""  # decisions: "meta" | "sizing" (for metrics, without parsing `value`)
    explored: bool = False
    policy: str = ""  # decisions and outcomes: the arm
    overridden: tuple[str, ...] = ()  # outcomes: the agents whose published action was not traded


@dataclass(frozen=True, slots=True)
class JoinResult:
    position_id: str
    row: Row
    emits: list[Emit]
    status: Literal["applied", "duplicate", "redelivered"]


def encode_key(position_id: str) -> bytes:
    """A positions-table key exactly as Faust's table writes it (its "json" key codec): same bytes,
    so changelog compaction and Faust's own tombstones (expiry) address the same key."""
    return json.dumps(position_id).encode()


def encode_row(row: Row) -> bytes:
    """A row as the positions table stores it and its changelog carries it (JSON, which Faust's
    changelog recovery reads back with its "json" codec)."""
    return json.dumps(row, separators=(",", ":")).encode()


def decode_row(value: bytes | Row) -> Row:
    """A stored row: bytes as written by `encode_row`, or the dict Faust's changelog recovery made of them."""
    return value if isinstance(value, dict) else json.loads(value)  # type: ignore[no-any-return]


class PositionJoiner:
    """Turns events into rows, decisions and outcomes, reading the model replica to decide."""

    def __init__(
        self,
        replica: ModelReplica,
        policy: str,
        clock_ms: Callable[[], int],
        control_share: float = 0.0,
        control_policy: str = CONTROL_ARM,
        baseline: BaselinePolicy | None = None,
    ) -> None:
        """`policy` names the RL arm, `control_policy` the control arm, which decides a stable
        `control_share` of the positions (see the module docstring)."""
        if not 0.0 <= control_share <= 1.0:
            raise ValueError(f"control_share must lie in [0, 1], got {control_share}")
        self.replica = replica
        self.policy = policy
        self.clock_ms = clock_ms
        self.control_share = control_share
        self.control_policy = control_policy
        self.baseline = baseline or BaselinePolicy()
        # the uniform baseline's draws: seeded by (model seed, decision id), like exploration,
        # under other ids so they never reuse an exploration draw
        self._control_random = DecisionRandom(replica.config.seed)

    def arm_of(self, position_id: str) -> str:
        """The arm (policy name) that decides this position."""
        if assign_arm(position_id, self.control_share) == CONTROL_ARM:
            return self.control_policy
        return self.policy

    def handle(
        self,
        row: Row | None,
        event: SignalGenerated | TradeExecuted | PositionClosed,
        source: Source,
        event_ms: int | None = None,
    ) -> JoinResult:
        """Join one event. `event_ms` is the input record's timestamp: the row's `updated_ms`,
        which expiry compares with its partition's stream time (wall clock when absent)."""
        slot = _SLOT[event.event_type]
        src = list(source)
        if row is None:
            row = {"symbol": event.symbol}
        elif slot in row:
            stored = row[slot]
            if stored["event_id"] != event.event_id:
                raise InvalidEventError(
                    f"position {event.position_id} already has {event.event_type} {stored['event_id']!r}",
                    "ConflictingEvent",
                )
            if stored["src"] == src:
                return JoinResult(event.position_id, row, self._emitted_by(row, src), "redelivered")
            return JoinResult(event.position_id, row, [], "duplicate")
        elif row["symbol"] != event.symbol:
            raise InvalidEventError(
                f"position {event.position_id} is on {row['symbol']}, this event says {event.symbol}",
                "ConflictingEvent",
            )
        row = dict(row)
        row[slot] = self._slot_value(event, src)
        row["partition"] = source[1]
        emits = self._progress(row, event.position_id, src)
        row["updated_ms"] = self.clock_ms() if event_ms is None else event_ms
        return JoinResult(event.position_id, row, emits, "applied")

    # ---- building the row ---------------------------------------------------------------------

    def _slot_value(self, event: SignalGenerated | TradeExecuted | PositionClosed, src: list[Any]) -> Row:
        market_config = self.replica.config.market
        if isinstance(event, SignalGenerated):
            market = compute_market_features(event.prices, market_config, event.buy_volume, event.sell_volume)
            value: Row = {
                "event_id": event.event_id,
                "src": src,
                "confidence": event.confidence,
                "regime": market.regime,
                "volatility": market.volatility,
                "trend_strength": market.trend_strength,
                "market_pressure": market.market_pressure,
            }
            if event.strategy is not None or event.model is not None or event.weight is not None:
                value["own"] = [event.strategy, event.model, event.weight]
            return value
        if isinstance(event, TradeExecuted):
            limits = effective_limits(self.replica.config.risk, event.max_size_multiplier, event.max_leverage)
            try:
                sizing_mask(*limits)
            except NoAllowedActionError as exc:
                raise InvalidEventError(str(exc), "NoAllowedAction") from None
            value = {
                "event_id": event.event_id,
                "src": src,
                "portfolio_exposure": event.portfolio_exposure,
                "max_size_multiplier": limits[0],
                "max_leverage": limits[1],
            }
            if event.size_multiplier is not None or event.leverage is not None:
                value["own"] = [event.size_multiplier, event.leverage]
            if event.strategy is not None and event.model is not None and event.weight is not None:
                value["traded"] = meta_action_of(event.strategy, event.model, event.weight)
            return value
        value = {
            "event_id": event.event_id,
            "src": src,
            "timestamp": event.timestamp,
            "pnl_pct": event.pnl_pct,
            "max_drawdown_pct": event.max_drawdown_pct,
            "equity": event.equity,
        }
        if event.size_multiplier is not None and event.leverage is not None:
            # what was traded is the truth, limits or not: the grid level at or below it
            value["traded"] = sizing_action_within(event.size_multiplier, event.leverage, math.inf, math.inf)
        if event.prices is not None:
            market = compute_market_features(event.prices, market_config)
            value |= {
                "regime": market.regime,
                "volatility": market.volatility,
                "market_pressure": market.market_pressure,
            }
        return value

    def _progress(self, row: Row, position_id: str, src: list[Any]) -> list[Emit]:
        emits: list[Emit] = []
        signal = row.get("signal")
        arm = self.arm_of(position_id) if ("meta" not in row or "sizing" not in row) else ""
        control = arm == self.control_policy and arm != self.policy
        if signal is not None and "meta" not in row:
            decision = self.replica.decide_meta(_market(signal), signal["confidence"], f"{position_id}:meta")
            source = None
            if control:
                own = signal.get("own") or [None, None, None]
                choice = control_meta(
                    (own[0], own[1], own[2]),
                    self.baseline,
                    meta_action_mask(signal["regime"], self.replica.config),
                    self._control_random.stream(f"{position_id}:meta:control"),
                )
                decision = decision._replace(selection=Selection(choice.action, False, choice.propensity))
                source = choice.source
            row["meta"], emit = self._record(decision, "meta", position_id, row, signal, src, arm, source)
            emits.append(emit)
        execution = row.get("execution")
        if signal is not None and execution is not None and "sizing" not in row:
            decision = self.replica.decide_sizing(
                signal["confidence"],
                execution["portfolio_exposure"],
                signal["volatility"],
                f"{position_id}:sizing",
                execution["max_size_multiplier"],
                execution["max_leverage"],
            )
            source = None
            if control:
                own = execution.get("own") or [None, None]
                limits = (execution["max_size_multiplier"], execution["max_leverage"])
                choice = control_sizing(
                    (own[0], own[1]),
                    self.baseline,
                    limits,
                    sizing_action_mask(*limits),
                    self._control_random.stream(f"{position_id}:sizing:control"),
                )
                decision = decision._replace(selection=Selection(choice.action, False, choice.propensity))
                source = choice.source
            row["sizing"], emit = self._record(decision, "sizing", position_id, row, execution, src, arm, source)
            emits.append(emit)
        close = row.get("close")
        if close is not None and "meta" in row and "sizing" in row and "outcome" not in row:
            outcome = self._outcome(row, position_id)
            record = outcome.model_dump_json()
            row["outcome"] = {"record": record, "emitted_by": src}
            emits.append(Emit("outcome", record.encode(), policy=outcome.policy, overridden=_overridden(outcome)))
        return emits

    def _record(
        self,
        decision: Decision,
        agent: str,
        position_id: str,
        row: Row,
        trigger: Row,
        src: list[Any],
        arm: str,
        control_source: str | None,
    ) -> tuple[Row, Emit]:
        selection = decision.selection
        action = (META_ACTIONS[selection.action] if agent == "meta" else SIZING_ACTIONS[selection.action]).as_dict()
        state = decision.state.as_dict()
        decision_id = f"{position_id}:{agent}"
        topic, partition, offset = trigger["src"]
        record: Row = {
            "decision_id": decision_id,
            "position_id": position_id,
            "agent": agent,
            "action_index": selection.action,
            "action": action,
            "state": state,
            "state_key": decision.state_key,
            "explored": selection.explored,
            "epsilon": decision.epsilon,
            "propensity": selection.propensity,
            "policy": arm,
            "model_version": decision.model_version,
            "timestamp": self.clock_ms(),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "event_id": trigger["event_id"],
            "symbol": row["symbol"],
        }
        if control_source is not None:
            record["control_source"] = control_source  # "stack" (the event's own choice) or "baseline"
        if agent == "sizing":
            record["limits"] = {
                "max_size_multiplier": trigger["max_size_multiplier"],
                "max_leverage": trigger["max_leverage"],
            }
        text = json.dumps(record, separators=(",", ":"))
        # The row keeps the record as sent (re-sent on redelivery; the outcome reads it back),
        # not a second copy of its state: rows are re-encoded on every event of the position.
        return {"record": text, "emitted_by": src}, Emit("decision", text.encode(), agent, selection.explored, arm)

    def _outcome(self, row: Row, position_id: str) -> Outcome:
        signal, close = row["signal"], row["close"]
        at_close = close if "regime" in close else signal
        meta, meta_policy = _step(row["meta"], row["execution"].get("traded"))
        sizing, _ = _step(row["sizing"], close.get("traded"))
        return Outcome(
            position_id=position_id,
            symbol=row["symbol"],
            closed_at_ms=close["timestamp"],
            pnl_pct=close["pnl_pct"],
            max_drawdown_pct=close["max_drawdown_pct"],
            equity=close["equity"],
            meta=meta,
            sizing=sizing,
            next_regime=at_close["regime"],
            next_volatility=at_close["volatility"],
            next_market_pressure=at_close["market_pressure"],
            policy=meta_policy or self.policy,
            overridden="decided_action_index" in meta or "decided_action_index" in sizing,
        )

    @staticmethod
    def _emitted_by(row: Row, src: list[Any]) -> list[Emit]:
        emits = []
        for agent in ("meta", "sizing"):
            if agent in row and row[agent]["emitted_by"] == src:
                text = row[agent]["record"]
                record = json.loads(text)
                emits.append(Emit("decision", text.encode(), agent, record["explored"], record.get("policy", "")))
        if "outcome" in row and row["outcome"]["emitted_by"] == src:
            outcome = Outcome.model_validate_json(row["outcome"]["record"])
            emits.append(
                Emit(
                    "outcome", row["outcome"]["record"].encode(), policy=outcome.policy, overridden=_overridden(outcome)
                )
            )
        return emits


def _step(stored: Row, traded: int | None) -> tuple[Row, str | None]:
    """The outcome's view of a decision: the action as traded, in which state, and the arm that decided.

    `traded` is the action the stack reports having traded (None: it traded the decision)."""
    record = json.loads(stored["record"])
    step = {k: record[k] for k in ("decision_id", "state", "state_key", "action_index", "propensity")}
    if traded is not None and traded != record["action_index"]:
        step["decided_action_index"] = record["action_index"]
        step["action_index"] = traded
    limits = record.get("limits")
    if limits is not None:
        step["max_size_multiplier"] = limits["max_size_multiplier"]
        step["max_leverage"] = limits["max_leverage"]
    return step, record.get("policy")


def _overridden(outcome: Outcome) -> tuple[str, ...]:
    return tuple(
        agent
        for agent, step in (("meta", outcome.meta), ("sizing", outcome.sizing))
        if step.decided_action_index is not None
    )


def _market(signal: Row) -> MarketFeatures:
    return MarketFeatures(
        regime=signal["regime"],
        volatility=signal["volatility"],
        trend_strength=signal["trend_strength"],
        market_pressure=signal["market_pressure"],
    )
