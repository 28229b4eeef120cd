"""The one registry of layer URL schemes and CLI commands: the distribution's entry points.

A source checkout that is not pip-installed has no entry-point metadata; there the same table is read from the
checkout's ``pyproject.toml``, so ``from_url("redis://...")`` works from a plain copy too.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

__all__ = ["BACKENDS", "CLI_COMMANDS", "DISTRIBUTION", "registered"]

#: Entry-point group of layer classes, one entry per URL scheme (``redis = "layers_redis:RedisChannelLayer [redis]"``).
BACKENDS = "layers.backends"
#: Entry-point group of CLI hooks: ``name = "module:add_command [extra]"``, called with the subcommand parsers.
CLI_COMMANDS = "layers.cli"
DISTRIBUTION = "channel-layers"

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_STRING = r'"((?:[^"\\]|\\.)*)"'
_ENTRY = re.compile(rf"^\s*(?:{_STRING}|([A-Za-z0-9_.+-]+))\s*=\s*{_STRING}\s*$")


def registered(group: str) -> dict[str, metadata.EntryPoint]:
    """Name -> entry point of ``group``: every installed distribution's, and when this one is not installed,
    those its source checkout's ``pyproject.toml`` declares."""
    found = {ep.name: ep for ep in metadata.entry_points(group=group)}
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        for ep in _checkout_entry_points(group):
            found.setdefault(ep.name, ep)
    return found


def _checkout_entry_points(group: str) -> list[metadata.EntryPoint]:
    """The ``[project.entry-points."<group>"]`` table of the checkout's pyproject.toml (string values only, which
    is all an entry-point table holds; read by hand because tomllib is Python 3.11+)."""
    try:
        lines = _PYPROJECT.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    header = f'[project.entry-points."{group}"]'
    entries: list[metadata.EntryPoint] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped == header
        elif inside and (match := _ENTRY.match(line)):
            name = match.group(1) if match.group(1) is not None else match.group(2)
            entries.append(metadata.EntryPoint(name=name, value=match.group(3), group=group))
    return entries
