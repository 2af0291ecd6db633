"""The one frozen Settings object, read from the environment (prefix RL_) at the entry point."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rl_worker.core.arms import BaselinePolicy
from rl_worker.core.config import CoreConfig

__all__ = [
    "AbSettings",
    "CheckpointSettings",
    "KafkaSecurity",
    "RedisSecurity",
    "Settings",
    "TopicNames",
    "check_app_id",
    "learning_log_name",
    "redis_namespace",
]

_APP_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


class TopicNames(BaseModel):
    """Topic names; the three inputs belong to the trading stack and must be co-partitioned."""

    model_config = ConfigDict(frozen=True)

    signals: str = "trading.signals"
    executions: str = "trading.executions"
    closes: str = "trading.closes"
    decisions: str = "rl.decisions"
    dead_letter: str = "rl.dead-letter"
    outcomes: str = Field(
        "",
        description="the learning log (one partition, totally ordered); empty: `rl.outcomes.<app_id>`, "
        "one log per app id (model namespace)",
    )


class KafkaSecurity(BaseModel):
    """How every Kafka client of the project authenticates (RL_KAFKA__*); the bootstrap list is
    RL_KAFKA_BOOTSTRAP. Applied by `rl_worker.stream.connections` to Faust's clients, the outcomes
    follower, the topic admin, the simulator and every command."""

    model_config = ConfigDict(frozen=True)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="with SASL_PLAINTEXT / SASL_SSL (PLAIN sends the password: use it over TLS)"
    )
    username: str | None = Field(None, description="SASL user")
    password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_ca_file: Path | None = Field(
        None, description="PEM bundle of the CAs that sign the brokers' certificates; default: the system's"
    )
    ssl_cert_file: Path | None = Field(None, description="client certificate (PEM), when brokers ask for one")
    ssl_key_file: Path | None = Field(None, description="its private key (PEM)")
    ssl_key_password: SecretStr | None = Field(None, description="password of an encrypted private key")
    ssl_check_hostname: bool = Field(True, description="the broker's certificate must name the host dialled")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.uses_sasl and (not self.username or self.password is None):
            raise ValueError(f"{self.security_protocol} needs RL_KAFKA__USERNAME and RL_KAFKA__PASSWORD")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("RL_KAFKA__SSL_CERT_FILE and RL_KAFKA__SSL_KEY_FILE go together")
        return self


class RedisSecurity(BaseModel):
    """Credentials and TLS of the Redis connection (RL_REDIS__*), beside RL_REDIS_URL. TLS is on
    with a `rediss://` URL; a password in the URL works too, these keep it out of the URL."""

    model_config = ConfigDict(frozen=True)

    username: str | None = Field(None, description="ACL user (Redis 6+); default: the `default` user")
    password: SecretStr | None = Field(None, description="requirepass or the ACL user's password")
    ssl_ca_file: Path | None = Field(None, description="PEM bundle of the CAs that sign the server's certificate")
    ssl_cert_file: Path | None = Field(None, description="client certificate (PEM), when the server asks for one")
    ssl_key_file: Path | None = Field(None, description="its private key (PEM)")
    ssl_check_hostname: bool = Field(True, description="the server's certificate must name the host dialled")


class CheckpointSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    every_outcomes: int = Field(200, ge=1, description="checkpoint after this many newly applied outcomes")
    interval_s: float = Field(10.0, gt=0, description="... or after this many seconds with any new outcome")
    retention: int = Field(5, ge=1, description="checkpoints kept per namespace (the last K)")
    retry_initial_s: float = Field(0.5, gt=0, description="first backoff after a failed write")
    retry_max_s: float = Field(10.0, gt=0, description="longest backoff between write attempts")


class AbSettings(BaseModel):
    """A/B arms on live traffic, and how `ab-test report` / `evaluate` judge them."""

    model_config = ConfigDict(frozen=True)

    control_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of positions (by a stable hash of the position id) decided by the control arm; "
        "1.0 = apprentice mode",
    )
    control_policy: str = Field("control", description="the control arm's name in `policy`")
    baseline: BaselinePolicy = Field(
        default_factory=BaselinePolicy, description="the control decision when an event carries no choice"
    )
    trades_per_year: float = Field(252.0, gt=0, description="annualises the per-trade Sharpe")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the between-arm tests")
    power: float = Field(0.8, gt=0, lt=1, description="power behind the positions-needed figure")
    bootstrap_resamples: int = Field(2000, ge=100, description="resamples of every bootstrap interval")
    min_positions: int = Field(100, ge=2, description="positions per arm before a criterion can pass or fail")
    maturity_outcomes: int = Field(5000, ge=1, description="outcomes applied before epsilon is judged")
    history_size: int = Field(200, ge=1, description="reports kept per app id in Redis (`--history`)")


class Settings(BaseSettings):
    """Everything the worker, the CLI and the scripts need. Nested fields: RL_SECTION__FIELD."""

    model_config = SettingsConfigDict(env_prefix="RL_", env_nested_delimiter="__", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port] of the brokers")
    kafka: KafkaSecurity = KafkaSecurity()
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="redis://… or rediss://… (TLS)")
    redis: RedisSecurity = RedisSecurity()
    app_id: str = Field("rl-worker", description="consumer group, prefix of Faust's internal topics, Redis namespace")
    web_host: str = Field("127.0.0.1", description="address of the HTTP server (health, metrics)")
    web_port: int = Field(6066, ge=1, le=65535)
    web_snapshot_token: SecretStr | None = Field(
        None,
        description="/snapshot hands out the whole model: off unless set, then it needs "
        "`Authorization: Bearer <token>`",
    )
    data_dir: Path = Field(Path("rl-worker-data"), description="Faust's local data directory")
    topics: TopicNames = TopicNames()
    partitions: int = Field(4, ge=1, description="partitions of input topics created when missing")
    policy: str = Field("rl", description="name of the policy / A/B arm written on each decision")
    max_record_bytes: int = Field(65536, ge=256, description="larger records are dead-lettered")
    position_ttl_s: float = Field(3600.0, gt=0, description="an incomplete position expires after this")
    completed_retention_s: float = Field(
        600.0, gt=0, description="how long a completed position is kept to drop late duplicates"
    )
    expiry_interval_s: float = Field(5.0, gt=0, description="how often positions are checked for expiry")
    session_timeout_s: float = Field(
        6.0,
        gt=0,
        description="consumer-group session timeout: Apache Kafka refuses a join below its "
        "group.min.session.timeout.ms (6 s by default); tansu holds each join for half of it",
    )
    heartbeat_interval_s: float = Field(1.0, gt=0, description="at most a third of the session timeout")
    fetch_max_wait_ms: int = Field(20, ge=1, description="worker consumer's fetch wait (Faust hard-codes 1500)")
    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        description="an assigned input partition whose commits do not move this long while records "
        "wait on it is stalled (shown in /health; the worker seeks it back to its committed offset)",
    )
    stall_exit_after_s: float = Field(
        10.0,
        ge=0,
        description="a worker still stalled this much later exits (status 70) so that its "
        "partitions are reassigned; 0: never exit",
    )
    catch_up_timeout_s: float = Field(
        30.0, ge=0, description="how long start-up waits for the replica to reach the log end"
    )
    checkpoint: CheckpointSettings = CheckpointSettings()
    ab: AbSettings = AbSettings()
    core: CoreConfig = CoreConfig()
    log_level: str = Field("INFO")

    @field_validator("app_id")
    @classmethod
    def _app_id_names_topics(cls, value: str) -> str:
        return check_app_id(value)

    @model_validator(mode="after")
    def _learning_log_of_the_app_id(self) -> Settings:
        if not self.topics.outcomes:
            # frozen: the one place a derived default is filled in, while the object is being built
            topics = self.topics.model_copy(update={"outcomes": learning_log_name(self.app_id)})
            object.__setattr__(self, "topics", topics)
        return self

    @property
    def redis_namespace(self) -> str:
        return redis_namespace(self.app_id)


def check_app_id(app_id: str) -> str:
    """An app id names a consumer group, topics and a Redis namespace: 1-200 of [A-Za-z0-9._-]."""
    if not _APP_ID.fullmatch(app_id):
        raise ValueError("app_id must be 1-200 of [A-Za-z0-9._-]: it names a Kafka group and topics")
    return app_id


def learning_log_name(app_id: str) -> str:
    """The default learning log of a model namespace: `rl.outcomes.<app_id>`."""
    return f"rl.outcomes.{app_id}"


def redis_namespace(app_id: str) -> str:
    """Where the checkpoints of a model namespace live in Redis."""
    return f"rl_worker:{app_id}"
