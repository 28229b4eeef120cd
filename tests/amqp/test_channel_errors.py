"""A channel-level error of the broker (it closes the channel in answer to a call) reaches the caller of a public
call as a ``layers.errors`` type with the driver's error chained, never as ``layers_amqp.connection.ChannelError``
(it used to leak from ``flush`` when a queue's cluster node was down).  Provoked here without a cluster: another
client holds an exclusive queue under the test's prefix, so the broker answers 405 RESOURCE_LOCKED."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from layers import AccessDenied, BackendRefused, BackendUnavailable, LayerError, ServerError
from layers_amqp import AMQPChannelLayer
from layers_amqp.connection import ChannelError, channel_failure


@pytest.fixture
def other_client(url: str) -> Iterator[Any]:
    """A second, plain pika client on the shared broker (what another program would be)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def assert_wrapped(error: BaseException, code: int) -> None:
    assert isinstance(error, LayerError), f"{type(error).__module__}.{type(error).__name__} leaked: {error}"
    assert isinstance(error.__cause__, ChannelError), error.__cause__
    assert error.__cause__.code == code


def test_flush_meeting_a_locked_queue_raises_backend_unavailable(make_layer: Any, other_client: Any) -> None:
    """``flush`` deletes every queue its registry names; one that another connection holds exclusively answers
    405.  That heals (the other connection goes), so it is BackendUnavailable, and a later flush succeeds."""
    layer: AMQPChannelLayer = make_layer()
    locked = layer.topology.queue("locked")

    async def first() -> None:
        await layer.send("named", {"type": "a"})  # the registry exists now
        other_client.queue_declare(locked, exclusive=True)
        other_client.basic_publish("", layer.topology.registry, locked.encode())  # as if the layer had made it
        with pytest.raises(BackendUnavailable) as failed:
            await layer.flush()
        assert_wrapped(failed.value, 405)
        await layer.close()

    asyncio.run(first())
    other_client.connection.close()

    async def again() -> None:
        await layer.flush()
        await layer.close()

    asyncio.run(again())


def test_group_discard_meeting_a_locked_queue_raises_backend_unavailable(make_layer: Any,
                                                                         other_client: Any) -> None:
    layer: AMQPChannelLayer = make_layer()

    async def main() -> None:
        await layer.group_add("g", "named")
        member = layer.topology.member_queue("g", "named")
        await layer._state().backend.link.delete(member)  # as if it had expired
        other_client.queue_declare(member, exclusive=True)
        with pytest.raises(LayerError) as failed:
            await layer.group_discard("g", "named")
        assert_wrapped(failed.value, 405)
        await layer.close()

    asyncio.run(main())


@pytest.mark.parametrize(("code", "text", "kind"), [
    (404, "NOT_FOUND - no queue 'q' in vhost '/'", BackendUnavailable),  # e.g. its cluster node is down: heals
    (405, "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q' in vhost '/'", BackendUnavailable),
    (403, "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'", AccessDenied),
    (406, "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/'", BackendRefused),
    (406, "PRECONDITION_FAILED - unknown delivery tag 7", ServerError),
    (541, "INTERNAL_ERROR", ServerError),
])
def test_a_channel_error_maps_to_what_it_means(code: int, text: str, kind: type[LayerError]) -> None:
    """Only what may heal is BackendUnavailable; an error answer that neither a reconnect nor new settings
    explain is a ServerError."""
    assert type(channel_failure("flush", ChannelError(code, text))) is kind
