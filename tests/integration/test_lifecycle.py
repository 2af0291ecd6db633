"""The model's life cycle on a real broker and Redis: tune and restore through the learning log in a
2-worker group (both replicas stay bit-identical to a replay from offset 0), export / import /
promote / pin, and every command's bad input (a clear error, a non-zero exit, nothing written)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from rl_worker.core.snapshot import decode_replica
from rl_worker.stream.checkpoints import RedisCheckpointStore
from tests.integration.harness import Stack, produce, read_topic, run
from tests.integration.replay import assert_matches_full_replay
from tests.integration.test_failover import positions_in_two_batches

pytestmark = pytest.mark.integration


def cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`rl-worker ARGS` under the stack's settings, not on a terminal."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | stack.env(**env)
    child["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "rl_worker", *args], env=child, cwd=stack.workdir, capture_output=True, text=True,
        timeout=180, check=False, stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """A clear one-line error on stderr and a non-zero exit (no traceback)."""
    assert result.returncode != 0, result.stdout[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and message in errors[-1], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def log_size(stack: Stack) -> int:
    return len(run(read_topic(stack.bootstrap, stack.outcomes, idle_s=1.5, timeout_s=30)))


def checkpoint_offsets(redis_url: str, app_id: str) -> list[int]:
    async def go() -> list[int]:
        store = RedisCheckpointStore(redis_url, f"rl_worker:{app_id}")
        try:
            return await store.offsets()
        finally:
            await store.close()
    return asyncio.run(go())


def load_checkpoint(redis_url: str, app_id: str, offset: int) -> bytes:
    client = redis.Redis.from_url(redis_url)
    try:
        data = client.get(f"rl_worker:{app_id}:ckpt:{offset}")
    finally:
        client.close()
    assert isinstance(data, bytes)
    return data


def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_tune_and_restore_in_a_two_worker_group_match_a_full_replay(stack_factory: Any, redis_url: str) -> None:
    stack = stack_factory(RL_CHECKPOINT__EVERY_OUTCOMES="10", RL_CHECKPOINT__INTERVAL_S="3600")
    workers = [stack.start_worker(), stack.start_worker()]
    for worker in workers:
        worker.wait_ready()
    first, rest = positions_in_two_batches(stack, 90, 40, seed=3)
    second, third = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    run(produce(stack.bootstrap, first))
    for worker in workers:
        worker.wait_model_version(40)

    # advice, for humans and for machines
    report = json.loads(ok(cli(stack, "tune", "--json", "--window", "30")))
    assert report["log_end"] == 40 and {r["agent"] for r in report["recommendations"]} == {"meta", "sizing"}
    assert report["stats"]["meta"]["n_updates"] == 40 and report["stats"]["meta"]["window"] == 30
    assert "statistics per agent" in ok(cli(stack, "tune"))

    # a live change of hyperparameters: every worker switches at the record's offset
    applied = ok(cli(stack, "tune", "--apply", "--meta-alpha", "0.05", "--sizing-epsilon", "0.02",
                     "--reason", "test"))
    assert "offset 40" in applied and "meta.alpha: 0.01 -> 0.05" in applied
    for worker in workers:
        hp = worker.wait_model_version(41)["hyperparameters"]
        assert hp["meta"]["alpha"] == 0.05 and hp["sizing"]["epsilon_start"] == 0.02
        assert hp["sizing"]["alpha"] == 0.01 and hp["in_force_since_offset"] == 40
        metrics = worker.get("/metrics").decode()
        assert 'rl_hyperparameter{agent="meta",name="alpha"} 0.05' in metrics
        assert "rl_hyperparameters_offset 40.0" in metrics

    run(produce(stack.bootstrap, second))
    for worker in workers:
        worker.wait_model_version(41 + 25)
    wait_for(lambda: any(o > 40 for o in checkpoint_offsets(redis_url, stack.app_id)))
    target = max(checkpoint_offsets(redis_url, stack.app_id))
    restored_updates = decode_replica(load_checkpoint(redis_url, stack.app_id, target)).n_updates

    # restore: a reset record, applied by both; the checkpoint it names is pinned
    restored = ok(cli(stack, "checkpoint", "restore", str(target), "--yes"))
    assert "reset record written" in restored and "outcomes applied" in restored
    for worker in workers:
        health = worker.wait_model_version(67)
        assert health["outcomes_applied"] == restored_updates
        assert health["hyperparameters"]["in_force_since_offset"] == 66
    listed = ok(cli(stack, "checkpoint", "list"))
    assert any(line.split("│")[1].strip() == str(target) and "pinned" in line for line in listed.splitlines()
               if line.count("│") > 5)

    run(produce(stack.bootstrap, third))
    size = assert_matches_full_replay(workers, stack.bootstrap, stack.outcomes, redis_url=redis_url)
    assert size == 92
    for worker in workers:
        assert worker.health()["outcomes_applied"] == restored_updates + 25


def test_bad_input_is_refused_and_writes_nothing(stack_factory: Any, redis_url: str, tmp_path: Path) -> None:
    stack = stack_factory(RL_CHECKPOINT__EVERY_OUTCOMES="5", RL_CHECKPOINT__INTERVAL_S="3600")
    worker = stack.start_worker()
    worker.wait_ready()
    first, _ = positions_in_two_batches(stack, 12, 12, seed=4)
    run(produce(stack.bootstrap, first))
    worker.wait_model_version(12)
    wait_for(lambda: bool(checkpoint_offsets(redis_url, stack.app_id)))
    worker.stop()  # the commands need no worker; its final checkpoint would change the keys compared below
    keys_before = sorted(redis.Redis.from_url(redis_url).keys(f"rl_worker:{stack.app_id}:*"))
    kept = str(min(checkpoint_offsets(redis_url, stack.app_id)))

    refused(cli(stack, "tune", "--apply", "--meta-alpha", "0"), "invalid --meta-alpha 0.0")
    refused(cli(stack, "tune", "--apply", "--sizing-gamma", "1.5"), "invalid --sizing-gamma 1.5")
    refused(cli(stack, "tune", "--apply", "--meta-epsilon", "0.001"), "epsilon_min 0.01 exceeds epsilon_start")
    refused(cli(stack, "tune", "--apply"), "--apply needs at least one")
    refused(cli(stack, "tune", "--meta-alpha", "0.1"), "only written with --apply")
    refused(cli(stack, "checkpoint", "restore", "999", "--yes"), "has no checkpoint at offset 999")
    refused(cli(stack, "checkpoint", "restore", kept), "not on a terminal: pass --yes")
    refused(cli(stack, "checkpoint", "promote", "--from-app-id", "nobody-here", "--yes"), "has no checkpoint")
    refused(cli(stack, "checkpoint", "pin", "999"), "no checkpoint at offset 999")
    refused(cli(stack, "checkpoint", "unpin", kept), "is not pinned")
    refused(cli(stack, "checkpoint", "export", "999", "--out", str(tmp_path / "x.json")), "no checkpoint at offset")
    refused(cli(stack, "tune", RL_TOPICS__OUTCOMES=stack.topic("no-such-log")), "does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "rl_worker.export", "version": 1}')
    refused(cli(stack, "checkpoint", "import", str(bad), "--app-id", f"{stack.app_id}-imp"), "incomplete")
    refused(cli(stack, "checkpoint", "import", str(tmp_path / "missing.json")), "cannot read")

    # an export of another model (other bins) does not import here
    latest = max(checkpoint_offsets(redis_url, stack.app_id))
    export = tmp_path / "model.json"
    ok(cli(stack, "checkpoint", "export", "latest", "--out", str(export)))
    refused(cli(stack, "checkpoint", "import", str(export), "--app-id", f"{stack.app_id}-imp",
                RL_CORE__META_BINS__VOLATILITY="[0.5]"), "differs from the running config")

    assert log_size(stack) == 12  # no control record was appended
    assert not redis.Redis.from_url(redis_url).keys(f"rl_worker:{stack.app_id}-imp:*")
    assert sorted(redis.Redis.from_url(redis_url).keys(f"rl_worker:{stack.app_id}:*")) == keys_before
    assert latest in checkpoint_offsets(redis_url, stack.app_id)


def test_export_import_promote_and_pins(stack_factory: Any, redis_url: str, tmp_path: Path) -> None:
    stack = stack_factory(
        RL_CHECKPOINT__EVERY_OUTCOMES="5", RL_CHECKPOINT__INTERVAL_S="3600", RL_CHECKPOINT__RETENTION="2"
    )
    worker = stack.start_worker()
    worker.wait_ready()
    first, rest = positions_in_two_batches(stack, 40, 20, seed=6)
    run(produce(stack.bootstrap, first))
    worker.wait_model_version(20)
    wait_for(lambda: max(checkpoint_offsets(redis_url, stack.app_id), default=-1) >= 14)
    offset = max(checkpoint_offsets(redis_url, stack.app_id))
    original = load_checkpoint(redis_url, stack.app_id, offset)

    # the readable export, and its import into a new namespace (pinned), are the same checkpoint
    export = tmp_path / "backup.json"
    ok(cli(stack, "checkpoint", "export", str(offset), "--out", str(export)))
    document = json.loads(export.read_text())
    assert document["outcomes_offset"] == offset and len(document["meta"]["actions"]) == 60
    candidate = f"{stack.app_id}-cand"
    try:
        ok(cli(stack, "checkpoint", "import", str(export), "--app-id", candidate))
        assert load_checkpoint(redis_url, candidate, offset) == original
        refused(cli(stack, "checkpoint", "import", str(export), "--app-id", candidate), "already holds checkpoints")

        # pinned checkpoints survive retention
        ok(cli(stack, "checkpoint", "pin", str(offset)))
        for chunk in range(4):  # 5 whole positions at a time, each applied before the next: a checkpoint each
            run(produce(stack.bootstrap, rest[15 * chunk : 15 * (chunk + 1)]))
            worker.wait_model_version(25 + 5 * chunk)
        # four newer checkpoints with a retention of 2: only the pin keeps this one
        wait_for(lambda: len([o for o in checkpoint_offsets(redis_url, stack.app_id) if o > offset]) >= 2)
        assert offset in checkpoint_offsets(redis_url, stack.app_id)

        # promote the imported model: the live replica becomes it at the record's offset
        promoted = ok(cli(stack, "checkpoint", "promote", "--from-app-id", candidate, "--yes"))
        assert "promote" in promoted and "reset record written" in promoted
        health = worker.wait_model_version(41)
        assert health["outcomes_applied"] == decode_replica(original).n_updates
        assert offset in checkpoint_offsets(redis_url, stack.app_id)
        ok(cli(stack, "checkpoint", "unpin", str(offset)))
        assert_matches_full_replay([worker], stack.bootstrap, stack.outcomes, redis_url=redis_url)
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"rl_worker:{candidate}:*"):
            client.delete(key)
        client.close()
