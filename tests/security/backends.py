"""Every backend behind one interface, for the fuzz and security tests: build layers, and see or write raw storage.

A :class:`Target` builds layers of one backend that share one unique ``prefix`` (so two of them act like two
processes of one site), and reaches *under* the layer into the server:

- :meth:`Target.stored` returns the raw bytes at rest in a queue, exactly as the server holds them (a Redis list
  element, a table row's ``item``, an AMQP message body), without taking them;
- :meth:`Target.inject` writes bytes into a queue as a stored item, bypassing the layer (garbage, foreign keys).

The memory "server" is the layer's own store, so two memory layers never share it: :meth:`Target.peer` is the
same layer there.  Nothing here knows a test; the tests never know a backend.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

from layers import BackendChannelLayer, InMemoryChannelLayer
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, free_port, port_open

__all__ = ["TARGETS", "Target"]


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    return port_open(parts.port or default_port, parts.hostname or "127.0.0.1")


class Target:
    """One backend; subclasses fill in how to reach its storage."""

    name: ClassVar[str]
    #: Two layers built by :meth:`layer` see the same server data.
    shares_state: ClassVar[bool] = True

    def __init__(self) -> None:
        self.prefix = "sec" + uuid.uuid4().hex[:10]
        self._layers: list[BackendChannelLayer] = []

    @classmethod
    def skip_reason(cls) -> str | None:
        """Why this backend cannot be tested here (None: it can)."""
        return None

    def layer(self, **overrides: Any) -> BackendChannelLayer:
        """A new layer on this target's server and prefix (``prefix=`` overrides it, for isolation tests)."""
        layer = self.build(**{"prefix": self.prefix, **overrides})
        self._layers.append(layer)
        return layer

    def peer(self, layer: BackendChannelLayer, **overrides: Any) -> BackendChannelLayer:
        """Another layer that reads what ``layer`` wrote (another process on the same server)."""
        return self.layer(**{"prefix": layer.prefix, **overrides})

    def build(self, **options: Any) -> BackendChannelLayer:
        raise NotImplementedError

    def url_with_password(self, password: str, port: int) -> str | None:
        """A URL of this backend carrying ``password``, for a server on ``port`` (None: no URL form)."""
        return None

    def stored(self, layer: BackendChannelLayer, queue: str) -> list[bytes]:
        """The raw bytes at rest in ``queue`` (oldest first), left where they are."""
        raise NotImplementedError

    def inject(self, layer: BackendChannelLayer, queue: str, item: bytes) -> None:
        """Store ``item`` at the tail of ``queue`` as if the layer had (no validation, no framing checks)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove everything stored under the prefixes used (best effort)."""

    def _prefixes(self) -> set[str]:
        return {self.prefix} | {layer.prefix for layer in self._layers}


class MemoryTarget(Target):
    name = "memory"
    shares_state = False

    def build(self, **options: Any) -> BackendChannelLayer:
        return InMemoryChannelLayer(**options)

    def peer(self, layer: BackendChannelLayer, **overrides: Any) -> BackendChannelLayer:
        if overrides:  # a different configuration over the same store: share the store object
            other = self.layer(**{"prefix": layer.prefix, **overrides})
            other._store = layer._store  # type: ignore[attr-defined]
            return other
        return layer

    def stored(self, layer: BackendChannelLayer, queue: str) -> list[bytes]:
        return [item for _, item in layer._store.queues.get(queue, ())]  # type: ignore[attr-defined]

    def inject(self, layer: BackendChannelLayer, queue: str, item: bytes) -> None:
        store = layer._store  # type: ignore[attr-defined]
        store.queues.setdefault(queue, deque()).append((time.time() + 60, item))
        store._wake(queue)


class RedisTarget(Target):
    name = "redis"

    @classmethod
    def skip_reason(cls) -> str | None:
        return None if _reachable(REDIS_URL, 6379) else f"the shared Redis at {REDIS_URL} is not reachable"

    def build(self, **options: Any) -> BackendChannelLayer:
        from layers_redis import RedisChannelLayer

        return RedisChannelLayer(hosts=[REDIS_URL], timeout=3, **options)

    def url_with_password(self, password: str, port: int) -> str:
        return f"redis://:{password}@127.0.0.1:{port}/0"

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            yield client
        finally:
            client.close()

    def _key(self, layer: BackendChannelLayer, queue: str) -> str:
        return f"{layer.prefix}:q:{{{queue}}}"

    def stored(self, layer: BackendChannelLayer, queue: str) -> list[bytes]:
        with self.client() as client:
            return list(client.lrange(self._key(layer, queue), 0, -1))

    def inject(self, layer: BackendChannelLayer, queue: str, item: bytes) -> None:
        self.inject_element(layer, queue, b"%015d" % int((time.time() + 60) * 1000) + item)

    def inject_element(self, layer: BackendChannelLayer, queue: str, element: bytes) -> None:
        """RPUSH ``element`` as it is: not even the deadline framing the layer puts in front of every item."""
        with self.client() as client:
            client.rpush(self._key(layer, queue), element)
            client.pexpire(self._key(layer, queue), 120_000)

    def cleanup(self) -> None:
        prefixes = self._prefixes()
        with contextlib.suppress(Exception), self.client() as client:
            for prefix in prefixes:
                for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                    client.unlink(key)


