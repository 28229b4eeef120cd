"""The one fixture module of the security suite: ``target`` (every backend) and ``server_target`` (the servers).

Each test gets a fresh :class:`~tests.security.backends.Target` (a prefix of its own) and ``run``, which runs
coroutines on one event loop for the whole test with a time limit, so a hang fails the test instead of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.servers.amqp import rabbitmq_available
from tests.servers.postgres import postgres_available

from .backends import TARGETS, Target
from .tls import PKI, AMQPTLSCase, PostgresTLSCase, RedisTLSCase, TLSCase, TLSPostgres, TLSRabbit, TLSRedis, make_pki

T = TypeVar("T")
Runner = Callable[..., Any]

SERVERS = [name for name in TARGETS if name != "memory"]


def _target(name: str) -> Iterator[Target]:
    cls = TARGETS[name]
    reason = cls.skip_reason()
    if reason:
        pytest.skip(reason)
    target = cls()
    yield target
    target.cleanup()


@pytest.fixture(params=list(TARGETS))
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _target(request.param)


@pytest.fixture(params=SERVERS)
def server_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _target(request.param)


@pytest.fixture
def run(target_for_run: Target | None) -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """``run(coro, timeout=20)``: run on this test's event loop; its layers are closed on that loop at the end."""
    loop = asyncio.new_event_loop()

    def runner(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    yield runner
    if target_for_run is not None:
        for layer in target_for_run._layers:
            with contextlib.suppress(Exception):  # a test may have broken this layer on purpose
                loop.run_until_complete(asyncio.wait_for(layer.close(), 10))
    loop.close()


@pytest.fixture
def target_for_run(request: pytest.FixtureRequest) -> Target | None:
    for name in ("target", "server_target"):
        if name in request.fixturenames:
            value: Target = request.getfixturevalue(name)
            return value
    return None


# -- private servers: TLS with a certificate made now, password authentication ---------------------------------

ROLE, ROLE_PASSWORD = "secret", "Pg-Role-Pa55word-9d1c"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")


@pytest.fixture(scope="session")
def tls_redis(pki: PKI) -> Iterator[TLSRedis]:
    _need("redis-server")
    server = TLSRedis(pki).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_postgres(pki: PKI) -> Iterator[TLSPostgres]:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    server = TLSPostgres(pki).init().start()
    server.add_password_role(ROLE, ROLE_PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_rabbit(pki: PKI) -> Iterator[TLSRabbit]:
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    server = TLSRabbit(pki).start()
    yield server
    server.stop()


@pytest.fixture(params=SERVERS)
def tls_case(request: pytest.FixtureRequest, pki: PKI) -> TLSCase:
    """Each server backend over TLS, against its private TLS server."""
    if request.param == "redis":
        return RedisTLSCase(pki, request.getfixturevalue("tls_redis"))
    if request.param == "postgres":
        return PostgresTLSCase(pki, request.getfixturevalue("tls_postgres"))
    return AMQPTLSCase(pki, request.getfixturevalue("tls_rabbit"))
