"""Building layers from URLs, Django-style config dicts, Django settings or the environment."""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .core import BaseChannelLayer, _explain_unknown_options
from .errors import ConfigError

__all__ = ["from_config", "from_url", "get_channel_layer", "known_schemes", "redact_url", "split_url"]

ENTRY_POINT_GROUP = "layers.backends"

# Built in so a source checkout works without installed entry-point metadata: scheme -> (target, extra).
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "memory": ("layers.memory:InMemoryChannelLayer", None),
    "redis": ("layers_redis:RedisChannelLayer", "redis"),
    "rediss": ("layers_redis:RedisChannelLayer", "redis"),
    "unix": ("layers_redis:RedisChannelLayer", "redis"),
    "redis+sentinel": ("layers_redis:RedisChannelLayer", "redis"),
    "redis+cluster": ("layers_redis:RedisChannelLayer", "redis"),
    "postgres": ("layers_postgres:PostgresChannelLayer", "postgres"),
    "postgresql": ("layers_postgres:PostgresChannelLayer", "postgres"),
    "amqp": ("layers_amqp:AMQPChannelLayer", "amqp"),
    "amqps": ("layers_amqp:AMQPChannelLayer", "amqp"),
}

# Query-string options every layer understands, with their types.
_COMMON_TYPES: dict[str, type] = {
    "capacity": int,
    "expiry": float,
    "group_expiry": float,
    "max_message_size": int,
    "prefix": str,
    "serializer_format": str,
}


def known_schemes() -> dict[str, str]:
    """Scheme -> ``module:Class`` for built-in backends and those registered through entry points."""
    schemes = {scheme: target for scheme, (target, _) in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        schemes.setdefault(ep.name, ep.value)
    return schemes


def from_url(url: str, **overrides: Any) -> BaseChannelLayer:
    """Build a layer from a URL: ``memory://``, ``redis://host:6379/0?capacity=500``, ``postgresql://...``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"a layer URL looks like 'scheme://...', not {url!r}; known schemes: "
            f"{', '.join(sorted(known_schemes()))}"
        )
    scheme = url.split("://", 1)[0].lower()
    schemes = known_schemes()
    if scheme not in schemes:
        close = difflib.get_close_matches(scheme, schemes, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown layer URL scheme {scheme!r}{hint}; known schemes: {', '.join(sorted(schemes))}"
        )
    extra = _BUILTIN.get(scheme, (None, None))[1]
    cls = _import(schemes[scheme], extra)
    if not (isinstance(cls, type) and issubclass(cls, BaseChannelLayer)):
        raise ConfigError(f"{schemes[scheme]} (for {scheme}://) is not a channel layer class")
    try:
        return cls.from_url(url, **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad option for {redact_url(url)}: {exc}") from exc


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
    """Split ``url`` into the URL without its common layer options and those options, typed.

    With ``layer`` (a class declaring ``url_options``), an option neither common nor the layer's own is refused
    here with a suggestion (``?capcity=5``: did you mean 'capacity'?) instead of reaching the driver.
    """
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if layer is not None and layer.url_options is not None:
        unknown = [key for key, _ in pairs if key not in _COMMON_TYPES and key not in layer.url_options]
        if unknown:
            raise ConfigError(_explain_unknown_options(layer.__name__, unknown, layer.url_options))
    options: dict[str, Any] = {}
    kept: list[tuple[str, str]] = []
    for key, value in pairs:
        if key in _COMMON_TYPES:
            options[key] = _coerce(key, value, _COMMON_TYPES[key])
        else:
            kept.append((key, value))
    query = "&".join(f"{k}={v}" for k, v in kept)
    base = url.split("?", 1)[0]  # rebuilt by hand: urlunsplit turns unix:///path into unix:/path
    return (f"{base}?{query}" if query else base), options


def _coerce(key: str, value: str, kind: type) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"URL option {key}={value!r} must be {kind.__name__}") from None
    return int(number) if kind is float and float(number).is_integer() else number


# Option names that carry secrets: password, passwd, pass, sslpassword, sentinel_password, any *_password.
_SECRET_OPTION = r"(?:[A-Za-z]*_)?pass(?:word|wd)?|sslpassword"
_SECRET_QUERY = re.compile(rf"(?i)(^|[&;])({_SECRET_OPTION})=([^&;#]*)")
_SECRET_CONNINFO = re.compile(rf"(?i)(^|\s)({_SECRET_OPTION})(\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***`` (for repr, logs and errors): the one in the user info,
    query options such as ``?password=`` or ``sentinel_password=``, and ``password=`` in a libpq key=value
    connection string.  Everything else is left exactly as written."""
    if "://" not in url:
        return _SECRET_CONNINFO.sub(r"\1\2\3***", url)
    head, mark, query = url.partition("?")
    if mark:
        query = _SECRET_QUERY.sub(r"\1\2=***", query)
    scheme, _, rest = head.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return f"{scheme}://{netloc}{slash}{path}{mark}{query}"


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
