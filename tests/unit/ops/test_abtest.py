"""ab-test and evaluate helpers that need no services: --since, the history's trend, candidates."""

from __future__ import annotations

import pytest

from rl_worker.ops.abtest import AbTestError, format_history, parse_since
from rl_worker.ops.evaluate import EvaluateError, parse_candidate

NOW = 1_800_000_000_000


def test_since() -> None:
    assert parse_since(None) is None
    assert parse_since("24h", NOW) == NOW - 86_400_000
    assert parse_since("90m", NOW) == NOW - 5_400_000
    assert parse_since("7d", NOW) == NOW - 7 * 86_400_000
    assert parse_since("2024-01-01T00:00:00Z", NOW) == 1_704_067_200_000
    assert parse_since("1704067200000", NOW) == 1_704_067_200_000
    for bad in ("yesterday", "2024-01-01T00:00:00", "5 parsecs"):
        with pytest.raises(AbTestError, match="--since"):
            parse_since(bad, NOW)


def test_history_trend() -> None:
    entries = [  # newest first, as stored
        {"generated_at_ms": NOW, "model_version": 900, "positions": {"rl": 600, "control": 300},
         "pnl_p_value": 0.01, "verdict": "pass", "criteria": {"win rate >= v1": "pass", "Sharpe >= v1": "pass"}},
        {"generated_at_ms": NOW - 1000, "model_version": 300, "positions": {"rl": 200, "control": 100},
         "pnl_p_value": 0.4, "verdict": "not enough data",
         "criteria": {"win rate >= v1": "not enough data", "Sharpe >= v1": "fail"}},
    ]
    text = format_history("app", entries)
    lines = text.splitlines()
    assert lines[1].split()[2] == "900"  # newest first
    assert any(line.strip().startswith("overall") and line.split()[-1] == ".P" for line in lines)
    assert any(line.strip().startswith("Sharpe >= v1") and line.split()[-1] == "FP" for line in lines)
    assert format_history("app", []).startswith("no stored A/B reports for app")


def test_candidates() -> None:
    assert parse_candidate("1200", "live") == ("live", 1200)
    assert parse_candidate("backfill-7", "live") == ("backfill-7", None)
    assert parse_candidate("backfill-7@300", "live") == ("backfill-7", 300)
    assert parse_candidate("a@b", "live") == ("a@b", None)
    with pytest.raises(EvaluateError, match="empty"):
        parse_candidate(" ", "live")
