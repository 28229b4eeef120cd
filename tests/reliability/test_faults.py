"""Faults: a private server is killed, frozen or restarted while a producer and a consumer run.

For every server backend and every fault its conftest offers, the scenario asserts:

* no call hangs: every ``send``, ``group_add`` and ``group_send`` during the outage returns or raises within
  ``timeout`` + grace;
* the same layer objects recover within 10 s of the server being back (nothing is rebuilt);
* receives pending since before the fault (a process channel and a named channel) resume;
* every message whose ``send`` returned after recovery arrives, in order; nothing arrives twice or out of order;
* where the fault keeps the server's data (PostgreSQL crash with ``durable=True``, clean restarts, freezes),
  every message stored unread before the fault survives it; on PostgreSQL crashes and restarts nothing whose
  ``send`` returned is lost at all; in a freeze, a pop the server runs after the client gave up on it loses
  what it popped (at-most-once: never redelivered, so never duplicated), which the figures count as ``lost``.

The figures (how long calls took to fail, recovery times, counts) are recorded for the session summary.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from layers import BackendUnavailable, BaseChannelLayer, ChannelFull

from .conftest import FAULT_GRACE, FAULT_TIMEOUT, RECOVERY_LIMIT, Fault, Target

pytestmark = pytest.mark.fault

HANG_BOUND = FAULT_TIMEOUT + FAULT_GRACE  # a call taking longer than this counts as hung
OUTAGE = 2 * FAULT_TIMEOUT + 1  # seconds the server stays broken: calls must time out, more than once
SEND_EVERY = 0.01  # producer pace per stream (seconds between sends)
BACKLOG = 50  # messages waiting unread on the server when the fault hits
IN_FLIGHT = 10  # messages readers may be fetching when a freeze hits (at-most-once: lost if the pop times out)


@dataclass
class Stream:
    """One channel's traffic: what the producer got an answer for and what the consumer received."""

    channel: str
    next_seq: int = 0
    sent: list[tuple[int, float]] = field(default_factory=list)  # (seq, send start) for sends that returned
    failed: list[int] = field(default_factory=list)  # seqs whose send raised BackendUnavailable (outcome unknown)
    received: list[tuple[int, float]] = field(default_factory=list)  # (seq, time received)


@dataclass
class Calls:
    """Durations of calls during the scenario, split by outcome."""

    failed: list[tuple[float, float]] = field(default_factory=list)  # (start, duration) of BackendUnavailable
    hung: list[float] = field(default_factory=list)  # starts of calls that took longer than HANG_BOUND
    other: list[str] = field(default_factory=list)  # unexpected exceptions
    full: int = 0  # ChannelFull answers (not stored, certainly)


async def _timed(calls: Calls, call: Any) -> bool:
    """Await ``call``; True if it returned.  Records failures, and hangs (cut off at HANG_BOUND + 5 s)."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(call, HANG_BOUND + 5)
    except BackendUnavailable:
        calls.failed.append((started, time.monotonic() - started))
        return False
    except ChannelFull:  # the consumer's reader reconnects a little after the producer: a legitimate answer
        calls.full += 1
        return False
    except asyncio.TimeoutError:
        calls.hung.append(started)
        return False
    except Exception as exc:
        calls.other.append(f"{type(exc).__name__}: {exc}")
        return False
    finally:
        if time.monotonic() - started > HANG_BOUND:
            calls.hung.append(started)
    return True


async def _produce(layer: BaseChannelLayer, streams: list[Stream], calls: Calls, stop: asyncio.Event) -> None:
    rounds = 0
    while not stop.is_set():
        rounds += 1
        if rounds % 10 == 0:  # the group calls must not hang either (their sink is never read)
            await _timed(calls, layer.group_add("faults.group", "faults.sink"))
            await _timed(calls, layer.group_send("faults.group", {"seq": -3}))
        for stream in streams:
            seq, stream.next_seq = stream.next_seq, stream.next_seq + 1
            started = time.monotonic()
            if await _timed(calls, layer.send(stream.channel, {"seq": seq})):
                stream.sent.append((seq, started))
            else:
                stream.failed.append(seq)
                await asyncio.sleep(0.1)  # a real producer backs off too
        await asyncio.sleep(SEND_EVERY)


async def _consume(layer: BaseChannelLayer, stream: Stream) -> None:
    while True:
        message = await layer.receive(stream.channel)
        stream.received.append((message["seq"], time.monotonic()))


async def _until(condition: Any, limit: float, what: str) -> float:
    """Wait until ``condition()`` holds; return when it did (monotonic), or fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {limit}s")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def _drain(layer: BaseChannelLayer, channel: str) -> list[int]:
    """Receive from ``channel`` until it stays empty for a second."""
    seqs = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 1.0)
        except asyncio.TimeoutError:
            return seqs
        seqs.append(message["seq"])


