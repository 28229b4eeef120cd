"""A private PostgreSQL server crashed, stopped and restarted under a running layer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from layers import BackendUnavailable
from layers_postgres import PostgresChannelLayer
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.fault


def test_outage_fails_fast_and_pending_receive_resumes(private_server: PostgresServer) -> None:
    async def main() -> None:
        layer = PostgresChannelLayer(private_server.dsn, timeout=2)
        channel = await layer.new_channel()
        await layer.send(channel, {"n": 0})
        assert await layer.receive(channel) == {"n": 0}
        pending = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.2)

        await asyncio.to_thread(private_server.kill)
        for _ in range(3):  # every call during the outage fails within the timeout, with our error
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await layer.send(channel, {"n": "lost"})
            assert time.monotonic() - started < 2 * 2 + 2  # timeout=2, with room for a loaded box
        assert not pending.done()

        await asyncio.to_thread(private_server.start)
        deadline = time.monotonic() + 30
        while True:  # the first calls after the restart may still meet a dead connection
            try:
                await layer.send(channel, {"n": 1})
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "the layer never recovered"
                await asyncio.sleep(0.2)
        assert await asyncio.wait_for(pending, 20) == {"n": 1}
        await layer.close()

    asyncio.run(main())


@pytest.mark.parametrize("durable", [False, True])
def test_crash_keeps_only_durable_messages(private_server: PostgresServer, durable: bool) -> None:
    """SIGKILL of the server: an UNLOGGED table comes back empty, a durable one keeps its messages."""
    layer = PostgresChannelLayer(private_server.dsn, durable=durable)  # one instance: it owns its local channel

    async def send() -> str:
        channel = await layer.new_channel()
        await layer.send(channel, {"kept": True})
        await layer.send("named.kept", {"kept": True})
        await asyncio.sleep(0.2)
        await layer.close()
        return channel

    async def receive(channel: str) -> list[object]:
        got: list[object] = []
        for name in (channel, "named.kept"):
            with contextlib.suppress(asyncio.TimeoutError):
                got.append(await asyncio.wait_for(layer.receive(name), 1.5))
        await layer.close()
        return got

    channel = asyncio.run(send())
    private_server.kill()
    private_server.start()
    received = asyncio.run(receive(channel))
    assert received == ([{"kept": True}] * 2 if durable else [])


def test_restart_while_idle_then_all_calls_work(private_server: PostgresServer) -> None:
    """A fast shutdown + start between calls: the LISTEN connection comes back and wake-ups work again."""
    async def main() -> None:
        layer = PostgresChannelLayer(private_server.dsn, timeout=2)
        await layer.send("idle.q", {"n": 0})
        assert await layer.receive("idle.q") == {"n": 0}
        listener = layer._state().backend.listener
        before = listener.connects
        await asyncio.to_thread(private_server.stop, False)
        await asyncio.to_thread(private_server.start)
        deadline = time.monotonic() + 15
        while listener.connects == before:
            assert time.monotonic() < deadline, "LISTEN was not re-established"
            pending = asyncio.ensure_future(layer.receive("idle.q"))  # a reader makes the listener retry
            await asyncio.sleep(0.3)
            pending.cancel()
        for n in range(1, 4):
            for _ in range(3):
                try:
                    await layer.send("idle.q", {"n": n})
                    break
                except BackendUnavailable:
                    await asyncio.sleep(0.2)
            assert await asyncio.wait_for(layer.receive("idle.q"), 5) == {"n": n}
        await layer.close()

    asyncio.run(main())
