"""A layer used on an event loop that is then closed without ``await layer.close()`` (a bare ``loop.close()``, as
pytest-asyncio or a hand-made loop per call does) leaves no "Task was destroyed but it is pending!" error and no
other ERROR on the ``asyncio`` logger, on every in-repo backend (DESIGN principle 4).  Real servers, unique
prefixes."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from layers import InMemoryChannelLayer
from layers.core import BaseChannelLayer
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, port_open


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    return port_open(parts.port or default_port, parts.hostname or "127.0.0.1")


def _memory(prefix: str) -> BaseChannelLayer:
    return InMemoryChannelLayer(prefix=prefix)


def _redis(prefix: str) -> BaseChannelLayer:
    from layers_redis import RedisChannelLayer

    return RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)


def _postgres(prefix: str) -> BaseChannelLayer:
    from layers_postgres import PostgresChannelLayer

    return PostgresChannelLayer(POSTGRES_DSN, prefix=prefix)


def _amqp(prefix: str) -> BaseChannelLayer:
    from layers_amqp import AMQPChannelLayer

    return AMQPChannelLayer(AMQP_URL, prefix=prefix)


BACKENDS: dict[str, tuple[Callable[[str], BaseChannelLayer], str | None, int]] = {
    "memory": (_memory, None, 0),
    "redis": (_redis, REDIS_URL, 6379),
    "postgres": (_postgres, POSTGRES_DSN, 5432),
    "amqp": (_amqp, AMQP_URL, 5672),
}


@pytest.fixture(params=list(BACKENDS))
def make_layer(request: pytest.FixtureRequest) -> Iterator[Callable[[], BaseChannelLayer]]:
    factory, url, port = BACKENDS[request.param]
    if url is not None and not _reachable(url, port):
        pytest.skip(f"the shared {request.param} server at {url} is not reachable")
    prefix = "t" + uuid.uuid4().hex[:10]
    made: list[BaseChannelLayer] = []

    def make() -> BaseChannelLayer:
        made.append(factory(prefix))
        return made[-1]

    yield make
    for layer in made:
        asyncio.run(flush_and_close(layer))
    if request.param == "postgres":
        import psycopg

        from layers_postgres import drop_ddl

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(drop_ddl(prefix).encode())


async def flush_and_close(layer: BaseChannelLayer) -> None:
    await layer.flush()
    await layer.close()


async def use(layer: BaseChannelLayer) -> None:
    """Every kind of call that may start a background task: process-local and named receives, groups."""
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "a"})
    assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "a"
    await layer.send("named", {"type": "b"})
    assert (await asyncio.wait_for(layer.receive("named"), 10))["type"] == "b"
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "c"})
    assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "c"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "asyncio" and record.levelno >= logging.ERROR]


pytestmark = pytest.mark.filterwarnings("error:coroutine .* was never awaited:RuntimeWarning")


def test_bare_loop_close_logs_no_error(make_layer: Callable[[], BaseChannelLayer],
                                       caplog: pytest.LogCaptureFixture) -> None:
    layer = make_layer()
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(2):
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(use(layer))
            finally:
                loop.close()  # no layer.close(): the loop's state is abandoned with it
            gc.collect()
        asyncio.run(use(layer))  # the layer still works on a new loop, and drops what the closed ones left
        gc.collect()
    assert errors(caplog) == []


def test_layer_dropped_after_bare_loop_close_logs_no_error(make_layer: Callable[[], BaseChannelLayer],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    layer = make_layer()
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(use(layer))
        finally:
            loop.close()
        del layer, loop
        gc.collect()
    assert errors(caplog) == []


def test_redis_idle_release_started_as_the_loop_stops(caplog: pytest.LogCaptureFixture) -> None:
    """The core's idle timer of a Redis feed starts the task that closes it (close_feed + give_back); a loop
    stopped in that very iteration and closed leaves that task pending, never started."""
    if not _reachable(REDIS_URL, 6379):
        pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")

    layer = _redis("t" + uuid.uuid4().hex[:10])
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop = asyncio.new_event_loop()
        try:
            channel = loop.run_until_complete(layer.new_channel())

            async def round_trip() -> Any:
                await layer.send(channel, {"type": "a"})
                await layer.receive(channel)
                for _ in range(500):  # polling: the reader ends by itself, then the feed's idle timer runs
                    if not layer._state().readers:
                        break
                    await asyncio.sleep(0.01)
                return layer._state()

            state = loop.run_until_complete(round_trip())
            timers = list(state.idle.values())
            assert timers, "the reader left no idle timer"
            loop.call_at(max(timer.when() for timer in timers), loop.stop)
            loop.run_forever()
            assert state.closing, "the idle timer started no feed close"
            del state, timers  # they reach the close task; the layer alone must hold it from here on
        finally:
            loop.close()
        gc.collect()
        asyncio.run(flush_and_close(layer))
        gc.collect()
    assert errors(caplog) == []
