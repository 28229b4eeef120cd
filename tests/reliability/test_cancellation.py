"""Cancellation storm: thousands of ``receive()`` calls cancelled at random moments while messages flow.

The spec suite checks a few cancellations; this is the heavy, seeded-random version on every backend, for a
named channel and a process-local one.  Each receive is cancelled immediately, after a random number of event
loop iterations or after a random short time, or let finish.  Whatever happens, every message arrives exactly
once, in the order it was sent.  ``LAYERS_STORM_SEED`` replays a run (the seed is printed in the figures).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from typing import Any

import pytest

from layers import BaseChannelLayer, ChannelFull

from .conftest import Target

MESSAGES = 2000
SEED = int(os.environ.get("LAYERS_STORM_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)


async def _produce(layer: BaseChannelLayer, channel: str, rng: random.Random) -> int:
    """Send 0..MESSAGES-1 in random bursts; a full channel is retried with the same number (it was not stored)."""
    full = 0
    seq = 0
    while seq < MESSAGES:
        for _ in range(rng.randint(1, 20)):
            if seq == MESSAGES:
                break
            try:
                await layer.send(channel, {"seq": seq})
            except ChannelFull:
                full += 1
                await asyncio.sleep(0.005)
                continue
            seq += 1
        await asyncio.sleep(rng.uniform(0, 0.002))
    return full


async def _cancel_at_random(task: asyncio.Task[Any], rng: random.Random) -> None:
    moment = rng.random()
    if moment < 0.25:
        pass  # before the receive even starts
    elif moment < 0.6:
        for _ in range(rng.randint(1, 8)):  # somewhere inside the receive's first steps
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.uniform(0, 0.004))
    task.cancel()


async def _storm(receiver: BaseChannelLayer, channel: str, rng: random.Random) -> tuple[list[int], int, int]:
    """Receive until every message came; return them, how many receives ended cancelled, and how many cancels
    were attempted (a cancel that comes too late leaves the receive with its message, which must be kept)."""
    got: list[int] = []
    cancelled = attempts = 0
    while len(got) < MESSAGES:
        task = asyncio.ensure_future(receiver.receive(channel))
        if rng.random() < 0.9:
            attempts += 1
            await _cancel_at_random(task, rng)
        try:
            message = await asyncio.wait_for(task, 30)
        except asyncio.CancelledError:
            cancelled += 1
            continue
        got.append(message["seq"])
    return got, cancelled, attempts


@pytest.mark.parametrize("kind", ["named", "local"])
def test_cancellation_storm(target: Target, kind: str, record: Any) -> None:
    rng = random.Random(f"{SEED}-{target.name}-{kind}")

    async def main() -> dict[str, Any]:
        sender, receiver = target.layer(), target.layer()
        channel = await receiver.new_channel() if kind == "local" else f"storm.{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        producer = asyncio.ensure_future(_produce(sender, channel, random.Random(rng.random())))
        try:
            got, cancelled, attempts = await _storm(receiver, channel, rng)
            full = await producer
        finally:
            producer.cancel()
        seconds = time.monotonic() - started
        assert len(got) == len(set(got)), f"duplicates: {len(got) - len(set(got))}"
        assert got == list(range(MESSAGES)), "lost or reordered: first differences " + str(
            [(i, seq) for i, seq in enumerate(got) if seq != i][:5])
        with pytest.raises(asyncio.TimeoutError):  # nothing left over, nothing delivered twice
            await asyncio.wait_for(receiver.receive(channel), 0.5)
        return {"seed": SEED, "messages": MESSAGES, "cancel_attempts": attempts, "cancelled": cancelled,
                "full_retries": full,
                "seconds": seconds}

    figures = asyncio.run(main())
    record("cancellation storm", f"{target.name}/{kind}", **figures)
