"""OPS: the optional operations API — group introspection, bulk sends, counters (SPEC.md, tier operations).

Every check needs the methods it calls (capabilities of :data:`spec.harness.OPERATIONS`): a layer without them, or
whose method raises ``NotImplementedError`` (a design that cannot answer says so instead of answering wrongly), gets
the requirement as not applicable.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable
from typing import Any

import pytest

from ..harness import NOT_APPLICABLE, OPERATIONS, ROOM, Harness, Message, check
from ..target import make_factory
from .common import is_full, nothing_on, numbered, refused, same

__all__ = ["OperationsChecks"]

#: The counters R-OPS-4 asks ``stats()`` for.
STATS_KEYS = ("sent", "received", "full", "group_sends", "group_drops", "expired_on_read", "undecodable",
              "receivers_waiting", "messages_held")
#: Seconds within which ping() must fail against a server that refuses the client (as R-FAIL-1's calls).
PING_FAILS_WITHIN = 3.0
#: Group names every group call refuses (R-NAMES-3).
BAD_GROUPS = ("bad name", "bad!group", "")


async def _layer(harness: Harness, **overrides: Any) -> Any:
    """``harness.layer(**overrides)``; the check ends as not applicable when one of the operations it needs raises
    ``NotImplementedError`` on a harmless call."""
    layer = await harness.layer(**overrides)
    probes = {
        "group_channels": lambda: layer.group_channels(harness.name("probe")),
        "group_size": lambda: layer.group_size(harness.name("probe")),
        "send_many": lambda: layer.send_many([]),
        "group_send_many": lambda: layer.group_send_many([]),
        "stats": lambda: layer.stats(),
        "ping": lambda: layer.ping(),
    }
    assert probes.keys() == OPERATIONS.keys()
    for name in (need for need in harness.needs if need in OPERATIONS):
        try:
            result = probes[name]()
            if inspect.isawaitable(result):
                await result
        except NotImplementedError as exc:
            pytest.skip(f"{NOT_APPLICABLE}{name}() raised {type(exc).__name__}: {exc}")
    return layer


async def _refused_anything(awaitable: Awaitable[Any], what: str) -> None:
    """Expect ``awaitable`` to raise (any exception: which one is send's business, R-MSG-*)."""
    try:
        await awaitable
    except Exception:
        return
    raise AssertionError(f"{what} was accepted; expected it to raise as send/group_send does")


async def _full_error(layer: Any, awaitable: Awaitable[Any], what: str) -> BaseException:
    """Expect ``awaitable`` to raise the layer's ``ChannelFull``; return it."""
    try:
        await awaitable
    except Exception as exc:
        if is_full(layer, exc):
            return exc
        raise
    raise AssertionError(f"{what} succeeded; expected ChannelFull")


def _stats(layer: Any) -> dict[str, int]:
    """``layer.stats()``, checked to be a plain call returning the counters of R-OPS-4 as ints."""
    result = layer.stats()
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise AssertionError("stats() returned an awaitable; it must be a plain call returning a dict")
    assert isinstance(result, dict), f"stats() returned {type(result).__name__} {result!r}, not a dict"
    missing = [key for key in STATS_KEYS if key not in result]
    assert not missing, f"stats() lacks {missing}: {result!r}"
    bad = {key: value for key, value in result.items()
           if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0}
    assert not bad, f"stats() has entries that are not str -> non-negative int: {bad!r}"
    return result


def _grew(before: dict[str, int], after: dict[str, int], expected: dict[str, int], what: str) -> None:
    """Each counter of ``expected`` grew by exactly that much from ``before`` to ``after``."""
    grown = {key: after[key] - before[key] for key in expected}
    assert grown == expected, f"after {what}, stats() grew by {grown}, expected {expected} (before {before!r})"


class OperationsChecks:
    # -- R-OPS-1 group_channels / group_size -------------------------------------------------------------

    @check("R-OPS-1", "groups", "group_channels", "group_size")
    async def test_r_ops_1_members_listed(self, harness: Harness) -> None:
        """R-OPS-1: group_channels lists a named and a local member once each (one added twice), group_size counts
        them; discarded members go; unknown groups are empty; bad group names raise TypeError."""
        layer = await _layer(harness)
        group, named, local = harness.name("group"), harness.name("member"), await harness.new_channel(layer)
        unknown = harness.name("no-such-group")
        assert await layer.group_channels(unknown) == [], "group_channels of a group nobody added to"
        assert await layer.group_size(unknown) == 0, "group_size of a group nobody added to"
        for channel in (named, local, local):
            await layer.group_add(group, channel)
        listed = await layer.group_channels(group)
        assert isinstance(listed, list), f"group_channels returned {type(listed).__name__}, not a list"
        assert sorted(listed) == sorted([named, local]), f"group_channels listed {listed!r}"
        assert await layer.group_size(group) == 2, "group_size of a group of 2 (one added twice)"
        await layer.group_discard(group, named)
        assert await layer.group_channels(group) == [local], "group_channels after a discard"
        assert await layer.group_size(group) == 1, "group_size after a discard"
        await layer.group_discard(group, local)
        assert (await layer.group_channels(group), await layer.group_size(group)) == ([], 0), "an emptied group"
        for bad in BAD_GROUPS:
            await refused(layer.group_channels(bad), f"group_channels({bad!r})")
            await refused(layer.group_size(bad), f"group_size({bad!r})")

    @check("R-OPS-1", "groups", "group_channels", "group_size")
    async def test_r_ops_1_lapsed_members_not_listed(self, harness: Harness) -> None:
        """R-OPS-1: with group_expiry=min_expiry, a member is listed at once and not after it lapsed."""
        period = harness.expiry()
        layer = await _layer(harness, group_expiry=period)
        group, member = harness.name("group"), await harness.new_channel(layer)
        await layer.group_add(group, member)
        assert await layer.group_channels(group) == [member], "a member just added"
        await harness.outlive(period)
        assert await layer.group_channels(group) == [], f"group_channels after group_expiry={period}"
        assert await layer.group_size(group) == 0, f"group_size after group_expiry={period}"

    @check("R-OPS-1", "groups", "shares_state", "group_channels", "group_size")
    async def test_r_ops_1_every_instances_members(self, harness: Harness) -> None:
        """R-OPS-1: two instances sharing state each add a local channel of their own (and a named one); each
        instance lists all three."""
        first, second = await _layer(harness), await harness.layer()
        group, named = harness.name("group"), harness.name("member")
        mine, theirs = await harness.new_channel(first), await harness.new_channel(second)
        await first.group_add(group, mine)
        await second.group_add(group, theirs)
        await second.group_add(group, named)
        expected = sorted([mine, theirs, named])
        for which, layer in (("the first", first), ("the second", second)):
            listed = await layer.group_channels(group)
            assert sorted(listed) == expected, f"{which} instance's group_channels listed {listed!r}, expected " \
                                               f"{expected!r} (members added by either instance)"
            assert await layer.group_size(group) == 3, f"{which} instance's group_size"

    # -- R-OPS-2 send_many --------------------------------------------------------------------------------

    @check("R-OPS-2", "send_many")
    async def test_r_ops_2_each_channel_in_order(self, harness: Harness) -> None:
        """R-OPS-2: one send_many of 15 messages interleaved over a named and two local channels (receivers
        waiting): each channel gets its 5 in order, once; an empty send_many does nothing."""
        layer = await _layer(harness, capacity=ROOM)
        channels = [harness.name("named"), await harness.new_channel(layer), await harness.new_channel(layer)]
        readers = [harness.reader(layer, channel, 5) for channel in channels]
        await harness.listening(*channels)
        await layer.send_many([])
        await layer.send_many([(channel, {"i": i, "to": channel}) for i in range(5) for channel in channels])
        for channel, received in zip(channels, await asyncio.gather(*readers), strict=True):
            same(received, numbered(5, to=channel), f"messages on {channel!r}")
        await nothing_on(harness, layer, channels, "each pair is one message")

    @check("R-OPS-2", "send_many", "capacity", "named_backlog")
    async def test_r_ops_2_full_channel_does_not_stop_the_others(self, harness: Harness) -> None:
        """R-OPS-2: capacity=2; a send_many whose first pair goes to a full channel, then to a free named channel,
        a local channel, and 3 messages to an empty one: every message that fits is stored, then ChannelFull
        names the two full channels (message and ``channels``)."""
        layer = await _layer(harness, capacity=2)
        full, free, filling = harness.name("full"), harness.name("free"), harness.name("filling")
        local = await harness.new_channel(layer)
        for message in numbered(2, own=True):
            await layer.send(full, message)
        pairs: list[tuple[str, Message]] = [(full, {"to": "full"}), (free, {"to": "free"}), (local, {"to": "local"})]
        pairs += [(filling, message) for message in numbered(3)]
        error = await _full_error(layer, layer.send_many(pairs), "send_many with a full channel in it")
        listed = getattr(error, "channels", None)
        assert listed is not None and sorted(listed) == sorted([full, filling]), \
            f"ChannelFull.channels is {listed!r}, expected the full channels {[full, filling]!r}"
        for channel in (full, filling):
            assert channel in str(error), f"ChannelFull's message {str(error)!r} does not name {channel!r}"
        same(await harness.receive(layer, free), {"to": "free"}, "the message to the free channel")
        same(await harness.receive(layer, local), {"to": "local"}, "the message to the local channel")
        same(await harness.receive_many(layer, filling, 2), numbered(2), "the messages that fitted its capacity")
        same(await harness.receive_many(layer, full, 2), numbered(2, own=True), "the full channel's own messages")
        await nothing_on(harness, layer, [full, filling, free], "over capacity, or sent once")

    @check("R-OPS-2", "send_many")
    async def test_r_ops_2_bad_pairs_store_nothing(self, harness: Harness) -> None:
        """R-OPS-2: a send_many with a bad channel name, an unserializable message, a message that is not a dict,
        or an oversize one after a good pair raises, and the good pair is not stored either."""
        layer = await _layer(harness)
        channel = await harness.new_channel(layer)
        good = (channel, {"good": True})
        await refused(layer.send_many([good, ("bad name", {"x": 1})]), "send_many with a bad channel name")
        oversize = {"blob": "x" * (harness.knobs.max_message_size + 1)}
        for why, message in (("an unserializable", {"x": object()}), ("a non-dict", ["not", "a", "dict"]),
                             ("an oversize", oversize)):
            await _refused_anything(layer.send_many([good, (channel, message)]), f"send_many with {why} message")
        await harness.expect_nothing(layer, channel, "every send_many had a bad pair: nothing may be stored")

    @check("R-OPS-2", "send_many")
    async def test_r_ops_2_messages_expire(self, harness: Harness) -> None:
        """R-OPS-2: with expiry=min_expiry, what send_many stored and nobody received is gone after it."""
        period = harness.expiry()
        layer = await _layer(harness, expiry=period)
        channel = await harness.new_channel(layer)
        await layer.send_many([(channel, message) for message in numbered(2)])
        await harness.outlive(period)
        await harness.expect_nothing(layer, channel, f"sent by send_many with expiry={period}")

    # -- R-OPS-3 group_send_many --------------------------------------------------------------------------

    @check("R-OPS-3", "groups", "group_send_many")
    async def test_r_ops_3_each_group_in_order(self, harness: Harness) -> None:
        """R-OPS-3: one group_send_many of 6 messages alternating over two groups: each member gets its groups'
        messages once, each group's in order; an empty group_send_many does nothing."""
        layer = await _layer(harness, capacity=ROOM)
        groups = [harness.name("group"), harness.name("group")]
        only_first, only_second, both = [await harness.new_channel(layer) for _ in range(3)]
        for group, channel in ((groups[0], only_first), (groups[1], only_second), (groups[0], both),
                               (groups[1], both)):
            await layer.group_add(group, channel)
        await layer.group_send_many([])
        await layer.group_send_many([(group, {"i": i, "to": group}) for i in range(3) for group in groups])
        same(await harness.receive_many(layer, only_first, 3), numbered(3, to=groups[0]), "the first group's")
        same(await harness.receive_many(layer, only_second, 3), numbered(3, to=groups[1]), "the second group's")
        received = await harness.receive_many(layer, both, 6)
        for group in groups:
            same([m for m in received if m.get("to") == group], numbered(3, to=group),
                 f"{group!r}'s messages to a member of both groups")
        await nothing_on(harness, layer, [only_first, only_second, both], "one copy per member per pair")

    @check("R-OPS-3", "groups", "group_send_many", "capacity", "named_backlog")
    async def test_r_ops_3_full_members_skipped(self, harness: Harness) -> None:
        """R-OPS-3: capacity=1; a group with a full member, then another group: nothing is raised, the members
        with room get their copies, the full one keeps only its own message."""
        layer = await _layer(harness, capacity=1)
        group, other = harness.name("group"), harness.name("group")
        full, free, local = harness.name("full"), harness.name("free"), await harness.new_channel(layer)
        await layer.send(full, {"already": "here"})
        for channel in (full, free):
            await layer.group_add(group, channel)
        await layer.group_add(other, local)
        try:
            await layer.group_send_many([(group, {"to": "group"}), (other, {"to": "other"})])
        except Exception as exc:
            if is_full(layer, exc):
                raise AssertionError("group_send_many raised ChannelFull for a full member") from None
            raise
        same(await harness.receive(layer, free), {"to": "group"}, "the copy to the member with room")
        same(await harness.receive(layer, local), {"to": "other"}, "the second group's copy")
        same(await harness.receive(layer, full), {"already": "here"}, "the full member's own message")
        await harness.expect_nothing(layer, full, "the group message was over its capacity")

    @check("R-OPS-3", "groups", "group_send_many")
    async def test_r_ops_3_bad_pairs_send_nothing(self, harness: Harness) -> None:
        """R-OPS-3: a group_send_many with a bad group name or an unserializable message after a good pair
        raises, and the good pair is not sent either."""
        layer = await _layer(harness)
        group, member = harness.name("group"), await harness.new_channel(layer)
        await layer.group_add(group, member)
        good = (group, {"good": True})
        for bad in BAD_GROUPS:
            await refused(layer.group_send_many([good, (bad, {"x": 1})]), f"group_send_many with group {bad!r}")
        await _refused_anything(layer.group_send_many([good, (group, {"x": object()})]),
                                "group_send_many with an unserializable message")
        await harness.expect_nothing(layer, member, "every group_send_many had a bad pair: nothing may be sent")

    # -- R-OPS-4 stats ------------------------------------------------------------------------------------

    @check("R-OPS-4", "stats")
    async def test_r_ops_4_sends_receives_and_waiting(self, harness: Harness) -> None:
        """R-OPS-4: 3 sends (and 2 by send_many, when the layer has it) grow ``sent``, receiving them grows
        ``received``; a waiting receive shows in ``receivers_waiting``; nothing is held once all is received."""
        layer = await _layer(harness, capacity=ROOM)
        channel = await harness.new_channel(layer)
        start = _stats(layer)
        for message in numbered(3):
            await layer.send(channel, message)
        bulk = 2 if harness.can("send_many") else 0
        if bulk:
            await layer.send_many([(channel, message) for message in numbered(bulk, bulk=True)])
        _grew(start, _stats(layer), {"sent": 3 + bulk, "received": 0}, f"3 sends and {bulk} by send_many")
        await harness.receive_many(layer, channel, 3 + bulk)
        received = _stats(layer)
        _grew(start, received, {"sent": 3 + bulk, "received": 3 + bulk}, "receiving them")
        assert received["messages_held"] == 0, f"messages_held once everything was received: {received!r}"
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(harness.knobs.settle)
        _grew(received, _stats(layer), {"receivers_waiting": 1}, "starting a receive()")
        await layer.send(channel, {"last": True})
        same(await asyncio.wait_for(waiting, harness.knobs.receive_wait), {"last": True})
        _grew(received, _stats(layer), {"receivers_waiting": 0, "sent": 1, "received": 1, "messages_held": 0},
              "that receive() returned")

    @check("R-OPS-4", "stats", "groups")
    async def test_r_ops_4_group_sends(self, harness: Harness) -> None:
        """R-OPS-4: each group_send (and each pair of a group_send_many, when the layer has it) grows
        ``group_sends`` by one, whatever the group's size."""
        layer = await _layer(harness, capacity=ROOM)
        group = harness.name("group")
        for _ in range(2):
            await layer.group_add(group, await harness.new_channel(layer))
        start = _stats(layer)
        await layer.group_send(group, {"one": True})
        await layer.group_send(harness.name("no-such-group"), {"none": True})
        bulk = 3 if harness.can("group_send_many") else 0
        if bulk:
            await layer.group_send_many([(group, message) for message in numbered(bulk)])
        _grew(start, _stats(layer), {"group_sends": 2 + bulk, "group_drops": 0},
              f"2 group_sends and {bulk} by group_send_many")

    @check("R-OPS-4", "stats", "groups", "capacity")
    async def test_r_ops_4_refusals(self, harness: Harness) -> None:
        """R-OPS-4: capacity=1; a send refused as full grows ``full``; a group_send skipping that full member
        grows ``group_drops``; neither grows ``sent``."""
        layer = await _layer(harness, capacity=1)
        group, channel = harness.name("group"), await harness.new_channel(layer)
        await layer.group_add(group, channel)
        await layer.send(channel, {"fits": True})
        start = _stats(layer)
        await _full_error(layer, layer.send(channel, {"over": "capacity"}), "a send over capacity")
        _grew(start, _stats(layer), {"full": 1, "sent": 0}, "a send refused as full")
        await layer.group_send(group, {"over": "capacity"})
        _grew(start, _stats(layer), {"full": 1, "sent": 0, "group_sends": 1, "group_drops": 1},
              "a group_send whose only member was full")

    # -- R-OPS-5 ping -------------------------------------------------------------------------------------

    @check("R-OPS-5", "ping")
    async def test_r_ops_5_ping_answers_in_seconds(self, harness: Harness) -> None:
        """R-OPS-5: ping() returns a float of seconds, at least 0 and under the check's time limit, three times in
        a row (and after close(), when the layer has one)."""
        layer = await _layer(harness)
        for attempt in range(3):
            took = await harness.bounded(layer.ping(), f"ping() #{attempt + 1}")
            assert isinstance(took, float), f"ping() returned {type(took).__name__} {took!r}, not a float"
            assert 0 <= took < harness.knobs.timeout, f"ping() returned {took!r} seconds"
        if harness.has_close:
            await layer.close()
            took = await harness.bounded(layer.ping(), "ping() after close()")
            assert isinstance(took, float) and took >= 0, f"ping() after close() returned {took!r}"

    @check("R-OPS-5", "ping", "refused_target")
    async def test_r_ops_5_ping_says_why_it_failed(self, harness: Harness) -> None:
        """R-OPS-5: against a server that refuses the client, ping() raises within 3 s, saying why."""
        await _layer(harness)  # n/a when the design has no working ping
        target = harness.knobs.refused_target
        assert target is not None
        layer = make_factory(target, harness.knobs.refused_config)()
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(layer.ping(), PING_FAILS_WITHIN)
        except asyncio.TimeoutError:
            raise AssertionError(f"ping() of {target} did not fail within {PING_FAILS_WITHIN:g}s") from None
        except Exception as exc:
            took = asyncio.get_running_loop().time() - started
            assert str(exc), f"ping() raised {type(exc).__name__} after {took:.2f}s without saying why"
        else:
            raise AssertionError(f"ping() of {target}, a server that refuses the client, succeeded")
        finally:
            close = getattr(layer, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # closing a refused layer is R-FAIL-1's and R-CLOSE's business
                    await harness.bounded(close(), "close() of the refused layer")
