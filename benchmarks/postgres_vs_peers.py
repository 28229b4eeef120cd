"""PostgreSQL layer vs channels_postgres, side by side on the same server in one run.

    .venv/bin/python benchmarks/postgres_vs_peers.py [-n 3000] [--rounds 3] [--url postgresql://...] [--json F]

channels_postgres needs Django and its migrations: this script configures a minimal Django (DATABASES pointing
at the same server, INSTALLED_APPS=["channels_postgres"]) and runs ``migrate channels_postgres`` first.  The
workloads are the shared ones of ``layers.bench`` (``named``, ``process``, ``group-100`` by default); ``process``
starts its receive before the first send, so channels_postgres (which strands a send that precedes the first
receive of a process channel) can run it.
"""

from __future__ import annotations

import argparse
import sys
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
    workloads = args.workload or ["named", "process", "group-100"]
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
