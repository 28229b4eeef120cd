"""Several real processes on one server: competing readers of a named channel, concurrent group churn.

* Four worker processes read one named channel: every message is delivered exactly once across them.
* Four processes add, discard and send to groups concurrently on their own channels: afterwards one
  ``group_send`` per group reaches exactly the channels whose last operation was an add.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from .conftest import Target, Workers

WORKERS = 4
MESSAGES = 2000


def test_named_channel_readers_get_each_message_once(server_target: Target, record: Any) -> None:
    url = server_target.url(capacity=MESSAGES + 10)

    async def main() -> dict[str, Any]:
        layer = server_target.layer(capacity=MESSAGES + 10)
        workers = Workers("named", [url] * WORKERS, ["readers.work"])
        try:
            for _ in range(WORKERS):
                await asyncio.wait_for(layer.receive("ready"), 120)
            started = time.monotonic()
            await asyncio.gather(*(layer.send("readers.work", {"seq": seq}) for seq in range(MESSAGES)))
            for _ in range(WORKERS):  # FIFO: each worker takes one stop after everything before it
                await layer.send("readers.work", {"stop": True})
            results = await asyncio.get_running_loop().run_in_executor(None, workers.results)
            seconds = time.monotonic() - started
        finally:
            workers.kill()
        got = [seq for result in results for seq in result["got"]]
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} message(s) delivered twice"
        assert sorted(got) == list(range(MESSAGES)), f"lost: {sorted(set(range(MESSAGES)) - set(got))[:10]}"
        for result in results:  # each reader sees its share in the order sent
            assert result["got"] == sorted(result["got"]), f"worker {result['worker']} got messages out of order"
        return {"workers": WORKERS, "messages": MESSAGES, "per_worker": [len(r["got"]) for r in results],
                "seconds": seconds}

    record("named-channel readers", server_target.name, **asyncio.run(main()))


def test_concurrent_group_churn_ends_consistent(server_target: Target, record: Any) -> None:
    groups, channels, ops = 8, 16, 400
    seed = random.SystemRandom().randrange(1, 2**31)
    url = server_target.url(capacity=100_000)

    async def main() -> dict[str, Any]:
        layer = server_target.layer(capacity=100_000)
        workers = Workers("groups", [url] * WORKERS, [str(seed), str(groups), str(channels), str(ops)])
        try:
            members: dict[str, list[str]] = {}
            for _ in range(WORKERS):
                done = await asyncio.wait_for(layer.receive("done"), 180)
                members.update(done["members"])
            for group in range(groups):
                await layer.group_send(f"churn{group}", {"final": f"churn{group}"})
            for channel in members:
                await layer.send(channel, {"end": True})
            results = await asyncio.get_running_loop().run_in_executor(None, workers.results)
        finally:
            workers.kill()
        received = {channel: got for result in results for channel, got in result["received"].items()}
        assert received.keys() == members.keys()
        wrong = {channel: (sorted(received[channel]), members[channel])
                 for channel in members if sorted(received[channel]) != members[channel]}
        assert not wrong, f"{len(wrong)} channel(s) whose final group messages do not match: {list(wrong.items())[:3]}"
        assert getattr(layer, "group_drops", 0) == 0
        return {"seed": seed, "processes": WORKERS, "channels": len(members),
                "memberships": sum(len(g) for g in members.values()), "deliveries": sum(map(len, received.values()))}

    record("group churn", server_target.name, **asyncio.run(main()))
