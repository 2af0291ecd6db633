"""Secured connections (design property 6): SASL_SSL to Apache Kafka, password / ACL user and TLS to
Redis, the /snapshot token; wrong credentials fail fast, clearly, non-zero, and no secret leaks.

Against a module's own Apache Kafka with a SASL_SSL listener (SCRAM users made by kafka-storage
format, PLAIN users in the listener's JAAS config) and a TLS-only redis-server with requirepass
and an ACL user; the CA and the server certificates are made here with `cryptography`. The
tests' own reads and writes go through the broker's plaintext listener; everything rl_worker
opens goes through the secured one. Only when RL_TEST_BROKERS names apache-kafka (tansu has
neither TLS nor SASL).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from rl_worker.ops.kafka_broker import KafkaBroker, SaslSslListener, SslListener
from rl_worker.settings import Settings, TopicNames
from rl_worker.stream.exceptions import ConnectionConfigError
from rl_worker.stream.topics import ensure_topics
from tests.integration.brokers import test_broker_names
from tests.integration.harness import Stack, produce, read_topic, run
from tests.integration.secured import CertificateAuthority, SecuredRedis, write_server_pem
from tests.integration.test_decisions import build_positions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        "apache-kafka" not in test_broker_names(), reason="needs apache-kafka in RL_TEST_BROKERS (TLS and SASL)"
    ),
]

USER = "rl-worker"


@dataclass
class Secured:
    kafka: KafkaBroker
    listener: SaslSslListener
    redis: SecuredRedis
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    kafka_password: str
    redis_password: str
    redis_user: str
    redis_user_password: str
    snapshot_token: str
    mtls: SslListener  # TLS, client certificate required (signed by `ca`)
    misnamed: SslListener  # TLS with a certificate that names another host than the one dialled
    client_cert: Path
    client_key: Path

    @property
    def secrets(self) -> list[str]:
        return [self.kafka_password, self.redis_password, self.redis_user_password, self.snapshot_token]

    def env(self, **overrides: str) -> dict[str, str]:
        """A worker's settings for the secured services: SASL_SSL (SCRAM-SHA-512), rediss:// + ACL user."""
        return {
            "RL_KAFKA_BOOTSTRAP": self.listener.bootstrap,
            "RL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "RL_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "RL_KAFKA__USERNAME": USER,
            "RL_KAFKA__PASSWORD": self.kafka_password,
            "RL_KAFKA__SSL_CA_FILE": str(self.ca.cert_path),
            "RL_REDIS_URL": self.redis.url,
            "RL_REDIS__USERNAME": self.redis_user,
            "RL_REDIS__PASSWORD": self.redis_user_password,
            "RL_REDIS__SSL_CA_FILE": str(self.ca.cert_path),
            "RL_WEB_SNAPSHOT_TOKEN": self.snapshot_token,
        } | overrides


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("secured")
    ca = CertificateAuthority.create(directory, "test-ca")
    other_ca = CertificateAuthority.create(directory, "other-ca")  # trusted by nobody here
    key, cert = ca.issue(["localhost", "127.0.0.1"])
    _, _, keystore = write_server_pem(directory, "kafka", key, cert, ca)
    kafka_password = "k-" + secrets.token_urlsafe(16)
    listener = SaslSslListener(keystore, {USER: kafka_password})
    mtls = SslListener("MTLS", keystore, client_ca_pem=ca.cert_path)
    key, cert = ca.issue(["rl-broker.invalid"])
    _, _, misnamed_store = write_server_pem(directory, "misnamed", key, cert, ca)
    misnamed = SslListener("MISNAMED", misnamed_store, host="127.0.0.1")
    key, cert = ca.issue([USER], usage="client")
    client_key, client_cert, _ = write_server_pem(directory, "client", key, cert, ca)
    kafka = KafkaBroker(directory / "kafka", sasl_ssl=listener, ssl_listeners=(mtls, misnamed))
    redis_password, user_password = "r-" + secrets.token_urlsafe(16), "u-" + secrets.token_urlsafe(16)
    kafka.start()
    try:
        tls_redis = SecuredRedis(directory, ca, redis_password, "rl", user_password)
        try:
            yield Secured(
                kafka, listener, tls_redis, ca, other_ca, kafka_password, redis_password, "rl", user_password,
                "t-" + secrets.token_urlsafe(16), mtls, misnamed, client_cert, client_key,
            )
        finally:
            tls_redis.stop()
    finally:
        kafka.stop()


