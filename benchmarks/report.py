"""Regenerate BENCHMARKS.md from a real run: every backend beside its peers, then the sharding benchmark.

    ./dev bench-report            # = python -m benchmarks.report

Machine, date and versions go in the file.  Runs alternate targets round by round and keep each one's best
round; ratios are ours / peer, measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from layers.bench import WORKLOADS, Result
from layers.bench.report import best_results, environment, plot, run_rounds
from layers.bench.targets import confined

from . import sharding

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("LAYERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("LAYERS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("LAYERS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

# (section title, our target, peers, workloads)
SECTIONS: list[tuple[str, str, list[str], list[str]]] = [
    ("In-memory", "memory://", ["channels_memory"],
     ["process", "named", "producers-100", "group-100", "group-1000", "size-100", "size-10k", "size-500k",
      "overload", "residue"]),
    ("Redis", REDIS, ["channels_redis", "channels_redis_pubsub"],
     ["process", "named", "process-xproc", "named-xproc", "producers-10", "producers-100", "group-100",
      "group-1000", "fanout-procs", "latency", "size-10k", "size-500k", "overload", "residue"]),
    ("PostgreSQL", POSTGRES, ["channels_postgres"],
     ["named-rf", "process-rf", "process-xproc", "named-xproc", "producers-100-rf", "group-100", "process", "named",
      "size-10k", "overload"]),
    ("AMQP (RabbitMQ)", AMQP, ["channels_rabbitmq"],
     ["process", "named", "process-xproc", "named-xproc", "producers-100", "group-100", "fanout-procs", "latency",
      "size-10k", "overload"]),
]


def _cell(result: Result | None) -> str:
    if result is None:
        return "–"
    if result.error:
        one_line = " ".join(result.error.split()).replace("|", "/")  # a Markdown table cell
        return "n/a" if one_line.startswith("n/a") else f"fails: {one_line[:70]}"
    text = f"{result.rate:,.0f}"
    if "p50_ms" in result.extra:
        text += f" (p50 {result.extra['p50_ms']} ms, p99 {result.extra['p99_ms']} ms)"
    if result.workload == "residue":
        text += " (left behind: " + ", ".join(f"{k}={v}" for k, v in result.extra.items()) + ")"
    if "accepted" in result.extra:
        text += f" (accepted {result.extra['accepted']} = delivered {result.extra['delivered']})"
    return text


def _ratio(ours: Result | None, peer: Result | None) -> str:
    if ours is None or peer is None or ours.error or peer.error or not peer.rate:
        return "–"
    return f"**{ours.rate / peer.rate:.2f}×**"


def section_table(best: list[Result], ours: str, peers: list[str], workloads: list[str]) -> str:
    by_key = {(r.workload, r.target): r for r in best}
    header = ["workload", f"channel-layers ({WORKLOADS[workloads[0]].unit})", *peers, *(f"ours / {p}" for p in peers)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for workload in workloads:
        mine = by_key.get((workload, ours))
        theirs = [by_key.get((workload, p)) for p in peers]
        cells = [f"{workload} — {WORKLOADS[workload].doc}", _cell(mine), *map(_cell, theirs),
                 *(_ratio(mine, t) for t in theirs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], help="section titles to run (default all)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    figures = ROOT / "docs" / "bench"
    figures.mkdir(parents=True, exist_ok=True)
    env = environment()
    parts = [_preamble(env, args)]
    raw: dict[str, Any] = {"environment": env}
    for title, ours, peers, workloads in SECTIONS:
        if args.only and title not in args.only:
            continue
        console.print(f"[bold]{title}[/bold]")
        with confined([ours, *peers]) as targets:  # a prefix (and for channels_postgres a database) of its own
            best = best_results(run_rounds(targets, workloads, args.messages, args.rounds, console))
        slug = title.split()[0].lower()
        plot(best, targets, workloads, str(figures / f"{slug}.png"))
        ours_name = targets[0].name
        parts.append(f"## {title}\n\n{section_table(best, ours_name, peers, workloads)}\n\n"
                     f"![{title} throughput](docs/bench/{slug}.png)\n")
        raw[title] = [r.as_dict() for r in best]
    if not args.only or "sharding" in args.only:
        console.print("[bold]Redis sharding[/bold]")
        shard = sharding.main(["--messages", str(args.messages), "--plot", str(figures / "sharding.png")])
        parts.append("## Redis sharding (private redis-server processes)\n\n" + shard["table"] +
                     "\n\n![throughput vs shards](docs/bench/sharding.png)\n")
        raw["sharding"] = shard["runs"]
    Path(args.output).write_text("\n".join(parts))
    (figures / "results.json").write_text(json.dumps(raw, indent=2))
    console.print(f"wrote {args.output}")


def _preamble(env: dict[str, Any], args: argparse.Namespace) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return (
        "# Benchmarks\n\n"
        "Generated by `./dev bench-report` (`python -m benchmarks.report`); do not edit by hand.\n\n"
        f"- date: {env['date']}\n- machine: {env['machine']}, Python {env['python']}\n- versions: {versions}\n"
        f"- method: {args.messages:,} messages per run, {args.rounds} alternating rounds per target, best round "
        "kept; servers are the machine's shared Redis, PostgreSQL and RabbitMQ on loopback. The machine is shared "
        "and noisy: read the ratios (measured side by side in one run), not the absolute figures.\n"
        "- units: msgs/s, except group and fan-out workloads (deliveries/s); `latency` is paced sends, its rate is "
        "not a throughput.\n"
    )


if __name__ == "__main__":
    main()
