"""Property 1 and 5 on one worker: one decision per valid signal / execution, inside the risk limits."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from rl_worker.contract import DecisionRecord
from rl_worker.core.outcome import Outcome
from rl_worker.sim import events as f
from tests.integration.harness import produce, read_topic, run

pytestmark = pytest.mark.integration

CONFIGURED_MAX_LEVERAGE = 10.0  # the default RiskLimits


def build_positions(stack: Any, n: int, seed: int, duplicate_share: float = 0.2) -> tuple[list, dict]:
    rng = np.random.default_rng(seed)
    records, events = [], {}
    for i in range(n):
        pid = f"{stack.uid}-pos-{i:04d}"
        events[pid] = (f.signal(pid, rng), f.execution(pid, rng), f.close(pid, rng))
        for topic, event in zip((stack.signals, stack.executions, stack.closes), events[pid], strict=True):
            records.append((topic, pid.encode(), f.encode(event)))
    dupes = [records[i] for i in rng.choice(len(records), int(len(records) * duplicate_share), replace=False)]
    records.extend(dupes)
    order = rng.permutation(len(records))
    return [records[i] for i in order], events


def test_every_valid_event_gets_exactly_one_decision(stack_factory: Any) -> None:
    stack = stack_factory()
    worker = stack.start_worker()
    worker.wait_ready()
    n = 80
    records, events = build_positions(stack, n, seed=7)
    run(produce(stack.bootstrap, records))

    decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=2 * n, timeout_s=60))
    outcomes = run(read_topic(stack.bootstrap, stack.outcomes, expect=n, timeout_s=30))
    dead = run(read_topic(stack.bootstrap, stack.dead_letter, idle_s=1.0))

    assert dead == []
    parsed = [DecisionRecord.model_validate_json(d.value) for d in decisions]
    per_id = Counter(d.decision_id for d in parsed)
    assert len(parsed) == 2 * n, f"{len(parsed)} decisions for {n} positions"
    assert set(per_id.values()) == {1}
    assert {(d.position_id, d.agent) for d in parsed} == {(p, a) for p in events for a in ("meta", "sizing")}

    for record, d in zip(decisions, parsed, strict=True):
        assert record.key == d.position_id.encode()
        signal, execution, _ = events[d.position_id]
        trigger = signal if d.agent == "meta" else execution
        assert d.event_id == trigger["event_id"]
        assert d.source.topic == (stack.signals if d.agent == "meta" else stack.executions)
        assert 0 < d.propensity <= 1 and 0 <= d.epsilon <= 1
        assert d.policy == "rl" and d.model_version >= 0
        if d.agent == "meta":
            assert set(d.action) == {"strategy", "model", "weight"}
            assert set(d.state) == {
                "regime", "volatility", "market_pressure", "confidence", "previous_winrate", "account_health"
            }
        else:
            assert set(d.state) == {
                "signal_confidence", "portfolio_exposure", "recent_winrate", "volatility", "equity_curve_slope"
            }
            max_leverage = min(CONFIGURED_MAX_LEVERAGE, execution.get("max_leverage", np.inf))
            max_size = min(1.0, execution.get("max_size_multiplier", np.inf))
            assert d.action["leverage"] <= max_leverage
            assert d.action["size_multiplier"] <= max_size

    positions = Counter(Outcome.model_validate_json(o.value).position_id for o in outcomes)
    assert len(outcomes) == n and set(positions) == set(events)
    health = worker.wait_model_version(n)
    assert health["outcomes_applied"] == n


def test_incomplete_positions_expire_and_are_counted(stack_factory: Any) -> None:
    stack = stack_factory(RL_POSITION_TTL_S="1", RL_COMPLETED_RETENTION_S="600", RL_EXPIRY_INTERVAL_S="0.5")
    worker = stack.start_worker()
    worker.wait_ready()
    rng = np.random.default_rng(4)
    lonely, complete = f"{stack.uid}-lonely", f"{stack.uid}-complete"
    run(
        produce(
            stack.bootstrap,
            [
                (stack.signals, lonely.encode(), f.encode(f.signal(lonely, rng))),
                (stack.signals, complete.encode(), f.encode(f.signal(complete, rng))),
                (stack.executions, complete.encode(), f.encode(f.execution(complete, rng))),
                (stack.closes, complete.encode(), f.encode(f.close(complete, rng))),
            ],
        )
    )
    worker.wait_model_version(1)
    time.sleep(1.5)
    # Expiry runs on stream time: only a later record on the same partition (here a duplicate
    # of the lonely signal, same key) tells the worker that more than the TTL has passed.
    metrics = worker.get("/metrics").decode()
    assert "rl_positions_expired_total{" not in metrics
    run(produce(stack.bootstrap, [(stack.signals, lonely.encode(), f.encode(f.signal(lonely, rng)))]))
    deadline = time.monotonic() + 20
    metrics = ""
    while time.monotonic() < deadline:
        metrics = worker.get("/metrics").decode()
        if 'rl_positions_expired_total{stage="incomplete"} 1.0' in metrics:
            break
        time.sleep(0.3)
    assert 'rl_positions_expired_total{stage="incomplete"} 1.0' in metrics
    # the completed position is kept (retention 600 s), so a late duplicate close changes nothing
    assert 'rl_positions_expired_total{stage="completed"}' not in metrics
    run(produce(stack.bootstrap, [(stack.closes, complete.encode(), f.encode(f.close(complete, rng)))]))
    decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=3))
    assert len(decisions) == 3  # the lonely signal's duplicate decided nothing
    duplicate = f'rl_events_total{{status="duplicate",topic="{stack.closes}"}} 1.0'
    deadline = time.monotonic() + 20
    while duplicate not in metrics and time.monotonic() < deadline:
        time.sleep(0.2)
        metrics = worker.get("/metrics").decode()
    assert duplicate in metrics
    assert worker.health()["outcomes_applied"] == 1
