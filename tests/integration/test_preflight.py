"""`rl-worker preflight`, `rl-worker status` and `scripts/deploy.sh --monitor-only` against the real
broker, the real Redis and a running worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import free_port, run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def environment(stack: Any, **overrides: str) -> dict[str, str]:
    """This machine's environment without its RL_ variables, plus the stack's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | stack.env(**overrides)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rl_worker", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def preflight(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    done = cli(env, "preflight", "--json", "--timeout", "5", *args)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["ok"] == (done.returncode == 0), done.stdout
    return done.returncode, {c["name"]: c for c in report["checks"]}


async def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, p, 1) for n, p in partitions.items()])
    finally:
        await admin.close()


def test_preflight_names_what_is_missing_and_what_does_not_fit(stack_factory: Any) -> None:
    stack = stack_factory()
    env = environment(stack)
    code, checks = preflight(env)
    assert code == 1
    assert checks["broker reachable"]["ok"] and checks["redis reachable"]["ok"]
    assert not checks["input topics present"]["ok"]
    assert stack.signals in checks["input topics present"]["detail"]
    assert not checks["learning log present"]["ok"]
    code, checks = preflight(env, "--first-deploy")  # an empty cluster: the first worker creates them
    assert code == 0, checks
    assert "RL_PARTITIONS=4" in checks["input topics co-partitioned"]["detail"]

    run(create_topics(stack.bootstrap, {stack.signals: 2, stack.executions: 2}))
    code, checks = preflight(env)
    assert code == 1 and f"missing: {stack.closes}" in checks["input topics present"]["detail"]
    code, checks = preflight(env, "--first-deploy")
    assert code == 0, checks
    assert "missing ones get 2" in checks["input topics co-partitioned"]["detail"]

    run(create_topics(stack.bootstrap, {stack.closes: 3, stack.outcomes: 2}))
    code, checks = preflight(env, "--first-deploy")
    assert code == 1
    assert checks["input topics present"]["ok"]
    assert not checks["input topics co-partitioned"]["ok"]
    assert f"{stack.closes}=3" in checks["input topics co-partitioned"]["detail"]
    assert "exactly 1" in checks["learning log present"]["detail"]


def test_preflight_unreachable_services_fail_without_leaking_the_password() -> None:
    secret = "s3cret-not-in-output"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | {
        "RL_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "RL_REDIS_URL": f"redis://:{secret}@127.0.0.1:{free_port()}/0",
    }
    done = cli(env, "preflight", "--timeout", "2")
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert secret not in out
    lines = {
        line[5:].split("  ")[0].strip(): line[:4] for line in done.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")
    }
    assert lines == {
        "broker reachable": "FAIL", "redis reachable": "FAIL", "input topics present": "FAIL",
        "input topics co-partitioned": "FAIL", "learning log present": "FAIL",
    }


def readiness_codes(worker: Any, timeout_s: float = 60.0) -> list[tuple[int, bool]]:
    """Poll /health?ready=1 from the worker's first HTTP answer until it is ready: (status code, ready)."""
    seen: list[tuple[int, bool]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health?ready=1", timeout=5) as response:
                seen.append((response.status, json.loads(response.read())["ready"]))
                return seen
        except urllib.error.HTTPError as exc:
            seen.append((exc.code, json.loads(exc.read())["ready"]))
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    raise TimeoutError(f"not ready after {timeout_s}s: {seen[-3:]}")


def test_a_running_worker_passes_preflight_status_and_monitor_only(stack_factory: Any) -> None:
    stack = stack_factory()
    worker = stack.start_worker()
    codes = readiness_codes(worker)
    assert codes[-1] == (200, True)
    assert all(code == 503 for code, ready in codes if not ready)  # the readiness probe says no until ready
    assert worker.health()["status"] == "ok"  # plain /health (liveness) answers 200 whatever the state
    env = environment(stack)
    code, checks = preflight(env)
    assert code == 0, checks  # the worker created the topics it needs with the inputs' layout

    url = f"http://127.0.0.1:{worker.port}"
    done = cli(env, "status", "--json", "--url", url)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout[done.stdout.index("{"):])
    (row,) = report["workers"]
    assert row["healthy"] and row["status"] == "ok" and row["redis_up"] in (None, 1.0)
    assert row["partitions"] == [0, 1, 2, 3]

    deploy_env = env | {"DEPLOY_URLS": url, "DEPLOY_PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy.sh"), "--monitor-only"],
        env=deploy_env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all healthy" in done.stdout

    gone = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy.sh"), "--monitor-only", "--url", url, "--url", gone],
        env=deploy_env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 2 worker(s) unhealthy" in done.stdout

    worker.stop(signal.SIGTERM)
    done = cli(env, "status", "--url", url)
    assert done.returncode == 1
    assert "unreachable" in done.stdout
