"""Throughput workloads that run against any layer with the Channels API (ours or a peer's).

Each workload builds a fresh layer, runs on the current event loop and returns a :class:`Result`; a layer that
errors under a workload is reported as failing, never hidden.  ``layers bench`` drives these; so do the
pytest-benchmark suite and the backend comparison scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .settings import from_url, redact_url

__all__ = ["PEERS", "WORKLOADS", "Result", "Target", "make_target", "run_workload"]

Layer = Any  # anything with the Channels layer API
Factory = Callable[..., Layer]


@dataclass
class Target:
    """Something to benchmark: a display name and a factory taking layer options (capacity, expiry...)."""

    name: str
    factory: Factory
    url: str = ""


@dataclass
class Result:
    workload: str
    target: str
    messages: int = 0
    seconds: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds and not self.error else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}


# -- peers ---------------------------------------------------------------------------------------------------


def _channels_memory(url: str, **options: Any) -> Layer:
    from channels.layers import InMemoryChannelLayer

    return InMemoryChannelLayer(**options)


def _channels_redis(url: str, **options: Any) -> Layer:
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(hosts=[url or "redis://127.0.0.1:6379/0"], **options)


def _channels_redis_pubsub(url: str, **options: Any) -> Layer:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    options.pop("capacity", None)  # it keeps no queue, so it has no capacity
    options.pop("expiry", None)
    return RedisPubSubChannelLayer(hosts=[url or "redis://127.0.0.1:6379/0"], **options)


def _channels_rabbitmq(url: str, **options: Any) -> Layer:
    from channels_rabbitmq.core import RabbitmqChannelLayer

    options.pop("expiry", None)
    return RabbitmqChannelLayer(host=url or "amqp://guest:guest@127.0.0.1/", **options)


def _channels_postgres(url: str, **options: Any) -> Layer:
    from channels_postgres.core import PostgresChannelLayer

    options.pop("capacity", None)  # it has no capacity
    return PostgresChannelLayer(**_django_database(url), **options)


def _django_database(url: str) -> dict[str, Any]:
    """channels_postgres takes Django DATABASES-style keys."""
    from urllib.parse import urlsplit

    parts = urlsplit(url or "postgresql://postgres@127.0.0.1:5432/test")
    return {"NAME": parts.path.lstrip("/") or "postgres", "USER": parts.username or "postgres",
            "PASSWORD": parts.password or "", "HOST": parts.hostname or "127.0.0.1", "PORT": parts.port or 5432}


PEERS: dict[str, Callable[..., Layer]] = {
    "channels_memory": _channels_memory,
    "channels_redis": _channels_redis,
    "channels_redis_pubsub": _channels_redis_pubsub,
    "channels_postgres": _channels_postgres,
    "channels_rabbitmq": _channels_rabbitmq,
}

_PEER_DEFAULT_URL = {
    "channels_redis": "redis://127.0.0.1:6379/0",
    "channels_redis_pubsub": "redis://127.0.0.1:6379/0",
    "channels_postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "channels_rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
}


def make_target(spec: str) -> Target:
    """A target from a URL (ours) or a peer name, optionally ``peer=URL`` (``channels_redis=redis://host``)."""
    name, _, url = spec.partition("=")
    if name in PEERS:
        peer = PEERS[name]
        url = url or _PEER_DEFAULT_URL.get(name, "")
        return Target(name, lambda **options: peer(url, **options), url)
    return Target(redact_url(spec), lambda **options: from_url(spec, **options), spec)


# -- workloads -----------------------------------------------------------------------------------------------

Workload = Callable[[Target, int], Awaitable[Result]]


async def _send_receive(target: Target, count: int, *, named: bool, producers: int = 1,
                        size: int = 0, name: str = "") -> Result:
    layer = target.factory(capacity=count + 10, expiry=300)
    result = Result(name, target.name)
    try:
        channel = f"bench.named.{os.getpid()}.{time.monotonic_ns()}" if named else await layer.new_channel()
        body = b"x" * size
        per_producer = count // producers

        async def produce(index: int) -> None:
            for i in range(per_producer):
                await layer.send(channel, {"type": "bench", "n": i, "p": index, "body": body})

        async def consume() -> None:
            for _ in range(per_producer * producers):
                await layer.receive(channel)

        started = time.perf_counter()
        await asyncio.gather(consume(), *(produce(p) for p in range(producers)))
        result.seconds = time.perf_counter() - started
        result.messages = per_producer * producers
    except Exception as exc:  # a peer failing a workload is a result, not a crash
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await _close(layer)
    return result


async def _group_fan_out(target: Target, count: int, *, members: int, name: str = "") -> Result:
    layer = target.factory(capacity=count + 10, expiry=300)
    result = Result(name, target.name)
    group = f"bench-group-{os.getpid()}-{time.monotonic_ns()}"
    try:
        channels = [await layer.new_channel() for _ in range(members)]
        for channel in channels:
            await layer.group_add(group, channel)
        sends = max(1, count // members)

        async def drain(channel: str) -> None:
            for _ in range(sends):
                await layer.receive(channel)

        started = time.perf_counter()
        drains = asyncio.gather(*(drain(c) for c in channels))
        for i in range(sends):
            await layer.group_send(group, {"type": "bench", "n": i})
        await drains
        result.seconds = time.perf_counter() - started
        result.messages = sends * members
        for channel in channels:
            await layer.group_discard(group, channel)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await _close(layer)
    return result


async def _close(layer: Layer) -> None:
    for method in ("flush", "close"):
        call = getattr(layer, method, None)
        if call is not None:
            with contextlib.suppress(Exception):  # a peer without flush/close, or already broken
                await asyncio.wait_for(call(), 10)


def _sr(named: bool, producers: int = 1, size: int = 0) -> Callable[[str], Workload]:
    def bind(name: str) -> Workload:
        return lambda target, count: _send_receive(target, count, named=named, producers=producers,
                                                   size=size, name=name)
    return bind


def _group(members: int) -> Callable[[str], Workload]:
    def bind(name: str) -> Workload:
        return lambda target, count: _group_fan_out(target, count, members=members, name=name)
    return bind


_BUILDERS: dict[str, tuple[Callable[[str], Workload], str]] = {
    "process": (_sr(named=False), "send+receive on a process channel, producer awaits each send"),
    "named": (_sr(named=True), "send+receive on a named channel"),
    "producers-10": (_sr(named=False, producers=10), "10 concurrent producers -> one consumer"),
    "producers-100": (_sr(named=False, producers=100), "100 concurrent producers -> one consumer"),
    "group-10": (_group(10), "group_send to 10 members (deliveries/s)"),
    "group-100": (_group(100), "group_send to 100 members (deliveries/s)"),
    "group-1000": (_group(1000), "group_send to 1000 members (deliveries/s)"),
    "size-10k": (_sr(named=False, size=10_000), "process channel, 10 KB messages"),
}

WORKLOADS: dict[str, tuple[Workload, str]] = {name: (build(name), doc) for name, (build, doc) in _BUILDERS.items()}
DEFAULT_WORKLOADS = ["process", "named", "producers-100", "group-100"]


async def run_workload(workload: str, target: Target, count: int) -> Result:
    run, _ = WORKLOADS[workload]
    return await run(target, count)
