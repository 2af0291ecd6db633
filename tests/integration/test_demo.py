"""The README's main job, short: its own broker (tansu, or Apache Kafka with --broker apache-kafka),
the test Redis, two workers, the simulator, a PNG. The demo starts its broker itself, so this test
is parametrised by the names in RL_TEST_BROKERS, not by the session broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.integration.brokers import test_broker_names

pytestmark = pytest.mark.integration

STARTED = {"tansu": "embedded broker (tansu) on 127.0.0.1:", "apache-kafka": "Apache Kafka on 127.0.0.1:"}


@pytest.mark.parametrize("broker", [n for n in test_broker_names() if n in STARTED])
def test_short_demo_runs_end_to_end(tmp_path: Path, redis_url: str, broker: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | {"RL_REDIS_URL": redis_url}
    done = subprocess.run(
        # a relative --out, as the README's command uses (out/ under the working directory)
        [sys.executable, "-m", "rl_worker", "demo", "--positions", "300", "--no-live", "--out", "out",
         "--broker", broker],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert STARTED[broker] in output
    assert "done: 300 positions" in output
    png = Path(re.search(r"learning curves: (\S+\.png)", output).group(1))
    assert png.is_relative_to(tmp_path / "out")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    key = re.search(r"key (rl_worker:(rl-demo-[\w-]+):ckpt:(\d+))", output)
    assert key is not None, output[-2000:]
    client = redis.Redis.from_url(redis_url)
    try:
        namespace = f"rl_worker:{key.group(2)}"
        assert client.exists(key.group(1))
        assert int(client.get(f"{namespace}:ckpt:latest")) == int(key.group(3)) == 299
    finally:
        for stale in client.scan_iter(f"rl_worker:{key.group(2)}:*"):
            client.delete(stale)
        client.close()
