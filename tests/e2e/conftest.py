"""End-to-end tests: the ``e2e`` marker, the ``site`` fixture, and a summary of the measured delivery times."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.sites import BACKENDS, Site, run_site

REPORT_KEY = pytest.StashKey[list[dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: starts real ASGI servers and a worker on a real channel layer")
    config.stash[REPORT_KEY] = []


@pytest.fixture(scope="module", params=list(BACKENDS))
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    """The chat example's two ASGI servers and its worker on one server backend (once per test module)."""
    yield from run_site(request)


@pytest.fixture
def e2e_report(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Where a test records a measurement; the session prints them all (and writes $LAYERS_E2E_REPORT)."""
    return request.config.stash[REPORT_KEY]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(REPORT_KEY, [])
    if not rows:
        return
    terminalreporter.section("end-to-end delivery (Django Channels chat example)")
    for row in rows:
        terminalreporter.write_line(
            f"{row['backend']:<11} {row['clients']} clients x {row['messages']} messages "
            f"({row['deliveries']} deliveries): all delivered in {row['seconds']:.2f}s "
            f"(median client {row['median_client_seconds']:.2f}s; last on {row['server_a']} "
            f"{row['server_a_clients_seconds']:.2f}s, on {row['server_b']} {row['server_b_clients_seconds']:.2f}s; "
            f"{row['deliveries'] / row['seconds']:.0f} deliveries/s)"
        )
    path = os.environ.get("LAYERS_E2E_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump(rows, out, indent=2)