class PostgresTarget(Target):
    name = "postgres"

    @classmethod
    def skip_reason(cls) -> str | None:
        if not _reachable(POSTGRES_DSN, 5432):
            return f"the shared PostgreSQL at {POSTGRES_DSN} is not reachable"
        return None

    def build(self, **options: Any) -> BackendChannelLayer:
        from layers_postgres import PostgresChannelLayer

        # Few connections: the shared server (max_connections 100) also serves the other suites running alongside.
        return PostgresChannelLayer(POSTGRES_DSN, timeout=3, max_pool_size=2, **options)

    def url_with_password(self, password: str, port: int) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{port}/test?connect_timeout=2"

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            yield conn

    def stored(self, layer: BackendChannelLayer, queue: str) -> list[bytes]:
        names = layer.config.names  # type: ignore[attr-defined]
        with self.connection() as conn:
            rows = conn.execute(f"SELECT item FROM {names.msg} WHERE queue = %s ORDER BY id".encode(),
                                (queue,)).fetchall()
        return [bytes(row[0]) for row in rows]

    def inject(self, layer: BackendChannelLayer, queue: str, item: bytes) -> None:
        from layers_postgres.schema import quote_literal

        names = layer.config.names  # type: ignore[attr-defined]
        with self.connection() as conn, conn.transaction():
            conn.execute(f"INSERT INTO {names.queue} (queue, n) VALUES (%s, 1) "
                         "ON CONFLICT (queue) DO UPDATE SET n = excluded.n + 1".encode(), (queue,))
            conn.execute(f"INSERT INTO {names.msg} (queue, deadline, item) VALUES (%s, %s, %s)".encode(),
                         (queue, time.time() + 60, item))
            conn.execute(f"SELECT pg_notify({quote_literal(names.channel)}, %s)".encode(), (queue,))

    def cleanup(self) -> None:
        from layers_postgres import drop_ddl

        with contextlib.suppress(Exception), self.connection() as conn:
            for prefix in self._prefixes():
                conn.execute(drop_ddl(prefix).encode())


class AMQPTarget(Target):
    name = "amqp"

    @classmethod
    def skip_reason(cls) -> str | None:
        return None if _reachable(AMQP_URL, 5672) else f"the shared RabbitMQ at {AMQP_URL} is not reachable"

    def build(self, **options: Any) -> BackendChannelLayer:
        from layers_amqp import AMQPChannelLayer

        return AMQPChannelLayer(AMQP_URL, timeout=3, **options)

    def url_with_password(self, password: str, port: int) -> str:
        return f"amqp://guest:{password}@127.0.0.1:{port}/%2F"

    @contextlib.contextmanager
    def channel(self) -> Iterator[Any]:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            yield conn.channel()
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _queue(self, layer: BackendChannelLayer, queue: str) -> str:
        return layer.topology.queue(queue)  # type: ignore[attr-defined,no-any-return]

    def stored(self, layer: BackendChannelLayer, queue: str) -> list[bytes]:
        """A process queue is two AMQP queues: its own and its group inbox (group messages, minus the membership
        records that share the inbox).  Read without acknowledging; closing the channel puts everything back."""
        names = [self._queue(layer, queue)]
        if "!" in queue:
            names.append(layer.topology.group_inbox(queue))  # type: ignore[attr-defined]
        return [body for name in names for body in self._peek(name)]

    def _peek(self, name: str) -> list[bytes]:
        import pika

        from layers_amqp.groups import RECORD_TYPE

        bodies = []
        with self.channel() as channel:
            try:
                channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return []  # never declared: nothing was ever stored
                raise
            while True:
                method, props, body = channel.basic_get(name, auto_ack=False)
                if method is None:
                    break
                if props.type != RECORD_TYPE:
                    bodies.append(body)
        return bodies

    def inject(self, layer: BackendChannelLayer, queue: str, item: bytes, **properties: Any) -> None:
        """Publish to the queue through the default exchange (the queue must exist: the layer declares it)."""
        import pika

        with self.channel() as channel:
            channel.confirm_delivery()
            channel.basic_publish("", self._queue(layer, queue), item, pika.BasicProperties(**properties),
                                  mandatory=True)

    def cleanup(self) -> None:
        import asyncio

        for prefix in self._prefixes():
            with contextlib.suppress(Exception):
                layer = self.build(prefix=prefix)
                asyncio.run(_flush_and_close(layer))
                with self.channel() as channel:  # flush keeps the registry queue (it expires only after a quiet period)
                    channel.queue_delete(layer.topology.registry)  # type: ignore[attr-defined]


async def _flush_and_close(layer: BackendChannelLayer) -> None:
    try:
        await layer.flush()
    finally:
        await layer.close()


TARGETS: dict[str, type[Target]] = {cls.name: cls for cls in (MemoryTarget, RedisTarget, PostgresTarget, AMQPTarget)}


def unreachable_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    return free_port()
