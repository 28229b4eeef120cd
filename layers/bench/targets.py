"""What a benchmark runs against: our layers by URL, or a peer project's layer by name.

Every target is confined to what the benchmark creates (:func:`confined`): our layers and channels_redis get a
prefix of their own, channels_postgres a private database, channels_rabbitmq a private groups exchange; at the
end only those are removed.  Nothing that was on the server before the run is read, flushed or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import BackendUnavailable, ConfigError, LayerError
from ..settings import from_url, redact_url

__all__ = ["PEERS", "MissingPackage", "Peer", "Target", "bench_prefix", "confined", "make_target"]

Layer = Any  # anything with the Channels layer API
Factory = Callable[..., Layer]
Cleanup = Callable[[], None]


class MissingPackage(ConfigError):
    """A peer (or one of its dependencies) is not installed; the message carries the pip command."""


@dataclass
class Target:
    """A display name, a factory taking layer options (capacity, expiry), and the spec that rebuilds it.

    ``make_target(spec, prefix)`` rebuilds the same target in a worker process.
    """

    name: str
    factory: Factory
    spec: str
    cross_process: bool = True  # False for in-process layers, which no worker process can reach
    isolated: bool = False  # run each workload in a child process: the layer leaks server connections
    prefix: str = ""  # the benchmark's own namespace on the server ("" for in-process layers)


def bench_prefix() -> str:
    """A namespace no site uses: our layers and the peers that take a prefix keep every key/row/queue under it."""
    return f"layers_bench_{secrets.token_hex(4)}"


def _channels_memory(url: str, prefix: str, **options: Any) -> Layer:
    from channels.layers import InMemoryChannelLayer

    return InMemoryChannelLayer(**options)


def _channels_redis(url: str, prefix: str, **options: Any) -> Layer:
    from channels_redis.core import RedisChannelLayer

    # Its flush() deletes KEYS <prefix>*: with the default "asgi" that is every site's layer on the server.
    return RedisChannelLayer(hosts=[url], prefix=prefix or "asgi", **options)


def _channels_redis_pubsub(url: str, prefix: str, **options: Any) -> Layer:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    options.pop("capacity", None)  # it keeps no queues: no capacity and no expiry
    options.pop("expiry", None)
    return RedisPubSubChannelLayer(hosts=[url], prefix=prefix or "asgi", **options)


def _channels_rabbitmq(url: str, prefix: str, **options: Any) -> Layer:
    from channels_rabbitmq.core import RabbitmqChannelLayer

    capacity = options.pop("capacity", 100)
    # Its own queues are exclusive (gone with the connection); the groups exchange is the one shared thing.
    return RabbitmqChannelLayer(host=url, local_capacity=capacity, remote_capacity=capacity,
                                groups_exchange=_rabbitmq_exchange(prefix), **options)


def _rabbitmq_exchange(prefix: str) -> str:
    return f"{prefix}.groups" if prefix else "groups"


def _channels_postgres(url: str, prefix: str, **options: Any) -> Layer:
    database = _django_database(url)  # before importing the peer: its module needs Django configured
    from channels_postgres.core import PostgresChannelLayer

    options.pop("capacity", None)  # it has no capacity
    return PostgresChannelLayer(prefix=prefix or "asgi", **database, **options)


def _django_database(url: str) -> dict[str, Any]:
    """channels_postgres needs Django configured with its app migrated; do that once, on the peer's server."""
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    if not settings.configured:
        parts = urlsplit(url)
        database = {"ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/") or "postgres",
                    "USER": parts.username or "postgres", "PASSWORD": parts.password or "",
                    "HOST": parts.hostname or "127.0.0.1", "PORT": parts.port or 5432}
        settings.configure(DATABASES={"default": database}, INSTALLED_APPS=["channels_postgres"], USE_TZ=True)
        django.setup()
        os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # a one-off migrate from a benchmark's loop
        call_command("migrate", "channels_postgres", verbosity=0)
    return dict(connections["default"].settings_dict)


