"""The position join: three events of one position, in any order, into two decisions and one outcome.

Pure logic over one typed row per position (`PositionRow`, the value of the Faust positions
table, with its JSON codec below); the Faust agent owns the table, the offsets and the sends.
Per position id:

- SIGNAL_GENERATED  -> the meta decision (as soon as the signal is there);
- TRADE_EXECUTED    -> the sizing decision (as soon as signal and execution are there:
                       sizing needs the signal's confidence and volatility);
- POSITION_CLOSED   -> the outcome record (as soon as both decisions and the close are there).

Duplicates (same event_id, another offset) change nothing. A redelivery (same event_id,
same topic/partition/offset, as after a crash before the offset commit) re-emits the records
that event emitted the first time, with the same ids and bytes, except the decisions known to
be on the decisions topic already (`published`: read back when the partition was assigned, or
sent by this worker): those are not sent twice. A decision about to be made that is already
published (its record was sent by a previous owner whose table write was lost) is taken as
published, not made again, so the outcome credits the action that was published. A second,
different event of the same type for a position is a conflict and is dead-lettered.

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
    "CloseSlot",
    "Emit",
    "Emitted",
    "ExecutionSlot",
    "JoinResult",
    "PositionJoiner",
    "PositionRow",
    "Published",
    "RowReader",
    "SignalSlot",
    "Source",
    "decode_row",
    "encode_key",
    "encode_row",
]

Source = tuple[str, int, int]  # topic, partition, offset of an input record
Published = Callable[[str], "bytes | None"]  # decision id -> the record already on the decisions topic


def _nothing_published(decision_id: str) -> bytes | None:
    return None


Src = list[Any]  # the same, as the row stores it (a JSON list)
_SLOT = {"SIGNAL_GENERATED": "signal", "TRADE_EXECUTED": "execution", "POSITION_CLOSED": "close"}


# ---- the row ------------------------------------------------------------------------------------


@dataclass(slots=True)
class SignalSlot:
    """What the join keeps of the signal: the market features the meta decision (and the sizing
    decision and the outcome) read."""

    event_id: str
    src: Src
    confidence: float
    market: MarketFeatures
    own: list[Any] | None = None  # the stack's own [strategy, model, weight] (the control arm's choice)


@dataclass(slots=True)
class ExecutionSlot:
    """What the join keeps of the execution: the exposure and the effective risk limits."""

    event_id: str
    src: Src
    portfolio_exposure: float
    max_size_multiplier: float
    max_leverage: float
    own: list[Any] | None = None  # the stack's own [size_multiplier, leverage] (the control arm's choice)
    traded: int | None = None  # the meta action index as traded, when the execution reports one


@dataclass(slots=True)
class CloseSlot:
    """What the join keeps of the close; the market at close when the close carried prices."""

    event_id: str
    src: Src
    timestamp: int
    pnl_pct: float
    max_drawdown_pct: float
    equity: float
    regime: str | None = None
    volatility: float | None = None
    market_pressure: float | None = None
    traded: int | None = None  # the sizing action index as traded, when the close reports one


@dataclass(slots=True)
class Emitted:
    """A record the join emitted, as sent (re-sent as is on a redelivery), and the input that emitted it."""

    record: str
    emitted_by: Src


@dataclass(slots=True)
class PositionRow:
    """One position in the join: its three input slots, what it emitted, its partition and last update."""

    symbol: str
    partition: int = -1
    updated_ms: int = 0
    signal: SignalSlot | None = None
    execution: ExecutionSlot | None = None
    close: CloseSlot | None = None
    meta: Emitted | None = None
    sizing: Emitted | None = None
    outcome: Emitted | None = None

    def copy(self) -> PositionRow:
        """A new row holding the same slots (slots are replaced, never changed in place)."""
        return PositionRow(
            self.symbol,
            self.partition,
            self.updated_ms,
            self.signal,
            self.execution,
            self.close,
            self.meta,
            self.sizing,
            self.outcome,
        )

    def inputs(self) -> list[str]:
        """The input slots present, for messages."""
        return [name for name in ("signal", "execution", "close") if getattr(self, name) is not None]


# ---- the row's codec (the table value and its changelog record) -----------------------------------
#
# JSON, the shape Faust's "json" codec reads back in changelog recovery (which hands the table a
# dict, not bytes): {"symbol", "partition", "updated_ms", "signal": {...}, "execution": {...},
# "close": {...}, "meta" / "sizing" / "outcome": {"record", "emitted_by"}}, absent slots omitted.


def encode_key(position_id: str) -> bytes:
    """A positions-table key exactly as Faust's table writes it (its "json" key codec): same bytes,
    so changelog compaction and Faust's own tombstones (expiry) address the same key."""
    return json.dumps(position_id).encode()


