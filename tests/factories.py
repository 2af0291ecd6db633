"""Valid input events for tests and benchmarks, built from a seeded generator."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def prices(rng: np.random.Generator, n: int = 30, drift: float = 0.0, vol: float = 0.01) -> list[float]:
    steps = rng.normal(drift, vol, n - 1)
    return [round(float(p), 6) for p in 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))]


def signal(position_id: str, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{position_id}-sig",
        "event_type": "SIGNAL_GENERATED",
        "position_id": position_id,
        "symbol": "BTCUSDT",
        "timestamp": "2026-11-27T12:00:00Z",
        "side": "LONG" if rng.random() < 0.5 else "SHORT",
        "confidence": round(float(rng.uniform(0.3, 0.95)), 4),
        "prices": prices(rng, vol=float(rng.uniform(0.002, 0.03)), drift=float(rng.normal(0, 0.004))),
        "buy_volume": round(float(rng.uniform(0, 100)), 3),
        "sell_volume": round(float(rng.uniform(0, 100)), 3),
    } | extra


def execution(position_id: str, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    event = {
        "event_id": f"{position_id}-exe",
        "event_type": "TRADE_EXECUTED",
        "position_id": position_id,
        "symbol": "BTCUSDT",
        "timestamp": 1_795_000_000_000,
        "side": "LONG",
        "entry_price": 100.0,
        "portfolio_exposure": round(float(rng.uniform(0, 1)), 4),
        "equity": 10_000.0,
    }
    if rng.random() < 0.5:
        event["max_leverage"] = float(rng.choice([1, 2, 3, 5, 8, 12, 30]))
    if rng.random() < 0.5:
        event["max_size_multiplier"] = float(rng.choice([0.2, 0.5, 0.8, 1.0, 2.0]))
    return event | extra


def close(position_id: str, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{position_id}-cls",
        "event_type": "POSITION_CLOSED",
        "position_id": position_id,
        "symbol": "BTCUSDT",
        "timestamp": 1_795_000_600_000,
        "exit_price": 101.0,
        "pnl_pct": round(float(rng.normal(0.2, 2.0)), 4),
        "max_drawdown_pct": round(float(abs(rng.normal(0, 1.0))), 4),
        "equity": round(float(10_000 + rng.normal(0, 100)), 2),
        "prices": prices(rng),
    } | extra


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()
