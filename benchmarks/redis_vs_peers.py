"""Redis layer vs channels_redis (RedisChannelLayer and RedisPubSubChannelLayer), side by side in one run.

    .venv/bin/python benchmarks/redis_vs_peers.py [-n 5000] [--rounds 3] [--url redis://127.0.0.1:6379/0]
                                                   [--workload NAME ...] [--json FILE] [--no-shards]

Targets: our layer on the shared Redis, our layer over three private ``redis-server`` processes (started here on
free ports: consistent-hash sharding), channels_redis and its Pub/Sub layer on the shared Redis.  Workloads are the
shared ones of ``layers.bench`` (default: process, named, producers-100, group-100, group-1000, fanout-procs);
rounds alternate targets so machine noise hits all of them alike, and the best round of each is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: layers, tests.servers

from layers.bench import Result, make_target
from layers.bench.report import best_results, environment, run_rounds

DEFAULT_WORKLOADS = ["process", "named", "producers-100", "group-100", "group-1000", "fanout-procs"]
TARGETS = {  # short column name -> benchmark target spec ({url}, {shards} filled in)
    "ours": "{url}?prefix=bench_ours",
    "ours-3-shards": "redis://{shards}/0?prefix=bench_shards",
    "channels_redis": "channels_redis={url}",
    "channels_redis_pubsub": "channels_redis_pubsub={url}",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0", help="the shared Redis every target uses")
    parser.add_argument("-n", "--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", action="append", default=[])
    parser.add_argument("--json", help="write every round's results as JSON")
    parser.add_argument("--no-shards", action="store_true", help="skip the 3-shard target (no private servers)")
    args = parser.parse_args(argv)

    servers = [] if args.no_shards else _start_shards()
    try:
        shards = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        names = [name for name in TARGETS if servers or name != "ours-3-shards"]
        targets = [make_target(TARGETS[name].format(url=args.url, shards=shards)) for name in names]
        for name, target in zip(names, targets, strict=True):
            target.name = name
        workloads = args.workload or DEFAULT_WORKLOADS
        results = run_rounds(targets, workloads, args.messages, args.rounds)
    finally:
        for server in servers:
            server.stop()
    best = best_results(results)
    print(render(best, names, workloads))
    if args.json:
        payload = {"environment": environment(), "messages": args.messages, "rounds": args.rounds,
                   "best": [r.as_dict() for r in best], "all": [r.as_dict() for r in results]}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


def _start_shards() -> list:
    from tests.servers.redis import RedisServer

    return [RedisServer(name="bench-shard").start() for _ in range(3)]


def render(best: list[Result], names: list[str], workloads: list[str]) -> str:
    """A Markdown table: rates per target, then our single-server rate over each peer's."""
    by_key = {(r.workload, r.target): r for r in best}
    peers = [n for n in names if n.startswith("channels")]
    header = ["workload", *names, *(f"ours / {p}" for p in peers)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for workload in workloads:
        cells = [by_key.get((workload, name)) for name in names]
        row = [workload, *(_cell(r) for r in cells)]
        ours = by_key.get((workload, "ours"))
        for peer in peers:
            other = by_key.get((workload, peer))
            ok = ours and other and not ours.error and not other.error and other.rate
            row.append(f"{ours.rate / other.rate:.2f}x" if ok else "n/a")  # type: ignore[union-attr]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if result.error:
        return f"fails: {result.error[:50]}"
    return f"{result.rate:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
