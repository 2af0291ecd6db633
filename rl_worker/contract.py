"""The topic contract: pydantic models of the three input events, the decision and the outcome.

Input models are strict (a string where a number belongs is an error, not a coercion),
reject NaN and infinities, and ignore unknown extra fields. `decode_event` turns raw
record bytes into a model or raises `InvalidEventError` with a reason for the dead letter.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from rl_worker.core.outcome import Outcome
from rl_worker.core.types import Model, Strategy
from rl_worker.errors import RlWorkerError

__all__ = [
    "INPUT_EVENT_TYPES",
    "MAX_POSITION_ID_BYTES",
    "DecisionRecord",
    "InputEvent",
    "InvalidEventError",
    "Outcome",
    "PositionClosed",
    "SignalGenerated",
    "TradeExecuted",
    "decode_event",
    "to_epoch_ms",
]

MAX_POSITION_ID_BYTES = 256


class InvalidEventError(RlWorkerError):
    """An input record that cannot be used; it goes to the dead-letter topic with this reason."""

    def __init__(self, reason: str, kind: str = "InvalidEvent") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def to_epoch_ms(value: Any) -> int:
    """ISO-8601 text or epoch milliseconds (int) to epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO-8601 text or epoch milliseconds")
    if isinstance(value, int):
        if not 0 <= value < 10**14:
            raise ValueError("epoch-ms timestamp out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not 0 <= value < 10**14:
            raise ValueError("epoch-ms timestamp out of range")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"timestamp {value[:40]!r} is not ISO-8601") from exc
        if parsed.tzinfo is None:
            raise ValueError("ISO-8601 timestamp needs a time zone (e.g. Z)")
        return int(parsed.timestamp() * 1000)
    raise ValueError("timestamp must be ISO-8601 text or epoch milliseconds")


Timestamp = Annotated[int, BeforeValidator(to_epoch_ms), Field(description="ISO-8601 or epoch ms")]
# Bounds keep every later computation finite (logs of price ratios, squares of pnl).
Price = Annotated[float, Field(ge=1e-9, le=1e12)]
Money = Annotated[float, Field(gt=0, le=1e15)]
Volume = Annotated[float, Field(ge=0, le=1e15)]
Percent = Annotated[float, Field(ge=-1e5, le=1e5)]
Limit = Annotated[float, Field(gt=0, le=1e6)]
Unit = Annotated[float, Field(ge=0, le=1)]
Side = Literal["LONG", "SHORT"]


class _Event(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)

    event_id: str = Field(min_length=1, max_length=256)
    position_id: str = Field(min_length=1, description=f"at most {MAX_POSITION_ID_BYTES} UTF-8 bytes")
    symbol: str = Field(min_length=1, max_length=64)
    timestamp: Timestamp

    @field_validator("position_id")
    @classmethod
    def _position_id_bytes(cls, value: str) -> str:
        if len(value.encode()) > MAX_POSITION_ID_BYTES:
            raise ValueError(f"position_id longer than {MAX_POSITION_ID_BYTES} bytes")
        return value


class SignalGenerated(_Event):
    """A trading signal: the meta agent picks strategy, model and ensemble weight."""

    event_type: Literal["SIGNAL_GENERATED"]
    side: Side
    confidence: Unit
    prices: list[Price] = Field(min_length=2, max_length=4096, description="recent closes, oldest first")
    buy_volume: Volume | None = None
    sell_volume: Volume | None = None
    strategy: Strategy | None = Field(None, description="what the stack would use without RL")
    model: Model | None = None
    weight: Unit | None = None


class TradeExecuted(_Event):
    """An execution: the sizing agent picks size multiplier and leverage inside the risk limits."""

    event_type: Literal["TRADE_EXECUTED"]
    side: Side
    entry_price: Price
    portfolio_exposure: Unit
    equity: Money
    max_leverage: Limit | None = Field(None, description="tightens the config")
    max_size_multiplier: Limit | None = Field(None, description="tightens the config")
    size_multiplier: Limit | None = Field(None, description="what the stack would use")
    leverage: Limit | None = None
    strategy: Strategy | None = Field(None, description="the meta action as traded, when not the decision's")
    model: Model | None = None
    weight: Unit | None = None
    meta_fallback: bool | None = Field(None, description="the stack traded its own meta choice after a timeout")


class PositionClosed(_Event):
    """A closed position: its outcome feeds both agents' rewards."""

    event_type: Literal["POSITION_CLOSED"]
    exit_price: Price
    pnl_pct: Percent = Field(description="percent units: 1.5 = +1.5 %")
    max_drawdown_pct: float = Field(ge=0, le=1e5, description="percent units")
    equity: Money
    prices: list[Price] | None = Field(None, min_length=2, max_length=4096)
    size_multiplier: Limit | None = Field(None, description="the sizing as traded, when not the decision's")
    leverage: Limit | None = None
    sizing_fallback: bool | None = Field(None, description="the stack traded its own sizing after a timeout")


InputEvent = Annotated[SignalGenerated | TradeExecuted | PositionClosed, Field(discriminator="event_type")]
_INPUT = TypeAdapter(InputEvent)
# The event type each input topic carries, by its field name in `Settings.topics`.
INPUT_EVENT_TYPES = {
    "signals": "SIGNAL_GENERATED",
    "executions": "TRADE_EXECUTED",
    "closes": "POSITION_CLOSED",
}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def decode_event(
    value: bytes | None, expected_type: str | None = None, max_bytes: int = 65536
) -> SignalGenerated | TradeExecuted | PositionClosed:
    """Validate one input record; raise InvalidEventError naming what is wrong."""
    if value is None:
        raise InvalidEventError("record has no value", "EmptyRecord")
    if len(value) > max_bytes:
        raise InvalidEventError(f"record of {len(value)} bytes exceeds {max_bytes}", "RecordTooLarge")
    try:
        event = _INPUT.validate_json(value)
    except ValidationError as exc:
        kind = "InvalidJson" if any(e["type"] == "json_invalid" for e in exc.errors()) else "SchemaViolation"
        raise InvalidEventError(_describe(exc), kind) from None
    if expected_type is not None and event.event_type != expected_type:
        raise InvalidEventError(
            f"event_type {event.event_type} on a topic that carries {expected_type}", "WrongEventType"
        )
    return event


class SourceRef(BaseModel):
    topic: str
    partition: int
    offset: int


class DecisionRecord(BaseModel):
    """One decision on `rl.decisions` (the contract's field names)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    decision_id: str
    position_id: str
    agent: Literal["meta", "sizing"]
    action_index: int = Field(ge=0)
    action: dict[str, str | float | int]
    state: dict[str, str | float]
    state_key: str
    explored: bool
    epsilon: float = Field(ge=0, le=1)
    propensity: float = Field(gt=0, le=1)
    policy: str
    model_version: int = Field(ge=0)
    timestamp: int = Field(description="epoch ms when the decision was made")
    source: SourceRef
    event_id: str
    symbol: str