def _check_stream(stream: Stream) -> None:
    seqs = [seq for seq, _ in stream.received]
    assert len(seqs) == len(set(seqs)), f"{stream.channel}: duplicated deliveries"
    assert seqs == sorted(seqs), f"{stream.channel}: out of order: {seqs}"


async def _scenario(target: Target, fault: Fault) -> dict[str, Any]:
    options = {"timeout": FAULT_TIMEOUT, **fault.options}
    producer, consumer = target.layer(**options), target.layer(**options)
    streams = [Stream("faults.work"), Stream(await consumer.new_channel())]
    idle_local = await consumer.new_channel()
    pending = [asyncio.ensure_future(consumer.receive(idle_local)),
               asyncio.ensure_future(consumer.receive("faults.idle"))]
    calls = Calls()
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(_consume(consumer, stream)) for stream in streams]
    tasks.append(asyncio.ensure_future(_produce(producer, streams, calls, stop)))
    loop = asyncio.get_running_loop()
    try:
        await _until(lambda: all(len(s.received) >= 20 for s in streams), 30, "warm-up traffic")
        for seq in range(BACKLOG):  # stored, nobody reads them until the server is back
            await producer.send("faults.backlog", {"seq": seq})

        broke = time.monotonic()
        await loop.run_in_executor(None, fault.begin)
        await asyncio.sleep(OUTAGE)
        await loop.run_in_executor(None, fault.end)
        back = time.monotonic()

        def sent_after_back() -> bool:
            return all(any(started >= back for _, started in s.sent) for s in streams)

        send_ok = await _until(sent_after_back, RECOVERY_LIMIT, "a successful send after the server came back")
        first_after = {s.channel: next(seq for seq, started in s.sent if started >= back) for s in streams}
        receive_ok = await _until(
            lambda: all(any(seq >= first_after[s.channel] for seq, _ in s.received) for s in streams),
            RECOVERY_LIMIT, "a delivery of a message sent after the server came back")
        await asyncio.sleep(1.0)  # traffic after recovery
        stop.set()
        await tasks[-1]
        for stream in streams:  # everything sent from the recovery point on must arrive
            wanted = {seq for seq, started in stream.sent if seq >= first_after[stream.channel]}
            await _until(lambda s=stream, w=wanted: w <= {seq for seq, _ in s.received}, RECOVERY_LIMIT,
                         f"delivery of every message sent to {stream.channel} after recovery")

        await producer.send(idle_local, {"seq": -1})
        await producer.send("faults.idle", {"seq": -2})
        done, _ = await asyncio.wait(pending, timeout=RECOVERY_LIMIT)
        assert len(done) == 2, "a receive() pending since before the fault did not resume"
        assert [task.result() for task in pending] == [{"seq": -1}, {"seq": -2}]
        backlog = await _drain(consumer, "faults.backlog")
        await asyncio.sleep(0.3)  # late duplicates would show up now
    finally:
        stop.set()
        for task in tasks + pending:
            task.cancel()
        await asyncio.gather(*tasks, *pending, return_exceptions=True)

    assert not calls.other, f"unexpected errors: {calls.other[:5]}"
    assert not calls.hung, f"{len(calls.hung)} call(s) took longer than {HANG_BOUND}s"
    for stream in streams:
        _check_stream(stream)
    during = [duration for started, duration in calls.failed if started >= broke]
    lost = {s.channel: {seq for seq, _ in s.sent} - {seq for seq, _ in s.received} for s in streams}
    assert backlog == sorted(set(backlog)), f"backlog duplicated or reordered: {backlog}"
    if fault.strict:
        assert not any(lost.values()), f"messages whose send returned were lost: {lost}"
    elif fault.keeps_stored:  # only what a reader was fetching as the fault hit may be gone
        in_flight = sum(len(v) for v in lost.values())
        assert in_flight <= IN_FLIGHT, f"more messages lost than readers could have had in flight: {lost}"
    if fault.keeps_stored:
        assert backlog == list(range(BACKLOG)), f"stored messages were lost: {backlog}"
    return {
        "failed_calls": len(during),  # sends, group_adds and group_sends that raised BackendUnavailable
        "fail_median_s": statistics.median(during) if during else 0.0,
        "fail_max_s": max(during) if during else 0.0,
        "recover_send_s": send_ok - back,
        "recover_receive_s": receive_ok - back,
        "sent": sum(len(s.sent) for s in streams),
        "received": sum(len(s.received) for s in streams),
        "lost": sum(len(v) for v in lost.values()),
        "backlog_lost": f"{BACKLOG - len(backlog)}/{BACKLOG}",
        "full": calls.full,
        "unknown_outcome": sum(len(s.failed) for s in streams) - calls.full,
        "unknown_delivered": sum(len(set(s.failed) & {seq for seq, _ in s.received}) for s in streams),
    }


def test_fault(fault_case: tuple[Target, Fault], record: Any) -> None:
    target, fault = fault_case
    figures = asyncio.run(_scenario(target, fault))
    record("faults", f"{target.name}/{fault.name}", **figures)
