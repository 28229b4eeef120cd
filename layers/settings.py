"""Building layers from URLs, Django-style config dicts, Django settings or the environment."""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping
from typing import Any

from .core import BaseChannelLayer
from .errors import ConfigError
from .options import parse_url, redact_url
from .registry import BACKENDS, registered

__all__ = ["from_config", "from_url", "get_channel_layer", "known_schemes", "layer_class", "redact_url", "split_url"]

ENTRY_POINT_GROUP = BACKENDS


def known_schemes() -> dict[str, str]:
    """Scheme -> ``module:Class`` of every layer registered through entry points (see :mod:`layers.registry`)."""
    return {scheme: f"{ep.module}:{ep.attr}" for scheme, ep in registered(BACKENDS).items()}


def from_url(url: str, **overrides: Any) -> BaseChannelLayer:
    """Build a layer from a URL: ``memory://``, ``redis://host:6379/0?capacity=500``, ``postgresql://...``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"a layer URL looks like 'scheme://...', not {url!r}; known schemes: "
            f"{', '.join(sorted(known_schemes()))}"
        )
    cls = layer_class(url.split("://", 1)[0])
    try:
        return cls.from_url(url, **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad option for {redact_url(url, cls.url_options.secrets)}: {exc}") from exc


def layer_class(scheme: str) -> type[BaseChannelLayer]:
    """The layer class registered for URL ``scheme`` (imported; a missing extra names its pip command)."""
    scheme = scheme.lower()
    schemes = registered(BACKENDS)
    if scheme not in schemes:
        close = difflib.get_close_matches(scheme, schemes, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown layer URL scheme {scheme!r}{hint}; known schemes: {', '.join(sorted(schemes))}"
        )
    ep = schemes[scheme]
    target = f"{ep.module}:{ep.attr}"
    cls = _import(target, ep.extras[0] if ep.extras else None)
    if not (isinstance(cls, type) and issubclass(cls, BaseChannelLayer)):
        raise ConfigError(f"{target} (for {scheme}://) is not a channel layer class")
    return cls


def from_config(config: Mapping[str, Any]) -> Any:
    """Build a layer from a Django ``CHANNEL_LAYERS`` entry: ``{"BACKEND": "dotted.Path", "CONFIG": {...}}``."""
    if not isinstance(config, Mapping) or "BACKEND" not in config:
        raise ConfigError(f"a layer config is a dict with a 'BACKEND' dotted path, not {config!r}")
    options = config.get("CONFIG") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"CONFIG must be a dict of options, not {options!r}")
    target = config["BACKEND"]
    factory = _import(target, None)
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"bad CONFIG for {target}: {exc}") from exc


_cache: dict[str, Any] = {}


def get_channel_layer(alias: str = "default") -> Any:
    """The layer for ``alias``: Django's ``CHANNEL_LAYERS`` when configured, else ``$CHANNEL_LAYER_URL``,
    else ``memory://``.  One instance per alias per process."""
    if alias not in _cache:
        _cache[alias] = _build(alias)
    return _cache[alias]


def _build(alias: str) -> Any:
    django_layers = _django_channel_layers()
    if django_layers is not None:
        if alias not in django_layers:
            raise ConfigError(
                f"no channel layer {alias!r} in CHANNEL_LAYERS (have: {', '.join(django_layers)})"
            )
        return from_config(django_layers[alias])
    return from_url(os.environ.get("CHANNEL_LAYER_URL") or "memory://")


def _django_channel_layers() -> Mapping[str, Any] | None:
    try:
        from django.conf import settings
    except ImportError:
        return None
    if not settings.configured:
        return None
    return getattr(settings, "CHANNEL_LAYERS", None)


def split_url(url: str, layer: type[BaseChannelLayer] | None = None) -> tuple[str, dict[str, Any]]:
    """Split ``url`` into the URL without the options ``layer`` (default: the class registered for the URL's
    scheme) declares and those options, typed; the driver's options stay in the URL, a typo is refused."""
    cls = layer if layer is not None else layer_class(url.split("://", 1)[0])
    return parse_url(url, cls.url_options, cls.__name__)


def _import(target: str, extra: str | None) -> Any:
    module_name, _, attr = target.replace(":", ".").rpartition(".")
    if not module_name:
        raise ConfigError(f"{target!r} is not a dotted path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'channel-layers[{extra}]'" if extra else ""
        raise ConfigError(f"cannot import {module_name!r} for {target!r}: {exc}{hint}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None
