"""PostgreSQL layer vs channels_postgres, side by side on the same server in one run.

    .venv/bin/python benchmarks/postgres_vs_peers.py [-n 3000] [--rounds 3] [--url postgresql://...] [--json F]

channels_postgres needs Django and its migrations: this script configures a minimal Django (DATABASES pointing
at the same server, INSTALLED_APPS=["channels_postgres"]) and runs ``migrate channels_postgres`` first.  The
workloads are the shared ones of ``layers.bench`` (``named``, ``process``, ``group-100``); ``named-rf``
and ``process-rf`` (defined here) start the receive 0.5 s before the first send, so channels_postgres (which
strands a send that precedes the first receive) can run them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from functools import partial
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def setup_django(url: str) -> str | None:
    """Configure Django and migrate channels_postgres; return why it cannot run, or None."""
    try:
        import django
        from django.conf import settings
        from django.core.management import call_command
    except ImportError as exc:
        return f"Django is not installed ({exc})"
    parts = urlsplit(url)
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/") or "postgres",
                "USER": parts.username or "postgres", "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "127.0.0.1", "PORT": parts.port or 5432}
    if not settings.configured:
        settings.configure(DATABASES={"default": database}, INSTALLED_APPS=["channels_postgres"], USE_TZ=True)
    try:
        django.setup()
        call_command("migrate", "channels_postgres", verbosity=0)
    except Exception as exc:
        return f"channels_postgres could not be set up: {type(exc).__name__}: {exc}"
    return None


def channels_postgres_target(url: str) -> object:
    """channels_postgres built from the Django connection settings (it needs the full settings dict)."""
    from django.db import connections

    from layers.bench import Target

    def factory(**options: object) -> object:
        from channels_postgres.core import PostgresChannelLayer as PeerLayer

        options.pop("capacity", None)  # it has no capacity
        return PeerLayer(**{**connections["default"].settings_dict, **options})

    return Target("channels_postgres", factory, url)


async def receive_first(target: Any, count: int, *, name: str, named: bool, producers: int = 1) -> Any:
    """send+receive where the consumer's first receive() is pending before the first send (after a 0.5 s
    head start, not timed): channels_postgres strands messages sent before that, so this is how it can run."""
    from layers.bench.workloads import Result, close_layer

    result = Result(name, target.name)
    layer = None
    try:
        layer = target.factory(capacity=count + 10, expiry=300)
        channel = f"bench.rf.{time.monotonic_ns()}" if named else await layer.new_channel()

        async def consume() -> None:
            for _ in range(count):
                await layer.receive(channel)

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.5)
        async def produce(index: int) -> None:
            for i in range(index, count, producers):
                await layer.send(channel, {"type": "bench", "n": i, "body": b""})

        started = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in range(producers)))
        await consumer
        result.seconds = time.perf_counter() - started
        result.messages = count
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if layer is not None:
            await close_layer(layer)
    return result


def register_workloads() -> None:
    from layers.bench import WORKLOADS, Workload

    for named in (True, False):
        name = f"{'named' if named else 'process'}-rf"
        WORKLOADS[name] = Workload(partial(receive_first, name=name, named=named),
                                   f"send+receive, {'named' if named else 'process'} channel, receive started first")
    WORKLOADS["producers-100-rf"] = Workload(
        partial(receive_first, name="producers-100-rf", named=False, producers=100),
        "100 concurrent producers -> 1 consumer on a process channel, receive started first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server both layers use")
    parser.add_argument("-n", "--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", action="append", default=[])
    parser.add_argument("--json")
    parser.add_argument("--no-peer", action="store_true", help="only our layer")
    args = parser.parse_args(argv)

    from rich.console import Console

    from layers.bench import make_target, report

    separator = "&" if "?" in args.url else "?"
    targets = [make_target(f"{args.url}{separator}prefix=bench_pg")]
    if not args.no_peer:
        problem = setup_django(args.url)
        if problem:
            print(f"channels_postgres skipped: {problem}", file=sys.stderr)
        else:
            targets.append(channels_postgres_target(args.url))
    register_workloads()
    workloads = args.workload or ["named-rf", "process-rf", "producers-100-rf", "group-100"]
    console = Console()
    results = report.run_rounds(targets, workloads, args.messages, args.rounds, console)
    best = report.best_results(results)
    console.print(report.render_table(best, targets, workloads))
    if args.json:
        import json

        with open(args.json, "w") as out:
            json.dump({"best": [r.as_dict() for r in best], "all": [r.as_dict() for r in results]}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
