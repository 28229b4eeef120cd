"""GROUP: group membership and fan-out (SPEC.md)."""

from __future__ import annotations

import asyncio

from ..harness import Harness, check
from .common import is_full, nothing_on, numbered, same

__all__ = ["GroupChecks"]


class GroupChecks:
    @check("R-GROUP-1", "groups")
    async def test_r_group_1_every_member_gets_every_message(self, harness: Harness) -> None:
        """R-GROUP-1: named and local members each get one copy of five group messages, in order."""
        layer = await harness.layer()
        group = harness.name("group")
        members = [harness.name("member"), harness.name("member"),
                   await harness.new_channel(layer), await harness.new_channel(layer)]
        # Receiving first: named members need no backlog, and designs whose group_add takes only channels the
        # process already receives on (pub/sub) accept them.
        readers = [harness.reader(layer, channel, 5) for channel in members]
        await harness.listening(*members)
        for channel in members:
            await layer.group_add(group, channel)
        for message in numbered(5):
            await layer.group_send(group, message)
        for channel, received in zip(members, await asyncio.gather(*readers), strict=True):
            same(received, numbered(5), f"group messages on {channel!r}")
        await nothing_on(harness, layer, members, "one copy per member per group_send")

    @check("R-GROUP-2", "groups")
    async def test_r_group_2_discard(self, harness: Harness) -> None:
        """R-GROUP-2: a discarded member gets nothing more; discarding non-members or from unknown groups is fine."""
        layer = await harness.layer()
        # Both members local: discarding is the subject, and a layer without named channels must not fail it.
        group, gone, stays = harness.name("group"), await harness.new_channel(layer), await harness.new_channel(layer)
        waiting = harness.reader(layer, stays)  # receiving first, as in R-GROUP-1
        await harness.listening(stays)
        for channel in (gone, stays):
            await layer.group_add(group, channel)
        await layer.group_discard(group, gone)
        await layer.group_discard(group, gone)
        await layer.group_discard(group, harness.name("never-added"))
        await layer.group_discard(harness.name("no-such-group"), stays)
        await layer.group_send(group, {"after": "discard"})
        same((await waiting)[0], {"after": "discard"})
        await harness.expect_nothing(layer, gone, "it was discarded from the group")

    @check("R-GROUP-3", "groups")
    async def test_r_group_3_empty_groups_and_repeated_adds(self, harness: Harness) -> None:
        """R-GROUP-3: sending to unknown or emptied groups is fine; a channel added twice gets one copy."""
        layer = await harness.layer()
        group, channel = harness.name("group"), await harness.new_channel(layer)
        await layer.group_send(harness.name("no-such-group"), {"to": "nobody"})
        await layer.group_add(group, channel)
        await layer.group_discard(group, channel)
        await layer.group_send(group, {"to": "nobody"})
        await harness.expect_nothing(layer, channel, "the group was empty")
        await layer.group_add(group, channel)
        await layer.group_add(group, channel)
        await layer.group_send(group, {"once": True})
        same(await harness.receive(layer, channel), {"once": True})
        await harness.expect_nothing(layer, channel, "a channel added twice is a member once")

    @check("R-GROUP-4", "groups", "capacity", "named_backlog")
    async def test_r_group_4_full_members_skipped_not_raised(self, harness: Harness) -> None:
        """R-GROUP-4: group_send skips a full member without raising; the other members still get the message."""
        layer = await harness.layer(capacity=1)
        group, full, free = harness.name("group"), harness.name("full"), harness.name("free")
        local = await harness.new_channel(layer)
        await layer.send(full, {"already": "here"})
        for channel in (full, free, local):
            await layer.group_add(group, channel)
        try:
            await layer.group_send(group, {"to": "all"})
        except Exception as exc:
            if is_full(layer, exc):
                raise AssertionError("group_send raised ChannelFull for a full member") from None
            raise
        same(await harness.receive(layer, free), {"to": "all"}, "message to the member with room")
        same(await harness.receive(layer, local), {"to": "all"}, "message to the local member with room")
        same(await harness.receive(layer, full), {"already": "here"}, "the full member's own message")
        await harness.expect_nothing(layer, full, "the group message was over its capacity")

    @check("R-GROUP-5", "groups")
    async def test_r_group_5_local_members_get_own_copies(self, harness: Harness) -> None:
        """R-GROUP-5: three local channels of one process each get every group message once, as their own copy."""
        layer = await harness.layer()
        group = harness.name("group")
        members = [await harness.new_channel(layer) for _ in range(3)]
        for channel in members:
            await layer.group_add(group, channel)
        for i in range(3):
            await layer.group_send(group, {"i": i, "list": [i]})
        expected = [{"i": i, "list": [i]} for i in range(3)]
        for channel in members:
            received = await harness.receive_many(layer, channel, 3)
            same(received, expected, f"group messages on {channel!r}")
            for message in received:  # must not show up in the other members' copies
                message["list"].append("changed")
        await nothing_on(harness, layer, members, "one copy per member per group_send")

    @check("R-GROUP-6", "groups")
    async def test_r_group_6_channel_in_many_groups(self, harness: Harness) -> None:
        """R-GROUP-6: a channel in three groups gets one copy per group_send to each group."""
        layer = await harness.layer()
        channel = await harness.new_channel(layer)
        groups = [harness.name("group") for _ in range(3)]
        for group in groups:
            await layer.group_add(group, channel)
        await asyncio.gather(*(layer.group_send(group, {"from": group}) for group in groups[::2]))
        received = await harness.receive_many(layer, channel, 2)
        assert sorted(m["from"] for m in received) == sorted(groups[::2]), f"received {received!r}"
        await harness.expect_nothing(layer, channel, "one copy per group_send")
