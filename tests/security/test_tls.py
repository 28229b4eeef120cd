"""TLS on every server backend: ``rediss://``, PostgreSQL ``sslmode``, ``amqps://`` against private servers whose
certificate (and CA) the tests make at start-up.  The Redis and RabbitMQ servers listen on a TLS port only, so a
working layer *is* a TLS layer; PostgreSQL reports what each connection uses (``pg_stat_ssl``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import layers

from .tls import TLSCase


async def _round_trip(layer: Any) -> None:
    try:
        await layer.send("tls.named", {"type": "x", "n": 1})
        assert await layer.receive("tls.named") == {"type": "x", "n": 1}
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "x", "n": 2})
        assert await layer.receive(channel) == {"type": "x", "n": 2}
        await layer.group_add("tls-group", channel)
        await layer.group_send("tls-group", {"type": "x", "n": 3})
        assert await layer.receive(channel) == {"type": "x", "n": 3}
        await layer.group_discard("tls-group", channel)
        await layer.flush()
    finally:
        await layer.close()


def test_round_trip_over_tls(tls_case: TLSCase) -> None:
    asyncio.run(asyncio.wait_for(_round_trip(tls_case.layer()), 30))
    layer = tls_case.layer()

    async def encrypted_while_open() -> bool:
        try:
            await layer.send("tls.check", {"type": "x"})
            return tls_case.connections_encrypted()
        finally:
            await layer.flush()
            await layer.close()

    assert asyncio.run(asyncio.wait_for(encrypted_while_open(), 30))


def test_round_trip_over_tls_with_encryption_keys(tls_case: TLSCase) -> None:
    layer = tls_case.layer(symmetric_encryption_keys=["tls-and-fernet"])
    asyncio.run(asyncio.wait_for(_round_trip(layer), 30))


def test_wrong_ca_is_refused_quickly(tls_case: TLSCase) -> None:
    """A server certificate the client cannot verify is a clear error within the layer's timeout, not a hang."""
    layer = tls_case.layer(ca=tls_case.pki.wrong_ca)

    async def attempt() -> BaseException:
        try:
            with pytest.raises((layers.BackendUnavailable, layers.ConfigError)) as caught:
                await layer.send("tls.refused", {"type": "x"})
            return caught.value
        finally:
            await layer.close()

    started = time.monotonic()
    error = asyncio.run(asyncio.wait_for(attempt(), 20))
    assert time.monotonic() - started < 12
    text = f"{error} {error.__cause__ or ''}".lower()
    assert any(word in text for word in ("certificate", "ssl", "tls", "unreachable")), text