@dataclass(frozen=True)
class Peer:
    build: Callable[..., Layer]
    default_url: str
    modules: tuple[str, ...]  # importable names it needs
    pip: str  # what to install
    isolated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def missing(self) -> str | None:
        """None when installed, else the module that is not."""
        for module in self.modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return module
        return None


# channels_postgres keeps a LISTEN connection per receiving channel open after close(): a group of 100 members
# exhausts a default server (max_connections = 100) and every later workload fails with "too many clients".
PEERS: dict[str, Peer] = {
    "channels_memory": Peer(_channels_memory, "", ("channels",), "channels"),
    "channels_redis": Peer(_channels_redis, "redis://127.0.0.1:6379/0", ("channels_redis", "redis"),
                           "channels-redis"),
    "channels_redis_pubsub": Peer(_channels_redis_pubsub, "redis://127.0.0.1:6379/0",
                                  ("channels_redis", "redis"), "channels-redis"),
    "channels_postgres": Peer(_channels_postgres, "postgresql://postgres@127.0.0.1:5432/test",
                              ("channels_postgres", "django", "psycopg"), "channels-postgres", isolated=True),
    "channels_rabbitmq": Peer(_channels_rabbitmq, "amqp://guest:guest@127.0.0.1:5672/%2F",
                              ("channels_rabbitmq",), "channels-rabbitmq"),
}


def make_target(spec: str, prefix: str = "") -> Target:
    """A target from a layer URL (ours) or a peer name, optionally ``peer=URL`` (``channels_redis=redis://h``).

    ``prefix`` is the namespace the layer works in; use :func:`confined` rather than calling this directly, so
    the run gets a fresh prefix and the peers that need more (a private database) get it, and are cleaned up.
    """
    name, _, url = spec.partition("=")
    if name in PEERS:
        peer = PEERS[name]
        url = url or peer.default_url
        return Target(name, lambda **options: peer.build(url, prefix, **options), spec,
                      cross_process=bool(peer.default_url), isolated=peer.isolated, prefix=prefix)
    if "://" not in spec:
        raise ConfigError(f"unknown benchmark target {spec!r}: give a layer URL (memory://, redis://..., "
                          f"postgresql://..., amqp://...) or a peer: {', '.join(PEERS)} (PEER=URL for another server)")
    overrides = {"prefix": prefix} if prefix else {}
    return Target(redact_url(spec), lambda **options: from_url(spec, **{**options, **overrides}), spec,
                  cross_process=not spec.startswith("memory:"), prefix=prefix)


def check_installed(specs: Sequence[str]) -> None:
    """Raise :class:`MissingPackage` with the pip command for the first peer that is not installed."""
    for spec in specs:
        name, _, _ = spec.partition("=")
        peer = PEERS.get(name)
        module = peer.missing() if peer else None
        if peer and module:
            raise MissingPackage(
                f"--vs {name} needs the {module!r} module, which is not installed: pip install {peer.pip} "
                "(every peer at once: pip install 'channel-layers[bench]')")
        if peer is None:
            from_url(spec)  # ours: an unknown scheme or a missing driver raises ConfigError with the pip command


@contextlib.contextmanager
def confined(specs: Sequence[str], prefix: str | None = None, probe: bool = True) -> Iterator[list[Target]]:
    """Targets for ``specs`` that work only in what this run creates, removed again when the block ends.

    Before anything runs: :class:`MissingPackage` for a peer that is not installed, and (``probe``: one message
    sent and received on each target) :class:`layers.BackendUnavailable` for a server that cannot be reached.
    """
    check_installed(specs)
    prefix = prefix or bench_prefix()
    cleanups: list[tuple[str, Cleanup]] = []
    try:
        targets = []
        for spec in specs:
            spec, private, cleanup = _private_resources(spec, prefix)
            target = make_target(spec, prefix)
            if private is not None:
                cleanups.append((target.name, private))
            if probe:
                _probe(target)
            if cleanup is not None:  # only once the probe got through: an unreachable server has nothing of ours
                cleanups.append((target.name, cleanup))
            targets.append(target)
        yield targets
    finally:
        for name, cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:  # report and go on: the other targets still get cleaned
                print(f"layers bench: warning: cleaning up after {name} (prefix {prefix}) failed: "
                      f"{type(exc).__name__}: {_first_line(exc)}")


