"""Cross-process workloads: real worker processes receive while this process sends.

Workers report over their stdout as JSON lines (so the measurement never depends on the layer under test being
able to carry results); wall-clock times compare across processes of one machine.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from .targets import Target, make_target
from .workloads import NOT_APPLICABLE, Result, close_layer

__all__ = ["cross_process_fan_out", "cross_process_latency", "worker_main"]


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: object) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "layers.bench.procs", *map(str, args),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(process)

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"worker exited: {error[-1] if error else 'no output'}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"worker failed: {answer['error']}")
        return answer

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def cross_process_fan_out(target: Target, count: int, *, name: str, workers: int = 4,
                                members: int = 250) -> Result:
    """``workers`` processes x ``members`` process channels in one group; this process only sends."""
    result = Result(name, target.name)
    if not target.cross_process:
        return _in_process_only(result)
    # At least 10 group_sends: with fewer, process start-up effects decide the figure (5 sends: 87k deliveries/s,
    # 10 sends: 242k, for the same layer in one run), and channels_redis's ~41k needs 10 to show.
    sends = max(10, count // (workers * members))
    group = f"bench-fan-{time.monotonic_ns()}"
    procs = [await _Worker.start("fan-out", target.spec, target.prefix, group, members, sends)
             for _ in range(workers)]
    layer = target.factory(capacity=sends + 10, expiry=300)
    try:
        for worker in procs:
            await worker.read(60)  # joined the group and receiving
        started = time.time()
        for i in range(sends):
            await layer.group_send(group, {"type": "bench", "n": i})
        finished = [(await worker.read(120))["finished"] for worker in procs]
        result.seconds = max(finished) - started
        result.messages = sends * workers * members
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await close_layer(layer)
        for worker in procs:
            await worker.stop()
    return result


async def cross_process_latency(target: Target, count: int, *, name: str, size: int = 100, pace: float = 0.0005,
                                named: bool = False) -> Result:
    """One message at a time to a channel a worker process receives on; p50/p99 of send-to-receive time.

    ``pace`` seconds between sends measures latency, not queueing; with ``pace=0`` the rate is the cross-process
    send+receive throughput (from the first send to the worker's last receive).
    """
    result = Result(name, target.name)
    if not target.cross_process:
        return _in_process_only(result)
    samples = min(count, 2000) if pace else count
    channel = f"bench.xproc.{time.monotonic_ns()}" if named else "-"
    worker = await _Worker.start("latency", target.spec, target.prefix, samples, channel)
    layer = target.factory(capacity=samples + 10, expiry=300)
    try:
        channel = (await worker.read(60))["channel"]
        body = b"x" * size
        started = time.time()
        for _ in range(samples):
            await layer.send(channel, {"type": "bench", "sent": time.time(), "body": body})
            if pace:
                await asyncio.sleep(pace)
        report = await worker.read(120)
        result.seconds = report["finished"] - started
        result.messages = samples
        result.extra = {"p50_ms": report["p50_ms"], "p99_ms": report["p99_ms"]}
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await close_layer(layer)
        await worker.stop()
    return result


def _in_process_only(result: Result) -> Result:
    result.error = NOT_APPLICABLE + "an in-process layer cannot reach another process"
    return result


# -- the worker side -----------------------------------------------------------------------------------------


def _say(**answer: Any) -> None:
    print(json.dumps(answer), flush=True)


async def _fan_out_worker(spec: str, prefix: str, group: str, members: int, sends: int) -> None:
    layer = make_target(spec, prefix).factory(capacity=sends + 10, expiry=300)
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)

    async def drain(channel: str) -> None:
        for _ in range(sends):
            await layer.receive(channel)

    drains = asyncio.gather(*(drain(c) for c in channels))
    await asyncio.sleep(0.2)  # let every receive() register before the sender starts
    _say(ready=True)
    await drains
    _say(finished=time.time())
    for channel in channels:
        await layer.group_discard(group, channel)
    await close_layer(layer)


async def _latency_worker(spec: str, prefix: str, samples: int, channel: str) -> None:
    layer = make_target(spec, prefix).factory(capacity=samples + 10, expiry=300)
    if channel == "-":
        channel = await layer.new_channel()
    first = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.2)
    _say(channel=channel)
    latencies = []
    for i in range(samples):
        message = await (first if i == 0 else layer.receive(channel))
        latencies.append((time.time() - message["sent"]) * 1000)
    finished = time.time()
    latencies.sort()
    _say(finished=finished, p50_ms=round(statistics.median(latencies), 3),
         p99_ms=round(latencies[int(len(latencies) * 0.99) - 1], 3))
    await close_layer(layer)


def worker_main(argv: list[str]) -> None:
    role, spec, prefix, *rest = argv
    try:
        if role == "fan-out":
            asyncio.run(_fan_out_worker(spec, prefix, rest[0], int(rest[1]), int(rest[2])))
        elif role == "latency":
            asyncio.run(_latency_worker(spec, prefix, int(rest[0]), rest[1]))
        else:
            raise ValueError(f"unknown worker role {role!r}")
    except Exception as exc:
        _say(error=f"{type(exc).__name__}: {exc}"[:300])


if __name__ == "__main__":
    worker_main(sys.argv[1:])
