"""Assertions the checks share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from ..harness import Harness, Message

__all__ = [
    "assert_capacity", "expect_full", "is_full", "nothing_on", "numbered", "refused", "same", "send_numbered",
    "send_or_fail",
]


async def refused(awaitable: Awaitable[Any], what: str, wait: float | None = None) -> TypeError:
    """Expect ``awaitable`` to raise ``TypeError``; return it.  ``wait`` bounds calls that may block (receive)."""
    try:
        await (asyncio.wait_for(awaitable, wait) if wait is not None else awaitable)
    except TypeError as exc:
        return exc
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} was accepted (it waited instead of raising TypeError)") from None
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__}({exc}), not a TypeError") from exc
    raise AssertionError(f"{what} was accepted; expected a TypeError")


def is_full(layer: Any, error: BaseException) -> bool:
    """Whether ``error`` is the layer's ``ChannelFull``.  A layer without the attribute (which fails R-API-1) is
    judged by the class name, so that its capacity checks still test capacity."""
    declared = getattr(layer, "ChannelFull", None)
    if isinstance(declared, type) and isinstance(error, declared):
        return True
    return any(cls.__name__ == "ChannelFull" for cls in type(error).__mro__)


async def expect_full(layer: Any, awaitable: Awaitable[Any], what: str) -> None:
    """Expect ``awaitable`` (a send) to raise the layer's ``ChannelFull``."""
    try:
        await awaitable
    except Exception as exc:
        if is_full(layer, exc):
            return
        raise
    raise AssertionError(f"{what} succeeded; expected ChannelFull")


async def send_or_fail(layer: Any, channel: str, message: Message, why: str) -> None:
    """Send; a ``ChannelFull`` fails the check with ``why``."""
    try:
        await layer.send(channel, message)
    except Exception as exc:
        if is_full(layer, exc):
            raise AssertionError(f"send to {channel!r} raised ChannelFull: {why}") from None
        raise


async def assert_capacity(layer: Any, channel: str, capacity: int) -> None:
    """Exactly ``capacity`` sends to the empty ``channel`` succeed, the next raises ``ChannelFull``."""
    for i in range(capacity):
        await send_or_fail(layer, channel, {"i": i}, f"it was message #{i + 1} and the capacity is {capacity}")
    await expect_full(layer, layer.send(channel, {"i": capacity}), f"send #{capacity + 1} to {channel!r}")


def numbered(count: int, **extra: Any) -> list[Message]:
    return [{"i": i, **extra} for i in range(count)]


async def send_numbered(layer: Any, channel: str, count: int, **extra: Any) -> None:
    for message in numbered(count, **extra):
        await layer.send(channel, message)


def same(received: object, expected: object, where: str = "message") -> None:
    """Deep equality that also compares types (``True`` is not ``1``, ``b"x"`` is not ``"x"``)."""
    assert type(received) is type(expected), (
        f"{where} is {type(received).__name__} {received!r}, expected {type(expected).__name__} {expected!r}"
    )
    if isinstance(expected, dict):
        assert isinstance(received, dict)
        assert received.keys() == expected.keys(), f"{where} has keys {sorted(received)}, expected {sorted(expected)}"
        for key, value in expected.items():
            same(received[key], value, f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(received, list)
        assert len(received) == len(expected), f"{where} has {len(received)} items, expected {len(expected)}"
        for index, (got, want) in enumerate(zip(received, expected, strict=True)):
            same(got, want, f"{where}[{index}]")
    else:
        assert received == expected, f"{where} is {received!r}, expected {expected!r}"


async def nothing_on(harness: Harness, layer: Any, channels: Iterable[str], why: str = "") -> None:
    """No channel of ``channels`` receives anything during one settle period (watched concurrently)."""
    await asyncio.gather(*(harness.expect_nothing(layer, channel, why) for channel in channels))
