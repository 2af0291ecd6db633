"""Real services for the integration tests: the broker, Redis, worker processes, topic I/O."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rl_worker.ops.services import EmbeddedBroker, LocalRedis, WorkerProcess, free_port, wait_for_port
from rl_worker.settings import TopicNames
from rl_worker.stream.internals import refresh_metadata

__all__ = [
    "EmbeddedBroker",
    "LocalRedis",
    "Stack",
    "WorkerProcess",
    "free_port",
    "produce",
    "read_topic",
    "run",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """One test's private topics, group / app id and Redis namespace on the shared services."""

    bootstrap: str
    redis_url: str
    workdir: Path
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def app_id(self) -> str:
        return f"rl-test-{self.uid}"

    def topic(self, name: str) -> str:
        return f"t{self.uid}.{name}"

    @property
    def signals(self) -> str:
        return self.topic("signals")

    @property
    def executions(self) -> str:
        return self.topic("executions")

    @property
    def closes(self) -> str:
        return self.topic("closes")

    @property
    def decisions(self) -> str:
        return self.topic("decisions")

    @property
    def dead_letter(self) -> str:
        return self.topic("dead-letter")

    @property
    def outcomes(self) -> str:
        return self.topic("outcomes")

    def env(self, **overrides: str) -> dict[str, str]:
        """This stack's RL_ variables (WorkerProcess drops any other RL_ variable of ours)."""
        env = {
            "RL_KAFKA_BOOTSTRAP": self.bootstrap,
            "RL_REDIS_URL": self.redis_url,
            "RL_APP_ID": self.app_id,
            "RL_DATA_DIR": str(self.workdir / "data"),
            **{f"RL_TOPICS__{field.upper()}": self.topic(field.replace("_", "-")) for field in TopicNames.model_fields},
            "RL_PARTITIONS": "4",
            # the replay tests compare replicas through /snapshot, which is off without a token
            "RL_WEB_SNAPSHOT_TOKEN": f"snap-{self.uid}",
        }
        return env | self.extra_env | overrides

    def start_worker(self, **overrides: str) -> WorkerProcess:
        index = len(self.workers)
        env = self.env(**overrides)
        env["RL_DATA_DIR"] = f"{env['RL_DATA_DIR']}-{index}"
        worker = WorkerProcess(env, self.workdir, self.workdir / f"worker-{index}.log")
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)


# ---- topic I/O -------------------------------------------------------------------------------------

Record = tuple[str, bytes | None, bytes | None]


async def produce(bootstrap: str, records: Iterable[Record], pace_s: float = 0.0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, key=key, value=value)
            if pace_s:
                await asyncio.sleep(pace_s)
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Consumed:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def json(self) -> Any:
        return json.loads(self.value or b"null")


async def read_topic(
    bootstrap: str,
    topic: str,
    expect: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    distinct: Callable[[Consumed], Any] | None = None,
) -> list[Consumed]:
    """Every record of a topic from the beginning: until `expect` records (or `expect` distinct
    values of `distinct(record)`, when duplicates are allowed), or `idle_s` without any."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    out: list[Consumed] = []
    try:
        partitions = None
        deadline = time.monotonic() + timeout_s
        while partitions is None and time.monotonic() < deadline:
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await asyncio.sleep(0.2)
        if partitions is None:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    out.append(Consumed(tp.topic, tp.partition, r.offset, r.key, r.value, dict(r.headers)))
                    last = time.monotonic()
            seen = len(out) if distinct is None else len({distinct(r) for r in out})
            if expect is not None and seen >= expect:
                # drain a little longer to catch unexpected extras
                if time.monotonic() - last > 0.5:
                    break
            elif expect is None and time.monotonic() - last > idle_s:
                break
    finally:
        await consumer.stop()
    return out


def decision_id(record: Consumed) -> Any:
    return json.loads(record.value or b"{}").get("decision_id")


def record_key(record: Consumed) -> Any:
    return record.key


def run(coro: Any) -> Any:
    return asyncio.run(coro)