PROBE_SECONDS = 20.0


def _probe(target: Target) -> None:
    """Send and receive one message, so an unreachable server is one error before any workload."""
    if target.isolated:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            error = pool.submit(_probe_in_child, target.spec, target.prefix).result(timeout=PROBE_SECONDS + 60)
    else:
        error = _probe_here(target)
    if error:
        shown = target.name  # ours: the redacted URL
        if target.name in PEERS:
            shown += f" at {redact_url(target.spec.partition('=')[2] or PEERS[target.name].default_url)}"
        raise BackendUnavailable(f"cannot reach {shown}: {error}; nothing was run")


def _probe_in_child(spec: str, prefix: str) -> str | None:
    return _probe_here(make_target(spec, prefix))


def _probe_here(target: Target) -> str | None:
    async def probe() -> None:
        layer = target.factory(capacity=10, expiry=60)
        try:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "bench.probe"})
            await layer.receive(channel)
        finally:  # the probe took its message back: nothing to flush
            close = getattr(layer, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), 5)

    quiet = logging.getLogger("layers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the reconnect warnings of an unreachable server: the error says it once
    try:
        asyncio.run(asyncio.wait_for(probe(), PROBE_SECONDS))
    except asyncio.TimeoutError:
        return f"no answer within {PROBE_SECONDS:.0f} s"
    except LayerError as exc:  # ours: the message names the server and the cause
        return _first_line(exc)
    except Exception as exc:
        return f"{type(exc).__name__}: {_first_line(exc)}"
    finally:
        quiet.setLevel(level)
    return None


def _private_resources(spec: str, prefix: str) -> tuple[str, Cleanup | None, Cleanup | None]:
    """Create what a peer needs beyond a prefix. Returns the spec that points at it, how to remove it (at once),
    and how to remove what the workloads leave under the prefix (once the target was reached)."""
    name, _, url = spec.partition("=")
    if name == "channels_postgres":
        private_spec, drop = _private_postgres_database(url or PEERS[name].default_url, prefix)
        return private_spec, drop, None
    if name == "channels_rabbitmq":
        url = url or PEERS[name].default_url
        return spec, None, lambda: _rabbitmq_delete(url, exchange=_rabbitmq_exchange(prefix))
    if name in PEERS:
        return spec, None, None
    return spec, None, lambda: _clean_ours(spec, prefix)


def _private_postgres_database(url: str, prefix: str) -> tuple[str, Cleanup]:
    """channels_postgres TRUNCATEs its tables on flush, whatever its prefix: give it a database of its own."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{prefix}"')
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(f"cannot reach PostgreSQL at {redact_url(url)}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise ConfigError(f"channels_postgres needs a private database and CREATE DATABASE failed on "
                          f"{redact_url(url)} ({_first_line(exc)}); use a role with CREATEDB") from exc
    parts = urlsplit(url)
    private = urlunsplit(parts._replace(path=f"/{prefix}"))

    def drop() -> None:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{prefix}" WITH (FORCE)')

    return f"channels_postgres={private}", drop


def _rabbitmq_delete(url: str, *, exchange: str = "", queue: str = "") -> None:
    """Delete an exchange or a queue this run declared (AMQP cannot list them: the name comes from the run)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        if exchange:
            channel.exchange_delete(exchange)
        if queue:
            channel.queue_delete(queue)
    finally:
        connection.close()


def _clean_ours(spec: str, prefix: str) -> None:
    """Remove everything our layer's prefix made on the server: its data, and what ``flush`` keeps (PostgreSQL
    tables and functions, the AMQP queue registry)."""

    async def drop() -> None:
        layer = from_url(spec, prefix=prefix)
        try:
            await asyncio.wait_for(layer.drop(), 30)
        finally:
            await layer.close()

    if not spec.startswith("memory:"):
        asyncio.run(drop())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
