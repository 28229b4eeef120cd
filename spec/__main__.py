"""``python -m spec TARGET [--config JSON] [--knob k=v ...]``: the conformance report for a channel layer."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .runner import run_report

__all__ = ["main"]


def _knob(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a knob is name=value, not {text!r}")
    try:
        value = json.loads(raw)  # numbers, true/false, null, JSON objects
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spec",
        description="Run the channel-layer conformance suite against a layer and report per requirement.",
        epilog="The suite flushes the layer: point it at a prefix or database holding nothing you need.",
    )
    p.add_argument("target", help="a layer URL (memory://, redis://...) or a dotted class path "
                                  "(channels.layers.InMemoryChannelLayer)")
    p.add_argument("--config", type=_config, default=None, help="JSON object of options for every layer made")
    p.add_argument("--knob", type=_knob, action="append", default=[], metavar="NAME=VALUE",
                   help="override a spec knob (shares_state, min_expiry, process_target, timeout, settle, "
                        "max_message_size, process_config); repeatable")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. \"-k cancel -x\"")
    p.add_argument("--live", action="store_true", help="show pytest's own output while the suite runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_report(
            args.target, args.config, dict(args.knob), pytest_args=args.pytest_args.split(), live=args.live
        )
    except (ValueError, ImportError) as exc:  # a bad target, option or knob: say so without a traceback
        print(f"python -m spec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
