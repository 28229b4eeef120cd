"""Faults: the broker closes our connections (shared broker, only ours) or restarts (a private node).

The layer reconnects with backoff, re-declares its queues and re-binds its groups; sends during an outage wait
up to ``timeout`` and then raise ``BackendUnavailable`` (never a silent drop); a pending ``receive()`` resumes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from layers import BackendUnavailable
from layers_amqp import AMQPChannelLayer

from .conftest import close_connections

pytestmark = pytest.mark.fault


async def _send_when_back(layer: AMQPChannelLayer, channel: str, message: dict[str, Any], within: float) -> None:
    """Send, retrying while the layer reports the broker unavailable (it is coming back)."""
    deadline = time.monotonic() + within
    while True:
        try:
            await layer.send(channel, message)
            return
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_connections_closed_by_the_broker(make_layer: Any, prefix: str) -> None:
    async def main() -> None:
        owner, sender = make_layer(timeout=5), make_layer(timeout=5)
        local = await owner.new_channel()
        await sender.group_add("survivors", local)
        await sender.group_add("survivors", "named.survivor")
        pending_local = asyncio.ensure_future(owner.receive(local))
        pending_named = asyncio.ensure_future(owner.receive("named.waiting"))
        await asyncio.sleep(0.5)  # both receives are consuming now
        closed = await asyncio.to_thread(close_connections, f"layers-amqp {prefix}")
        assert closed >= 2
        await _send_when_back(sender, local, {"after": "close"}, within=10)
        await sender.send("named.waiting", {"named": "after close"})
        assert await asyncio.wait_for(pending_local, 10) == {"after": "close"}
        assert await asyncio.wait_for(pending_named, 10) == {"named": "after close"}
        await sender.group_send("survivors", {"group": "still bound"})
        assert await asyncio.wait_for(owner.receive(local), 5) == {"group": "still bound"}
        assert await asyncio.wait_for(owner.receive("named.survivor"), 5) == {"group": "still bound"}

    asyncio.run(main())


@pytest.mark.slow
def test_broker_restart(node: Any) -> None:
    """stop_app loses every non-durable queue: the owner re-declares its queues and re-binds its groups."""

    async def main() -> None:
        owner = AMQPChannelLayer(node.url, prefix="restart", timeout=2)
        sender = AMQPChannelLayer(node.url, prefix="restart", timeout=2)
        local = await owner.new_channel()
        await sender.group_add("kept", local)
        await sender.group_add("kept", "named.kept")
        pending = asyncio.ensure_future(owner.receive(local))
        await asyncio.sleep(0.5)

        await asyncio.to_thread(node.stop_app)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await sender.send(local, {"during": "outage"})
        assert time.monotonic() - started < 6, "the send should give up after about `timeout` seconds"
        with pytest.raises(BackendUnavailable):
            await sender.group_send("kept", {"during": "outage"})

        await asyncio.to_thread(node.start_app)
        await _send_when_back(sender, local, {"after": "restart"}, within=30)
        assert await asyncio.wait_for(pending, 15) == {"after": "restart"}, "the pending receive resumes"

        # The owner re-bound its inbox on reconnection; the named member's queue is durable.
        named = asyncio.ensure_future(owner.receive("named.kept"))
        await asyncio.sleep(0.5)  # the named channel's queue is declared again by its reader
        await sender.group_send("kept", {"group": "after restart"})
        assert await asyncio.wait_for(owner.receive(local), 10) == {"group": "after restart"}
        assert await asyncio.wait_for(named, 10) == {"group": "after restart"}
        await owner.flush()
        await owner.close()
        await sender.close()

    asyncio.run(main())


@pytest.mark.slow
def test_unconfirmed_publishes_fail_within_the_timeout(node: Any) -> None:
    """A broker that stops answering (memory alarm: publishers are blocked) makes sends raise in bounded time."""

    async def main() -> None:
        layer = AMQPChannelLayer(node.url, prefix="blocked", timeout=1.5)
        await layer.send("blocked.before", {"ok": True})
        await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0.0000001")
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await layer.send("blocked.during", {"stuck": True})
            assert time.monotonic() - started < 5
        finally:
            await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0.4")
        await _send_when_back(layer, "blocked.after", {"ok": "again"}, within=20)
        assert await asyncio.wait_for(layer.receive("blocked.after"), 5) == {"ok": "again"}
        await layer.flush()
        await layer.close()

    asyncio.run(main())
