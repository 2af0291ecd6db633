"""Property 4: bad input never crashes, stalls or silently drops; it lands in the dead letter with a reason."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from rl_worker.sim import events as f
from tests.integration.harness import produce, read_topic, run
from tests.integration.test_decisions import build_positions

pytestmark = pytest.mark.integration


def bad_corpus(stack: Any) -> list[tuple[str, str, bytes | None, bytes | None]]:
    """(expected error class, topic, key, value) for every kind of bad record."""
    rng = np.random.default_rng(3)
    s, e, c = stack.signals, stack.executions, stack.closes

    def sig(pid: str, **kw: Any) -> bytes:
        return f.encode(f.signal(pid, rng, **kw))

    long_id = "x" * 300
    big = f.signal("big", rng, prices=[100.0 + i * 1e-3 for i in range(1200)])
    nan_text = f.encode(f.signal("nan", rng)).replace(b'"confidence": ', b'"confidence": NaN, "x": ')
    inf_text = f.encode(f.signal("inf", rng)).replace(b'"prices": [', b'"prices": [Infinity, ')
    missing = f.signal("missing", rng)
    del missing["confidence"]
    return [
        ("InvalidJson", s, b"badjson", b"{not json"),
        ("SchemaViolation", s, b"array", b"[1, 2, 3]"),
        ("SchemaViolation", s, b"missing", f.encode(missing)),
        ("SchemaViolation", s, b"wrongtype", sig("wrongtype", confidence="high")),
        ("SchemaViolation", s, b"nan", nan_text),
        ("SchemaViolation", s, b"inf", inf_text),
        ("SchemaViolation", s, b"range", sig("range", confidence=1.5)),
        ("SchemaViolation", s, b"negprice", sig("negprice", prices=[100.0, -1.0])),
        ("SchemaViolation", s, b"enum", sig("enum", side="SIDEWAYS")),
        ("SchemaViolation", s, b"unknowntype", sig("unknowntype", event_type="SIGNAL_LOST")),
        ("SchemaViolation", s, b"badts", sig("badts", timestamp="yesterday")),
        ("WrongEventType", s, b"wrongtopic", f.encode(f.execution("wrongtopic", rng))),
        ("InvalidKey", s, long_id.encode(), sig(long_id)),
        ("SchemaViolation", s, b"longfield", sig("x" * 300)),
        ("RecordTooLarge", s, b"big", f.encode(big)),
        ("MissingKey", s, None, sig("nokey")),
        ("KeyMismatch", s, b"other", sig("mismatch")),
        ("EmptyRecord", s, b"tombstone", None),
        ("InvalidKey", s, b"\xff\xfe", sig("binary")),
        ("NoAllowedAction", e, b"nolimits", f.encode(f.execution("nolimits", rng, max_leverage=0.5))),
        ("SchemaViolation", c, b"negdd", f.encode(f.close("negdd", rng, max_drawdown_pct=-1.0))),
    ]


def test_bad_records_land_in_the_dead_letter_and_valid_ones_still_get_decisions(stack_factory: Any) -> None:
    stack = stack_factory(RL_MAX_RECORD_BYTES="8192")
    worker = stack.start_worker()
    worker.wait_ready()
    n = 30
    valid, events = build_positions(stack, n, seed=21, duplicate_share=0.0)
    corpus = bad_corpus(stack)
    # a second, different signal for an existing position conflicts with the first
    first = next(iter(events))
    conflicting = dict(events[first][0], event_id="another-signal")
    corpus.append(("ConflictingEvent", stack.signals, first.encode(), f.encode(conflicting)))
    records = list(valid[: len(valid) // 2])
    for i, (_, topic, key, value) in enumerate(corpus):
        records.append((topic, key, value))
        records.extend(valid[len(valid) // 2 + i * 2 : len(valid) // 2 + i * 2 + 2])
    records.extend(valid[len(valid) // 2 + len(corpus) * 2 :])
    assert sorted(map(repr, records)) == sorted(map(repr, valid + [(t, k, v) for _, t, k, v in corpus]))
    run(produce(stack.bootstrap, records))

    dead = run(read_topic(stack.bootstrap, stack.dead_letter, expect=len(corpus), timeout_s=60))
    decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=2 * n, timeout_s=60))

    assert len({json.loads(d.value)["decision_id"] for d in decisions}) == 2 * n
    assert len(dead) == len(corpus)
    by_original = {(d.key, d.value): d for d in dead}
    for expected_class, topic, key, value in corpus:
        record = by_original[(key, value)]  # original key and bytes, untouched
        headers = record.headers
        assert headers["rl.error_class"].decode() == expected_class, (key, headers)
        assert headers["rl.original_topic"].decode() == topic
        assert int(headers["rl.original_partition"]) >= 0 and int(headers["rl.original_offset"]) >= 0
        assert headers["rl.error_message"]
    assert worker.process.poll() is None
    assert worker.health()["status"] == "ok"
    metrics = worker.get("/metrics").decode()
    assert 'rl_dead_letters_total{error="InvalidJson"' in metrics
