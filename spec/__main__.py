"""``python -m spec TARGET [--config JSON] [--knob k=v ...]``: the conformance report for a channel layer."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence
from typing import Any

from .harness import DECLARABLE, KNOB_HELP
from .requirements import TIER_MEANING
from .runner import EXIT_CRASH, EXIT_STATUSES, EXIT_UNUSABLE, EXIT_USAGE, TargetUnusable, run_report

__all__ = ["add_arguments", "epilog", "main", "parser", "run_from_args"]

_TARGETS = """\
targets:
  a layer URL                memory://, redis://127.0.0.1:6379/0, postgresql://..., amqp://... (this project)
  a dotted class path        channels_redis.core.RedisChannelLayer (called with --config as keywords)
  a dotted factory path      mypackage.testing.make_layer: a function called with --config and the suite's
                             overrides (capacity, channel_capacity, expiry, group_expiry) as keywords, returning a
                             NEW layer instance each call (instances must share state if the layer does)
"""


def _knob(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a knob is name=value, not {text!r}")
    try:
        value = json.loads(raw)  # numbers, true/false, null, JSON objects and lists
    except json.JSONDecodeError:
        value = raw  # a plain string, e.g. a URL
    return name, value


def _config(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--config is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--config must be a JSON object of layer options")
    return value


def epilog() -> str:
    """Targets, knobs, capabilities, tiers, exit statuses and flush safety, for ``--help``."""
    knobs = "\n".join(textwrap.fill(f"{name}: {text}", 110, initial_indent="  ", subsequent_indent="      ")
                      for name, text in KNOB_HELP.items())
    capabilities = "\n".join(textwrap.fill(f"{name}: {text}", 110, initial_indent="  ", subsequent_indent="      ")
                             for name, text in DECLARABLE.items())
    tiers = "\n".join(f"  {tier}: {text}" for tier, text in TIER_MEANING.items())
    statuses = "\n".join(f"  {code}  {text}" for code, text in EXIT_STATUSES.items())
    return (
        f"{_TARGETS}\nknobs (--knob NAME=VALUE; also a spec_knobs dict on the layer class):\n{knobs}\n\n"
        "capabilities a design may lack (--knob lacks=NAME,NAME; the checks needing them are reported as not "
        f"applicable):\n{capabilities}\n  Discovered by python -m spec: the groups/flush extensions (from "
        "`extensions`), close() (R-CLOSE-* need it),\n  shared state between instances, named_backlog, and the "
        "operations methods (R-OPS-*: group_channels,\n  group_size, send_many, group_send_many, stats; one "
        "raising NotImplementedError counts as absent).\n\n"
        f"tiers:\n{tiers}\n\nexit statuses:\n{statuses}\n\n"
        "flush safety: the suite flushes the layers it makes. By default every layer is made with a fresh\n"
        "prefix of this run when the target accepts a 'prefix' option; a shared-state layer without one is refused\n"
        "unless --yes-flush is given (then point it at a server or database holding nothing you need)."
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m spec``, shared with ``layers check``."""
    p.add_argument("target", help="a layer URL, a dotted class path or a dotted factory-function path (see below)")
    p.add_argument("--config", type=_config, default=None, help="JSON object of options for every layer made")
    p.add_argument("--knob", type=_knob, action="append", default=[], metavar="NAME=VALUE",
                   help="set a spec knob (see below); repeatable")
    p.add_argument("--pytest-args", default="", metavar="ARGS",
                   help='extra pytest arguments, split like a shell does, e.g. "-k cancel -x" or -v')
    p.add_argument("--live", action="store_true", help="show pytest's own output while the suite runs")
    p.add_argument("--django-settings", metavar="MODULE", default=None,
                   help="set DJANGO_SETTINGS_MODULE and call django.setup() first, here and in the second "
                        "process (DJANGO_SETTINGS_MODULE in the environment does the same)")
    p.add_argument("--yes-flush", action="store_true",
                   help="use the configured options as given (no fresh prefix) and flush that state")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON to FILE")
    p.add_argument("--strict", action="store_true",
                   help="grade the strict and operations tiers too: an unmet requirement of either fails the run "
                        "(exit status 5)")


def parser(prog: str = "python -m spec") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the channel-layer conformance suite against a layer and report per tier and requirement.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def _attach_option_values(argv: Sequence[str]) -> list[str]:
    """``--pytest-args -v`` as ``--pytest-args=-v``: argparse would take a value starting with '-' for an option."""
    args = list(argv)
    out: list[str] = []
    index = 0
    while index < len(args):
        if args[index] == "--pytest-args" and index + 1 < len(args):
            out.append(f"--pytest-args={args[index + 1]}")
            index += 2
            continue
        out.append(args[index])
        index += 1
    return out


def run_from_args(args: argparse.Namespace, prog: str) -> int:
    """Run the report for parsed arguments; errors before any check are one line on stderr."""
    try:
        return run_report(
            args.target, args.config, dict(args.knob), pytest_args=args.pytest_args, live=args.live,
            yes_flush=args.yes_flush, django_settings=args.django_settings, json_path=args.json,
            strict=args.strict,
        )
    except BrokenPipeError:  # the reader went away (`| head`): no traceback about it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except TargetUnusable as exc:
        print(f"{prog}: error: no usable layer from {args.target}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (ValueError, ImportError) as exc:  # a bad target, option or knob, or a refused flush
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the runner's own bug: say so, distinctly
        print(f"{prog}: the runner crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(limit=-8, file=sys.stderr)
        return EXIT_CRASH


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(_attach_option_values(sys.argv[1:] if argv is None else argv))
    return run_from_args(args, "python -m spec")


if __name__ == "__main__":
    sys.exit(main())
