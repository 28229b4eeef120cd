"""Django system checks of ``CHANNEL_LAYERS`` (registered by :mod:`layers.apps`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks

from .settings import from_config

__all__ = ["check_channel_layers", "ping_channel_layers"]

#: The tag of both checks: ``manage.py check --tag layers``.
TAG = "layers"


def _entries() -> Mapping[str, Any]:
    entries = getattr(settings, "CHANNEL_LAYERS", None)
    return entries if isinstance(entries, Mapping) else {}


def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Build every ``CHANNEL_LAYERS`` entry as first use would (building connects to nothing): what fails is an
    error."""
    problems: list[checks.CheckMessage] = []
    for alias, entry in _entries().items():
        try:
            from_config(entry)
        except Exception as exc:
            problems.append(checks.Error(
                f"CHANNEL_LAYERS[{alias!r}] would fail at first use: {_why(exc)}",
                hint="fix the URL, option or BACKEND named above", obj=f"CHANNEL_LAYERS[{alias!r}]",
                id="layers.E001",
            ))
    return problems


def ping_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """One ``ping()`` of every ``CHANNEL_LAYERS`` entry that builds (those that do not are E001's)."""
    problems: list[checks.CheckMessage] = []
    for alias, entry in _entries().items():
        try:
            layer = from_config(entry)
        except Exception:
            continue
        if not callable(getattr(layer, "ping", None)):
            continue
        try:
            asyncio.run(_ping(layer))
        except NotImplementedError:
            continue  # a backend without ping: nothing to report
        except Exception as exc:
            problems.append(checks.Error(
                f"CHANNEL_LAYERS[{alias!r}] does not answer: {_why(exc)}",
                hint="is the server up and reachable from here, and are the credentials right?",
                obj=f"CHANNEL_LAYERS[{alias!r}]", id="layers.E002",
            ))
    return problems


async def _ping(layer: Any) -> None:
    try:
        await layer.ping()
    finally:
        close = getattr(layer, "close", None)
        if callable(close):
            await close()


def _why(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"  # one line: driver messages span several


checks.register(check_channel_layers, TAG)
checks.register(ping_channel_layers, TAG, deploy=True)
