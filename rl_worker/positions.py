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

    def __init__(self, replica: ModelReplica, policy: str, clock_ms: Callable[[], int]) -> None:
        self.replica = replica
        self.policy = policy
        self.clock_ms = clock_ms

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
            return {
                "event_id": event.event_id,
                "src": src,
                "confidence": event.confidence,
                "regime": market.regime,
                "volatility": market.volatility,
                "trend_strength": market.trend_strength,
                "market_pressure": market.market_pressure,
            }
        if isinstance(event, TradeExecuted):
            limits = effective_limits(self.replica.config.risk, event.max_size_multiplier, event.max_leverage)
            try:
                sizing_action_mask(*limits)
            except NoAllowedActionError as exc:
                raise InvalidEventError(str(exc), "NoAllowedAction") from None
            return {
                "event_id": event.event_id,
                "src": src,
                "portfolio_exposure": event.portfolio_exposure,
                "max_size_multiplier": limits[0],
                "max_leverage": limits[1],
            }
        value: Row = {
            "event_id": event.event_id,
            "src": src,
            "timestamp": event.timestamp,
            "pnl_pct": event.pnl_pct,
            "max_drawdown_pct": event.max_drawdown_pct,
            "equity": event.equity,
        }
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
        if signal is not None and "meta" not in row:
            decision = self.replica.decide_meta(
                _market(signal), signal["confidence"], f"{position_id}:meta"
            )
            row["meta"], emit = self._record(decision, "meta", position_id, row, signal, src)
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
            row["sizing"], emit = self._record(decision, "sizing", position_id, row, execution, src)
            emits.append(emit)
        close = row.get("close")
        if close is not None and "meta" in row and "sizing" in row and "outcome" not in row:
            record = self._outcome(row, position_id)
            row["outcome"] = {"record": record, "emitted_by": src}
            emits.append(Emit("outcome", record.encode()))
        return emits

    def _record(
        self, decision: Decision, agent: str, position_id: str, row: Row, trigger: Row, src: list[Any]
    ) -> tuple[Row, Emit]:
        selection = decision.selection
        action = (
            META_ACTIONS[selection.action] if agent == "meta" else SIZING_ACTIONS[selection.action]
        ).as_dict()
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
            "policy": self.policy,
            "model_version": decision.model_version,
            "timestamp": self.clock_ms(),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "event_id": trigger["event_id"],
            "symbol": row["symbol"],
        }
        if agent == "sizing":
            record["limits"] = {
                "max_size_multiplier": trigger["max_size_multiplier"],
                "max_leverage": trigger["max_leverage"],
            }
        text = json.dumps(record, separators=(",", ":"))
        # The row keeps the record as sent (re-sent on redelivery; the outcome reads it back),
        # not a second copy of its state: rows are re-encoded on every event of the position.
        return {"record": text, "emitted_by": src}, Emit("decision", text.encode(), agent, selection.explored)

    def _outcome(self, row: Row, position_id: str) -> str:
        signal, close = row["signal"], row["close"]
        at_close = close if "regime" in close else signal
        outcome = Outcome(
            position_id=position_id,
            symbol=row["symbol"],
            closed_at_ms=close["timestamp"],
            pnl_pct=close["pnl_pct"],
            max_drawdown_pct=close["max_drawdown_pct"],
            equity=close["equity"],
            meta=_step(row["meta"]),
            sizing=_step(row["sizing"]),
            next_regime=at_close["regime"],
            next_volatility=at_close["volatility"],
            next_market_pressure=at_close["market_pressure"],
            policy=self.policy,
        )
        return outcome.model_dump_json()

    @staticmethod
    def _emitted_by(row: Row, src: list[Any]) -> list[Emit]:
        emits = [
            Emit("decision", text.encode(), agent, json.loads(text)["explored"])
            for agent in ("meta", "sizing")
            if agent in row and row[agent]["emitted_by"] == src
            for text in (row[agent]["record"],)
        ]
        if "outcome" in row and row["outcome"]["emitted_by"] == src:
            emits.append(Emit("outcome", row["outcome"]["record"].encode()))
        return emits


def _step(stored: Row) -> Row:
    """The outcome's view of a decision: what was decided, in which state."""
    record = json.loads(stored["record"])
    return {k: record[k] for k in ("decision_id", "state", "state_key", "action_index")}


def _market(signal: Row) -> MarketFeatures:
    return MarketFeatures(
        regime=signal["regime"],
        volatility=signal["volatility"],
        trend_strength=signal["trend_strength"],
        market_pressure=signal["market_pressure"],
    )