def encode_row(row: PositionRow) -> bytes:
    """A row as the positions table stores it and its changelog carries it."""
    out: dict[str, Any] = {"symbol": row.symbol}
    if (s := row.signal) is not None:
        m = s.market
        out["signal"] = {
            "event_id": s.event_id,
            "src": s.src,
            "confidence": s.confidence,
            "regime": m.regime,
            "volatility": m.volatility,
            "trend_strength": m.trend_strength,
            "market_pressure": m.market_pressure,
        }
        if s.own is not None:
            out["signal"]["own"] = s.own
    if (e := row.execution) is not None:
        out["execution"] = {
            "event_id": e.event_id,
            "src": e.src,
            "portfolio_exposure": e.portfolio_exposure,
            "max_size_multiplier": e.max_size_multiplier,
            "max_leverage": e.max_leverage,
        }
        if e.own is not None:
            out["execution"]["own"] = e.own
        if e.traded is not None:
            out["execution"]["traded"] = e.traded
    if (c := row.close) is not None:
        close: dict[str, Any] = {
            "event_id": c.event_id,
            "src": c.src,
            "timestamp": c.timestamp,
            "pnl_pct": c.pnl_pct,
            "max_drawdown_pct": c.max_drawdown_pct,
            "equity": c.equity,
        }
        if c.regime is not None:
            close |= {"regime": c.regime, "volatility": c.volatility, "market_pressure": c.market_pressure}
        if c.traded is not None:
            close["traded"] = c.traded
        out["close"] = close
    out["partition"] = row.partition
    for name in ("meta", "sizing", "outcome"):
        emitted: Emitted | None = getattr(row, name)
        if emitted is not None:
            out[name] = {"record": emitted.record, "emitted_by": emitted.emitted_by}
    out["updated_ms"] = row.updated_ms
    return json.dumps(out, separators=(",", ":")).encode()


def decode_row(value: bytes | dict[str, Any]) -> PositionRow:
    """A stored row: bytes as written by `encode_row`, or the dict Faust's changelog recovery made of them."""
    d: dict[str, Any] = json.loads(value) if not isinstance(value, dict) else value
    row = PositionRow(d["symbol"], d.get("partition", -1), d.get("updated_ms", 0))
    if (s := d.get("signal")) is not None:
        row.signal = SignalSlot(
            s["event_id"],
            s["src"],
            s["confidence"],
            MarketFeatures(s["regime"], s["volatility"], s["trend_strength"], s["market_pressure"]),
            s.get("own"),
        )
    if (e := d.get("execution")) is not None:
        row.execution = ExecutionSlot(
            e["event_id"],
            e["src"],
            e["portfolio_exposure"],
            e["max_size_multiplier"],
            e["max_leverage"],
            e.get("own"),
            e.get("traded"),
        )
    if (c := d.get("close")) is not None:
        row.close = CloseSlot(
            c["event_id"],
            c["src"],
            c["timestamp"],
            c["pnl_pct"],
            c["max_drawdown_pct"],
            c["equity"],
            c.get("regime"),
            c.get("volatility"),
            c.get("market_pressure"),
            c.get("traded"),
        )
    for name in ("meta", "sizing", "outcome"):
        if (emitted := d.get(name)) is not None:
            setattr(row, name, Emitted(emitted["record"], emitted["emitted_by"]))
    return row


