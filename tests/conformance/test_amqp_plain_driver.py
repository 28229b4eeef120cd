"""The AMQP layer's plain driver path (pika's own frame decoding, socket reader and buffered writes, forced by
``LAYERS_PLAIN_DRIVERS``) runs the conformance suite unchanged on the shared RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from layers.drivers import PLAIN_DRIVERS_VARIABLE
from layers_amqp import wire
from tests.conformance import test_amqp as amqp_suite


@pytest.fixture(autouse=True)
def _plain_driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Set for the test and the processes it starts (process_target)."""
    monkeypatch.setenv(PLAIN_DRIVERS_VARIABLE, "pika")
    fast_calls = []
    fast_method = wire.Connection._fast_method

    def counted(self: wire.Connection, *args: Any) -> int:
        fast_calls.append(args)
        return fast_method(self, *args)

    monkeypatch.setattr(wire.Connection, "_fast_method", counted)
    yield
    assert not fast_calls, "the fast frame decoding ran although the plain path was forced"
    assert wire.CODEC.warned == 0  # forcing the plain path is no reason to warn


class TestAMQPPlainDriverConformance(amqp_suite.TestAMQPConformance):
    """The same class, the same prefix, through pika's own paths."""
