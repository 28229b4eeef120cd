"""Layers shaped like real third-party ones, built on the Channels-spec-only :class:`MinimalChannelLayer`, for
the tests of the suite itself: each stands for a design the harness must take as it is."""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, ClassVar

from layers_redis import RedisChannelLayer

from .minimal_layer import MinimalChannelLayer

__all__ = [
    "BuiltInLoop", "CloseRaises", "Counted", "LoopOnlyAttributes", "NeedsDjango", "unconfined_redis",
]


class CloseRaises(MinimalChannelLayer):
    """Has a close() that always fails: R-CLOSE-1 fails, nothing else does."""

    async def close(self) -> None:
        raise RuntimeError("close() is broken on purpose")


class Counted(MinimalChannelLayer):
    """Counts instances made and closed (class-wide), to show the harness closes every instance it makes."""

    made: ClassVar[int] = 0
    closed: ClassVar[int] = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        type(self).made += 1

    async def close(self) -> None:
        type(self).closed += 1


class BuiltInLoop(MinimalChannelLayer):
    """Its constructor needs a running event loop (as channels_kafka's does)."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.get_running_loop()  # RuntimeError outside a loop
        super().__init__(**options)


class LoopOnlyAttributes:
    """Answers attribute lookups only inside a running event loop, through one layer per loop (the shape of
    channels_redis's RedisPubSubChannelLayer: its API methods are proxies, everything else needs the loop)."""

    _METHODS = frozenset({"new_channel", "send", "receive", "group_add", "group_discard", "group_send", "flush"})

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._layers: dict[asyncio.AbstractEventLoop, MinimalChannelLayer] = {}

    def __getattr__(self, name: str) -> Any:
        if name in self._METHODS:
            return functools.partial(self._call, name)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._layer(), name)

    async def _call(self, name: str, *args: Any) -> Any:
        return await getattr(self._layer(), name)(*args)

    def _layer(self) -> MinimalChannelLayer:
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop, as the pub/sub layer raises
        return self._layers.setdefault(loop, MinimalChannelLayer(**self._options))


class NeedsDjango(MinimalChannelLayer):
    """Reads Django settings when made (as ORM-based layers do at import): ImproperlyConfigured without them."""

    def __init__(self, **options: Any) -> None:
        from django.conf import settings

        self.setting = settings.SPEC_TEST_SETTING
        super().__init__(**options)


def unconfined_redis(
    capacity: int = 100, channel_capacity: Any = None, expiry: int = 60, group_expiry: int = 86400
) -> RedisChannelLayer:
    """A factory that takes no ``prefix``: the runner cannot confine it (the Redis URL comes from the environment)."""
    return RedisChannelLayer(
        hosts=[os.environ["SPEC_TEST_REDIS_URL"]], capacity=capacity, channel_capacity=channel_capacity or {},
        expiry=expiry, group_expiry=group_expiry,
    )
