"""Secured services for tests/integration/test_security.py: a CA and server certificates made with
`cryptography`, Apache Kafka with a SASL_SSL listener (SCRAM users from kafka-storage format), and
a redis-server with a password, an ACL user and a TLS port only."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.harness import free_port, wait_for_port

__all__ = ["CertificateAuthority", "SecuredRedis", "write_server_pem"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8, unencrypted: the form Kafka's PEM key store reads without ssl.key.password
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class CertificateAuthority:
    """A self-signed CA whose certificate is written to `cert_path`."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, path)

    def issue(
        self, hostnames: list[str], usage: str = "server"
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A server certificate naming `hostnames` (DNS names or IP addresses), or with usage
        "client" a client certificate (mutual TLS) for the name `hostnames[0]`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hostnames[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([
                    x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if usage == "server"
                    else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
                ]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def write_server_pem(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, ca: CertificateAuthority
) -> tuple[Path, Path, Path]:
    """(key file, certificate chain file, key + chain in one file: Kafka's PEM key store)."""
    key_path, chain_path, store_path = (directory / f"{name}{s}" for s in ("-key.pem", "-chain.pem", "-store.pem"))
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.cert.public_bytes(serialization.Encoding.PEM)
    key_path.write_bytes(_pem_key(key))
    chain_path.write_bytes(chain)
    store_path.write_bytes(_pem_key(key) + chain)
    for path in (key_path, store_path):
        path.chmod(0o600)
    return key_path, chain_path, store_path


class SecuredRedis:
    """Debian's redis-server (built with TLS) on a TLS-only loopback port, with `requirepass` for
    the default user and one ACL user. Fails loudly when the binary lacks TLS."""

    def __init__(self, directory: Path, ca: CertificateAuthority, password: str, user: str, user_password: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs Debian's redis-server)")
        key, cert = ca.issue(["localhost", "127.0.0.1"])
        self.key_path, self.cert_path, _ = write_server_pem(directory, "redis", key, cert, ca)
        self.port = free_port()
        self.url = f"rediss://localhost:{self.port}/0"
        self.log_path = directory / "redis.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            [
                binary, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.cert_path), "--tls-key-file", str(self.key_path),
                "--tls-ca-cert-file", str(ca.cert_path), "--tls-auth-clients", "no",
                "--requirepass", password,
                "--user", user, "on", f">{user_password}", "~rl_worker:*", "+@all",
                "--save", "", "--appendonly", "no",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, timeout_s=10)
        except TimeoutError:
            self.stop()
            log = self.log_path.read_text()
            raise RuntimeError(f"redis-server did not open its TLS port (built without TLS?): {log}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()
