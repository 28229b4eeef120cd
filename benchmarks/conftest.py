"""The pytest-benchmark suite: every workload on every reachable backend and installed peer, side by side.

Run with ``./dev bench-suite`` (or ``pytest benchmarks``).  Choose targets with ``--bench-target`` (repeatable:
a layer URL or a peer name) and the size with ``--bench-messages``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from urllib.parse import urlsplit

import pytest

OURS = {
    "memory://": None,
    os.environ.get("LAYERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"): "layers_redis",
    os.environ.get("LAYERS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"): "layers_postgres",
    os.environ.get("LAYERS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"): "layers_amqp",
}
PEER_MODULES = {
    "channels_memory": "channels",
    "channels_redis": "channels_redis",
    "channels_redis_pubsub": "channels_redis",
    "channels_postgres": "channels_postgres",
    "channels_rabbitmq": "channels_rabbitmq",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-target", action="append", default=[], help="layer URL or peer name (repeatable)")
    parser.addoption("--bench-messages", type=int, default=5000, help="messages per workload run")
    parser.addoption("--bench-rounds", type=int, default=3, help="rounds per workload and target")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    if not parts.port and not parts.hostname:
        return True
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def _available(target: str) -> str | None:
    """None when the target can run here, else the reason it is skipped."""
    module = PEER_MODULES.get(target) or OURS.get(target)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    if target in OURS and target != "memory://" and not _reachable(target):
        return f"no server at {target}"
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--bench-target") or [*OURS, *PEER_MODULES]
        params = []
        for target in chosen:
            reason = _available(target)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(target, id=target.split("://")[0] if "://" in target else target, marks=marks))
        metafunc.parametrize("target", params)
