"""The PostgreSQL layer runs the conformance suite unchanged against the shared server (a unique prefix)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from layers_postgres import PostgresChannelLayer, drop_ddl
from spec import ConformanceSuite
from tests.servers import POSTGRES_DSN, port_open, with_user

_PREFIX = "spec" + uuid.uuid4().hex[:8]


def _reachable() -> bool:
    parts = urlsplit(POSTGRES_DSN)
    return port_open(parts.port or 5432, parts.hostname or "127.0.0.1")


@pytest.fixture(scope="module", autouse=True)
def _drop_tables() -> Iterator[None]:
    yield
    if _reachable():
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(drop_ddl(_PREFIX).encode())


class TestPostgresConformance(ConformanceSuite):
    spec_knobs: ClassVar[dict[str, Any]] = {
        "process_target": f"{POSTGRES_DSN}?prefix={_PREFIX}",
        "refused_target": with_user(POSTGRES_DSN, "nosuchrole"),  # role "nosuchrole" does not exist
    }

    @pytest.fixture
    def layer_factory(self) -> Any:
        if not _reachable():
            pytest.skip(f"the shared PostgreSQL at {POSTGRES_DSN} is not reachable")
        return lambda **overrides: PostgresChannelLayer(POSTGRES_DSN, **{"prefix": _PREFIX, **overrides})
