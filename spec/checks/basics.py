"""API, NAMES and MSG: what a layer exposes, which names and messages it takes (SPEC.md)."""

from __future__ import annotations

import copy
import string
from typing import Any

import pytest

from ..harness import Harness, check
from .common import nothing_on, refused, same

__all__ = ["ApiChecks", "MessageChecks", "NameChecks"]

KINDS = pytest.mark.parametrize("kind", ["named", "process"])
NAME_CHARS = string.ascii_letters + string.digits + "-_."

# Refused everywhere a name goes; ordered so the first failure says the most.
BAD_NAMES: list[Any] = [
    "", " ", "has space", "tab\tname", "line\nbreak", "ünïcode", "semi;colon", "slash/name",
    "star*", "a" * 100, 42, None, b"bytes", ["list"],
]
BAD_CHANNELS = [*BAD_NAMES, "!leading", "two!bang!s", "local!sp ace"]
BAD_GROUPS = [*BAD_NAMES, "group!local", "group!"]
#: Refused by the exact rules (R-NAMES-5) but let through by the usual regular expressions.
PRECISE_CHANNELS = ["trailing\n", "local!trailing\n", "local!ünï"]
PRECISE_GROUPS = ["trailing\n"]

ROUND_TRIP: dict[str, Any] = {
    "none": None, "true": True, "false": False, "zero": 0, "int_min": -(2**63), "int_max": 2**63 - 1,
    "float": 1.5, "tiny": 5e-324, "huge": 1.7e308, "text": "héllo wörld ✓ 🚀 中文", "empty_text": "",
    "str_x": "x", "bytes_x": b"x", "binary": bytes(range(256)), "empty_bytes": b"", "list": [1, "two", b"3", None],
    "nested": {"deep": [{"k": b"v", "n": [1.25, False]}]}, "empty_list": [], "empty_dict": {},
}
UNSERIALIZABLE: dict[str, Any] = {
    "bad_object": object(), "bad_set": {1, 2}, "bad_complex": 1j, "bad_bigint": 2**64,
    "bad_inner": {"ok": 1, "bad_nested": object()},
}
NOT_DICTS: list[Any] = [None, "text", b"bytes", ["type", "x"], ("type", "x"), 42]
BAD_KEYS: list[dict[Any, Any]] = [{1: "int key"}, {b"type": "bytes key"}, {None: 1}, {("t",): 1}, {"ok": 1, 2.5: 2}]


class ApiChecks:
    @check("R-API-1")
    async def test_r_api_1_extensions_and_exception_classes(self, harness: Harness) -> None:
        """R-API-1: ``extensions`` is a list of str; ``ChannelFull``/``MessageTooLarge`` are exception classes."""
        layer = await harness.layer()
        assert isinstance(layer.extensions, list), f"extensions is {layer.extensions!r}, not a list"
        assert all(isinstance(name, str) for name in layer.extensions), f"extensions: {layer.extensions!r}"
        for attribute in ("ChannelFull", "MessageTooLarge"):
            value = getattr(layer, attribute, None)
            assert isinstance(value, type) and issubclass(value, Exception), (
                f"layer.{attribute} is {value!r}, not an exception class"
            )


