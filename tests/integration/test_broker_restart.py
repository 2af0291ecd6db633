"""A broker restart under load loses nothing (Apache Kafka, which keeps its log across a restart).

Two workers run while positions are produced; the broker is stopped (a controlled shutdown,
as in a rolling restart), stays down a few seconds and comes back on the same port with the
same log. Every valid event must still get its decision, every completed position its one
outcome, and both replicas must equal a replay of the whole log. tansu is not a target: its
restart is a new, empty cluster (topics, groups and offsets are gone; see the README).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from rl_worker.contract import DecisionRecord
from rl_worker.core.outcome import Outcome
from tests.integration.brokers import TestBroker
from tests.integration.harness import Record, decision_id, read_topic, record_key, run
from tests.integration.replay import assert_matches_full_replay
from tests.integration.test_decisions import build_positions

pytestmark = pytest.mark.integration


async def produce_through_outage(bootstrap: str, records: list[Record], pace_s: float) -> None:
    """The trading stack's side: every record acknowledged, retried through the outage (a batch
    waits up to two minutes for the broker), idempotent so that retries do not duplicate."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2, request_timeout_ms=120_000
    )
    await producer.start()
    try:
        sent = []
        for topic, key, value in records:
            sent.append(await producer.send(topic, key=key, value=value))
            await asyncio.sleep(pace_s)
        await asyncio.gather(*sent)  # raises if any record was not written
    finally:
        await producer.stop()


def test_broker_restart_under_load_loses_nothing(stack_factory: Any, broker: TestBroker) -> None:
    if broker.kafka is None:
        pytest.skip(f"{broker.name}: a restart is a new, empty cluster, not a restart of this one")
    stack = stack_factory()
    first, second = stack.start_worker(), stack.start_worker()
    first.wait_ready(timeout_s=90)
    second.wait_ready(timeout_s=90)
    n = 240
    records, events = build_positions(stack, n, seed=23, duplicate_share=0.05)

    failures: list[BaseException] = []

    def trading_stack() -> None:
        try:
            run(produce_through_outage(stack.bootstrap, records, pace_s=0.02))
        except BaseException as exc:
            failures.append(exc)

    producing = threading.Thread(target=trading_stack)
    producing.start()
    time.sleep(4.0)  # well inside the ~15 s of production
    restart_started = time.monotonic()
    broker.restart(signal.SIGTERM, down_s=3.0)
    print(f"broker down and back in {time.monotonic() - restart_started:.1f} s")
    producing.join(240)
    assert not producing.is_alive() and not failures, failures

    decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=2 * n, timeout_s=180, distinct=decision_id))
    parsed = [DecisionRecord.model_validate_json(d.value) for d in decisions]
    assert {(d.position_id, d.agent) for d in parsed} == {(p, a) for p in events for a in ("meta", "sizing")}
    assert len({d.decision_id for d in parsed}) == 2 * n
    print(f"decisions: {len(parsed)} records, {2 * n} distinct ids")

    outcomes = run(read_topic(stack.bootstrap, stack.outcomes, expect=n, timeout_s=120, distinct=record_key))
    assert {Outcome.model_validate_json(o.value).position_id for o in outcomes} == set(events)
    assert_matches_full_replay([first, second], stack.bootstrap, stack.outcomes, timeout_s=120)
    for worker in (first, second):
        assert worker.process.poll() is None, worker.log[-3000:]  # reconnected, not crashed
        assert worker.health()["outcomes_applied"] == n
