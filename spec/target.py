"""Turning a target (a layer URL or a dotted class path) into a layer factory."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LayerFactory", "describe", "is_url", "load_class", "make_factory"]

#: ``factory(**overrides)`` returns a new layer instance.
LayerFactory = Callable[..., Any]


def is_url(target: str) -> bool:
    return "://" in target


def load_class(path: str) -> Any:
    """Import ``package.module.Class`` (or ``package.module:Class``)."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is neither a layer URL (scheme://...) nor a dotted class path")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None


def make_factory(target: str | LayerFactory, config: Mapping[str, Any] | None = None) -> LayerFactory:
    """A factory for ``target``: ``layers.from_url(url, **config, **overrides)``, or ``Class(**config, **overrides)``
    for a dotted class path or a class (any callable returning a layer) given directly."""
    base = dict(config or {})
    if isinstance(target, str) and is_url(target):
        from layers import from_url

        url = target
        return lambda **overrides: from_url(url, **{**base, **overrides})
    cls = load_class(target) if isinstance(target, str) else target
    return lambda **overrides: cls(**{**base, **overrides})


def describe(target: str | LayerFactory) -> str:
    """How a target is shown in reports."""
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
