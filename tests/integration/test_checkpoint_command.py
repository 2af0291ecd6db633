"""`rl-worker checkpoint list|show`: what an operator sees of the checkpoints of an app id."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import redis

from rl_worker.core import CoreConfig, ModelReplica
from rl_worker.core.snapshot import encode_replica
from rl_worker.sim.events import make_outcomes
from rl_worker.stream.checkpoints import RedisCheckpointStore

pytestmark = pytest.mark.integration


def rows(output: str) -> dict[str, str]:
    """Table rows by their first cell (the offset)."""
    cells = [line.split("│") for line in output.splitlines() if line.count("│") > 5]
    return {c[1].strip(): "│".join(c) for c in cells if c[1].strip().isdigit()}


def test_list_and_show(redis_url: str) -> None:
    app_id = f"rl-test-{uuid.uuid4().hex[:8]}"
    namespace = f"rl_worker:{app_id}"
    replica = ModelReplica(CoreConfig())
    for offset, record in enumerate(make_outcomes(np.random.default_rng(8), CoreConfig(), 12)):
        replica.apply(record, offset)

    async def seed() -> None:
        store = RedisCheckpointStore(redis_url, namespace)
        await store.save(11, encode_replica(replica))
        await store.save(20, b"garbage")
        await store.save(15, encode_replica(ModelReplica(CoreConfig(seed=4))))
        await store.close()

    asyncio.run(seed())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")}
    env |= {"RL_APP_ID": app_id, "RL_REDIS_URL": redis_url, "COLUMNS": "250"}
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "rl_worker", "checkpoint", "list"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        assert listed.returncode == 0, listed.stderr[-2000:]
        lines = rows(listed.stdout)
        assert set(lines) >= {"11", "15", "20"}
        assert "yes" in lines["11"] and "12" in lines["11"]
        assert "config" in lines["15"] and "no:" in lines["15"]
        assert "no:" in lines["20"]
        assert "latest pointer: 20" in listed.stdout
        shown = subprocess.run(
            [sys.executable, "-m", "rl_worker", "checkpoint", "show", "11"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert list(rows(shown.stdout)) == ["11"] and "yes" in rows(shown.stdout)["11"]
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)
        client.close()
