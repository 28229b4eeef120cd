"""What a benchmark runs against: our layers by URL, or a peer project's layer by name."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..settings import from_url, redact_url

__all__ = ["PEERS", "Target", "make_target"]

Layer = Any  # anything with the Channels layer API
Factory = Callable[..., Layer]


@dataclass
class Target:
    """A display name, a factory taking layer options (capacity, expiry), and the spec that rebuilds it."""

    name: str
    factory: Factory
    spec: str
    cross_process: bool = True  # False for in-process layers, which no worker process can reach
    isolated: bool = False  # run each workload in a child process: the layer leaks server connections


def _channels_memory(url: str, **options: Any) -> Layer:
    from channels.layers import InMemoryChannelLayer

    return InMemoryChannelLayer(**options)


def _channels_redis(url: str, **options: Any) -> Layer:
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(hosts=[url], **options)


def _channels_redis_pubsub(url: str, **options: Any) -> Layer:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    options.pop("capacity", None)  # it keeps no queues: no capacity and no expiry
    options.pop("expiry", None)
    return RedisPubSubChannelLayer(hosts=[url], **options)


def _channels_rabbitmq(url: str, **options: Any) -> Layer:
    from channels_rabbitmq.core import RabbitmqChannelLayer

    capacity = options.pop("capacity", 100)
    return RabbitmqChannelLayer(host=url, local_capacity=capacity, remote_capacity=capacity, **options)


def _channels_postgres(url: str, **options: Any) -> Layer:
    database = _django_database(url)  # before importing the peer: its module needs Django configured
    from channels_postgres.core import PostgresChannelLayer

    options.pop("capacity", None)  # it has no capacity
    return PostgresChannelLayer(**database, **options)


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


# channels_postgres keeps a LISTEN connection per receiving channel open after close(): a group of 100 members
# exhausts a default server (max_connections = 100) and every later workload fails with "too many clients".
_ISOLATED = {"channels_postgres"}

PEERS: dict[str, tuple[Callable[..., Layer], str]] = {
    "channels_memory": (_channels_memory, ""),
    "channels_redis": (_channels_redis, "redis://127.0.0.1:6379/0"),
    "channels_redis_pubsub": (_channels_redis_pubsub, "redis://127.0.0.1:6379/0"),
    "channels_postgres": (_channels_postgres, "postgresql://postgres@127.0.0.1:5432/test"),
    "channels_rabbitmq": (_channels_rabbitmq, "amqp://guest:guest@127.0.0.1:5672/%2F"),
}


def make_target(spec: str) -> Target:
    """A target from a layer URL (ours) or a peer name, optionally ``peer=URL`` (``channels_redis=redis://h``)."""
    name, _, url = spec.partition("=")
    if name in PEERS:
        build, default_url = PEERS[name]
        url = url or default_url
        return Target(name, lambda **options: build(url, **options), spec, cross_process=bool(default_url),
                      isolated=name in _ISOLATED)
    return Target(redact_url(spec), lambda **options: from_url(spec, **options), spec,
                  cross_process=not spec.startswith("memory:"))