class NameChecks:
    @check("R-NAMES-1")
    async def test_r_names_1_valid_names_work(self, harness: Harness) -> None:
        """R-NAMES-1: every valid name (all allowed characters, 99 characters, local channels) works."""
        layer = await harness.layer()
        longest = ("n." + NAME_CHARS * 2)[:99]
        local = await harness.new_channel(layer)
        for channel in _present(longest, "a", "A-b_c.9", local, harness.non_local(local)):
            same(await harness.deliver(layer, channel, {"to": channel}), {"to": channel}, f"message on {channel!r}")
        if "groups" in harness.extensions:
            group = ("g." + NAME_CHARS * 2)[:99]
            await layer.group_add(group, local)
            waiting = harness.reader(layer, local)
            await layer.group_send(group, {"group": group})
            same((await waiting)[0], {"group": group}, f"group message from the 99-character group on {local!r}")
            await layer.group_discard(group, local)

    @check("R-NAMES-2")
    async def test_r_names_2_invalid_channel_names_refused(self, harness: Harness) -> None:
        """R-NAMES-2: send, receive, group_add and group_discard refuse bad channel names with TypeError."""
        await _names_refused(harness, await harness.layer(), BAD_CHANNELS, [])

    @check("R-NAMES-3", "groups")
    async def test_r_names_3_invalid_group_names_refused(self, harness: Harness) -> None:
        """R-NAMES-3: group_add, group_discard and group_send refuse bad group names with TypeError."""
        layer = await harness.layer()
        await _names_refused(harness, layer, [], BAD_GROUPS, member=await harness.new_channel(layer))

    @check("R-NAMES-4")
    async def test_r_names_4_errors_name_the_value(self, harness: Harness) -> None:
        """R-NAMES-4: a name error's message contains the repr() of the refused name."""
        layer = await harness.layer()
        calls = ["send", "group_send"] if "groups" in harness.extensions else ["send"]
        for what in calls:
            for name in ("has space", "a" * 100, "two!bang!s", 42):
                error = await refused(getattr(layer, what)(name, {}), f"{what}({name!r})")
                assert repr(name) in str(error), f"{what}({name!r}) raised {error!r}, which does not name {name!r}"

    @check("R-NAMES-5")
    async def test_r_names_5_name_rules_are_exact(self, harness: Harness) -> None:
        """R-NAMES-5: a trailing newline, and non-ASCII letters after '!', are refused too."""
        groups = PRECISE_GROUPS if "groups" in harness.extensions else []
        layer = await harness.layer()
        await _names_refused(harness, layer, PRECISE_CHANNELS, groups, member=await harness.new_channel(layer))


async def _names_refused(
    harness: Harness, layer: Any, channels: list[Any], groups: list[Any], member: str = "spec.member"
) -> None:
    """Every call taking a channel name refuses each of ``channels`` (group calls only with the extension), and
    every group call refuses each of ``groups`` (for ``member``, one of the layer's own channels), with
    TypeError."""
    with_groups = "groups" in harness.extensions
    for name in channels:
        await refused(layer.send(name, {"x": 1}), f"send({name!r})")
        await refused(layer.receive(name), f"receive({name!r})", wait=harness.knobs.settle)
        if with_groups:
            await refused(layer.group_add("spec.names", name), f"group_add('spec.names', {name!r})")
            await refused(layer.group_discard("spec.names", name), f"group_discard('spec.names', {name!r})")
    for name in groups:
        await refused(layer.group_add(name, member), f"group_add({name!r}, {member!r})")
        await refused(layer.group_discard(name, member), f"group_discard({name!r}, {member!r})")
        await refused(layer.group_send(name, {"x": 1}), f"group_send({name!r})")


