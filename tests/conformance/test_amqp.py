"""The AMQP layer runs the conformance suite unchanged against the shared RabbitMQ (a unique prefix per class)."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from layers_amqp import AMQPChannelLayer
from spec import ConformanceSuite
from tests.servers import AMQP_URL, port_open, with_user

_PREFIX = "spec" + uuid.uuid4().hex[:8]


def _reachable() -> bool:
    parts = urlsplit(AMQP_URL)
    return port_open(parts.port or 5672, parts.hostname or "127.0.0.1")


class TestAMQPConformance(ConformanceSuite):
    spec_knobs: ClassVar[dict[str, Any]] = {
        "process_target": f"{AMQP_URL}?prefix={_PREFIX}",
        "refused_target": with_user(AMQP_URL, "guest:wrong"),  # ACCESS_REFUSED
    }

    @pytest.fixture
    def layer_factory(self) -> Any:
        if not _reachable():
            pytest.skip(f"the shared RabbitMQ at {AMQP_URL} is not reachable")
        return lambda **overrides: AMQPChannelLayer(AMQP_URL, **{"prefix": _PREFIX, **overrides})
