"""The Redis layer's plain driver path (redis-py's public connection API instead of the transport take-over,
forced by ``LAYERS_PLAIN_DRIVERS``) runs the conformance suite unchanged on the shared Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from layers.drivers import PLAIN_DRIVERS_VARIABLE
from layers_redis import RedisChannelLayer, wire
from tests.conformance import test_redis as shared  # the module, not its class: pytest collects it once
from tests.conformance.test_redis import _PREFIX, _clean_shared, _shared_reachable
from tests.servers import REDIS_URL

# _clean_shared (imported): the shared prefix of the Redis conformance run, deleted after this module too.
__all__ = ["_clean_shared"]


@pytest.fixture(autouse=True)
def _plain_driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Set for the test and the processes it starts (process_target)."""
    monkeypatch.setenv(PLAIN_DRIVERS_VARIABLE, "redis")
    yield
    assert wire.TAKEOVER.warned == 0  # forcing the plain path is no reason to warn


class TestRedisPlainDriverConformance(shared.TestRedisConformance):
    """The shared-Redis conformance class, run again with the plain path forced (the fixture above)."""


def test_plain_path_is_taken() -> None:
    """The switch really selects the plain path: a link opened under it keeps redis-py's connection."""
    import asyncio

    if not _shared_reachable():
        pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")

    async def check() -> None:
        layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=_PREFIX)
        try:
            await layer.send("plain.check", {"type": "t"})
            assert (await layer.receive("plain.check")) == {"type": "t"}
            shard = layer._state().backend.shards[0]  # type: ignore[attr-defined]
            assert shard.commands._plain is not None and shard.commands._transport is None
        finally:
            await layer.close()

    asyncio.run(check())
