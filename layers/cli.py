"""The layers command: conformance reports, debugging a live layer, and quick benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from .errors import LayerError, Unsupported
from .options import redact_url
from .registry import CLI_COMMANDS, registered
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
    except LayerError as exc:  # one line: driver messages (psycopg's) span several
        print(f"layers: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


_EXAMPLES = """\
examples:
  layers send redis://127.0.0.1:6379/0 chat-tasks '{"type": "task.run", "text": "hi"}'
  layers receive redis://127.0.0.1:6379/0 chat-tasks -n 0
  layers group-send redis://127.0.0.1:6379/0 room-lobby '{"type": "chat.message", "text": "hi"}'
  layers ping postgresql://app@db/app
  layers bench redis://127.0.0.1:6379/0 --vs channels_redis
  layers check redis://127.0.0.1:6379/0

Run 'layers COMMAND --help' for a command's options and examples.
"""

_MESSAGE_HELP = ("the message: a JSON object ('{\"type\": \"chat.message\", \"text\": \"hi\"}'), "
                 "'-' to read it from stdin, or @FILE to read it from a file")


def command_parser(commands: Any, name: str, help: str, examples: str,
                   description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help shows a description and examples as written (no re-wrapping); for the hooks of
    :data:`layers.registry.CLI_COMMANDS` too."""
    text = textwrap.dedent(examples).strip("\n")
    description = description or help[0].upper() + help[1:] + "."
    paragraphs = "\n\n".join(textwrap.fill(p, 79) for p in textwrap.dedent(description).strip().split("\n\n"))
    return commands.add_parser(  # type: ignore[no-any-return]
        name, help=help, description=paragraphs,
        epilog=f"examples:\n{textwrap.indent(text, '  ')}", formatter_class=argparse.RawDescriptionHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layers", description=__doc__, epilog=_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    try:
        from spec.__main__ import add_arguments, epilog  # the same options as python -m spec
    except ImportError as exc:  # the suite runs on pytest, which `pip install 'channel-layers[cli]'` lacks
        check = commands.add_parser("check", help="run the conformance suite (needs pytest: pip install pytest)")
        check.add_argument("rest", nargs=argparse.REMAINDER)
        check.set_defaults(run=_check_unavailable, reason=f"{exc}")
    else:
        check = commands.add_parser(
            "check", help="run the conformance suite against a layer and print the report per tier",
            description="Run the channel-layer conformance suite against a layer (as python -m spec does) and "
                        "print the report per tier and requirement.",
            epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(check)
        check.set_defaults(run=_check)

    send = command_parser(commands, "send", "send one message to a channel", """
        layers send redis://127.0.0.1:6379/0 chat-tasks '{"type": "task.run", "text": "hi"}'
        echo '{"type": "task.run"}' | layers send redis://127.0.0.1:6379/0 chat-tasks -
        layers send postgresql://app@db/app chat-tasks @message.json
        """)
    send.add_argument("url", help="the layer URL (redis://..., postgresql://..., amqp://...)")
    send.add_argument("channel")
    send.add_argument("message", help=_MESSAGE_HELP)
    send.set_defaults(run=_send)

    group_send = command_parser(commands, "group-send", "send one message to every member of a group", """
        layers group-send redis://127.0.0.1:6379/0 room-lobby '{"type": "chat.message", "text": "hi"}'
        layers group-send amqp://guest:guest@127.0.0.1:5672/%2F room-lobby @announcement.json
        """, description="Send one message to every member of a group and print how many members it reached "
                         "(full members are skipped and counted, never an error).")
    group_send.add_argument("url", help="the layer URL")
    group_send.add_argument("group")
    group_send.add_argument("message", help=_MESSAGE_HELP)
    group_send.set_defaults(run=_group_send)

    for verb, method, what in (("add", "group_add", "add a channel to a group"),
                               ("discard", "group_discard", "remove a channel from a group")):
        command = command_parser(commands, f"group-{verb}", what, f"""
            layers group-{verb} redis://127.0.0.1:6379/0 room-lobby chat-log
            """)
        command.add_argument("url", help="the layer URL")
        command.add_argument("group")
        command.add_argument("channel")
        command.set_defaults(run=_group_change, method=method)

    ping = command_parser(commands, "ping", "time one round trip to every server of a layer", """
        layers ping redis://127.0.0.1:6379/0
        layers ping postgresql://app@db/app --json
        """, description="Time one round trip to every server (shard) of a layer, made concurrently, and print it. "
                         "Exit status 1, with the reason, when a server cannot be reached or refuses the client.")
    ping.add_argument("url", help="the layer URL")
    ping.add_argument("--json", action="store_true",
                      help='print one JSON object: {"url", "ok", "seconds"} or {"url", "ok": false, "error", "detail"}')
    ping.set_defaults(run=_ping)

    receive = command_parser(commands, "receive", "receive messages from a channel and print them as JSON lines", """
        layers receive redis://127.0.0.1:6379/0 chat-tasks              # one message
        layers receive redis://127.0.0.1:6379/0 chat-tasks -n 0         # until Ctrl-C
        layers receive redis://127.0.0.1:6379/0 chat-tasks -n 5 --timeout 10
        """, description="Receive messages from a channel and print them as JSON lines (bytes values as "
                         '{"$bytes": HEX}). Exit status 1 when --timeout passes first.')
    receive.add_argument("url", help="the layer URL")
    receive.add_argument("channel")
    receive.add_argument("-n", "--count", type=int, default=1, help="how many messages (0: until interrupted)")
    receive.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    receive.set_defaults(run=_receive)

    bench = command_parser(commands, "bench", "measure throughput (default: the in-memory layer)", """
        layers bench                                        # the in-memory layer, default workloads
        layers bench redis://127.0.0.1:6379/0 --vs channels_redis
        layers bench postgresql://postgres@127.0.0.1/test --vs channels_postgres --workload named-rf
        layers bench amqp://guest:guest@127.0.0.1:5672/%2F --vs channels_rabbitmq -n 2000 --plot amqp.png
        """, description="""
        Measure throughput, ours and peers side by side in alternating rounds (the best round is shown).

        Safe on a server that holds other data: every target works under a prefix of its own (channels_postgres
        in a private database it creates, channels_rabbitmq with a private groups exchange), and only what the
        run created is removed at the end.

        exit status: 0 every workload ran on the first target; 1 a workload failed on the first target;
        2 bad arguments or a missing package (the message gives the pip command); 3 a server could not be
        reached (one error line, nothing was run).""")
    bench.add_argument("url", nargs="?", default="memory://", help="layer URL (default memory://)")
    bench.add_argument("--vs", action="append", default=[], metavar="URL|PEER",
                       help="also run a peer (channels_memory, channels_redis, channels_redis_pubsub, "
                            "channels_postgres, channels_rabbitmq; PEER=URL for another server) or a layer URL")
    bench.add_argument("--workload", action="append", default=[], metavar="NAME",
                       help="workload(s) to run (default: process, named, producers-100, group-100; 'all'); "
                            "see the list below")
    bench.add_argument("-n", "--messages", type=int, default=10_000, help="messages per workload run")
    bench.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best round is reported")
    bench.add_argument("--json", metavar="FILE", help="write results as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help="write a bar chart of throughput (needs matplotlib)")
    bench.epilog = f"{bench.epilog}\n\nworkloads:\n{_workload_list()}"
    bench.set_defaults(run=_bench)

    _add_registered_commands(commands)
    return parser


def _add_registered_commands(commands: Any) -> None:
    """The subcommands backends register through entry points; one whose backend is not installed is still
    listed and says which extra to install."""
    for name, ep in sorted(registered(CLI_COMMANDS).items()):
        try:
            add_command = ep.load()
        except ImportError as exc:
            extra = f"pip install 'channel-layers[{ep.extras[0]}]'" if ep.extras else f"install {ep.module}"
            missing = commands.add_parser(name, help=f"(not available: {extra})")
            missing.add_argument("rest", nargs=argparse.REMAINDER)
            missing.set_defaults(run=_unavailable_command, reason=f"layers {name} needs {ep.module} ({exc}): {extra}")
        else:
            add_command(commands)


def _unavailable_command(args: argparse.Namespace) -> int:
    raise SystemExit(f"layers: error: {args.reason}")


# -- check ---------------------------------------------------------------------------------------------------


def _check_unavailable(args: argparse.Namespace) -> int:
    print(f"layers: error: layers check runs the conformance suite on pytest, which is not installed "
          f"({args.reason}): pip install pytest", file=sys.stderr)
    return 2


def _check(args: argparse.Namespace) -> int:
    from spec.__main__ import run_from_args

    return run_from_args(args, "layers check")


# -- send / receive ------------------------------------------------------------------------------------------


def _load_message(text: str) -> dict[str, Any]:
    """The message argument: JSON itself, ``-`` for stdin, or ``@path`` for a file (no argument-length limit)."""
    source = "the message"
    if text == "-":
        text, source = sys.stdin.read(), "the message read from stdin"
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as file:
                text, source = file.read(), f"the message in {text[1:]}"
        except OSError as exc:
            raise SystemExit(f"layers: error: cannot read the message file {text[1:]!r}: {exc.strerror}") from None
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"layers: error: {source} is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise SystemExit(f"layers: error: {source} must be a JSON object ({{...}}), not {type(message).__name__}")
    return message


def _send(args: argparse.Namespace) -> int:
    message = _load_message(args.message)

    async def run(layer: Any) -> None:
        await layer.send(args.channel, message)

    _with_layer(args.url, run)
    print(f"sent to {args.channel}")
    return 0


def _group_send(args: argparse.Namespace) -> int:
    message = _load_message(args.message)

    async def run(layer: Any) -> str:
        members = await _group_member_count(layer, args.group)
        drops = layer.group_drops
        await layer.group_send(args.group, message)
        full = layer.group_drops - drops
        skipped = f"; {full} full member(s) skipped" if full else ""
        if members is None:  # e.g. AMQP: the broker routes group messages; members are known to their owners only
            return f"sent to group {args.group} (this backend cannot count the members it reached{skipped})"
        return f"sent to group {args.group}: reached {max(members - full, 0)} of {members} member(s){skipped}"

    print(_with_layer(args.url, run))
    return 0


async def _group_member_count(layer: Any, group: str) -> int | None:
    """How many channels are in ``group`` now, or None where the sender cannot know (a layer without
    ``group_size``, or whose backend cannot list a group: AMQP)."""
    size = getattr(layer, "group_size", None)
    if size is None:
        return None
    try:
        return int(await size(group))
    except Unsupported:
        return None


def _group_change(args: argparse.Namespace) -> int:
    async def run(layer: Any) -> None:
        await getattr(layer, args.method)(args.group, args.channel)

    _with_layer(args.url, run)
    done = "added to" if args.method == "group_add" else "removed from"
    print(f"{args.channel} {done} group {args.group}")
    return 0


def _with_layer(url: str, body: Any) -> Any:
    """Run ``body(layer)`` on a layer built from ``url``, and close the layer.

    A one-shot command shows no reconnect warnings: if the server stays unreachable, the error says so once.
    """

    async def run() -> Any:
        layer = from_url(url)
        try:
            return await body(layer)
        finally:
            await layer.close()

    quiet = logging.getLogger("layers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return asyncio.run(run())
    finally:
        quiet.setLevel(level)


async def _reach(layer: Any) -> None:
    """One harmless call, so an unreachable server is one error before receive() starts waiting (and retrying)."""
    ping = getattr(layer, "ping", None)
    if ping is not None:
        try:
            await ping()
            return
        except Unsupported:
            pass
    await layer.group_discard("layers-cli-probe", "layers-cli-probe")  # changes nothing: nobody uses that group


def _ping(args: argparse.Namespace) -> int:
    async def run(layer: Any) -> float:
        return float(await layer.ping())

    where = redact_url(args.url)
    try:
        seconds = _with_layer(args.url, run)
    except LayerError as exc:
        if not args.json:
            raise
        detail = " ".join(str(exc).split())
        print(json.dumps({"url": where, "ok": False, "error": type(exc).__name__, "detail": detail}))
        return 1
    print(json.dumps({"url": where, "ok": True, "seconds": seconds}) if args.json
          else f"{where}: {seconds * 1000:.2f} ms")
    return 0


def _receive(args: argparse.Namespace) -> int:
    async def run() -> int:
        layer = from_url(args.url)
        received = 0
        try:
            quiet = logging.getLogger("layers")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                await _reach(layer)
            finally:  # once it started, reconnect warnings tell what happens during an outage
                quiet.setLevel(level)
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


def _workload_list() -> str:
    from .bench import WORKLOADS

    return "\n".join(f"  {name:<17} {workload.doc}" for name, workload in WORKLOADS.items())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
