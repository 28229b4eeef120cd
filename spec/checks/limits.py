"""CAP, EXP and GEXP: capacity, message expiry and group expiry (SPEC.md)."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from ..harness import Harness, check
from .common import assert_capacity, expect_full, nothing_on, numbered, same, send_numbered, send_or_fail

__all__ = ["CapacityChecks", "ExpiryChecks", "GroupExpiryChecks"]

KINDS = pytest.mark.parametrize("kind", ["named", "process"])


async def _send_after_expiry(harness: Harness, layer: Any, channel: str, message: dict[str, Any]) -> Any:
    """Send ``message`` while a receive already waits (so it is delivered at once), and return what arrives."""
    waiting = asyncio.create_task(harness.receive(layer, channel))
    await asyncio.sleep(0)
    await layer.send(channel, message)
    return await waiting


class CapacityChecks:
    @KINDS
    @check("R-CAP-1", "capacity")
    async def test_r_cap_1_channel_full_exactly_when_full(self, harness: Harness, kind: str) -> None:
        """R-CAP-1: with capacity=3 three sends succeed, the fourth raises ChannelFull and is not stored."""
        if kind == "named":
            harness.require("named_backlog")
        layer = await harness.layer(capacity=3)
        channel = await harness.channel(layer, kind)
        await assert_capacity(layer, channel, 3)
        same(await harness.receive_many(layer, channel, 3), numbered(3), "the stored messages")
        await harness.expect_nothing(layer, channel, "the refused message was stored")

    @check("R-CAP-2", "capacity", "named_backlog")
    async def test_r_cap_2_channel_capacity_patterns(self, harness: Harness) -> None:
        """R-CAP-2: glob and compiled-regex channel_capacity patterns apply, first match wins, else capacity."""
        token = uuid.uuid4().hex[:8]
        patterns: dict[str | re.Pattern[str], int] = {
            f"cap{token}.one.*": 1,
            re.compile(rf"cap{token}\.two\."): 2,
            f"cap{token}.*": 3,
        }
        layer = await harness.layer(capacity=4, channel_capacity=patterns)
        expected = {
            f"cap{token}.one.x": 1,  # also matches the last glob: the first match wins
            f"cap{token}.two.x": 2,  # compiled regex
            f"cap{token}.other": 3,
            f"x.cap{token}.two.x": 4,  # a regex is used with match(), anchored at the start
            f"unmatched{token}": 4,
        }
        for channel, capacity in expected.items():
            await assert_capacity(layer, channel, capacity)

    @check("R-CAP-3", "capacity")
    async def test_r_cap_3_local_channels_share_process_capacity(self, harness: Harness) -> None:
        """R-CAP-3: local channels of one process share one capacity, also one a ``channel_capacity`` pattern sets.

        The pattern ``"tight.*"`` matches the full name and its non-local part alike, so a layer matching patterns
        against full names (channels_redis documents ``"http.response!*"``) is judged on the sharing alone.
        """
        layer = await harness.layer(capacity=3)
        tight = await harness.layer(capacity=5, channel_capacity={"tight.*": 2})
        first, second = await harness.new_channel(layer), await harness.new_channel(layer)
        await send_numbered(layer, first, 2)
        await layer.send(second, {"i": 2})
        await expect_full(layer, layer.send(second, {"i": 3}), "a 4th send to the process (capacity 3)")
        await expect_full(layer, layer.send(first, {"i": 3}), "a 4th send to the process (capacity 3)")
        same(await harness.receive_many(layer, first, 2), numbered(2))
        same(await harness.receive(layer, second), {"i": 2})
        third, fourth = await harness.new_channel(tight, "tight"), await harness.new_channel(tight, "tight")
        await tight.send(third, {"i": 0})
        await tight.send(fourth, {"i": 1})
        await expect_full(tight, tight.send(third, {"i": 2}), "a 3rd send to a process matching 'tight.*' (2)")

    @KINDS
    @check("R-CAP-4", "capacity")
    async def test_r_cap_4_receive_makes_room(self, harness: Harness, kind: str) -> None:
        """R-CAP-4: after receiving from a full channel another send fits; exactly one on a named channel."""
        if kind == "named":
            harness.require("named_backlog")
        layer = await harness.layer(capacity=2)
        channel = await harness.channel(layer, kind)
        await assert_capacity(layer, channel, 2)
        same(await harness.receive(layer, channel), {"i": 0})
        await layer.send(channel, {"i": 9})
        if kind == "named":  # a process may have fetched its local channels' messages ahead: no exact count
            await expect_full(layer, layer.send(channel, {"i": 10}), "a 2nd send after one receive (capacity 2)")
        same(await harness.receive_many(layer, channel, 2), [{"i": 1}, {"i": 9}])


class ExpiryChecks:
    @KINDS
    @check("R-EXP-1")
    async def test_r_exp_1_expired_never_delivered(self, harness: Harness, kind: str) -> None:
        """R-EXP-1: a message left unread past ``expiry`` is never received; a later one is."""
        if kind == "named":  # the expiring message waits on the channel, unread
            harness.require("named_backlog")
        expiry = harness.expiry()
        layer = await harness.layer(expiry=expiry)
        channel = await harness.channel(layer, kind)
        await layer.send(channel, {"old": True})
        await harness.outlive(expiry)
        same(await _send_after_expiry(harness, layer, channel, {"new": True}), {"new": True}, "after expiry")
        await harness.expect_nothing(layer, channel, "an expired message was delivered")

    @KINDS
    @check("R-EXP-2", "capacity")
    async def test_r_exp_2_expired_messages_free_capacity(self, harness: Harness, kind: str) -> None:
        """R-EXP-2: a channel full of expired messages accepts new sends."""
        if kind == "named":
            harness.require("named_backlog")
        expiry = harness.expiry()
        layer = await harness.layer(expiry=expiry, capacity=2)
        channel = await harness.channel(layer, kind)
        await send_numbered(layer, channel, 2)
        await harness.outlive(expiry)
        waiting = asyncio.create_task(harness.receive(layer, channel))
        await asyncio.sleep(0)
        for i in range(2):
            await send_or_fail(layer, channel, {"new": i}, "expired messages still count toward capacity")
        same(await waiting, {"new": 0}, "the first message after expiry")


class GroupExpiryChecks:
    @check("R-GEXP-1", "groups")
    async def test_r_gexp_1_membership_lapses(self, harness: Harness) -> None:
        """R-GEXP-1: a member is no longer sent to ``group_expiry`` seconds after its group_add."""
        expiry = harness.expiry()
        layer = await harness.layer(group_expiry=expiry)
        group, named, local = harness.name("gexp"), harness.name("gexp-member"), await harness.new_channel(layer)
        members = [named, local] if harness.can("named_backlog") else [local]
        for channel in members:
            await layer.group_add(group, channel)
        await layer.group_send(group, {"while": "member"})
        for channel in members:
            same(await harness.receive(layer, channel), {"while": "member"})
        await harness.outlive(expiry)
        await layer.group_send(group, {"after": "expiry"})
        await nothing_on(harness, layer, members, "the membership should have lapsed")

    @check("R-GEXP-2", "groups")
    async def test_r_gexp_2_adding_again_refreshes(self, harness: Harness) -> None:
        """R-GEXP-2: a second group_add restarts the period: still a member 1.2 periods after the first add."""
        expiry = harness.expiry(4)  # margins: 0.2 periods after the first lapse, 0.4 before the second
        layer = await harness.layer(group_expiry=expiry)
        group, channel = harness.name("gexp"), await harness.new_channel(layer)
        await layer.group_add(group, channel)
        await asyncio.sleep(0.6 * expiry)
        await layer.group_add(group, channel)
        await asyncio.sleep(0.6 * expiry)
        waiting = asyncio.create_task(harness.receive(layer, channel))
        await asyncio.sleep(0)
        await layer.group_send(group, {"still": "member"})
        same(await waiting, {"still": "member"}, "message to a refreshed member")