class MessageChecks:
    async def _refuses_messages(self, harness: Harness, messages: list[Any], check_text: bool) -> None:
        """Every message is refused with TypeError by send and group_send, and nothing is stored.  The vehicle is a
        process-local channel (its messages wait for a receive on every layer), a group member with ``groups``."""
        layer = await harness.layer()
        channel = await harness.new_channel(layer)
        group = harness.name("msg-group")
        groups = "groups" in harness.extensions
        if groups:
            await layer.group_add(group, channel)
        for message in messages:
            shown = repr(message) if len(repr(message)) < 60 else f"{{{next(iter(message))!r}: ...}}"
            error = await refused(layer.send(channel, message), f"send of {shown}")
            if groups:
                await refused(layer.group_send(group, message), f"group_send of {shown}")
            if check_text:
                key = next(iter(message))
                inner = "bad_nested" if key == "bad_inner" else key
                assert inner in str(error), f"the error for {shown} does not name the key {inner!r}: {error}"
        await layer.send(channel, {"marker": True})
        same(await harness.receive(layer, channel), {"marker": True}, "the first message after the refusals")
        await harness.expect_nothing(layer, channel, "a refused message was stored")

    @check("R-MSG-1")
    async def test_r_msg_1_dict_with_str_keys(self, harness: Harness) -> None:
        """R-MSG-1: non-dict messages and non-str keys are refused with TypeError; nothing is stored."""
        await self._refuses_messages(harness, [*NOT_DICTS, *BAD_KEYS], check_text=False)

    @KINDS
    @check("R-MSG-2")
    async def test_r_msg_2_values_round_trip(self, harness: Harness, kind: str) -> None:
        """R-MSG-2: every serializable value comes back equal and of the same type; bytes and str stay apart."""
        layer = await harness.layer()
        channel = await harness.channel(layer, kind)
        same(await harness.deliver(layer, channel, copy.deepcopy(ROUND_TRIP)), ROUND_TRIP)

    @check("R-MSG-3")
    async def test_r_msg_3_tuples_become_lists(self, harness: Harness) -> None:
        """R-MSG-3: tuples, at any depth, are received as lists."""
        layer = await harness.layer()
        channel = await harness.new_channel(layer)
        await layer.send(channel, {"t": (1, "a", (2, "b")), "in_list": [(), (None,)]})
        same(await harness.receive(layer, channel), {"t": [1, "a", [2, "b"]], "in_list": [[], [None]]})

    @check("R-MSG-4")
    async def test_r_msg_4_unserializable_refused(self, harness: Harness) -> None:
        """R-MSG-4: an unserializable value is refused at send with a TypeError naming its key."""
        messages = [{key: value, "fine": "value"} for key, value in UNSERIALIZABLE.items()]
        await self._refuses_messages(harness, messages, check_text=True)

    @check("R-MSG-5")
    async def test_r_msg_5_oversize_refused(self, harness: Harness) -> None:
        """R-MSG-5: a message over the size limit raises MessageTooLarge; one half the limit arrives intact."""
        layer = await harness.layer()
        limit = harness.knobs.max_message_size
        too_large = getattr(layer, "MessageTooLarge", None)
        assert isinstance(too_large, type), "the layer has no MessageTooLarge exception class"
        channel = await harness.new_channel(layer)
        half = {"blob": "x" * (limit // 2)}
        await layer.send(channel, half)
        same(await harness.receive(layer, channel), half, "the half-limit message")
        with pytest.raises(too_large):
            await layer.send(channel, {"blob": "x" * (limit + 1)})
        await layer.send(channel, {"marker": True})
        same(await harness.receive(layer, channel), {"marker": True}, "the first message after the oversize one")

    @check("R-MSG-6")
    async def test_r_msg_6_sender_dict_untouched(self, harness: Harness) -> None:
        """R-MSG-6: send/group_send never modify the dict; modifying it afterwards changes nothing received."""
        layer = await harness.layer()
        first, second = await harness.new_channel(layer), await harness.new_channel(layer)
        original = {"list": [1, 2], "nested": {"k": "v"}, "text": "t"}
        message = copy.deepcopy(original)
        await layer.send(first, message)
        assert message == original, f"send modified the sender's dict: {message!r}"
        _scribble(message)
        same(await harness.receive(layer, first), original, "message received after the sender changed its dict")
        if "groups" not in harness.extensions:
            return
        group = harness.name("copy-group")
        await layer.group_add(group, first)
        await layer.group_add(group, second)
        message = copy.deepcopy(original)
        await layer.group_send(group, message)
        assert message == original, f"group_send modified the sender's dict: {message!r}"
        _scribble(message)
        _scribble(await harness.receive(layer, first))
        same(await harness.receive(layer, second), original, "second member's copy after others were modified")

    @check("R-MSG-7")
    async def test_r_msg_7_no_required_keys(self, harness: Harness) -> None:
        """R-MSG-7: messages without a ``type`` key (even ``{}``) are delivered as sent."""
        layer = await harness.layer()
        channel = harness.name("untyped")
        local = await harness.new_channel(layer)
        for message in ({}, {"text": "hi"}, {"type": "chat.message", "text": "typed"}):
            for target in (channel, local):
                same(await harness.deliver(layer, target, copy.deepcopy(message)), message, f"message on {target!r}")
        await nothing_on(harness, layer, [channel, local])


def _present(*names: str | None) -> list[str]:
    return [name for name in names if name is not None]


def _scribble(message: dict[str, Any]) -> None:
    """Change a message dict in place, at every level."""
    message["list"].append(3)
    message["nested"]["k"] = "changed"
    message["added"] = True
