"""``RedisChannelLayer``: the channel layer over Redis (one server, several shards, Sentinel or Cluster)."""

from __future__ import annotations

from typing import Any, ClassVar

from layers import BackendChannelLayer
from layers.backend import Backend
from layers.errors import ConfigError
from layers.options import LayerOptions, Option, positive_seconds, seconds

from .backend import RedisBackend
from .hosts import parse_hosts

__all__ = ["RedisChannelLayer"]

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
    url_options: ClassVar[LayerOptions] = LayerOptions(
        own={"timeout": Option(seconds, 5.0), "max_connections": Option(int, 20)},
        driver=_driver_url_options(),
        driver_secrets=frozenset({"password", "sentinel_password"}),
        hints={"host": "use hosts=[...]: Redis URLs, (host, port) tuples or dicts"},
    )

    def __init__(self, hosts: Any = None, *, timeout: float = 5.0, max_connections: int = 20,
                 **options: Any) -> None:
        super().__init__(**options)
        self.hosts = parse_hosts(hosts)
        self.timeout = positive_seconds("timeout", timeout)
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be a positive int, not {max_connections!r}")
        self.max_connections = max_connections

    @classmethod
    def url_target(cls, url: str) -> dict[str, Any]:
        """``redis://[:password@]host[:port][/db][?capacity=..&timeout=..]`` and the other forms
        :mod:`layers_redis.hosts` describes; connection options left in the query go to redis-py."""
        return {"hosts": [url]}

    def make_backend(self) -> Backend:
        return RedisBackend(self.hosts, self.prefix, self.timeout, self.max_connections)

    def __repr__(self) -> str:
        hosts = ", ".join(spec.label for spec in self.hosts)
        return f"<{type(self).__name__} prefix={self.prefix!r} hosts=[{hosts}]>"


