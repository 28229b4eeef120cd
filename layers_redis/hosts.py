"""Host specifications: every way a user can name a Redis server, normalized into :class:`HostSpec`.

Accepted (the channels_redis forms, plus Sentinel and Cluster URLs):

- URL strings: ``redis://[:password@]host[:port][/db]``, ``rediss://...``, ``unix:///path/redis.sock?db=0``;
  several comma-separated hosts in one URL are several shards: ``redis://h1:6379,h2:6379/0``;
- ``redis+sentinel://[:password@]s1:26379,s2:26379/master_name[/db]`` (``sentinel_password`` in the query);
- ``redis+cluster://[:password@]h1:7000,h2:7000`` (any reachable node(s) of one cluster);
- ``(host, port)`` tuples;
- dicts with ``address`` (a URL or a tuple) plus connection keyword arguments (``password``, ``db``, ``ssl`` ...);
- Sentinel dicts with ``master_name``, ``sentinels`` (list of ``(host, port)``) and optional ``sentinel_kwargs``;
- Cluster dicts with ``cluster: True`` and ``address`` or ``nodes``.

Each spec is one shard.  Labels (for repr, logs and errors) never carry a password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from layers.errors import ConfigError
from layers.options import redact_url

__all__ = ["HostSpec", "parse_hosts"]

Kind = Literal["single", "sentinel", "cluster"]
_SINGLE_SCHEMES = ("redis", "rediss", "unix")


@dataclass
class HostSpec:
    """One shard: a server (``single``), a Sentinel-managed master (``sentinel``) or a Redis Cluster."""

    kind: Kind
    label: str
    url: str | None = None  # a single-server URL, parsed by redis-py itself
    kwargs: dict[str, Any] = field(default_factory=dict)  # connection keyword arguments
    nodes: list[tuple[str, int]] = field(default_factory=list)  # sentinels, or cluster startup nodes
    master_name: str | None = None
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"HostSpec({self.kind}, {self.label})"


def parse_hosts(hosts: object) -> list[HostSpec]:
    """Normalize the ``hosts`` setting; raise ConfigError naming the bad entry."""
    if hosts is None:
        hosts = ["redis://127.0.0.1:6379"]
    if isinstance(hosts, (str, Mapping)) or (isinstance(hosts, tuple) and _is_address(hosts)):
        hosts = [hosts]
    if not isinstance(hosts, Sequence) or not hosts:
        raise ConfigError(f"hosts must be a non-empty list of Redis URLs, (host, port) tuples or dicts, "
                          f"not {hosts!r}")
    specs: list[HostSpec] = []
    for entry in hosts:
        specs.extend(_parse_entry(entry))
    for spec in specs:
        _check_options(spec)
    return specs


def _check_options(spec: HostSpec) -> None:
    """Build (without opening) a connection the way the backend will, so a bad port or an option redis-py does
    not know is a ConfigError now rather than a failure at the first call."""
    if spec.kind != "single":
        return
    import redis.asyncio as aioredis

    try:
        pool = aioredis.ConnectionPool.from_url(spec.url, **spec.kwargs) if spec.url is not None \
            else aioredis.ConnectionPool(**spec.kwargs)
        pool.make_connection()  # type: ignore[no-untyped-call]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad Redis settings for {spec.label}: {exc}") from None


def _parse_entry(entry: object) -> list[HostSpec]:
    if isinstance(entry, str):
        return _parse_url(entry, {})
    if _is_address(entry):
        host, port = _address(entry)
        return [HostSpec("single", f"{host}:{port}", kwargs={"host": host, "port": port})]
    if isinstance(entry, Mapping):
        return [_parse_dict(dict(entry))]
    raise ConfigError(f"cannot use {entry!r} as a Redis host: give a URL, a (host, port) tuple or a dict")


def _parse_dict(entry: dict[str, Any]) -> HostSpec:
    if "master_name" in entry:
        sentinels = [_address(s) for s in entry.pop("sentinels", None) or []]
        if not sentinels:
            raise ConfigError("a Sentinel host needs 'sentinels': a list of (host, port)")
        name = str(entry.pop("master_name"))
        sentinel_kwargs = dict(entry.pop("sentinel_kwargs", None) or {})
        return HostSpec("sentinel", f"sentinel:{name}@{_nodes_label(sentinels)}", kwargs=entry, nodes=sentinels,
                        master_name=name, sentinel_kwargs=sentinel_kwargs)
    cluster = bool(entry.pop("cluster", False))
    address = entry.pop("address", None)
    if cluster:
        nodes = [_address(n) for n in entry.pop("nodes", None) or []]
        if isinstance(address, str):
            return _parse_url(_cluster_url(address), entry)[0]
        if address is not None:
            nodes.append(_address(address))
        if not nodes:
            raise ConfigError("a cluster host needs 'address' or 'nodes'")
        return HostSpec("cluster", f"cluster:{_nodes_label(nodes)}", kwargs=entry, nodes=nodes)
    if isinstance(address, str):
        specs = _parse_url(address, entry)
        if len(specs) != 1:
            raise ConfigError(f"'address' names one server, not several: {redact_url(address)}")
        return specs[0]
    if address is not None:
        host, port = _address(address)
        entry.update(host=host, port=port)
    label = f"{entry.get('host', '127.0.0.1')}:{entry.get('port', 6379)}"
    return HostSpec("single", label, kwargs=entry)


def _parse_url(url: str, extra: dict[str, Any]) -> list[HostSpec]:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return [_sentinel_url(url, extra)]
    if scheme in ("redis+cluster", "rediss+cluster"):
        return [_cluster_from_url(url, extra)]
    if scheme not in _SINGLE_SCHEMES:
        raise ConfigError(f"unsupported Redis URL scheme in {redact_url(url)!r}: use redis://, rediss://, unix://, "
                          "redis+sentinel:// or redis+cluster://")
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    if scheme == "unix" or "," not in hostlist:
        return [HostSpec("single", redact_url(url), url=url, kwargs=dict(extra))]
    at = f"{userinfo}@" if userinfo else ""
    return [HostSpec("single", redact_url(one), url=one, kwargs=dict(extra))
            for one in (parts._replace(netloc=f"{at}{host}").geturl() for host in hostlist.split(","))]


def _sentinel_url(url: str, extra: dict[str, Any]) -> HostSpec:
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError(f"a Sentinel URL names the master: redis+sentinel://host:26379/mymaster, "
                          f"not {redact_url(url)!r}")
    kwargs = {**_userinfo(parts), **extra}
    if len(path) > 1:
        kwargs["db"] = int(path[1])
    query = dict(parse_qsl(parts.query))
    sentinel_kwargs: dict[str, Any] = {}
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query.pop("sentinel_password")
    if parts.scheme.lower().startswith("rediss"):
        kwargs["ssl"] = True
    kwargs.update(query)
    nodes = _netloc_nodes(parts.netloc, 26379)
    return HostSpec("sentinel", f"sentinel:{path[0]}@{_nodes_label(nodes)}", kwargs=kwargs, nodes=nodes,
                    master_name=unquote(path[0]), sentinel_kwargs=sentinel_kwargs)


def _cluster_from_url(url: str, extra: dict[str, Any]) -> HostSpec:
    parts = urlsplit(url)
    kwargs = {**_userinfo(parts), **dict(parse_qsl(parts.query)), **extra}
    if parts.scheme.lower().startswith("rediss"):
        kwargs["ssl"] = True
    nodes = _netloc_nodes(parts.netloc, 6379)
    return HostSpec("cluster", f"cluster:{_nodes_label(nodes)}", kwargs=kwargs, nodes=nodes)


def _cluster_url(url: str) -> str:
    scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
    return f"{scheme.split('+')[0]}+cluster://{rest}"


def _userinfo(parts: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    return kwargs


def _netloc_nodes(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hostlist = netloc.rpartition("@")[2]
    nodes = []
    for node in hostlist.split(","):
        host, _, port = node.rpartition(":") if ":" in node else (node, "", "")
        nodes.append((host or "127.0.0.1", int(port) if port else default_port))
    if not nodes or not hostlist:
        raise ConfigError("the URL names no host")
    return nodes


def _nodes_label(nodes: list[tuple[str, int]]) -> str:
    return ",".join(f"{host}:{port}" for host, port in nodes)


def _is_address(value: object) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], (int, str))


def _address(value: object) -> tuple[str, int]:
    if isinstance(value, str) and ":" in value:
        host, _, port = value.rpartition(":")
        return host, int(port)
    if _is_address(value):
        host, port = value  # type: ignore[misc]
        return str(host), int(port)
    raise ConfigError(f"{value!r} is not a (host, port) address")
