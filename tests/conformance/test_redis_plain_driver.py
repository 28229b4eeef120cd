"""The Redis layer's plain driver path (redis-py's public connection API instead of the transport take-over,
forced by ``LAYERS_PLAIN_DRIVERS``) runs the conformance suite unchanged on the shared Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from layers.drivers import PLAIN_DRIVERS_VARIABLE
from layers_redis import RedisChannelLayer, wire
from spec import ConformanceSuite
from tests.conformance.test_redis import _PREFIX, _clean_shared, _shared_reachable
from tests.servers import REDIS_URL, with_user

# _clean_shared (imported): the shared prefix of the Redis conformance run, deleted after this module too.
__all__ = ["_clean_shared"]


@pytest.fixture(autouse=True)
def _plain_driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Set for the test and the processes it starts (process_target)."""
    monkeypatch.setenv(PLAIN_DRIVERS_VARIABLE, "redis")
    yield
    assert wire.TAKEOVER.warned == 0  # forcing the plain path is no reason to warn


class TestRedisPlainDriverConformance(ConformanceSuite):
    spec_knobs: ClassVar[dict[str, Any]] = {
        "process_target": f"{REDIS_URL}?prefix={_PREFIX}",
        "refused_target": with_user(REDIS_URL, "nosuchuser:wrong"),  # WRONGPASS
    }

    @pytest.fixture
    def layer_factory(self) -> Any:
        if not _shared_reachable():
            pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")

        return lambda **overrides: RedisChannelLayer(hosts=[REDIS_URL], **{"prefix": _PREFIX, **overrides})


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
