"""AMQP layer vs channels_rabbitmq, side by side on the same RabbitMQ in one run, plus the raw pika baseline.

    .venv/bin/python benchmarks/amqp_vs_peers.py [-n 5000] [--rounds 3] [--url amqp://...] [--json F]

Workloads are the shared ones of ``layers.bench``: ``process`` (one producer awaiting each send to a process
channel), ``producers-100`` (100 concurrent producers -> one consumer), ``named`` (channels_rabbitmq refuses named
channels) and ``group-100`` (group_send to 100 members; deliveries/s).  Rounds alternate the targets so the noise
of a shared machine hits both alike; the best round of each is reported, with the ratio and the issue's target.

``raw pika`` is the floor of the ``process`` workload: the asyncio adapter publishing one message at a time and
awaiting its confirm while a consumer on the same connection receives it (no layer at all).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
GOALS = {"process": 1.1, "producers-100": 2.0, "group-100": 1.0}  # ours / channels_rabbitmq (issue 5)


async def raw_pika(url: str, count: int) -> float:
    """Sequential publish + confirm + consume with pika's asyncio adapter, through the layer's own Link."""
    import pika

    from layers_amqp.connection import Link

    link = Link(pika.URLParameters(url), "bench", 10.0)
    await link.ready()
    queue = f"bench.raw.{time.monotonic_ns()}"
    await link.declare(queue, {"x-expires": 60_000})
    received = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(*_: object) -> None:
        nonlocal received
        received += 1
        if received == count and not done.done():
            done.set_result(None)

    await link.consume(queue, on_message)
    started = time.perf_counter()
    for _ in range(count):
        await link.publish("", queue, b"x" * 60, None, True)
    await done
    rate = count / (time.perf_counter() - started)
    await link.delete(queue)
    await link.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="the RabbitMQ both layers use")
    parser.add_argument("-n", "--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", action="append", default=[])
    parser.add_argument("--json")
    parser.add_argument("--no-peer", action="store_true", help="only our layer")
    args = parser.parse_args(argv)

    from rich.console import Console

    from layers.bench import Target, make_target, report
    from layers_amqp import AMQPChannelLayer

    url = args.url
    ours = Target("layers_amqp", lambda **options: AMQPChannelLayer(url, prefix="bench_amqp", **options), url)
    targets = [ours] if args.no_peer else [ours, make_target(f"channels_rabbitmq={url}")]
    workloads = args.workload or ["process", "producers-100", "named", "group-100"]
    console = Console()
    raw = max(asyncio.run(raw_pika(url, min(args.messages, 3000))) for _ in range(args.rounds))
    results = report.run_rounds(targets, workloads, args.messages, args.rounds, console)
    raw_after = max(asyncio.run(raw_pika(url, min(args.messages, 3000))) for _ in range(args.rounds))
    best = report.best_results(results)
    console.print(report.render_table(best, targets, workloads))
    by_key = {(r.workload, r.target): r for r in best}
    console.print(f"raw pika, one confirmed publish at a time + consume: {raw:,.0f} msgs/s before the layers, "
                  f"{raw_after:,.0f} after")
    process = by_key.get(("process", "layers_amqp"))
    if process is not None and not process.error:
        console.print(f"layers_amqp process / raw pika: {process.rate / max(raw, raw_after):.2f}")
    for workload, goal in GOALS.items():
        mine, peer = by_key.get((workload, "layers_amqp")), by_key.get((workload, "channels_rabbitmq"))
        if mine and peer and not mine.error and not peer.error and peer.rate:
            ratio = mine.rate / peer.rate
            verdict = "meets" if ratio >= goal else "MISSES"
            console.print(f"{workload}: {ratio:.2f}x channels_rabbitmq ({verdict} the {goal}x goal)")
    if args.json:
        import json

        with open(args.json, "w") as out:
            json.dump({"raw_pika": [raw, raw_after], "best": [r.as_dict() for r in best],
                       "all": [r.as_dict() for r in results]}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
