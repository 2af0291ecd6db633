"""One place builds every client's connection options from the settings; secrets stay secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from rl_worker.ops.services import settings_env
from rl_worker.settings import Settings
from rl_worker.stream.connections import faust_broker_options, kafka_options, redis_options
from rl_worker.stream.web import snapshot_allowed

PASSWORD = "s3cret-Pa55"


def sasl_ssl(**extra: object) -> Settings:
    return Settings(
        kafka_bootstrap="b1:9093,b2:9093",
        kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "username": "rl",
               "password": PASSWORD, **extra},
    )


def test_plaintext_by_default() -> None:
    options = kafka_options(Settings(kafka_bootstrap="b:9092"))
    assert options == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    assert faust_broker_options(Settings(kafka_bootstrap="b:9092"))["broker_credentials"] is None


def test_sasl_ssl_options_for_aiokafka_and_faust() -> None:
    settings = sasl_ssl()
    options = kafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("rl", PASSWORD)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED  # on by default
    faust_options = faust_broker_options(settings)
    assert faust_options["broker"] == ["kafka://b1:9093", "kafka://b2:9093"]
    credentials = faust_options["broker_credentials"]
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert PASSWORD not in repr(credentials)


def test_hostname_check_can_be_switched_off_but_certificates_are_still_verified() -> None:
    context = kafka_options(sasl_ssl(ssl_check_hostname=False))["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_incomplete_security_settings_are_refused_without_echoing_the_password() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(kafka={"security_protocol": "SASL_SSL", "password": PASSWORD})
    assert "RL_KAFKA__USERNAME" in str(refused.value)
    with pytest.raises(ValidationError):
        Settings(kafka={"security_protocol": "SSL", "ssl_cert_file": "/c.pem"})  # the key is missing


def test_secrets_do_not_show_in_the_settings_repr() -> None:
    settings = sasl_ssl()
    settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"password": SecretStr("r-pw")})})
    text = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert PASSWORD not in text and "r-pw" not in text


def test_redis_options_follow_the_url_scheme(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    plain = Settings(redis_url="redis://h:6379/0", redis={"username": "rl", "password": "pw"})
    assert redis_options(plain) == {"username": "rl", "password": "pw"}
    tls = Settings(redis_url="rediss://h:6380/0", redis={"password": "pw", "ssl_ca_file": ca})
    assert redis_options(tls) == {
        "password": "pw", "ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": str(ca),
    }


def test_workers_started_by_the_demo_get_the_same_security(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = sasl_ssl().model_copy(update={"web_snapshot_token": SecretStr("tok")})
    for name, value in settings_env(settings).items():  # what a child worker reads
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    assert rebuilt.kafka == settings.kafka
    assert rebuilt.kafka.password is not None and rebuilt.kafka.password.get_secret_value() == PASSWORD
    assert rebuilt.web_snapshot_token is not None and rebuilt.web_snapshot_token.get_secret_value() == "tok"


@pytest.mark.parametrize(
    ("token", "header", "allowed"),
    [
        (None, "Bearer anything", False),
        (SecretStr(""), "Bearer ", False),
        (SecretStr("tok"), None, False),
        (SecretStr("tok"), "Bearer nope", False),
        (SecretStr("tok"), "tok", False),
        (SecretStr("tok"), "Bearer tok", True),
    ],
)
def test_snapshot_needs_the_token(token: SecretStr | None, header: str | None, allowed: bool) -> None:
    assert snapshot_allowed(token, header) is allowed


def test_a_refused_client_certificate_is_named_with_its_settings() -> None:
    from aiokafka.errors import KafkaConnectionError

    from rl_worker.stream.connections import _ssl_error_behind, _tls_cause

    alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    missing = _tls_cause(alert, "Kafka at b:9093 (SSL)", "RL_KAFKA__SSL_CA_FILE")
    assert "requires a client certificate" in missing
    assert "RL_KAFKA__SSL_CERT_FILE and RL_KAFKA__SSL_KEY_FILE" in missing
    refused = _tls_cause(alert, "Redis at rediss://r:6380/0", "RL_REDIS__SSL_CA_FILE", client_cert=True)
    assert "refused the client certificate" in refused and "RL_REDIS__SSL_CERT_FILE" in refused
    # TLS 1.3: the alert comes after the handshake, behind the client's "connection closed"
    try:
        try:
            raise alert
        except ssl.SSLError as exc:
            raise KafkaConnectionError("Connection at b:9093 closed") from exc
    except KafkaConnectionError as closed:
        assert _ssl_error_behind(closed) is alert
    assert _ssl_error_behind(KafkaConnectionError("closed")) is None
