"""Benchmark workloads that run against any layer with the Channels API (ours or a peer's).

``layers bench`` drives them (``report.py``); so does the pytest-benchmark suite in ``benchmarks/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from .procs import cross_process_fan_out, cross_process_latency
from .targets import PEERS, Target, make_target
from .workloads import Result, capacity_overload, group_fan_out, residue, send_receive

__all__ = ["DEFAULT_WORKLOADS", "PEERS", "WORKLOADS", "Result", "Target", "Workload", "make_target", "run_workload"]


@dataclass(frozen=True)
class Workload:
    run: Callable[[Target, int], Awaitable[Result]]
    doc: str
    unit: str = "msgs/s"


def _w(function: Callable[..., Awaitable[Result]], doc: str, unit: str = "msgs/s", **kwargs: object) -> Workload:
    return Workload(partial(function, **kwargs), doc, unit)


_TABLE: list[tuple[str, Callable[..., Awaitable[Result]], str, str, dict[str, object]]] = [
    ("process", send_receive, "send+receive, process channel, producer awaits each send", "msgs/s", {}),
    ("named", send_receive, "send+receive, named channel", "msgs/s", {"named": True}),
    ("producers-10", send_receive, "10 concurrent producers -> 1 consumer", "msgs/s", {"producers": 10}),
    ("producers-100", send_receive, "100 concurrent producers -> 1 consumer", "msgs/s", {"producers": 100}),
    ("named-rf", send_receive, "named channel, receive() started before the first send", "msgs/s",
     {"named": True, "receive_first": True}),
    ("process-rf", send_receive, "process channel, receive() started before the first send", "msgs/s",
     {"receive_first": True}),
    ("producers-100-rf", send_receive, "100 producers -> 1 consumer, receive() started first", "msgs/s",
     {"producers": 100, "receive_first": True}),
    ("group-10", group_fan_out, "group_send to 10 members", "deliveries/s", {"members": 10}),
    ("group-100", group_fan_out, "group_send to 100 members", "deliveries/s", {"members": 100}),
    ("group-1000", group_fan_out, "group_send to 1000 members", "deliveries/s", {"members": 1000}),
    ("size-100", send_receive, "process channel, 100 B bodies", "msgs/s", {"size": 100}),
    ("size-10k", send_receive, "process channel, 10 KB bodies", "msgs/s", {"size": 10_000}),
    ("size-500k", send_receive, "process channel, 500 KB bodies", "msgs/s", {"size": 500_000}),
    ("fanout-procs", cross_process_fan_out, "4 worker processes x 250 members, group_send from here",
     "deliveries/s", {}),
    ("latency", cross_process_latency, "send -> receive in another process (p50/p99 in extra)", "msgs/s", {}),
    ("process-xproc", cross_process_latency, "send+receive, process channel, consumer in another process",
     "msgs/s", {"pace": 0.0}),
    ("named-xproc", cross_process_latency, "send+receive, named channel, consumer in another process",
     "msgs/s", {"pace": 0.0, "named": True}),
    ("overload", capacity_overload, "producer 2x faster than consumer; accepted must equal delivered",
     "msgs/s", {}),
    ("residue", residue, "channels used once and drained; what stays behind", "msgs/s", {}),
]
WORKLOADS: dict[str, Workload] = {
    name: _w(function, doc, unit, name=name, **kwargs) for name, function, doc, unit, kwargs in _TABLE
}

# Large messages: fewer of them, so every workload takes seconds, not minutes.
SCALE = {"size-500k": 0.02, "residue": 1.0, "overload": 0.2, "latency": 0.2}
DEFAULT_WORKLOADS = ["process", "named", "producers-100", "group-100"]


async def run_workload(name: str, target: Target, count: int) -> Result:
    scaled = max(1, int(count * SCALE.get(name, 1.0)))
    return await WORKLOADS[name].run(target, scaled)
