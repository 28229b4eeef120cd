"""Fixtures for the PostgreSQL backend tests: the shared server (a unique prefix per test) and a private one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from layers_postgres import PostgresChannelLayer, drop_ddl
from tests.servers import POSTGRES_DSN, port_open
from tests.servers.postgres import PostgresServer, postgres_available


def _shared_reachable() -> bool:
    parts = urlsplit(POSTGRES_DSN)
    return port_open(parts.port or 5432, parts.hostname or "127.0.0.1")


@pytest.fixture
def dsn() -> str:
    if not _shared_reachable():
        pytest.skip(f"the shared PostgreSQL at {POSTGRES_DSN} is not reachable")
    return POSTGRES_DSN


@pytest.fixture
def prefix(dsn: str) -> Iterator[str]:
    """A fresh prefix whose tables are dropped after the test."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(drop_ddl(name).encode())


@pytest.fixture
def make_layer(dsn: str, prefix: str) -> Any:
    return lambda **options: PostgresChannelLayer(dsn, **{"prefix": prefix, **options})


@pytest.fixture
def sql(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def private_server() -> Iterator[PostgresServer]:
    problem = postgres_available()
    if problem:
        pytest.skip(problem)
    server = PostgresServer().init().start()
    yield server
    server.stop()
