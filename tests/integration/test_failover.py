"""Properties 1-3 across a SIGKILL, a 2-worker rebalance, and a restart from a Redis checkpoint."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from typing import Any

import pytest
import redis

from rl_worker.contract import DecisionRecord
from rl_worker.core.outcome import Outcome
from tests.integration.harness import decision_id, produce, read_topic, record_key, run
from tests.integration.replay import assert_matches_full_replay
from tests.integration.test_decisions import build_positions

pytestmark = pytest.mark.integration


def test_sigkill_and_rebalance_lose_no_decision_and_replicas_match_a_full_replay(stack_factory: Any) -> None:
    stack = stack_factory()
    first, second = stack.start_worker(), stack.start_worker()
    first.wait_ready()
    second.wait_ready()
    n = 240
    records, events = build_positions(stack, n, seed=11, duplicate_share=0.1)
    a, b = int(len(records) * 0.4), int(len(records) * 0.7)

    run(produce(stack.bootstrap, records[:a], pace_s=0.002))
    first.stop(signal.SIGKILL)
    run(produce(stack.bootstrap, records[a:b], pace_s=0.002))
    restarted = stack.start_worker()
    restarted.wait_ready()
    run(produce(stack.bootstrap, records[b:], pace_s=0.002))

    decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=2 * n, timeout_s=90, distinct=decision_id))
    parsed = [DecisionRecord.model_validate_json(d.value) for d in decisions]
    distinct = {(d.position_id, d.agent) for d in parsed}
    assert distinct == {(p, agent) for p in events for agent in ("meta", "sizing")}
    per_id = Counter(d.decision_id for d in parsed)
    assert len(per_id) == 2 * n
    # At-least-once transport: a record redelivered after the SIGKILL may repeat a decision,
    # always under the same decision_id (consumers dedupe by it; see the README).
    print(f"decisions: {len(parsed)} records, {len(per_id)} distinct ids")

    outcomes = run(read_topic(stack.bootstrap, stack.outcomes, expect=n, timeout_s=60, distinct=record_key))
    assert {Outcome.model_validate_json(o.value).position_id for o in outcomes} == set(events)

    assert_matches_full_replay([second, restarted], stack.bootstrap, stack.outcomes)
    for worker in (second, restarted):
        assert worker.health()["outcomes_applied"] == n


def positions_in_two_batches(stack: Any, n: int, first: int, seed: int) -> tuple[list, list]:
    """The records of n whole positions (no duplicates): those of the first `first` positions, then the rest."""
    records, _ = build_positions(stack, n, seed=seed, duplicate_share=0.0)
    by_position: dict[bytes, list] = {}
    for record in records:
        by_position.setdefault(record[1], []).append(record)
    keys = sorted(by_position)
    return [r for k in keys[:first] for r in by_position[k]], [r for k in keys[first:] for r in by_position[k]]


def test_restart_from_checkpoint_plus_tail_equals_full_replay(stack_factory: Any, redis_url: str) -> None:
    stack = stack_factory(RL_CHECKPOINT__EVERY_OUTCOMES="25", RL_CHECKPOINT__INTERVAL_S="3600")
    worker = stack.start_worker()
    worker.wait_ready()
    first, tail = positions_in_two_batches(stack, 40, 30, seed=5)
    run(produce(stack.bootstrap, first))
    worker.wait_model_version(30)
    _wait(lambda: worker.health()["checkpoint"]["offset"] is not None)
    checkpointed = worker.health()["checkpoint"]["offset"]
    assert 24 <= checkpointed <= 29  # one checkpoint per 25 outcomes, at a batch boundary
    run(produce(stack.bootstrap, tail))
    health = worker.wait_model_version(40)
    assert health["checkpoint"]["offset"] == checkpointed  # the tail is only in the log
    worker.stop(signal.SIGKILL)

    # A newer but corrupt checkpoint must be reported and skipped, never silently used.
    client = redis.Redis.from_url(redis_url)
    ns = f"rl_worker:{stack.app_id}:ckpt"
    client.set(f"{ns}:35", b'{"format": "rl_worker.replica", "schema_version": 1, "body": {}}')
    client.zadd(f"{ns}:index", {"35": 35})
    client.set(f"{ns}:latest", 35)
    # ... and so must one from another log (a reset broker): valid bytes, offset past the log end
    client.set(f"{ns}:1000", client.get(f"{ns}:{checkpointed}"))
    client.zadd(f"{ns}:index", {"1000": 1000})
    client.set(f"{ns}:latest", 1000)
    client.close()

    restarted = stack.start_worker()
    restarted.wait_ready()
    health = restarted.wait_model_version(40)
    assert health["checkpoint"]["restored_from"] == checkpointed
    skipped = health["checkpoint"]["restore_skipped"]
    assert any(s.startswith("35:") and "checksum" in s for s in skipped), skipped
    assert any(s.startswith("1000:") and "past the end" in s for s in skipped), skipped
    # a SIGKILL redelivers the uncommitted input, which re-emits outcomes: the log may hold
    # duplicates, which every replica skips the same way
    log_size = assert_matches_full_replay([restarted], stack.bootstrap, stack.outcomes)
    assert log_size >= 40
    assert restarted.health()["outcomes_applied"] == 40
    assert f"restored replica from checkpoint at outcomes offset {checkpointed}" in restarted.log


def test_redis_outage_delays_checkpoints_but_not_decisions(stack_factory: Any) -> None:
    from tests.integration.harness import LocalRedis

    own_redis = LocalRedis()
    own_redis.start()
    stack = stack_factory(RL_CHECKPOINT__EVERY_OUTCOMES="5", RL_CHECKPOINT__RETRY_MAX_S="1")
    stack.redis_url = own_redis.url
    try:
        worker = stack.start_worker()
        worker.wait_ready()
        first, tail = positions_in_two_batches(stack, 40, 20, seed=9)
        run(produce(stack.bootstrap, first))
        worker.wait_model_version(20)
        _wait(lambda: worker.health()["checkpoint"]["offset"] == 19)  # the interval catches the rest

        own_redis.stop()
        run(produce(stack.bootstrap, tail))
        decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=80, timeout_s=60))
        assert len({json.loads(d.value)["decision_id"] for d in decisions}) == 80
        worker.wait_model_version(40)
        _wait(lambda: worker.health()["status"] == "degraded")
        health = worker.health()
        assert health["checkpoint"]["offset"] == 19 and health["checkpoint"]["store_error"]
        metrics = worker.get("/metrics").decode()
        assert "rl_redis_up 0.0" in metrics

        own_redis.start()
        _wait(lambda: worker.health()["checkpoint"]["offset"] == 39, timeout_s=30)
        health = worker.health()
        assert health["status"] == "ok" and health["checkpoint"]["store_error"] is None
        client = redis.Redis.from_url(own_redis.url)
        assert int(client.get(f"rl_worker:{stack.app_id}:ckpt:latest")) == 39
        client.close()
    finally:
        stack.stop_all()
        own_redis.stop()


def _wait(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout_s}s")
