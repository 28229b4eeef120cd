"""Traffic under a failover: producers, consumers, group sends and pending receives, with what each call did.

:func:`run_failover` runs steady traffic between two layer instances (a producer and a consumer, like two
processes), calls ``fault`` in a thread while it runs (``fault`` breaks a node, waits until the cluster serves
again on its own and returns both instants), keeps the traffic going until every stream has recovered, then
drains and returns a :class:`Report`: when each stream recovered, what was lost, hung, duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from layers import BackendUnavailable, BaseChannelLayer, ChannelFull

SEND_EVERY = 0.02  # seconds between two sends of one stream
GRACE = 3.0  # a call taking longer than the layer's timeout + GRACE counts as hung
AFTER_RECOVERY = 2.0  # seconds of traffic once every stream is back
RECOVERY_LIMIT = 30.0  # seconds after the cluster's own recovery before a stream that never came back fails the test


@dataclass
class Stream:
    """One destination (a channel, or a group) and one writer: what was sent, what failed, what arrived."""

    name: str
    affected: bool  # lives on the node that is killed
    group: bool = False
    members: list[str] = field(default_factory=list)
    sent: list[tuple[int, float, float]] = field(default_factory=list)  # (seq, start, end) of calls that returned
    failed: list[tuple[int, float, float]] = field(default_factory=list)  # calls that raised BackendUnavailable
    full: int = 0  # sends answered ChannelFull (a reader that came back later than the writer): not stored
    received: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # receiver channel -> (seq, time)
    #: Group members whose membership the failover took away (it lived on the dead node): left out of the
    #: recovery and loss counts, which the test reports on its own.
    lost_members: set[str] = field(default_factory=set)

    def receivers(self) -> list[str]:
        return [m for m in self.members if m not in self.lost_members] if self.group else [self.name]


@dataclass
class Report:
    killed_at: float
    cluster_recovered_at: float
    streams: list[Stream]
    hung: list[str]
    unexpected: list[str]
    receive_errors: int
    pending_resumed: dict[str, float]  # idle channel -> seconds from the send to it until its pending receive returned
    idle: list[str] = field(default_factory=list)

    @property
    def cluster_recovery(self) -> float:
        return self.cluster_recovered_at - self.killed_at

    def recovered_at(self, stream: Stream) -> float | None:
        """When the first message sent (started) after the kill reached every receiver of ``stream``."""
        after = [seq for seq, start, _end in stream.sent if start >= self.killed_at]
        if not stream.receivers():  # every member lost its membership: nothing left to recover
            return self.killed_at
        arrivals = []
        for channel in stream.receivers():
            times = [at for seq, at in stream.received.get(channel, []) if seq in set(after)]
            if not times:
                return None
            arrivals.append(min(times))
        return max(arrivals) if arrivals else None

    def layer_recovery(self) -> float:
        """Seconds from the kill until every affected stream delivered again."""
        times = [self.recovered_at(stream) for stream in self.streams if stream.affected]
        if not times or any(t is None for t in times):
            return float("inf")  # check() names the streams
        return max(t for t in times if t is not None) - self.killed_at

    def never_recovered(self) -> list[str]:
        return [stream.name for stream in self.streams if self.recovered_at(stream) is None]

    def lost(self, stream: Stream, start_after: float = 0.0, start_before: float = float("inf")) -> int:
        """Calls that returned (started in the window) whose message did not reach every receiver."""
        wanted = {seq for seq, start, _end in stream.sent if start_after <= start < start_before}
        missing = 0
        for channel in stream.receivers():
            got = {seq for seq, _at in stream.received.get(channel, [])}
            missing += len(wanted - got)
        return missing

    def duplicates_or_reordered(self) -> list[str]:
        problems = []
        for stream in self.streams:
            for channel in stream.receivers():
                seqs = [seq for seq, _at in stream.received.get(channel, [])]
                if seqs != sorted(set(seqs)):
                    problems.append(f"{stream.name} -> {channel}: {seqs[:50]}")
        return problems

    def figures(self) -> dict[str, Any]:
        affected = [s for s in self.streams if s.affected]
        recovered = self.killed_at + self.layer_recovery()
        return {
            "cluster_recovery_s": round(self.cluster_recovery, 2),
            "layer_recovery_s": round(self.layer_recovery(), 2),
            "lag_behind_cluster_s": round(self.layer_recovery() - self.cluster_recovery, 2),
            "sent": sum(len(s.sent) for s in self.streams),
            "failed_calls": sum(len(s.failed) for s in self.streams),
            "channel_full": sum(s.full for s in self.streams),
            "longest_failed_call_s": round(max((end - start for s in self.streams for _q, start, end in s.failed),
                                               default=0.0), 2),
            "lost_sent_before_kill": sum(self.lost(s, start_before=self.killed_at) for s in affected),
            "lost_during_outage": sum(self.lost(s, self.killed_at, recovered) for s in self.streams),
            "lost_after_recovery": sum(self.lost(s, start_after=recovered) for s in self.streams),
            "lost_unaffected_streams": sum(self.lost(s) for s in self.streams if not s.affected),
            "pending_resumed_s": {k: round(v, 2) for k, v in self.pending_resumed.items()},
            "never_recovered": self.never_recovered(),
            "lost_by_stream": {s.name: self.lost(s) for s in self.streams if self.lost(s)},
            "receive_errors": self.receive_errors,
        }


async def run_failover(producer: BaseChannelLayer, consumer: BaseChannelLayer, streams: list[Stream],
                       idle: list[str], fault: Callable[[], tuple[float, float]], timeout: float,
                       warmup: float = 1.0) -> Report:
    """Run the traffic, ``fault()`` in a thread after ``warmup`` seconds, and return what happened.

    ``idle`` channels have a receive pending from before the fault and one message sent to them afterwards."""
    hung: list[str] = []
    unexpected: list[str] = []
    receive_errors = 0
    running = True
    hang_bound = timeout + GRACE
    by_name = {s.name: s for s in streams}

    async def call(what: str, stream: Stream, seq: int, awaitable: Any) -> None:
        start = time.monotonic()
        try:
            await asyncio.wait_for(awaitable, hang_bound + 5)
        except BackendUnavailable:
            stream.failed.append((seq, start, time.monotonic()))
            await asyncio.sleep(SEND_EVERY)
            return
        except ChannelFull:
            stream.full += 1
            return
        except asyncio.TimeoutError:
            hung.append(f"{what} {stream.name} #{seq} started {start - t0:.2f}s")
            return
        except Exception as exc:
            unexpected.append(f"{what} {stream.name}: {type(exc).__name__}: {exc}")
            return
        end = time.monotonic()
        if end - start > hang_bound:
            hung.append(f"{what} {stream.name} #{seq} took {end - start:.2f}s")
        stream.sent.append((seq, start, end))

    async def produce(stream: Stream) -> None:
        seq = 0
        while running:
            message = {"stream": stream.name, "seq": seq}
            if stream.group:
                await call("group_send", stream, seq, producer.group_send(stream.name, message))
            else:
                await call("send", stream, seq, producer.send(stream.name, message))
            seq += 1
            await asyncio.sleep(SEND_EVERY)

    async def consume(channel: str) -> None:
        nonlocal receive_errors
        while True:
            try:
                message = await consumer.receive(channel)
            except BackendUnavailable:
                receive_errors += 1
                await asyncio.sleep(0.05)
                continue
            stream = by_name.get(message.get("stream", ""))
            if stream is None:
                unexpected.append(f"receive {channel}: stray {message!r}")
                continue
            stream.received.setdefault(channel, []).append((message["seq"], time.monotonic()))

    pending_resumed: dict[str, float] = {}
    idle_sent: dict[str, float] = {}

    async def pending(channel: str) -> None:
        message = await consumer.receive(channel)
        assert message == {"idle": channel}, message
        pending_resumed[channel] = time.monotonic() - idle_sent[channel]

    t0 = time.monotonic()
    receivers = sorted({channel for s in streams for channel in s.receivers()})
    consumers = [asyncio.create_task(consume(channel)) for channel in receivers]
    waiting = [asyncio.create_task(pending(channel)) for channel in idle]
    producers = [asyncio.create_task(produce(stream)) for stream in streams]
    try:
        await asyncio.sleep(warmup)
        killed_at, cluster_recovered_at = await asyncio.to_thread(fault)
        report = Report(killed_at, cluster_recovered_at, streams, hung, unexpected, 0, pending_resumed, idle)
        deadline = cluster_recovered_at + RECOVERY_LIMIT
        while time.monotonic() < deadline:
            if all(report.recovered_at(s) is not None for s in streams):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(AFTER_RECOVERY)
        for channel in idle:  # receives pending since before the kill
            idle_sent[channel] = time.monotonic()
            with contextlib.suppress(BackendUnavailable):  # check() reports the receive that never returned
                await _send_until_accepted(producer, channel, {"idle": channel}, deadline)
        await asyncio.wait(waiting, timeout=15)
    finally:
        running = False
        await asyncio.gather(*producers, return_exceptions=True)
        await _drained(streams, consumers)
        for task in [*consumers, *waiting]:
            task.cancel()
        await asyncio.gather(*consumers, *waiting, return_exceptions=True)
    report.receive_errors = receive_errors
    return report


async def _send_until_accepted(layer: BaseChannelLayer, channel: str, message: dict[str, Any],
                               deadline: float) -> None:
    while True:
        try:
            await layer.send(channel, message)
            return
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _drained(streams: list[Stream], consumers: list[asyncio.Task[None]], quiet: float = 1.0,
                   limit: float = 15.0) -> None:
    """Until nothing has arrived for ``quiet`` seconds (at most ``limit``)."""
    deadline = time.monotonic() + limit

    def count() -> int:
        return sum(len(got) for s in streams for got in s.received.values())

    last, since = count(), time.monotonic()
    while time.monotonic() < deadline and any(not t.done() for t in consumers):
        await asyncio.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def check(report: Report) -> None:
    """What every failover test asserts, whatever the backend."""
    assert not report.hung, f"calls hung: {report.hung[:10]}"
    assert not report.unexpected, f"unexpected errors: {report.unexpected[:10]}"
    assert not report.duplicates_or_reordered(), report.duplicates_or_reordered()
    assert not report.never_recovered(), f"never delivered again after the failover: {report.never_recovered()}"
    assert set(report.pending_resumed) == set(report.idle), f"pending receives that never returned: {report.idle}"
    recovered = report.killed_at + report.layer_recovery()
    lost = {s.name: report.lost(s, start_after=recovered) for s in report.streams}
    assert not any(lost.values()), f"messages sent after recovery were lost: {lost}"

