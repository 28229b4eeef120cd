"""GROUP-7, CAP-5 and DELIV-5: capacity and order where group messages and direct sends meet (SPEC.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..harness import Harness, check
from .common import is_full, nothing_on, numbered, same

__all__ = ["FETCH_AHEAD_LIMIT", "GroupDeliveryChecks"]

KINDS = pytest.mark.parametrize("kind", ["named", "process"])
#: The most messages a process may fetch for its local channels ahead of its receivers (R-CAP-5).
FETCH_AHEAD_LIMIT = 100
#: Capacity for the order checks: room for every message they send.
ROOMY = 1000


def drop_counter(layer: Any) -> int | None:
    """The layer's count of members skipped by ``group_send`` (our ``group_drops``), or None if it has none."""
    count = getattr(layer, "group_drops", None)
    return count if isinstance(count, int) and not isinstance(count, bool) else None


async def _send_until_full(layer: Any, channel: str, count: int) -> int:
    """Send up to ``count`` numbered messages; return how many were stored before the first ``ChannelFull``."""
    for i in range(count):
        try:
            await layer.send(channel, {"i": i})
        except Exception as exc:
            if is_full(layer, exc):
                return i
            raise
    return count


class GroupDeliveryChecks:
    @check("R-GROUP-7", "groups", "capacity")
    async def test_r_group_7_full_local_member_skipped(self, harness: Harness) -> None:
        """R-GROUP-7: capacity=3, a local member that does not read: of 10 group_sends exactly 3 arrive (and a
        layer with a ``group_drops`` counter counts the other 7)."""
        layer = await harness.layer(capacity=3)
        group, member = harness.name("group"), await layer.new_channel()
        await layer.group_add(group, member)
        before = drop_counter(layer)
        for message in numbered(10):
            await layer.group_send(group, message)
        after = drop_counter(layer)
        same(await harness.receive_many(layer, member, 3), numbered(3), "the group messages that fitted")
        await harness.expect_nothing(layer, member, "the member held 3 messages (its capacity) when 7 more came")
        if before is not None and after is not None:
            assert after - before == 7, f"group_drops counted {after - before} skipped member(s), expected 7"

    @check("R-CAP-5", "capacity")
    async def test_r_cap_5_fetching_ahead_is_bounded(self, harness: Harness) -> None:
        """R-CAP-5: capacity=3; right after a receive() on a local channel, with none pending, at most
        3 + 100 of 500 sends succeed, and those all arrive in order."""
        layer = await harness.layer(capacity=3)
        channel = await layer.new_channel()
        await layer.send(channel, {"first": True})
        same(await harness.receive(layer, channel), {"first": True})
        stored = await _send_until_full(layer, channel, 500)
        limit = 3 + FETCH_AHEAD_LIMIT
        assert stored <= limit, (
            f"{stored} of 500 sends succeeded right after a receive() on a channel of capacity 3: the process took "
            f"more than {FETCH_AHEAD_LIMIT} messages ahead of its receivers (at most {limit} may succeed)"
        )
        assert stored >= 3, f"only {stored} sends succeeded on a channel of capacity 3 that had been emptied"
        same(await harness.receive_many(layer, channel, stored), numbered(stored), "the stored messages")
        await harness.expect_nothing(layer, channel, "the refused sends were stored")

    @KINDS
    @check("R-DELIV-5", "groups")
    async def test_r_deliv_5_send_and_group_send_keep_order(self, harness: Harness, kind: str) -> None:
        """R-DELIV-5: one writer interleaves send and group_send to one member channel, with the receiver idle and
        then waiting: 60 messages arrive in the order they were made."""
        if kind == "named":  # the first half is sent while nobody receives: it waits on the channel
            harness.require("named_backlog")
        layer = await harness.layer(capacity=ROOMY)
        channel = await harness.channel(layer, kind)
        group = harness.name("group")
        await layer.group_add(group, channel)
        # Every switch between the two ways (send -> group_send and group_send -> send) occurs in each half.
        ways = ["send", "group", "group", "send", "send", "group"] * 5
        harness.rng.shuffle(ways)
        ways = ["send", "group", "send", *ways[3:]]

        async def write(first: int) -> None:
            for i, way in enumerate(ways, start=first):
                message = {"i": i, "via": way}
                if way == "send":
                    await layer.send(channel, message)
                else:
                    await layer.group_send(group, message)

        await write(0)  # nobody receives yet: everything waits on the server
        idle = [await harness.receive(layer, channel) for _ in ways]
        writer = asyncio.create_task(write(len(ways)))  # now a receiver waits as they arrive
        try:
            live = [await harness.receive(layer, channel) for _ in ways]
        finally:
            await writer
        received = [(message["i"], message["via"]) for message in idle + live]
        expected = [(i, way) for i, way in enumerate(ways + ways)]
        disorder = next((n for n, (got, want) in enumerate(zip(received, expected, strict=True)) if got != want), None)
        if disorder is not None:
            around = received[max(0, disorder - 2):disorder + 4]
            raise AssertionError(
                f"send and group_send to {channel!r} arrived out of order: position {disorder} holds "
                f"{received[disorder]}, expected {expected[disorder]} (received around it: {around})"
            )
        await nothing_on(harness, layer, [channel], "one copy of each message")
