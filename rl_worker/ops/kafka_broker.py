"""Apache Kafka (single-node KRaft) from the jars scripts/kafka/fetch.sh copies out of Maven Central.

The tests and `scripts/demo.sh --broker apache-kafka` start it the same way: format a storage
directory (with SCRAM users when asked), write `server.properties`, run `kafka.Kafka` on free
loopback ports, wait until it answers a metadata request, stop it by pid. Broker defaults are
kept except what one node needs (replication factors of the internal topics), so what works here
works on a stock broker (group.min.session.timeout.ms 6 s, group.initial.rebalance.delay.ms 3 s).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "KAFKA_POM",
    "KafkaBroker",
    "KafkaNotFetchedError",
    "SaslSslListener",
    "SslListener",
    "kafka_libs",
    "kafka_version",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"


class KafkaNotFetchedError(RuntimeError):
    """The broker's jars are not in the cache: run scripts/kafka/fetch.sh (scripts/test.sh does)."""


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The Kafka version pinned in scripts/kafka/pom.xml."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise KafkaNotFetchedError(f"no <kafka.version> in {pom}")
    return match.group(1).strip()


def kafka_libs(root: Path = REPO_ROOT) -> Path:
    """The folder of the pinned version's jars (.cache/kafka/<version>/libs), checked to exist."""
    libs = root / ".cache" / "kafka" / kafka_version(root / "scripts" / "kafka" / "pom.xml") / "libs"
    if not (libs / ".complete").exists():
        raise KafkaNotFetchedError(f"no Kafka jars in {libs}: run scripts/kafka/fetch.sh (needs Maven and Java 17)")
    return libs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SaslSslListener:
    """A SASL_SSL listener: PEM key store (key + certificate chain), SCRAM users made at format time.

    `users` maps user name to password; each gets SCRAM-SHA-256 and SCRAM-SHA-512 credentials
    (kafka-storage format --add-scram) and a PLAIN login on this listener.
    """

    keystore_pem: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)
    host: str = "localhost"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SslListener:
    """A TLS listener without SASL, named `name` (unique among the broker's listeners).

    `keystore_pem`: key + certificate chain (its own, so one broker can offer certificates that
    name different hosts); `client_ca_pem`: when set, clients must present a certificate signed by
    that CA (mutual TLS, `ssl.client.auth=required`).
    """

    name: str
    keystore_pem: Path
    client_ca_pem: Path | None = None
    port: int = field(default_factory=_free_port)
    host: str = "localhost"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def _cluster_id() -> str:
    """A Kafka Uuid as `kafka-storage random-uuid` prints it (22 url-safe base64 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: {level}
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.coordinator.group
        level: INFO
      - name: org.apache.kafka.coordinator.group
        level: INFO
      - name: org.apache.kafka.common.network.Selector
        level: INFO
"""


class KafkaBroker:
    """One Apache Kafka broker + controller (KRaft) on 127.0.0.1, its data under `workdir`.

    The ports stay the same across `stop()` / `start()`, and so does the log: a restart is the
    same cluster (unlike tansu's memory storage). `heap` is small on purpose: CI machines are
    shared (2 cores).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        libs: Path | None = None,
        port: int | None = None,
        sasl_ssl: SaslSslListener | None = None,
        ssl_listeners: tuple[SslListener, ...] = (),
        heap: str = "512m",
        overrides: dict[str, str] | None = None,
        log_level: str = "WARN",
    ) -> None:
        self.libs = libs or kafka_libs()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.controller_port = _free_port()
        self.sasl_ssl = sasl_ssl
        self.ssl_listeners = ssl_listeners
        self.heap = heap
        self.overrides = overrides or {}
        self.log_level = log_level
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = workdir / "broker.log"
        self.properties_path = workdir / "server.properties"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._formatted = False

    # ---- configuration -------------------------------------------------------------------------

    def properties(self) -> dict[str, str]:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            # one node: the internal topics cannot have three replicas
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # a test machine: fewer threads than the defaults sized for a server
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
        }
        if self.sasl_ssl is not None:
            listener = self.sasl_ssl
            listeners.append(f"SASL_SSL://127.0.0.1:{listener.port}")
            advertised.append(f"SASL_SSL://{listener.host}:{listener.port}")
            protocols.append("SASL_SSL:SASL_SSL")
            plain_users = " ".join(f'user_{name}="{password}"' for name, password in listener.users.items())
            prefix = "listener.name.sasl_ssl"
            props |= {
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                f"{prefix}.plain.sasl.jaas.config":
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
                f"{prefix}.scram-sha-256.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"{prefix}.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(listener.keystore_pem),
            }
        for tls in self.ssl_listeners:
            listeners.append(f"{tls.name}://127.0.0.1:{tls.port}")
            advertised.append(f"{tls.name}://{tls.host}:{tls.port}")
            protocols.append(f"{tls.name}:SSL")
            prefix = f"listener.name.{tls.name.lower()}"
            props |= {
                f"{prefix}.ssl.keystore.type": "PEM",
                f"{prefix}.ssl.keystore.location": str(tls.keystore_pem),
            }
            if tls.client_ca_pem is not None:
                props |= {
                    f"{prefix}.ssl.client.auth": "required",
                    f"{prefix}.ssl.truststore.type": "PEM",
                    f"{prefix}.ssl.truststore.location": str(tls.client_ca_pem),
                }
        props |= {
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocols),
        }
        return props | self.overrides

    def _java(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        log4j = self.workdir / "log4j2.yaml"
        log4j.write_text(_LOG4J2.format(level=self.log_level))
        return [
            "java",
            f"-Xmx{heap or self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",  # one GC thread: the machine is shared
            "-XX:TieredStopAtLevel=1",  # C1 only: half the start-up CPU; a test broker is never hot
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def format_storage(self) -> None:
        """kafka-storage format: a fresh cluster id, SCRAM credentials for the SASL users."""
        self.properties_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        args = ["format", "-t", _cluster_id(), "-c", str(self.properties_path)]
        if self.sasl_ssl is not None:
            for name, password in self.sasl_ssl.users.items():
                for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                    args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        done = subprocess.run(
            self._java("kafka.tools.StorageTool", *args, heap="256m"), capture_output=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        self._formatted = True

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        if not self._formatted:
            self.format_storage()
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.properties_path)), stdout=self._log, stderr=subprocess.STDOUT
        )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Until a metadata request over the plaintext listener lists this broker."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self.process.returncode}; see {self.log_path}")
            if _listens(self.port) and _answers_blocking(self.bootstrap):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka on {self.bootstrap} not ready after {timeout_s}s; see {self.log_path}")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        """SIGTERM: a controlled shutdown (the log is flushed and closed); SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, sig: int = signal.SIGTERM, down_s: float = 0.0) -> None:
        """Stop and start again on the same ports with the same log: the same cluster."""
        self.stop(sig)
        if down_s:
            time.sleep(down_s)
        self.start()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def _listens(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers_blocking(bootstrap: str) -> bool:
    """`_answers` from synchronous code, also when the caller runs an event loop (the demo)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _answers(bootstrap)).result()


async def _answers(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        return bool(client.cluster.brokers())
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()

