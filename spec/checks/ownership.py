"""PROC-5/6, FAIL-1, COMPAT-1: a process's channels are its own, a refusing server fails fast, and the layer is a
Channels layer (SPEC.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..harness import Harness, check
from ..target import make_factory
from .common import numbered, same

__all__ = ["OwnershipChecks"]

#: Seconds within which a foreign receive must be refused (it needs no server: the layer knows its own channels).
REFUSE_WITHIN = 1.0
#: Seconds within which ``send`` and a pending ``receive()`` must fail when the server refuses the client.
FAIL_WITHIN = 3.0
OWNER_MESSAGES = 5


async def _raised(awaitable: Any, what: str, within: float) -> tuple[BaseException, float]:
    """Expect ``awaitable`` to raise an exception within ``within`` seconds; return it and how long it took."""
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(awaitable, within)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} was still waiting after {within:g}s; expected it to raise at once") from None
    except Exception as exc:
        return exc, time.monotonic() - started
    raise AssertionError(f"{what} returned {result!r}; expected it to raise")


class OwnershipChecks:
    @check("R-PROC-5")
    async def test_r_proc_5_foreign_local_channel_refused(self, harness: Harness) -> None:
        """R-PROC-5: receive() on another instance's local channel raises at once, naming the channel."""
        owner, other = await harness.layer(), await harness.layer()
        channel = await harness.new_channel(owner)
        error, took = await _raised(other.receive(channel), f"receive({channel!r}) on another instance",
                                    REFUSE_WITHIN)
        assert channel in str(error), f"the refusal ({error!r}, after {took:.3f}s) does not name {channel!r}"
        mine = await harness.new_channel(other)  # the refusing instance still receives its own channels
        same(await harness.deliver(other, mine, {"own": True}), {"own": True}, f"message on {mine!r}")

    @check("R-PROC-6", "shares_state")
    async def test_r_proc_6_owner_keeps_its_messages(self, harness: Harness) -> None:
        """R-PROC-6: while another instance tries to receive one of the owner's channels, the owner still gets every
        message sent to each of its local channels, in order."""
        owner, other = await harness.layer(), await harness.layer()
        first, second = await harness.new_channel(owner), await harness.new_channel(owner)
        attempt = asyncio.ensure_future(other.receive(first))
        try:
            await asyncio.sleep(harness.knobs.settle)  # a layer that accepts the receive starts reading meanwhile
            received = {channel: harness.reader(owner, channel, OWNER_MESSAGES) for channel in (first, second)}
            for channel in received:
                await harness.listening(channel)
            for i in range(OWNER_MESSAGES):
                await other.send(first, {"i": i})
                await other.send(second, {"i": i})
            problems = []
            for channel, reading in received.items():
                try:
                    same(await reading, numbered(OWNER_MESSAGES), f"the owner's messages on {channel!r}")
                except AssertionError as exc:
                    problems.append(str(exc))
            if not attempt.done():
                problems.append("the foreign receive() was still waiting instead of raising")
            elif not attempt.cancelled() and attempt.exception() is None:
                problems.append(f"the foreign receive() returned the owner's message {attempt.result()!r}")
            assert not problems, "; ".join(problems)
        finally:
            if not attempt.done():
                attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)

    @check("R-FAIL-1", "refused_target")
    async def test_r_fail_1_refused_client_fails_fast(self, harness: Harness) -> None:
        """R-FAIL-1: against a server that refuses the client, send and a pending receive() raise within 3 s."""
        target = harness.knobs.refused_target
        assert target is not None
        layer = make_factory(target, harness.knobs.refused_config)()
        pending: list[asyncio.Future[Any]] = []
        try:
            local = await harness.new_channel(layer)
            pending += [asyncio.ensure_future(layer.receive(channel)) for channel in (harness.name("refused"), local)]
            await asyncio.sleep(0)
            for what, awaitable in (("send", layer.send(harness.name("refused"), {"x": 1})),
                                    ("a pending receive() of a named channel", pending[0]),
                                    ("a pending receive() of a local channel", pending[1]),
                                    ("a second send", layer.send(local, {"x": 2}))):
                error, took = await _raised(awaitable, f"{what} to {target}", FAIL_WITHIN)
                assert str(error), f"{what} raised {type(error).__name__} after {took:.2f}s without saying why"
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await harness.bounded(_quiet_close(layer), "close() of the refused layer")

    @check("R-COMPAT-1", "channels")
    async def test_r_compat_1_channels_base_layer(self, harness: Harness) -> None:
        """R-COMPAT-1: the layer is a channels.layers.BaseChannelLayer and its helpers apply the layer's rules."""
        from channels.layers import BaseChannelLayer

        layer = await harness.layer()
        assert isinstance(layer, BaseChannelLayer), (
            f"{type(layer).__name__} is not a channels.layers.BaseChannelLayer (its MRO: "
            f"{[cls.__name__ for cls in type(layer).__mro__]})")
        assert layer.MAX_NAME_LENGTH == 100, f"MAX_NAME_LENGTH is {layer.MAX_NAME_LENGTH!r}"
        local = await harness.new_channel(layer)
        for name in ("a", "spec.compat-1_x", local, "n" * 99):
            assert layer.require_valid_channel_name(name) is True, f"require_valid_channel_name({name!r})"
        for bad in ("", "has space", "n" * 100, "two!bang!s", 42):
            _type_error(layer.require_valid_channel_name, bad)
        for name in ("a", "spec.compat-1_x", "g" * 99):
            assert layer.require_valid_group_name(name) is True, f"require_valid_group_name({name!r})"
        for bad_group in ("", "has space", "g" * 100, "group!x", None):
            _type_error(layer.require_valid_group_name, bad_group)
        assert layer.non_local_name(local) == local[: local.index("!") + 1], f"non_local_name({local!r})"
        assert layer.non_local_name("spec.named") == "spec.named", "non_local_name('spec.named')"
        capacity = layer.get_capacity("spec.named")
        assert isinstance(capacity, int) and capacity > 0, f"get_capacity('spec.named') is {capacity!r}"
        declared = getattr(layer, "capacity", capacity)
        assert capacity == declared, f"get_capacity('spec.named') is {capacity!r}, the layer's capacity {declared!r}"
        same(await harness.deliver(layer, local, {"through": "the layer"}), {"through": "the layer"},
             "a message after the helpers ran")


def _type_error(helper: Any, name: object) -> None:
    try:
        helper(name)
    except TypeError:
        return
    except Exception as exc:
        raise AssertionError(f"{helper.__name__}({name!r}) raised {exc!r}, not a TypeError") from None
    raise AssertionError(f"{helper.__name__}({name!r}) accepted an invalid name")


async def _quiet_close(layer: Any) -> None:
    close = getattr(layer, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # a layer that never connected may complain; the check is not about it
            await close()
