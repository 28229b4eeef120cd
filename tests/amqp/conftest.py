"""Fixtures for the AMQP backend tests: the shared RabbitMQ (a unique prefix per test) and a private node."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from layers_amqp import AMQPChannelLayer
from tests.servers import AMQP_URL, port_open
from tests.servers.amqp import RabbitNode, rabbitmq_available


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def url() -> str:
    parts = urlsplit(AMQP_URL)
    if not port_open(parts.port or 5672, parts.hostname or "127.0.0.1"):
        pytest.skip(f"the shared RabbitMQ at {AMQP_URL} is not reachable")
    return AMQP_URL


@pytest.fixture
def make_layer(url: str, prefix: str) -> Iterator[Callable[..., AMQPChannelLayer]]:
    """New layers on the shared broker with this test's prefix (flushed at the end)."""
    made: list[AMQPChannelLayer] = []

    def make(**options: Any) -> AMQPChannelLayer:
        layer = AMQPChannelLayer(url, **{"prefix": prefix, **options})
        made.append(layer)
        return layer

    yield make
    if made:
        import asyncio

        async def cleanup() -> None:
            await made[0].flush()
            for layer in made:
                await layer.close()

        asyncio.run(cleanup())


def close_connections(name_part: str) -> int:
    """Close, on the shared broker, only the connections whose client name contains ``name_part``."""
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if name_part in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "closed by a layers test"],
                       capture_output=True, text=True, timeout=60, check=True)
    return len(pids)


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node (stopping it disturbs nobody else)."""
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    server = RabbitNode().start()
    yield server
    server.stop()
