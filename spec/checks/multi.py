"""MULTI: several instances standing in for several processes, and a real second OS process (SPEC.md)."""

from __future__ import annotations

import asyncio
import json
import sys

from ..harness import Harness, check
from .common import is_full, nothing_on, numbered, same, send_numbered
from .delivery import ROOMY, competing_receivers

__all__ = ["MultiChecks"]

PROCESS_MESSAGES = 5


class MultiChecks:
    @check("R-MULTI-1", "shares_state")
    async def test_r_multi_1_named_channels_shared(self, harness: Harness) -> None:
        """R-MULTI-1: two instances send alternately; receivers on both get every message exactly once."""
        first, second = await harness.layer(capacity=ROOMY), await harness.layer(capacity=ROOMY)
        await competing_receivers(harness, [first, second], [first, second], harness.name("shared"), 100)

    @check("R-MULTI-2", "shares_state")
    async def test_r_multi_2_local_channels_cross_instances(self, harness: Harness) -> None:
        """R-MULTI-2: each instance sends to the other's local channel; each owner gets exactly its messages."""
        first, second = await harness.layer(), await harness.layer()
        mine, theirs = await harness.new_channel(first), await harness.new_channel(second)
        for i in range(10):
            await second.send(mine, {"i": i, "from": "second"})
            await first.send(theirs, {"i": i, "from": "first"})
        same(await harness.receive_many(first, mine, 10), numbered(10, **{"from": "second"}), f"on {mine!r}")
        same(await harness.receive_many(second, theirs, 10), numbered(10, **{"from": "first"}), f"on {theirs!r}")
        await asyncio.gather(nothing_on(harness, first, [mine]), nothing_on(harness, second, [theirs]))

    @check("R-MULTI-3", "shares_state", "groups")
    async def test_r_multi_3_groups_shared(self, harness: Harness) -> None:
        """R-MULTI-3: members added through either instance get sends from either; discards apply to both."""
        first, second = await harness.layer(), await harness.layer()
        group, named = harness.name("group"), harness.name("member")
        mine, theirs = await harness.new_channel(first), await harness.new_channel(second)
        await first.group_add(group, mine)
        await second.group_add(group, theirs)
        # A named member added through one instance, read through the other (when named channels keep a backlog).
        named_readers = [(first, named)] if harness.can("named_backlog") else []
        if named_readers:
            await second.group_add(group, named)
        await first.group_send(group, {"round": 1})
        for layer, channel in ((first, mine), (second, theirs), *named_readers):
            same(await harness.receive(layer, channel), {"round": 1}, f"group message on {channel!r}")
        # Discarding another instance's local channel needs foreign_members; else its owner discards it.
        discarder = second if harness.can("foreign_members") else first
        await discarder.group_discard(group, mine)
        await second.group_send(group, {"round": 2})
        for layer, channel in ((second, theirs), *((second, named) for _ in named_readers)):
            same(await harness.receive(layer, channel), {"round": 2}, f"group message on {channel!r}")
        await harness.expect_nothing(first, mine, "it was discarded from the group")

    @check("R-MULTI-4", "shares_state", "capacity", "named_backlog")
    async def test_r_multi_4_capacity_across_instances(self, harness: Harness) -> None:
        """R-MULTI-4: 20 concurrent sends from two instances to a channel of capacity 5: exactly 5 succeed."""
        first, second = await harness.layer(capacity=5), await harness.layer(capacity=5)
        channel = harness.name("shared-capacity")
        sends = [layer.send(channel, {"i": i}) for i in range(10) for layer in (first, second)]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException) and not is_full(first, o)]
        assert not errors, f"sends failed with {errors[0]!r}"
        stored = sum(o is None for o in outcomes)
        assert stored == 5, f"{stored} of 20 concurrent sends succeeded on a channel of capacity 5"
        await harness.receive_many(second, channel, 5)
        await harness.expect_nothing(first, channel, "only 5 sends succeeded")

    @check("R-MULTI-5", "process_target")
    async def test_r_multi_5_real_second_process(self, harness: Harness) -> None:
        """R-MULTI-5: another OS process echoes messages sent to its local channel, a named channel and a group."""
        layer = await harness.layer()
        mine, named, group = await harness.new_channel(layer), harness.name("process"), harness.name("process-group")
        grouped = PROCESS_MESSAGES if "groups" in harness.extensions else 0
        child = await _start_child(harness, mine, named, group if grouped else None, grouped)
        try:
            hello = await harness.receive(layer, mine, wait=harness.knobs.timeout / 2)
            theirs = hello["channel"]
            await send_numbered(layer, theirs, PROCESS_MESSAGES, via="local")
            await send_numbered(layer, named, PROCESS_MESSAGES, via="named")
            for message in numbered(grouped, via="group"):
                await layer.group_send(group, message)
            echoes = await harness.receive_many(layer, mine, 2 * PROCESS_MESSAGES + grouped)
            for via, count in (("local", PROCESS_MESSAGES), ("named", PROCESS_MESSAGES), ("group", grouped)):
                expected = [{**m, "echo": True} for m in numbered(count, via=via)]
                same([m for m in echoes if m.get("via") == via], expected, f"echoes of the {via} messages")
            status = await asyncio.wait_for(child.wait(), harness.knobs.receive_wait)
            assert status == 0, f"the second process exited with {status}: {await _stderr(child)}"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe second process's stderr:\n{await _stderr(child)}") from None
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def _start_child(
    harness: Harness, reply_to: str, named: str, group: str | None, grouped: int
) -> asyncio.subprocess.Process:
    knobs = harness.knobs
    arguments = {
        "target": knobs.process_target, "config": dict(knobs.process_config), "reply_to": reply_to,
        "named": named, "named_count": PROCESS_MESSAGES, "count": PROCESS_MESSAGES, "group": group,
        "grouped": grouped, "timeout": knobs.timeout, "settle": knobs.settle,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spec._child", json.dumps(arguments),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )


async def _stderr(child: asyncio.subprocess.Process) -> str:
    """The second process's error output: killed first if it still runs, so that what it said can be read."""
    if child.returncode is None:
        child.kill()
        await child.wait()
    if child.stderr is None:
        return "(not captured)"
    text = (await child.stderr.read()).decode(errors="replace").strip()
    return text[-6000:] or "(empty)"
