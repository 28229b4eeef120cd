"""In-process workloads; each builds a fresh layer, runs on the current loop and returns a :class:`Result`.

A layer that errors under a workload is a result (``error``), never a crash: peers that cannot run something are
shown as failing, not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .targets import Layer, Target

__all__ = ["Result", "capacity_overload", "group_fan_out", "residue", "send_receive"]


NOT_APPLICABLE = "n/a: "


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


def _unique(kind: str) -> str:
    return f"bench.{kind}.{os.getpid()}.{time.monotonic_ns()}"


async def close_layer(layer: Layer) -> None:
    for method in ("flush", "close"):
        call = getattr(layer, method, None)
        if call is not None:
            with contextlib.suppress(Exception):  # a peer without flush/close, or already broken
                await asyncio.wait_for(call(), 10)


async def _measure(target: Target, name: str, body: Callable[[Layer, Result], Awaitable[None]],
                   **options: Any) -> Result:
    """Build the target's layer with ``options``, run ``body`` on it, and always close it; errors become results."""
    result = Result(name, target.name)
    layer = None
    try:
        layer = target.factory(**options)
        await body(layer, result)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if layer is not None:
            await close_layer(layer)
    return result


async def send_receive(target: Target, count: int, *, name: str, named: bool = False, producers: int = 1,
                       size: int = 0, receive_first: bool = False) -> Result:
    """``producers`` tasks each await every send while one consumer receives them all.

    ``receive_first`` gives the consumer a 0.5 s head start (not timed), for peers that strand messages sent
    before the first ``receive()`` (channels_postgres).
    """
    body = b"x" * size
    per_producer = max(1, count // producers)

    async def run(layer: Layer, result: Result) -> None:
        channel = _unique("named") if named else await layer.new_channel()

        async def produce(index: int) -> None:
            for i in range(per_producer):
                await layer.send(channel, {"type": "bench", "n": i, "p": index, "body": body})

        async def consume() -> None:
            for _ in range(per_producer * producers):
                await layer.receive(channel)

        consumer = asyncio.ensure_future(consume())
        if receive_first:
            await asyncio.sleep(0.5)
        started = time.perf_counter()
        await asyncio.gather(consumer, *(produce(p) for p in range(producers)))
        result.seconds = time.perf_counter() - started
        result.messages = per_producer * producers

    return await _measure(target, name, run, capacity=count + 10, expiry=300)


async def group_fan_out(target: Target, count: int, *, name: str, members: int) -> Result:
    """Members are process channels of this layer; each group_send is counted once per member delivered."""
    group = _unique("group").replace(".", "-")
    sends = max(1, count // members)

    async def run(layer: Layer, result: Result) -> None:
        channels = [await layer.new_channel() for _ in range(members)]
        for channel in channels:
            await layer.group_add(group, channel)

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

    return await _measure(target, name, run, capacity=sends + 10, expiry=300)


async def capacity_overload(target: Target, count: int, *, name: str, capacity: int = 100) -> Result:
    """A producer twice as fast as the consumer until ``ChannelFull``: accepted must equal delivered."""

    async def run(layer: Layer, result: Result) -> None:
        channel = _unique("overload")
        accepted = rejected = delivered = 0
        started = time.perf_counter()
        for i in range(count):
            try:
                await layer.send(channel, {"type": "bench", "n": i})
                accepted += 1
            except Exception as exc:
                if type(exc).__name__ != "ChannelFull":  # peers may lack the ChannelFull attribute
                    raise
                rejected += 1
            if i % 2:  # the consumer takes one message for every two sent
                await layer.receive(channel)
                delivered += 1
        while delivered < accepted:
            await asyncio.wait_for(layer.receive(channel), 10)
            delivered += 1
        result.seconds = time.perf_counter() - started
        result.messages = accepted
        result.extra = {"accepted": accepted, "rejected": rejected, "delivered": delivered,
                        "accepted_equals_delivered": accepted == delivered}

    return await _measure(target, name, run, capacity=capacity, expiry=300)


async def residue(target: Target, count: int, *, name: str) -> Result:
    """``count`` channels (half process, half named) each used once and drained; what stays behind?"""

    async def run(layer: Layer, result: Result) -> None:
        base = await layer.new_channel()
        started = time.perf_counter()
        for i in range(count):
            channel = f"{base}{i}" if i % 2 else f"bench.residue.{i}"
            await layer.send(channel, {"type": "bench", "n": i})
            await layer.receive(channel)
        result.seconds = time.perf_counter() - started
        result.messages = count
        result.extra = await _footprint(layer)

    return await _measure(target, name, run, capacity=10, expiry=300)


async def _footprint(layer: Layer) -> dict[str, Any]:
    """In-process map sizes, and what the server still holds for the layer (where we can tell)."""
    await asyncio.sleep(0.05)  # let the loop settle: a reader looks once more for a waiter before it stops
    local = getattr(layer, "local_state_size", None)
    if local is not None:
        sizes: dict[str, Any] = dict(local())
        server = getattr(getattr(layer, "_state", lambda: None)(), "backend", None)
        footprint = getattr(server, "server_footprint", None)
        if footprint is not None:
            sizes["server"] = await footprint()
        return sizes
    if hasattr(layer, "channels") and hasattr(layer, "groups"):  # Channels' in-memory layer
        return {"channels": len(layer.channels), "groups": len(layer.groups)}
    buffers = getattr(layer, "receive_buffer", None)
    return {"receive_buffer": len(buffers)} if buffers is not None else {"unknown": "not introspectable"}
