"""Published JSON Schemas and examples of the topic contract, generated from the pydantic models.

`python -m rl_worker.schemas` rewrites `topics/`; a test fails when the files drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rl_worker.contract import DecisionRecord, PositionClosed, SignalGenerated, TradeExecuted
from rl_worker.core.outcome import Outcome

__all__ = ["EXAMPLES", "SCHEMAS", "render_topics"]

SCHEMAS: dict[str, Any] = {
    "signal_generated": SignalGenerated,
    "trade_executed": TradeExecuted,
    "position_closed": PositionClosed,
    "decision": DecisionRecord,
    "outcome": Outcome,
}

_PRICES = [100.0, 100.4, 100.9, 101.3, 101.2, 101.8]
_SIGNAL = {
    "event_id": "sig-0001",
    "event_type": "SIGNAL_GENERATED",
    "position_id": "pos-0001",
    "symbol": "BTCUSDT",
    "timestamp": "2026-11-27T12:00:00Z",
    "side": "LONG",
    "confidence": 0.72,
    "prices": _PRICES,
    "buy_volume": 120.5,
    "sell_volume": 80.25,
    "strategy": "dual_momentum",
    "model": "xgb",
    "weight": 0.5,
}
_EXECUTION = {
    "event_id": "exe-0001",
    "event_type": "TRADE_EXECUTED",
    "position_id": "pos-0001",
    "symbol": "BTCUSDT",
    "timestamp": 1795780800500,
    "side": "LONG",
    "entry_price": 101.8,
    "portfolio_exposure": 0.35,
    "equity": 10000.0,
    "max_leverage": 5,
    "max_size_multiplier": 0.8,
}
_CLOSE = {
    "event_id": "cls-0001",
    "event_type": "POSITION_CLOSED",
    "position_id": "pos-0001",
    "symbol": "BTCUSDT",
    "timestamp": "2026-11-27T13:10:00+00:00",
    "exit_price": 103.1,
    "pnl_pct": 1.28,
    "max_drawdown_pct": 0.4,
    "equity": 10128.0,
    "prices": [101.8, 102.2, 102.9, 103.1],
}

# (name, topic kind, payload or raw text, expected to be valid)
EXAMPLES: list[tuple[str, str, Any, bool]] = [
    ("signal_generated", "signals", _SIGNAL, True),
    ("signal_minimal", "signals", {k: _SIGNAL[k] for k in list(_SIGNAL)[:8]}, True),
    ("trade_executed", "executions", _EXECUTION, True),
    ("position_closed", "closes", _CLOSE, True),
    ("signal_confidence_out_of_range", "signals", _SIGNAL | {"confidence": 1.2}, False),
    ("signal_one_price", "signals", _SIGNAL | {"prices": [100.0]}, False),
    ("signal_unknown_side", "signals", _SIGNAL | {"side": "FLAT"}, False),
    ("signal_confidence_as_text", "signals", _SIGNAL | {"confidence": "0.72"}, False),
    ("signal_missing_symbol", "signals", {k: v for k, v in _SIGNAL.items() if k != "symbol"}, False),
    ("signal_naive_timestamp", "signals", _SIGNAL | {"timestamp": "2026-11-27T12:00:00"}, False),
    ("execution_negative_equity", "executions", _EXECUTION | {"equity": -5.0}, False),
    ("execution_exposure_above_one", "executions", _EXECUTION | {"portfolio_exposure": 1.5}, False),
    ("close_negative_drawdown", "closes", _CLOSE | {"max_drawdown_pct": -0.1}, False),
    ("close_zero_exit_price", "closes", _CLOSE | {"exit_price": 0}, False),
]


def render_topics() -> dict[str, str]:
    """Relative path under topics/ -> file text."""
    files: dict[str, str] = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"rl_worker/topics/{name}.schema.json"
        files[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    for name, _kind, payload, valid in EXAMPLES:
        folder = "valid" if valid else "invalid"
        files[f"examples/{folder}/{name}.json"] = json.dumps(payload, indent=2) + "\n"
    return files


def write_topics(root: Path) -> None:
    for relative, text in render_topics().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    write_topics(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("topics"))
