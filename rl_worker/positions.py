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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rl_worker.contract import InvalidEventError, PositionClosed, SignalGenerated, TradeExecuted
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, effective_limits, sizing_action_mask
from rl_worker.core.exceptions import NoAllowedActionError
from rl_worker.core.market import MarketFeatures, compute_market_features
from rl_worker.core.outcome import Outcome
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


@dataclass(slots=True)
class ExecutionSlot:
    """What the join keeps of the execution: the exposure and the effective risk limits."""

    event_id: str
    src: Src
    portfolio_exposure: float
    max_size_multiplier: float
    max_leverage: float


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
            self.symbol, self.partition, self.updated_ms, self.signal, self.execution, self.close,
            self.meta, self.sizing, self.outcome,
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
            "event_id": s.event_id, "src": s.src, "confidence": s.confidence, "regime": m.regime,
            "volatility": m.volatility, "trend_strength": m.trend_strength, "market_pressure": m.market_pressure,
        }
    if (e := row.execution) is not None:
        out["execution"] = {
            "event_id": e.event_id, "src": e.src, "portfolio_exposure": e.portfolio_exposure,
            "max_size_multiplier": e.max_size_multiplier, "max_leverage": e.max_leverage,
        }
    if (c := row.close) is not None:
        close: dict[str, Any] = {
            "event_id": c.event_id, "src": c.src, "timestamp": c.timestamp, "pnl_pct": c.pnl_pct,
            "max_drawdown_pct": c.max_drawdown_pct, "equity": c.equity,
        }
        if c.regime is not None:
            close |= {"regime": c.regime, "volatility": c.volatility, "market_pressure": c.market_pressure}
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
            s["event_id"], s["src"], s["confidence"],
            MarketFeatures(s["regime"], s["volatility"], s["trend_strength"], s["market_pressure"]),
        )
    if (e := d.get("execution")) is not None:
        row.execution = ExecutionSlot(
            e["event_id"], e["src"], e["portfolio_exposure"], e["max_size_multiplier"], e["max_leverage"]
        )
    if (c := d.get("close")) is not None:
        row.close = CloseSlot(
            c["event_id"], c["src"], c["timestamp"], c["pnl_pct"], c["max_drawdown_pct"], c["equity"],
            c.get("regime"), c.get("volatility"), c.get("market_pressure"),
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


@dataclass(frozen=True, slots=True)
class JoinResult:
    position_id: str
    row: PositionRow
    emits: list[Emit]
    status: Literal["applied", "duplicate", "redelivered"]


class PositionJoiner:
    """Turns events into rows, decisions and outcomes, reading the model replica to decide."""

    def __init__(self, replica: ModelReplica, policy: str, clock_ms: Callable[[], int]) -> None:
        self.replica = replica
        self.policy = policy
        self.clock_ms = clock_ms

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
            return SignalSlot(event.event_id, src, event.confidence, market)
        if isinstance(event, TradeExecuted):
            limits = effective_limits(self.replica.config.risk, event.max_size_multiplier, event.max_leverage)
            try:
                sizing_action_mask(*limits)
            except NoAllowedActionError as exc:
                raise InvalidEventError(str(exc), "NoAllowedAction") from None
            return ExecutionSlot(event.event_id, src, event.portfolio_exposure, limits[0], limits[1])
        close = CloseSlot(
            event.event_id, src, event.timestamp, event.pnl_pct, event.max_drawdown_pct, event.equity
        )
        if event.prices is not None:
            market = compute_market_features(event.prices, market_config)
            close.regime, close.volatility, close.market_pressure = (
                market.regime, market.volatility, market.market_pressure
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
        if signal is not None and row.meta is None:
            decision = self.replica.decide_meta(signal.market, signal.confidence, f"{position_id}:meta")
            row.meta, emit = self._record(decision, "meta", position_id, row.symbol, signal.event_id, signal.src, src)
            emits.append(emit)
        if signal is not None and execution is not None and row.sizing is None:
            decision = self.replica.decide_sizing(
                signal.confidence,
                execution.portfolio_exposure,
                signal.market.volatility,
                f"{position_id}:sizing",
                execution.max_size_multiplier,
                execution.max_leverage,
            )
            row.sizing, emit = self._record(
                decision, "sizing", position_id, row.symbol, execution.event_id, execution.src, src,
                {"max_size_multiplier": execution.max_size_multiplier, "max_leverage": execution.max_leverage},
            )
            emits.append(emit)
        if row.close is not None and row.meta is not None and row.sizing is not None and row.outcome is None:
            record = self._outcome(row, position_id)
            row.outcome = Emitted(record, src)
            emits.append(Emit("outcome", record.encode()))
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
        limits: dict[str, float] | None = None,
    ) -> tuple[Emitted, Emit]:
        selection = decision.selection
        action = (
            META_ACTIONS[selection.action] if agent == "meta" else SIZING_ACTIONS[selection.action]
        ).as_dict()
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
            "policy": self.policy,
            "model_version": decision.model_version,
            "timestamp": self.clock_ms(),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "event_id": trigger_event_id,
            "symbol": symbol,
        }
        if limits is not None:
            record["limits"] = limits
        text = json.dumps(record, separators=(",", ":"))
        # The row keeps the record as sent (re-sent on redelivery; the outcome reads it back),
        # not a second copy of its state: rows are re-encoded on every event of the position.
        return Emitted(text, src), Emit("decision", text.encode(), agent, selection.explored)

    def _outcome(self, row: PositionRow, position_id: str) -> str:
        signal, close, meta, sizing = row.signal, row.close, row.meta, row.sizing
        assert signal is not None and close is not None and meta is not None and sizing is not None
        if close.regime is not None:
            next_regime, next_volatility, next_pressure = close.regime, close.volatility, close.market_pressure
        else:
            market = signal.market
            next_regime, next_volatility, next_pressure = market.regime, market.volatility, market.market_pressure
        outcome = Outcome(
            position_id=position_id,
            symbol=row.symbol,
            closed_at_ms=close.timestamp,
            pnl_pct=close.pnl_pct,
            max_drawdown_pct=close.max_drawdown_pct,
            equity=close.equity,
            meta=_step(meta),
            sizing=_step(sizing),
            next_regime=next_regime,
            next_volatility=next_volatility,
            next_market_pressure=next_pressure,
            policy=self.policy,
        )
        return outcome.model_dump_json()

    @staticmethod
    def _emitted_by(row: PositionRow, src: Src, position_id: str, published: Published) -> list[Emit]:
        emits = [
            Emit("decision", emitted.record.encode(), agent, json.loads(emitted.record)["explored"])
            for agent, emitted in (("meta", row.meta), ("sizing", row.sizing))
            if emitted is not None and emitted.emitted_by == src and published(f"{position_id}:{agent}") is None
        ]
        if row.outcome is not None and row.outcome.emitted_by == src:
            emits.append(Emit("outcome", row.outcome.record.encode()))
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


def _step(stored: Emitted) -> dict[str, Any]:
    """The outcome's view of a decision: what was decided, in which state (read back from the record as sent)."""
    record = json.loads(stored.record)
    return {k: record[k] for k in ("decision_id", "state", "state_key", "action_index")}
