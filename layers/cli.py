"""The ``layers`` command: conformance reports, debugging a live layer, and quick benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import LayerError
from .settings import from_url

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except LayerError as exc:
        print(f"layers: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layers", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="run the conformance suite against a layer and print the report")
    check.add_argument("target", help="a layer URL (redis://...) or a dotted class path")
    check.add_argument("--config", default="{}", help="JSON options passed to the layer")
    check.add_argument("--knob", action="append", default=[], metavar="K=V", help="a conformance knob")
    check.set_defaults(run=_check)

    send = commands.add_parser("send", help="send one message to a channel")
    send.add_argument("url")
    send.add_argument("channel")
    send.add_argument("message", help='a JSON object, e.g. \'{"type": "chat.message", "text": "hi"}\'')
    send.set_defaults(run=_send)

    group_send = commands.add_parser("group-send", help="send one message to a group")
    group_send.add_argument("url")
    group_send.add_argument("group")
    group_send.add_argument("message", help="a JSON object")
    group_send.set_defaults(run=_group_send)

    receive = commands.add_parser("receive", help="receive messages from a channel and print them as JSON")
    receive.add_argument("url")
    receive.add_argument("channel")
    receive.add_argument("-n", "--count", type=int, default=1, help="how many messages (0: until interrupted)")
    receive.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    receive.set_defaults(run=_receive)

    bench = commands.add_parser("bench", help="measure throughput (default: the in-memory layer)")
    bench.add_argument("url", nargs="?", default="memory://", help="layer URL (default memory://)")
    bench.add_argument("--vs", action="append", default=[], metavar="URL|PEER",
                       help="also run a peer (channels_memory, channels_redis, channels_redis_pubsub, "
                            "channels_postgres, channels_rabbitmq; PEER=URL for another server) or a layer URL")
    bench.add_argument("--workload", action="append", default=[], metavar="NAME",
                       help="workload(s) to run (default: process, named, producers-100, group-100; 'all')")
    bench.add_argument("-n", "--messages", type=int, default=10_000, help="messages per workload run")
    bench.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best round is reported")
    bench.add_argument("--json", metavar="FILE", help="write results as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help="write a bar chart of throughput (needs matplotlib)")
    bench.set_defaults(run=_bench)

    ddl = commands.add_parser("postgres-ddl", help="print the SQL that creates the PostgreSQL layer's tables")
    ddl.add_argument("--prefix", default="asgi", help="the layer's prefix (default asgi)")
    ddl.add_argument("--schema", default="public", help="the schema the tables live in (default public)")
    ddl.add_argument("--durable", action="store_true", help="logged tables instead of UNLOGGED")
    ddl.set_defaults(run=_postgres_ddl)
    return parser


# -- check ---------------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from spec import run_report

    knobs = dict(_parse_knob(k) for k in args.knob)
    return run_report(args.target, json.loads(args.config), knobs)


def _parse_knob(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# -- send / receive ------------------------------------------------------------------------------------------


def _load_message(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"layers: error: the message is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise SystemExit("layers: error: the message must be a JSON object")
    return message


def _send(args: argparse.Namespace) -> int:
    return _send_one(args.url, "send", args.channel, args.message, f"sent to {args.channel}")


def _group_send(args: argparse.Namespace) -> int:
    return _send_one(args.url, "group_send", args.group, args.message, f"sent to group {args.group}")


def _send_one(url: str, method: str, name: str, text: str, done: str) -> int:
    message = _load_message(text)

    async def run() -> None:
        layer = from_url(url)
        try:
            await getattr(layer, method)(name, message)
        finally:
            await layer.close()

    asyncio.run(run())
    print(done)
    return 0


def _receive(args: argparse.Namespace) -> int:
    async def run() -> int:
        layer = from_url(args.url)
        received = 0
        try:
            while args.count == 0 or received < args.count:
                message = await asyncio.wait_for(layer.receive(args.channel), args.timeout)
                print(json.dumps(message, default=_json_default), flush=True)
                received += 1
        except asyncio.TimeoutError:
            print(f"layers: no message on {args.channel} within {args.timeout}s", file=sys.stderr)
            return 1
        finally:
            await layer.close()
        return 0

    return asyncio.run(run())


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    return repr(value)


# -- bench ---------------------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    from .bench import report

    return report.run_cli(args)


def _postgres_ddl(args: argparse.Namespace) -> int:
    try:
        from layers_postgres import ddl
    except ImportError as exc:
        raise SystemExit(f"layers: error: the PostgreSQL backend is not available ({exc}); "
                         "pip install 'channel-layers[postgres]'") from None
    print(ddl(prefix=args.prefix, schema=args.schema, durable=args.durable))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
