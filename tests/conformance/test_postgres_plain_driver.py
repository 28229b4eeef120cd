"""The PostgreSQL layer's plain driver path (psycopg's cursor ``execute`` instead of statements run on libpq
directly, forced by ``LAYERS_PLAIN_DRIVERS``) runs the conformance suite unchanged on the shared PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from layers.drivers import PLAIN_DRIVERS_VARIABLE
from layers_postgres import wire
from tests.conformance import test_postgres as postgres_suite
from tests.conformance.test_postgres import _drop_tables

__all__ = ["_drop_tables"]  # imported: the tables under the suite's prefix are dropped after this module too


@pytest.fixture(autouse=True)
def _plain_driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Set for the test and the processes it starts (process_target)."""
    monkeypatch.setenv(PLAIN_DRIVERS_VARIABLE, "psycopg")
    direct_calls = []
    direct_result = wire._result

    async def counted(pgconn: Any) -> Any:
        direct_calls.append(pgconn)
        return await direct_result(pgconn)

    monkeypatch.setattr(wire, "_result", counted)
    yield
    assert not direct_calls, "a statement ran on libpq directly although the plain path was forced"


class TestPostgresPlainDriverConformance(postgres_suite.TestPostgresConformance):
    """The same class, the same prefix, through psycopg's cursor API."""
