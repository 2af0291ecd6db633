"""`rl-worker backfill` on a real broker and Redis: the live model's history gives the live model's
tables, two backfills are byte-identical, events' own actions, and bad input (nothing written)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import redis

from rl_worker.core.snapshot import decode_replica
from rl_worker.settings import learning_log_name
from rl_worker.sim import events as f
from tests.integration.harness import Stack, produce, read_topic, run
from tests.integration.test_lifecycle import checkpoint_offsets, cli, load_checkpoint, ok, refused

pytestmark = pytest.mark.integration


def tables(data: bytes) -> tuple[Any, ...]:
    replica = decode_replica(data)
    meta_q, meta_visits = replica.meta_table.used()
    sizing_q, sizing_visits = replica.sizing_table.used()
    return (replica.meta_table.keys, meta_q.tobytes(), meta_visits.tobytes(), replica.sizing_table.keys,
            sizing_q.tobytes(), sizing_visits.tobytes(), replica.n_updates)


def cleanup(redis_url: str, *app_ids: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for app_id in app_ids:
        for key in client.scan_iter(f"rl_worker:{app_id}:*"):
            client.delete(key)
    client.close()


def test_backfill_of_the_live_history_equals_the_live_replica(stack_factory: Any, redis_url: str) -> None:
    stack: Stack = stack_factory()
    worker = stack.start_worker()
    worker.wait_ready()
    rng = np.random.default_rng(12)
    n = 24
    for i in range(n):  # one position at a time: the live order and the replay order agree
        pid = f"{stack.uid}-p{i:03d}"
        events = (f.signal(pid, rng), f.execution(pid, rng), f.close(pid, rng))
        run(produce(stack.bootstrap, [
            (topic, pid.encode(), f.encode(event))
            for topic, event in zip((stack.signals, stack.executions, stack.closes), events, strict=True)
        ]))
        worker.wait_model_version(i + 1)
    live = worker.snapshot()
    first, second, bad = f"{stack.app_id}-bf1", f"{stack.app_id}-bf2", f"{stack.app_id}-bad"
    try:
        out = ok(cli(stack, "backfill", "--target-app-id", first))
        assert f"backfill: {n} positions applied, 0 skipped (no actions), 0 incomplete" in out
        assert f"actions from decisions {2 * n}, from events 0" in out
        data = load_checkpoint(redis_url, first, n - 1)
        assert tables(data) == tables(live)  # bit for bit: Q-values, visit counts, state keys

        # the target's learning log is the live log, record for record
        live_log = run(read_topic(stack.bootstrap, stack.outcomes, expect=n))
        target_log = run(read_topic(stack.bootstrap, learning_log_name(first), expect=n))
        assert [r.value for r in target_log] == [r.value for r in sorted(live_log, key=lambda r: r.offset)]

        # deterministic: a second backfill of the same range writes the same bytes
        ok(cli(stack, "backfill", "--target-app-id", second, "--from", "earliest", "--to", "latest"))
        assert load_checkpoint(redis_url, second, n - 1) == data

        # bad input: a clear error, a non-zero exit, nothing written
        refused(cli(stack, "backfill", "--target-app-id", first), "already holds checkpoints")
        refused(cli(stack, "backfill", "--target-app-id", stack.app_id), "not the live one")
        refused(cli(stack, "backfill", "--target-app-id", bad, "--from", "yesterday"), "is not earliest/latest")
        refused(cli(stack, "backfill", "--target-app-id", bad, "--from", f"{stack.signals}:0:99999"),
                "outside the partition's offsets")
        refused(cli(stack, "backfill", "--target-app-id", bad, "--from", f"{stack.signals}:9:0"),
                "do not exist")
        refused(cli(stack, "backfill", "--target-app-id", bad, "--from", "other.topic:0:0"), "not an input topic")
        refused(cli(stack, "backfill", "--target-app-id", bad, "--to", "2020-01-01T00:00:00Z"),
                "no completed position")
        refused(cli(stack, "backfill", "--target-app-id", "a b"), "--target-app-id")
        assert checkpoint_offsets(redis_url, bad) == []
        assert run(read_topic(stack.bootstrap, learning_log_name(bad), idle_s=1.0, timeout_s=3)) == []
    finally:
        cleanup(redis_url, first, second, bad)


def test_backfill_from_the_events_own_actions(stack_factory: Any, redis_url: str) -> None:
    stack: Stack = stack_factory()
    rng = np.random.default_rng(5)
    records = []
    for i in range(30):
        pid = f"{stack.uid}-e{i:03d}"
        acted = i % 10 != 0  # every tenth position carries no actions: skipped
        signal = f.signal(pid, rng, **({"strategy": "breakout", "model": "lgbm", "weight": 0.5} if acted else {}))
        execution = f.execution(pid, rng, **({"size_multiplier": 0.6, "leverage": 3.0} if acted else {}))
        execution.pop("max_leverage", None)
        execution.pop("max_size_multiplier", None)
        records += [
            (stack.signals, pid.encode(), f.encode(signal)),
            (stack.executions, pid.encode(), f.encode(execution)),
        ]
        if i < 27:  # three never close: incomplete
            records.append((stack.closes, pid.encode(), f.encode(f.close(pid, rng))))
    records.append((stack.closes, b"bad", b"{not json"))
    run(produce(stack.bootstrap, records))
    target = f"{stack.app_id}-ev"
    try:
        refused(cli(stack, "backfill", "--target-app-id", target, "--actions", "decisions"), "decisions topic")
        # the seed profile: one cell per agent and position (no backoff rows, no counterfactual sizing)
        out = ok(cli(stack, "backfill", "--target-app-id", target, "--actions", "events", RL_CORE__PROFILE="seed"))
        assert "backfill: 24 positions applied, 3 skipped (no actions), 3 incomplete" in out
        assert "1 invalid events" in out
        replica = decode_replica(load_checkpoint(redis_url, target, 23))
        meta_visits, sizing_visits = replica.meta_table.used()[1], replica.sizing_table.used()[1]
        assert int(meta_visits.sum()) == 24 and int(sizing_visits.sum()) == 24
        # every visit is on the traded action: breakout/lgbm/0.5 and size 0.6 x leverage 3
        assert set(np.nonzero(meta_visits.sum(axis=0))[0]) == {2 * 20 + 1 * 5 + 2}
        assert len(set(np.nonzero(sizing_visits.sum(axis=0))[0])) == 1
    finally:
        cleanup(redis_url, target)
