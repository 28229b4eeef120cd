"""Certificates made at test time, and private Redis, PostgreSQL and RabbitMQ servers that speak TLS with them.

:func:`make_pki` writes a throw-away CA and a server certificate for ``127.0.0.1``/``localhost`` signed by it, plus
a second, unrelated CA (the "wrong CA" a client must refuse).  The servers reuse the starters in ``tests.servers``
and only add TLS settings on top, so those starters stay as their owners wrote them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import ServerProcess, free_port, wait_for_port
from tests.servers.amqp import RabbitNode
from tests.servers.postgres import PostgresServer

__all__ = ["PKI", "AMQPTLSCase", "PostgresTLSCase", "RedisTLSCase", "TLSCase", "TLSPostgres", "TLSRabbit", "TLSRedis",
           "make_pki"]


@dataclass(frozen=True)
class PKI:
    ca: Path  # the CA that signed the server certificate
    cert: Path  # server certificate
    key: Path  # server private key (PEM, unencrypted)
    wrong_ca: Path  # a CA that signed nothing the servers present


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path) -> PKI:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    ca_key, ca_cert = _ca("layers test CA")
    _, wrong_cert = _ca("layers wrong CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # servers may run as another OS user (PostgreSQL does)
    pki = PKI(directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "wrong-ca.pem")
    pki.ca.write_bytes(_pem(ca_cert))
    pki.wrong_ca.write_bytes(_pem(wrong_cert))
    pki.cert.write_bytes(_pem(cert))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    pki.key.chmod(0o600)
    return pki


class TLSRedis:
    """redis-server with only a TLS port (``--port 0``); clients need not present a certificate."""

    def __init__(self, pki: PKI, *extra: str) -> None:
        self.pki = pki
        self.process = ServerProcess("redis-tls")
        self.extra = list(extra)

    @property
    def port(self) -> int:
        return self.process.port

    def url(self, ca: Path | None = None) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca or self.pki.ca}"

    def start(self) -> TLSRedis:
        self.process.start(["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                            "--tls-cert-file", str(self.pki.cert), "--tls-key-file", str(self.pki.key),
                            "--tls-ca-cert-file", str(self.pki.ca), "--tls-auth-clients", "no",
                            "--save", "", "--appendonly", "no", "--dir", str(self.process.dir), *self.extra])
        return self

    def stop(self) -> None:
        self.process.stop()


class TLSPostgres(PostgresServer):
    """A private PostgreSQL with ``ssl = on``; trust for ``postgres``, scram-sha-256 for the ``secret`` role."""

    def __init__(self, pki: PKI) -> None:
        super().__init__()
        self.pki = pki

    def init(self) -> TLSPostgres:
        super().init()
        for source, target in ((self.pki.cert, "server.crt"), (self.pki.key, "server.key")):
            shutil.copy(source, self.data / target)
            _give_to_server_user(self.data / target, self._user)
        (self.data / "server.key").chmod(0o600)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                       "password_encryption = 'scram-sha-256'\n")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        return self

    def add_password_role(self, role: str, password: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'".encode())
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}".encode())
            conn.execute(f"GRANT ALL ON DATABASE test TO {role}".encode())

    def url(self, query: str = "sslmode=require", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/test?{query}"


def _give_to_server_user(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class TLSRabbit(RabbitNode):
    """A private RabbitMQ node with a TLS listener (``tls_port``) beside its plain one."""

    def __init__(self, pki: PKI) -> None:
        super().__init__()
        self.tls_port = free_port()
        with open(self.dir / "rabbitmq.conf", "a") as conf:
            conf.write(f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                       f"ssl_options.cacertfile = {pki.ca}\nssl_options.certfile = {pki.cert}\n"
                       f"ssl_options.keyfile = {pki.key}\nssl_options.verify = verify_none\n"
                       "ssl_options.fail_if_no_peer_cert = false\n")

    @property
    def tls_url(self) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/%2F"

    def start(self, argv: object = None, ready_timeout: float = 90.0, env: object = None) -> TLSRabbit:  # type: ignore[override]
        super().start(ready_timeout=ready_timeout)
        wait_for_port(self.tls_port, ready_timeout)
        return self


class TLSCase:
    """One backend over TLS: ``layer()`` trusts the test CA, ``layer(ca=pki.wrong_ca)`` must refuse the server."""

    name = ""

    def __init__(self, pki: PKI) -> None:
        self.pki = pki
        self.prefix = "tls" + os.urandom(4).hex()

    def layer(self, ca: Path | None = None, **options: Any) -> Any:
        raise NotImplementedError

    def connections_encrypted(self) -> bool:
        """True when the server says every client connection it holds is TLS (trivially so for TLS-only ports)."""
        return True


class RedisTLSCase(TLSCase):
    name = "redis"

    def __init__(self, pki: PKI, server: TLSRedis) -> None:
        super().__init__(pki)
        self.server = server

    def layer(self, ca: Path | None = None, **options: Any) -> Any:
        import layers

        return layers.from_url(self.server.url(ca) + "&timeout=3", prefix=self.prefix, **options)


class PostgresTLSCase(TLSCase):
    name = "postgres"

    def __init__(self, pki: PKI, server: TLSPostgres) -> None:
        super().__init__(pki)
        self.server = server

    def layer(self, ca: Path | None = None, **options: Any) -> Any:
        import layers

        query = "sslmode=require" if ca is None else f"sslmode=verify-full&sslrootcert={ca}"
        return layers.from_url(self.server.url(query) + "&timeout=3", prefix=self.prefix, **options)

    def connections_encrypted(self) -> bool:
        import psycopg

        with psycopg.connect(self.server.url("sslmode=require"), autocommit=True) as conn:
            row = conn.execute(b"SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s "
                               b"JOIN pg_stat_activity a USING (pid) WHERE a.client_addr IS NOT NULL").fetchone()
        assert row is not None
        total, encrypted = row
        return bool(total >= 2 and total == encrypted)


class AMQPTLSCase(TLSCase):
    name = "amqp"

    def __init__(self, pki: PKI, server: TLSRabbit) -> None:
        super().__init__(pki)
        self.server = server

    def layer(self, ca: Path | None = None, **options: Any) -> Any:
        from layers_amqp import AMQPChannelLayer

        context = ssl.create_default_context(cafile=str(ca or self.pki.ca))
        return AMQPChannelLayer(self.server.tls_url, ssl_context=context, timeout=3, prefix=self.prefix, **options)
