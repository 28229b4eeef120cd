"""Clusters and failover: private multi-node servers (Redis Cluster with replicas, PostgreSQL primary + streaming
standby, a 3-node RabbitMQ cluster), killed under traffic.

Every test here carries the ``cluster`` marker and is skipped unless asked for (``-m cluster`` or
``LAYERS_RUN_CLUSTER=1``), so the default run stays short: the whole directory takes a few minutes and boots
three RabbitMQ nodes.  The figures each test measures (recovery times, what was lost) are printed in a
``cluster figures`` section at the end of the session and written as JSON to ``LAYERS_CLUSTER_REPORT`` if set.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIGURES_KEY = pytest.StashKey[list[dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: starts a multi-node private server and fails a node over")
    config.stash[FIGURES_KEY] = []


def _asked_for(config: pytest.Config) -> bool:
    return "cluster" in (config.option.markexpr or "") or os.environ.get("LAYERS_RUN_CLUSTER") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.path)).parents]
    for item in mine:
        item.add_marker(pytest.mark.cluster)
    if _asked_for(config):
        return
    skip = pytest.mark.skip(reason="cluster/failover test: run with -m cluster (or LAYERS_RUN_CLUSTER=1)")
    for item in mine:
        item.add_marker(skip)


@pytest.fixture
def prefix() -> str:
    return "sc" + uuid.uuid4().hex[:10]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(test, **figures)``: kept for the session summary (and the JSON report)."""
    rows = request.config.stash[FIGURES_KEY]

    def add(test: str, **figures: Any) -> None:
        rows.append({"test": test, **figures})

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(FIGURES_KEY, [])
    if rows:
        terminalreporter.section("cluster figures")
        for row in rows:
            terminalreporter.write_line(json.dumps(row))
        path = os.environ.get("LAYERS_CLUSTER_REPORT")
        if path:
            Path(path).write_text(json.dumps(rows, indent=2))
