"""How the project connects: the options of every Kafka and Redis client, built in one place.

`kafka_options` gives the aiokafka keyword arguments (bootstrap list, security protocol, SASL,
TLS context) that every consumer, producer and admin client of the project is built with: the
outcomes follower, the topic admin, the simulator, the commands. `faust_broker_options` gives the
same to Faust (its `broker` and `broker_credentials`), which applies them to its own clients.
`redis_options` does the same for Redis. `probe_kafka` / `probe_redis` connect once at start-up
and turn a refusal that retrying cannot fix (wrong password, untrusted certificate, a TLS port
dialled in plain text) into a `ConnectionConfigError` naming the cause. Secrets stay `SecretStr`
until the client is built and are never part of an error message or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from rl_worker.settings import KafkaSecurity, Settings
from rl_worker.stream.exceptions import ConnectionConfigError, InfrastructureError

__all__ = [
    "faust_broker_options",
    "kafka_options",
    "kafka_ssl_context",
    "probe_kafka",
    "probe_redis",
    "redis_options",
]

log = logging.getLogger(__name__)


def kafka_ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """Certificates verified against the CA file (or the system's CAs), host names checked unless
    switched off, the client certificate loaded when one is configured."""
    context = ssl.create_default_context(cafile=str(security.ssl_ca_file) if security.ssl_ca_file else None)
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_cert_file is not None and security.ssl_key_file is not None:
        context.load_cert_chain(
            str(security.ssl_cert_file),
            str(security.ssl_key_file),
            password=security.ssl_key_password.get_secret_value() if security.ssl_key_password else None,
        )
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer / AIOKafkaAdminClient."""
    security = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": security.security_protocol,
    }
    if security.uses_tls:
        options["ssl_context"] = kafka_ssl_context(security)
    if security.uses_sasl:
        assert security.password is not None  # checked by KafkaSecurity
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.username,
            "sasl_plain_password": security.password.get_secret_value(),
        }
    return options


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """`broker` and `broker_credentials` of the Faust app: the same security as `kafka_options`."""
    import faust

    security = settings.kafka
    credentials: Any = None
    if security.uses_sasl:
        assert security.password is not None
        credentials = faust.SASLCredentials(
            username=security.username,
            password=security.password.get_secret_value(),
            ssl_context=kafka_ssl_context(security) if security.uses_tls else None,
            mechanism=security.sasl_mechanism,
        )
    elif security.uses_tls:
        credentials = faust.SSLCredentials(kafka_ssl_context(security))
    return {
        "broker": [f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",")],
        "broker_credentials": credentials,
    }


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for redis.Redis.from_url / redis.asyncio.Redis.from_url beside the URL.

    TLS is chosen by the URL (`rediss://`); the CA, client certificate and host name check
    apply to it. User and password from RL_REDIS__* win over any in the URL.
    """
    security = settings.redis
    options: dict[str, Any] = {}
    if security.username:
        options["username"] = security.username
    if security.password is not None:
        options["password"] = security.password.get_secret_value()
    if settings.redis_url.get_secret_value().startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = security.ssl_check_hostname
        if security.ssl_ca_file is not None:
            options["ssl_ca_certs"] = str(security.ssl_ca_file)
        if security.ssl_cert_file is not None:
            options["ssl_certfile"] = str(security.ssl_cert_file)
        if security.ssl_key_file is not None:
            options["ssl_keyfile"] = str(security.ssl_key_file)
    return options


# ---- start-up probes ---------------------------------------------------------------------------


# TLS alerts a server sends when it wants a client certificate it did not get or does not trust
# (Kafka's JSSE sends bad_certificate, OpenSSL servers certificate_required or unknown_ca)
_CLIENT_CERT_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA",
                       "ALERT_CERTIFICATE_UNKNOWN", "ALERT_HANDSHAKE_FAILURE")


def _tls_cause(exc: ssl.SSLError, where: str, ca_setting: str, client_cert: bool = False) -> str:
    """The cause of a failed TLS connection in words. `ca_setting` names the CA file setting of the
    service (RL_KAFKA__SSL_CA_FILE / RL_REDIS__SSL_CA_FILE); `client_cert`: one is configured."""
    cert_setting = ca_setting.replace("SSL_CA_FILE", "SSL_CERT_FILE")
    key_setting = ca_setting.replace("SSL_CA_FILE", "SSL_KEY_FILE")
    if any(alert in str(exc) for alert in _CLIENT_CERT_ALERTS):
        reason = getattr(exc, "reason", None) or exc
        if client_cert:
            return (
                f"TLS: {where} refused the client certificate ({reason}): is {cert_setting} "
                "signed by a CA the server trusts, and still valid?"
            )
        return (
            f"TLS: {where} requires a client certificate ({reason}): set {cert_setting} and {key_setting}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "hostname" in (exc.verify_message or "") or "IP address mismatch" in (exc.verify_message or ""):
            return f"TLS: the certificate of {where} does not name that host ({exc.verify_message})"
        return (
            f"TLS: the certificate of {where} is not trusted ({exc.verify_message}); "
            f"is {ca_setting} the CA that signed it?"
        )
    if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc):
        return f"TLS: {where} does not speak TLS on that port ({exc.reason})"
    return f"TLS handshake with {where} failed: {exc.reason or exc}"


async def probe_kafka(settings: Settings, timeout_s: float = 10.0) -> None:
    """Connect to one bootstrap broker as every client will (TLS handshake, ApiVersions, SASL).

    Raises ConnectionConfigError when the broker refuses this client as configured (nothing
    a retry fixes), InfrastructureError when no broker could be reached at all.
    """
    from aiokafka import errors
    from aiokafka.conn import create_conn

    options = kafka_options(settings)
    options.pop("bootstrap_servers")
    security = settings.kafka
    who = f"user {security.username!r} ({security.sasl_mechanism})" if security.uses_sasl else "this client"
    client_cert = security.ssl_cert_file is not None
    unreachable: list[str] = []
    for host_port in settings.kafka_bootstrap.split(","):
        host, _, port = host_port.strip().rpartition(":")
        where = f"Kafka at {host}:{port} ({security.security_protocol})"
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options), timeout_s
            )
        except ssl.SSLError as exc:
            raise ConnectionConfigError(_tls_cause(exc, where, "RL_KAFKA__SSL_CA_FILE", client_cert)) from None
        except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
            raise ConnectionConfigError(
                f"SASL authentication of {who} failed at {where}: wrong user name or password? "
                f"({type(exc).__name__})"
            ) from None
        except errors.UnsupportedSaslMechanismError:
            raise ConnectionConfigError(
                f"{where} does not offer SASL mechanism {security.sasl_mechanism} (RL_KAFKA__SASL_MECHANISM)"
            ) from None
        except errors.IllegalSaslStateError:
            raise ConnectionConfigError(
                f"{where} does not expect SASL on that port: check RL_KAFKA__SECURITY_PROTOCOL"
            ) from None
        except (ConnectionRefusedError, OSError) as exc:
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise ConnectionConfigError(_closed_cause(where, security)) from None
            unreachable.append(f"{host}:{port}: {exc.strerror or exc!r}")
            continue
        except (errors.KafkaConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            # the listener took the connection and dropped or ignored what was sent; with TLS 1.3 a
            # refused client certificate arrives as an alert after the handshake, behind this error
            alert = _ssl_error_behind(exc)
            if alert is not None:
                raise ConnectionConfigError(_tls_cause(alert, where, "RL_KAFKA__SSL_CA_FILE", client_cert)) from None
            raise ConnectionConfigError(_closed_cause(where, security)) from None
        else:
            conn.close()
            return
    raise InfrastructureError(f"no Kafka broker reachable: {'; '.join(unreachable)}")


def _ssl_error_behind(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(5):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if isinstance(seen, ssl.SSLError):
            return seen
    return None


def _closed_cause(where: str, security: KafkaSecurity) -> str:
    if security.uses_tls:
        return f"{where} closed the connection during the handshake: is that port a TLS listener?"
    return (
        f"{where} closed or ignored a plain-text request: is that port a TLS or SASL listener? "
        "Set RL_KAFKA__SECURITY_PROTOCOL to match it"
    )


async def probe_redis(settings: Settings, timeout_s: float = 5.0) -> None:
    """PING Redis as the checkpoint store will. A refusal (password, ACL user, TLS trust, TLS port
    dialled in plain text) raises ConnectionConfigError; Redis being down does not (checkpoints
    wait for it, decisions do not)."""
    import redis.asyncio as aioredis
    from redis import exceptions

    url = settings.redis_url.get_secret_value()
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **redis_options(settings)
    )
    where = f"Redis at {_redis_location(url)}"
    user = f"user {settings.redis.username!r}" if settings.redis.username else "the default user"
    try:
        await client.ping()
    except (exceptions.AuthenticationError, exceptions.AuthenticationWrongNumberOfArgsError):
        if settings.redis.password is None and "@" not in url:
            raise ConnectionConfigError(f"{where} requires a password: set RL_REDIS__PASSWORD") from None
        raise ConnectionConfigError(f"{where} refused the password of {user} (RL_REDIS__PASSWORD)") from None
    except exceptions.ResponseError as exc:
        if "NOAUTH" in str(exc) or "Authentication required" in str(exc):
            raise ConnectionConfigError(f"{where} requires a password: set RL_REDIS__PASSWORD") from None
        raise
    except exceptions.ConnectionError as exc:
        cause = exc.__cause__ or exc.__context__
        text = str(exc)
        if isinstance(cause, ssl.SSLError):
            raise ConnectionConfigError(
                _tls_cause(cause, where, "RL_REDIS__SSL_CA_FILE", settings.redis.ssl_cert_file is not None)
            ) from None
        if "certificate verify failed" in text:
            raise ConnectionConfigError(
                f"TLS: the certificate of {where} is not trusted; is RL_REDIS__SSL_CA_FILE the CA that signed it?"
            ) from None
        if "Connection closed by server" in text or "Connection reset" in text:
            raise ConnectionConfigError(
                f"{where} closed the connection: is that port TLS (use a rediss:// URL)?"
            ) from None
        log.warning("%s does not answer (%s): checkpoints wait for it", where, type(exc).__name__)
    except exceptions.TimeoutError:
        raise ConnectionConfigError(
            f"{where} did not answer within {timeout_s}s: is that port TLS (use a rediss:// URL)?"
        ) from None
    finally:
        await client.aclose()


def _redis_location(url: str) -> str:
    """host:port/db of a Redis URL, without the password it may carry."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
