"""``RedisChannelLayer``: the channel layer over Redis (one server, several shards, Sentinel or Cluster)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

from layers.backend import Backend
from layers.core import BackendChannelLayer
from layers.errors import ConfigError
from layers.settings import split_url

from .backend import RedisBackend
from .hosts import parse_hosts

__all__ = ["RedisChannelLayer"]

# Query options of a layer URL that configure the layer itself rather than the Redis connection.
_LAYER_OPTIONS: dict[str, type] = {"timeout": float, "max_connections": int}


def _driver_url_options() -> frozenset[str]:
    """What redis-py takes from a URL's query: its parsed options and any connection (or cluster) keyword."""
    import inspect

    from redis.asyncio import cluster, connection

    names = {*connection.URL_QUERY_ARGUMENT_PARSERS, "sentinel_password"}
    for cls in (connection.AbstractConnection, connection.Connection, connection.SSLConnection,
                connection.UnixDomainSocketConnection, cluster.RedisCluster):
        names.update(name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                     if name != "self" and parameter.kind is not parameter.VAR_KEYWORD)
    return frozenset(names)


class RedisChannelLayer(BackendChannelLayer):
    """A channel layer on Redis; accepts the channels_redis ``CONFIG`` keys with the same meaning.

    ``hosts``: Redis URLs, ``(host, port)`` tuples, dicts with ``address`` and connection options, Sentinel dicts
    (``master_name``, ``sentinels``, ``sentinel_kwargs``) or Cluster URLs/dicts; several hosts are shards chosen
    by consistent hashing (append new hosts at the end: jump hashing moves only ~1/(n+1) of the names).
    ``timeout``: seconds after which a call to an unreachable server fails with ``BackendUnavailable``.
    ``max_connections``: command connections per shard per event loop (blocking pops have as many more).
    """

    spec_knobs: ClassVar[dict[str, Any]] = {"shares_state": True, "min_expiry": 0.1}
    url_options: ClassVar[frozenset[str] | None] = frozenset(_LAYER_OPTIONS) | _driver_url_options()

    def __init__(self, hosts: Any = None, *, timeout: float = 5.0, max_connections: int = 20,
                 **options: Any) -> None:
        super().__init__(**options)
        self.hosts = parse_hosts(hosts)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be a positive int, not {max_connections!r}")
        self.timeout = float(timeout)
        self.max_connections = max_connections

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisChannelLayer:
        """``redis://[:password@]host[:port][/db][?capacity=..&expiry=..&timeout=..]`` and the other forms
        :mod:`layers_redis.hosts` describes; connection options in the query string go to redis-py."""
        _, options = split_url(url, cls)  # the common options, typed; a typo is refused with a suggestion
        base, _, query = url.partition("?")
        kept: list[tuple[str, str]] = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in _LAYER_OPTIONS:
                try:
                    options[key] = _LAYER_OPTIONS[key](value)
                except ValueError:
                    raise ConfigError(f"URL option {key}={value!r} must be {_LAYER_OPTIONS[key].__name__}") from None
            elif key not in options:
                kept.append((key, value))
        # Rebuilt by hand: urlunsplit would turn unix:///path into unix:/path.
        host_url = base + ("?" + urlencode(kept) if kept else "")
        return cls(hosts=[host_url], **{**options, **overrides})

    def make_backend(self) -> Backend:
        return RedisBackend(self.hosts, self.prefix, self.timeout, self.max_connections)

    def __repr__(self) -> str:
        hosts = ", ".join(spec.label for spec in self.hosts)
        return f"<{type(self).__name__} prefix={self.prefix!r} hosts=[{hosts}]>"