@pytest.fixture
def secured_stack(secured: Secured, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(secured.kafka.bootstrap, secured.redis.url, tmp_path, extra_env=secured.env())
    yield stack
    stack.stop_all()


def run_command(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RL_")}
    return subprocess.run(
        [sys.executable, "-m", "rl_worker", *args], env=base | env, cwd=cwd,
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def assert_no_secret(secured: Secured, *texts: str) -> None:
    for text in texts:
        for secret in secured.secrets:
            assert secret not in text


def test_secured_worker_simulator_and_commands_work_end_to_end(
    secured: Secured, secured_stack: Stack, tmp_path: Path
) -> None:
    stack = secured_stack
    worker = stack.start_worker()
    worker.wait_ready(timeout_s=90)
    n = 20
    records, events = build_positions(stack, n, seed=3, duplicate_share=0.0)
    run(produce(stack.bootstrap, records))  # the test's own writes: plaintext listener
    decisions = run(read_topic(stack.bootstrap, stack.decisions, expect=2 * n, timeout_s=60))
    assert {(json.loads(d.value)["position_id"], json.loads(d.value)["agent"]) for d in decisions} == {
        (p, a) for p in events for a in ("meta", "sizing")
    }
    health = worker.wait_model_version(n)
    assert health["outcomes_applied"] == n

    # the simulator and the commands open their own clients: the same settings must reach them
    simulated = run_command(["simulate", "--positions", "30", "--in-flight", "8"], stack.env(), tmp_path)
    assert simulated.returncode == 0, simulated.stdout[-2000:] + simulated.stderr[-2000:]
    worker.wait_model_version(n + 30)

    # checkpoints went to the TLS Redis as the ACL user
    client = redis.Redis.from_url(
        secured.redis.url, username=secured.redis_user, password=secured.redis_user_password,
        ssl_ca_certs=str(secured.ca.cert_path),
    )
    try:
        for _ in range(150):  # the checkpoint interval (10 s) writes the last one
            if client.get(f"rl_worker:{stack.app_id}:ckpt:latest") is not None:
                break
            time.sleep(0.2)
        assert client.get(f"rl_worker:{stack.app_id}:ckpt:latest") is not None
    finally:
        client.close()
    listed = run_command(["checkpoint", "list"], stack.env() | {"COLUMNS": "250"}, tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert f"rl_worker:{stack.app_id}" in listed.stdout

    # /snapshot needs the token; /health and /metrics do not, and carry no secret
    with pytest.raises(urllib.error.HTTPError) as refused:
        worker.get("/snapshot", token=None)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        worker.get("/snapshot", token="not-the-token")
    assert wrong.value.code == 401
    assert json.loads(worker.get("/snapshot", token=secured.snapshot_token))["format"] == "rl_worker.replica"
    metrics = worker.get("/metrics").decode()
    health_body = worker.get("/health").decode()
    worker.stop(signal.SIGKILL)
    assert_no_secret(
        secured, worker.log, health_body, metrics, simulated.stdout, simulated.stderr, listed.stdout, listed.stderr
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_each_sasl_mechanism_authenticates(secured: Secured, mechanism: str) -> None:
    uid = secrets.token_hex(4)
    settings = Settings(
        kafka_bootstrap=secured.listener.bootstrap,
        kafka={
            "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism, "username": USER,
            "password": secured.kafka_password, "ssl_ca_file": secured.ca.cert_path,
        },
        topics=TopicNames(**{name: f"s{uid}.{name}" for name in TopicNames.model_fields}),
    )
    assert asyncio.run(ensure_topics(settings)) == settings.partitions


def tls_settings(listener: SslListener, **kafka: object) -> Settings:
    uid = secrets.token_hex(4)
    return Settings(
        kafka_bootstrap=listener.bootstrap,
        kafka={"security_protocol": "SSL", **kafka},
        topics=TopicNames(**{name: f"s{uid}.{name}" for name in TopicNames.model_fields}),
    )


def test_mutual_tls_works_with_the_client_certificate_and_names_it_when_missing(secured: Secured) -> None:
    """A listener that requires a client certificate (ssl.client.auth=required)."""
    settings = tls_settings(
        secured.mtls, ssl_ca_file=secured.ca.cert_path,
        ssl_cert_file=secured.client_cert, ssl_key_file=secured.client_key,
    )
    assert asyncio.run(ensure_topics(settings)) == settings.partitions
    without = tls_settings(secured.mtls, ssl_ca_file=secured.ca.cert_path)
    with pytest.raises(ConnectionConfigError) as refused:
        asyncio.run(ensure_topics(without, timeout_s=10))
    assert "client certificate" in str(refused.value) and "RL_KAFKA__SSL_CERT_FILE" in str(refused.value)
    # a certificate the broker's CA did not sign is refused too
    other_key, other_cert = secured.other_ca.issue([USER], usage="client")
    key_path, cert_path, _ = write_server_pem(secured.client_cert.parent, "other-client", other_key, other_cert,
                                              secured.other_ca)
    foreign = tls_settings(secured.mtls, ssl_ca_file=secured.ca.cert_path, ssl_cert_file=cert_path,
                           ssl_key_file=key_path)
    with pytest.raises(ConnectionConfigError) as refused:
        asyncio.run(ensure_topics(foreign, timeout_s=10))
    assert "client certificate" in str(refused.value)


def test_a_certificate_for_another_host_is_refused_unless_hostname_checks_are_off(secured: Secured) -> None:
    checked = tls_settings(secured.misnamed, ssl_ca_file=secured.ca.cert_path)
    with pytest.raises(ConnectionConfigError) as refused:
        asyncio.run(ensure_topics(checked, timeout_s=10))
    assert "does not name that host" in str(refused.value) and "127.0.0.1" in str(refused.value)
    unchecked = tls_settings(secured.misnamed, ssl_ca_file=secured.ca.cert_path, ssl_check_hostname=False)
    assert asyncio.run(ensure_topics(unchecked)) == unchecked.partitions


FAILURES = {
    "kafka-wrong-password": (
        {"RL_KAFKA__PASSWORD": "wrong-" + secrets.token_hex(6)},
        "SASL authentication of user 'rl-worker' (SCRAM-SHA-512) failed",
    ),
    "kafka-untrusted-ca": (
        {"RL_KAFKA__SSL_CA_FILE": "OTHER_CA"},
        "is not trusted (self-signed certificate in certificate chain); is RL_KAFKA__SSL_CA_FILE the CA",
    ),
    "kafka-plaintext-to-tls-port": (
        {"RL_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"},
        "closed or ignored a plain-text request: is that port a TLS or SASL listener?",
    ),
    "redis-wrong-password": (
        {"RL_REDIS__PASSWORD": "wrong-" + secrets.token_hex(6)},
        "refused the password of user 'rl' (RL_REDIS__PASSWORD)",
    ),
    "redis-untrusted-ca": (
        {"RL_REDIS__SSL_CA_FILE": "OTHER_CA"},
        "is not trusted (self-signed certificate in certificate chain); is RL_REDIS__SSL_CA_FILE the CA",
    ),
    "redis-plaintext-to-tls-port": (
        {"RL_REDIS_URL": "REDIS_PLAIN_URL"},
        "closed the connection: is that port TLS (use a rediss:// URL)?",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_refused_connection_stops_the_worker_naming_the_cause(
    secured: Secured, secured_stack: Stack, case: str
) -> None:
    overrides, expected = FAILURES[case]
    replace = {
        "OTHER_CA": str(secured.other_ca.cert_path),
        "REDIS_PLAIN_URL": secured.redis.url.replace("rediss:", "redis:"),
    }
    worker = secured_stack.start_worker(**{k: replace.get(v, v) for k, v in overrides.items()})
    code = worker.process.wait(60)  # it stops by itself: no join, no retry loop
    log = worker.log
    assert code != 0, log[-2000:]
    assert expected in log, log[-2000:]
    assert "Traceback" not in log
    assert_no_secret(secured, log)
    for value in overrides.values():
        if value.startswith("wrong-"):
            assert value not in log  # nor the wrong password tried


def test_preflight_passes_secured_and_names_the_cause_of_a_refusal(secured: Secured, tmp_path: Path) -> None:
    """`rl-worker preflight` connects as the worker does (SASL_SSL, rediss:// with an ACL user)."""
    import json

    def preflight(**overrides: str) -> tuple[int, dict[str, dict[str, object]], str]:
        done = run_command(["preflight", "--first-deploy", "--json", "--timeout", "10"],
                           secured.env(**overrides), tmp_path)
        out = done.stdout + done.stderr
        assert_no_secret(secured, out)
        report = json.loads(done.stdout[done.stdout.index("{"):])
        return done.returncode, {c["name"]: c for c in report["checks"]}, out

    code, checks, out = preflight()
    assert code == 0, out
    assert checks["broker reachable"]["ok"] and "SASL_SSL" in str(checks["broker reachable"]["detail"])
    assert checks["redis reachable"]["ok"]

    wrong = "wrong-" + secrets.token_hex(6)
    code, checks, out = preflight(RL_KAFKA__PASSWORD=wrong, RL_REDIS__PASSWORD=wrong)
    assert code == 1 and wrong not in out
    assert "SASL authentication of user 'rl-worker' (SCRAM-SHA-512) failed" in str(checks["broker reachable"]["detail"])
    assert "refused the password of user 'rl'" in str(checks["redis reachable"]["detail"])
    assert not checks["input topics present"]["ok"]  # not checked without a broker


@pytest.mark.parametrize("command", [["demo", "--positions", "10", "--no-live"], ["ab-test", "report"]])
def test_commands_name_a_refused_connection_in_one_line(secured: Secured, tmp_path: Path, command: list[str]) -> None:
    """The commands that open their own clients: a broker refusing them ends them with the cause, exit 1."""
    wrong = "wrong-" + secrets.token_hex(6)
    args = [*command, "--out", str(tmp_path / "out")] if command[0] == "demo" else command
    done = run_command(args, secured.env(RL_KAFKA__PASSWORD=wrong), tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert "SASL authentication of user 'rl-worker' (SCRAM-SHA-512) failed" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert_no_secret(secured, out)
    assert wrong not in out