RowReader = Callable[[str], PositionRow | None]


# ---- the join -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    kind: Literal["decision", "outcome"]
    value: bytes
    agent: str = ""  # decisions: "meta" | "sizing" (for metrics, without parsing `value`)
    explored: bool = False
    policy: str = ""  # decisions and outcomes: the arm
    overridden: tuple[str, ...] = ()  # outcomes: the agents whose published action was not traded
    outcome: Outcome | None = None  # outcomes: the record as built (`value` is its JSON), for a caller that applies it


@dataclass(frozen=True, slots=True)
class JoinResult:
    position_id: str
    row: PositionRow
    emits: list[Emit]
    status: Literal["applied", "duplicate", "redelivered"]


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
        row: PositionRow | None,
        event: SignalGenerated | TradeExecuted | PositionClosed,
        source: Source,
        event_ms: int | None = None,
        published: Published = _nothing_published,
    ) -> JoinResult:
        """Join one event. `event_ms` is the input record's timestamp: the row's `updated_ms`,
        which expiry compares with its partition's stream time (wall clock when absent);
        `published` finds the decisions of this partition already on the decisions topic."""
        slot = _SLOT[event.event_type]
        src = list(source)
        if row is None:
            row = PositionRow(event.symbol)
        else:
            row = _as_published(row, event.position_id, published)
            stored: SignalSlot | ExecutionSlot | CloseSlot | None = getattr(row, slot)
            if stored is not None:
                if stored.event_id != event.event_id:
                    raise InvalidEventError(
                        f"position {event.position_id} already has {event.event_type} {stored.event_id!r}",
                        "ConflictingEvent",
                    )
                if stored.src == src:
                    emits = self._emitted_by(row, src, event.position_id, published)
                    return JoinResult(event.position_id, row, emits, "redelivered")
                return JoinResult(event.position_id, row, [], "duplicate")
            if row.symbol != event.symbol:
                raise InvalidEventError(
                    f"position {event.position_id} is on {row.symbol}, this event says {event.symbol}",
                    "ConflictingEvent",
                )
            row = row.copy()
        setattr(row, slot, self._slot_value(event, src))
        row.partition = source[1]
        emits = self._progress(row, event.position_id, src, published)
        row.updated_ms = self.clock_ms() if event_ms is None else event_ms
        return JoinResult(event.position_id, row, emits, "applied")

    # ---- building the row ---------------------------------------------------------------------

    def _slot_value(
        self, event: SignalGenerated | TradeExecuted | PositionClosed, src: Src
    ) -> SignalSlot | ExecutionSlot | CloseSlot:
        market_config = self.replica.config.market
        if isinstance(event, SignalGenerated):
            market = compute_market_features(event.prices, market_config, event.buy_volume, event.sell_volume)
            own = None
            if event.strategy is not None or event.model is not None or event.weight is not None:
                own = [event.strategy, event.model, event.weight]
            return SignalSlot(event.event_id, src, event.confidence, market, own)
        if isinstance(event, TradeExecuted):
            limits = effective_limits(self.replica.config.risk, event.max_size_multiplier, event.max_leverage)
            try:
                sizing_action_mask(*limits)
            except NoAllowedActionError as exc:
                raise InvalidEventError(str(exc), "NoAllowedAction") from None
            execution = ExecutionSlot(event.event_id, src, event.portfolio_exposure, limits[0], limits[1])
            if event.size_multiplier is not None or event.leverage is not None:
                execution.own = [event.size_multiplier, event.leverage]
            if event.strategy is not None and event.model is not None and event.weight is not None:
                execution.traded = meta_action_of(event.strategy, event.model, event.weight)
            return execution
        close = CloseSlot(event.event_id, src, event.timestamp, event.pnl_pct, event.max_drawdown_pct, event.equity)
        if event.size_multiplier is not None and event.leverage is not None:
            # what was traded is the truth, limits or not: the grid level at or below it
            close.traded = sizing_action_within(event.size_multiplier, event.leverage, math.inf, math.inf)
        if event.prices is not None:
            market = compute_market_features(event.prices, market_config)
            close.regime, close.volatility, close.market_pressure = (
                market.regime,
                market.volatility,
                market.market_pressure,
            )
        return close

    def _progress(self, row: PositionRow, position_id: str, src: Src, published: Published) -> list[Emit]:
        emits: list[Emit] = []
        signal, execution = row.signal, row.execution
        # a decision already on the topic is taken as it was published, not made again
        if signal is not None and row.meta is None and (taken := published(f"{position_id}:meta")) is not None:
            row.meta = Emitted(taken.decode(), src)
        if (
            signal is not None
            and execution is not None
            and row.sizing is None
            and (taken := published(f"{position_id}:sizing")) is not None
        ):
            row.sizing = Emitted(taken.decode(), src)
        arm = self.arm_of(position_id) if (row.meta is None or row.sizing is None) else ""
        control = arm == self.control_policy and arm != self.policy
        if signal is not None and row.meta is None:
            stack = None
            own = signal.own
            if own is not None and self.replica.config.learning.meta_stack_margin and None not in own:
                stack = meta_action_of(own[0], own[1], own[2])  # the stack's own choice: the agent's default
            decision = self.replica.decide_meta(signal.market, signal.confidence, f"{position_id}:meta", stack)
            source = None
            if control:
                own = signal.own or [None, None, None]
                choice = control_meta(
                    (own[0], own[1], own[2]),
                    self.baseline,
                    meta_action_mask(signal.market.regime, self.replica.config),
                    self._control_random.stream(f"{position_id}:meta:control"),
                )
                decision = decision._replace(selection=Selection(choice.action, False, choice.propensity))
                source = choice.source
            row.meta, emit = self._record(
                decision, "meta", position_id, row.symbol, signal.event_id, signal.src, src, arm, source
            )
            emits.append(emit)
        if signal is not None and execution is not None and row.sizing is None:
            # the sizing context (only when the rules learn one): the signal's regime and the meta
            # action as traded; the published one is read back from its record, so not per event otherwise
            rules = self.replica.config.learning
            meta_action = execution.traded
            if meta_action is None and row.meta is not None and (rules.sizing_context or rules.sizing_edge):
                meta_action = json.loads(row.meta.record)["action_index"]
            edge = None
            if rules.sizing_edge and meta_action is not None:
                edge = self.replica.sizing_edge_of(signal.market, signal.confidence, meta_action)
            decision = self.replica.decide_sizing(
                signal.confidence,
                execution.portfolio_exposure,
                signal.market.volatility,
                f"{position_id}:sizing",
                execution.max_size_multiplier,
                execution.max_leverage,
                signal.market.regime,
                meta_action,
                edge,
            )
            source = None
            if control:
                own = execution.own or [None, None]
                limits = (execution.max_size_multiplier, execution.max_leverage)
                choice = control_sizing(
                    (own[0], own[1]),
                    self.baseline,
                    limits,
                    sizing_action_mask(*limits),
                    self._control_random.stream(f"{position_id}:sizing:control"),
                )
                decision = decision._replace(selection=Selection(choice.action, False, choice.propensity))
                source = choice.source
            row.sizing, emit = self._record(
                decision,
                "sizing",
                position_id,
                row.symbol,
                execution.event_id,
                execution.src,
                src,
                arm,
                source,
                {"max_size_multiplier": execution.max_size_multiplier, "max_leverage": execution.max_leverage},
            )
            emits.append(emit)
        if row.close is not None and row.meta is not None and row.sizing is not None and row.outcome is None:
            outcome = self._outcome(row, position_id)
            record = outcome.model_dump_json()
            row.outcome = Emitted(record, src)
            emits.append(
                Emit(
                    "outcome", record.encode(), policy=outcome.policy, overridden=_overridden(outcome), outcome=outcome
                )
            )
        return emits

    def _record(
        self,
        decision: Decision,
        agent: str,
        position_id: str,
        symbol: str,
        trigger_event_id: str,
        trigger_src: Src,
        src: Src,
        arm: str,
        control_source: str | None,
        limits: dict[str, float] | None = None,
    ) -> tuple[Emitted, Emit]:
        selection = decision.selection
        action = (META_ACTIONS[selection.action] if agent == "meta" else SIZING_ACTIONS[selection.action]).as_dict()
        topic, partition, offset = trigger_src
        record: dict[str, Any] = {
            "decision_id": f"{position_id}:{agent}",
            "position_id": position_id,
            "agent": agent,
            "action_index": selection.action,
            "action": action,
            "state": decision.state.as_dict(),
            "state_key": decision.state_key,
            "explored": selection.explored,
            "epsilon": decision.epsilon,
            "propensity": selection.propensity,
            "policy": arm,
            "model_version": decision.model_version,
            "timestamp": self.clock_ms(),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "event_id": trigger_event_id,
            "symbol": symbol,
        }
        if control_source is not None:
            record["control_source"] = control_source  # "stack" (the event's own choice) or "baseline"
        if limits is not None:
            record["limits"] = limits
        text = json.dumps(record, separators=(",", ":"))
        # The row keeps the record as sent (re-sent on redelivery; the outcome reads it back),
        # not a second copy of its state: rows are re-encoded on every event of the position.
        return Emitted(text, src), Emit("decision", text.encode(), agent, selection.explored, arm)

    def _outcome(self, row: PositionRow, position_id: str) -> Outcome:
        signal, close, meta, sizing = row.signal, row.close, row.meta, row.sizing
        assert signal is not None and close is not None and meta is not None and sizing is not None
        if close.regime is not None:
            next_regime, next_volatility, next_pressure = close.regime, close.volatility, close.market_pressure
        else:
            market = signal.market
            next_regime, next_volatility, next_pressure = market.regime, market.volatility, market.market_pressure
        execution = row.execution
        meta_step, meta_policy = _step(meta, None if execution is None else execution.traded)
        sizing_step, _ = _step(sizing, close.traded)
        return Outcome(
            position_id=position_id,
            symbol=row.symbol,
            closed_at_ms=close.timestamp,
            pnl_pct=close.pnl_pct,
            max_drawdown_pct=close.max_drawdown_pct,
            equity=close.equity,
            meta=meta_step,
            sizing=sizing_step,
            next_regime=next_regime,
            next_volatility=next_volatility,
            next_market_pressure=next_pressure,
            policy=meta_policy or self.policy,
            overridden="decided_action_index" in meta_step or "decided_action_index" in sizing_step,
        )

    @staticmethod
    def _emitted_by(row: PositionRow, src: Src, position_id: str, published: Published) -> list[Emit]:
        emits = []
        for agent, emitted in (("meta", row.meta), ("sizing", row.sizing)):
            if emitted is not None and emitted.emitted_by == src and published(f"{position_id}:{agent}") is None:
                record = json.loads(emitted.record)
                emits.append(
                    Emit("decision", emitted.record.encode(), agent, record["explored"], record.get("policy", ""))
                )
        if row.outcome is not None and row.outcome.emitted_by == src:
            outcome = Outcome.model_validate_json(row.outcome.record)
            emits.append(
                Emit("outcome", row.outcome.record.encode(), policy=outcome.policy, overridden=_overridden(outcome))
            )
        return emits


def _as_published(row: PositionRow, position_id: str, published: Published) -> PositionRow:
    """The row with its decisions as published, where the topic holds another record for one
    (a row restored from the changelog can be older than what a previous owner sent)."""
    for agent in ("meta", "sizing"):
        stored: Emitted | None = getattr(row, agent)
        if stored is None:
            continue
        taken = published(f"{position_id}:{agent}")
        if taken is not None and taken.decode() != stored.record:
            row = row.copy()
            setattr(row, agent, Emitted(taken.decode(), stored.emitted_by))
    return row


def _step(stored: Emitted, traded: int | None) -> tuple[dict[str, Any], str | None]:
    """The outcome's view of a decision (read back from the record as sent): the action as traded, in
    which state, and the arm that decided. `traded` is what the stack reports having traded (None:
    it traded the decision)."""
    record = json.loads(stored.record)
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
