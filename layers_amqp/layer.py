"""``AMQPChannelLayer``: the channel layer on RabbitMQ (AMQP 0-9-1, pika's asyncio adapter)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import pika

from layers import BackendChannelLayer
from layers.backend import Backend
from layers.errors import ConfigError
from layers.options import LayerOptions, Option, positive_seconds, redact_url, seconds

from .backend import AMQPBackend
from .connection import Link
from .groups import Directory
from .topology import Topology

__all__ = ["AMQPChannelLayer"]

#: What pika takes from a URL's query (heartbeat, ssl_options, ...): one ``_set_url_<option>`` method each.
_PIKA_OPTIONS = frozenset(name[len("_set_url_"):] for name in dir(pika.URLParameters) if name.startswith("_set_url_"))


class AMQPChannelLayer(BackendChannelLayer):
    """A channel layer on an AMQP 0-9-1 broker (RabbitMQ).

    ``url`` is ``amqp://user:password@host:5672/vhost`` (``amqps://`` for TLS; pika's own query options such as
    ``heartbeat`` are passed through).  Several nodes of one RabbitMQ cluster: ``amqp://u:p@h1:5672,h2:5672/vh``
    or a list of URLs; the layer uses one at a time and moves to the next when its connection fails.
    ``ssl_context`` replaces the default TLS context for ``amqps``.
    ``timeout`` bounds every wait on the broker: connecting (also while it is down), confirms and calls; past it
    the operation raises :class:`layers.BackendUnavailable`.  ``host`` is accepted as another name for ``url``
    (channels_rabbitmq's setting).
    """

    spec_knobs: ClassVar[dict[str, Any]] = {"shares_state": True, "min_expiry": 1.0}
    url_options: ClassVar[LayerOptions] = LayerOptions(own={"timeout": Option(seconds, 10.0)}, driver=_PIKA_OPTIONS)

    def __init__(self, url: str | Sequence[str] = "amqp://guest:guest@127.0.0.1:5672/%2F", *,
                 host: str | None = None, ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0,
                 **options: Any) -> None:
        super().__init__(**options)
        if host is not None:  # channels_rabbitmq's name for the URL, so its CONFIG keeps working
            url = host
        urls = _node_urls(url)
        timeout = positive_seconds("timeout", timeout)
        if len(self.prefix.encode()) > 120:
            raise ConfigError("an AMQP layer prefix must be at most 120 bytes (queue names are limited to 255)")
        self.url = url if isinstance(url, str) else ",".join(url)
        self.timeout = float(timeout)
        self.ssl_context = ssl_context
        self._brokers = []
        for node_url in urls:
            params = _parameters(node_url, ssl_context, self.timeout)
            # Shown by `rabbitmqctl list_connections client_properties`: whose connection is this.
            params.client_properties = {"connection_name": f"layers-amqp {self.prefix} {self.client_prefix}"}
            parts = urlsplit(node_url)
            self._brokers.append((params, f"{parts.hostname or 'localhost'}:{parts.port or params.port}"
                                          f"{parts.path or '/'}"))
        self.topology = Topology(self.prefix, self.expiry, self.group_expiry)
        self.directory = Directory()

    @classmethod
    def url_target(cls, url: str) -> dict[str, Any]:
        return {"url": url}  # pika's own options (heartbeat=...) stay in the query

    def make_backend(self) -> Backend:
        link = Link(self._brokers, self.timeout, self.retry_delays)
        return AMQPBackend(link, self.topology, self.capacity_rules.lookup, self.directory)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self.url)} prefix={self.prefix!r}>"


def _node_urls(url: object) -> list[str]:
    """One URL per node: a list of URLs, or one URL whose host part lists several ``host:port``."""
    urls = [url] if isinstance(url, str) else list(url) if isinstance(url, (list, tuple)) and url else [url]
    found = []
    for each in urls:
        if not isinstance(each, str) or not each.lower().startswith(("amqp://", "amqps://")):
            raise ConfigError(f"an AMQP layer URL starts with amqp:// or amqps://, not {redact_url(str(each))!r}")
        parts = urlsplit(each)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        for node in hosts.split(","):
            if not node:
                raise ConfigError(f"empty host in AMQP URL {redact_url(each)!r}: list nodes as h1:5672,h2:5672")
            found.append(urlunsplit(parts._replace(netloc=f"{userinfo}@{node}" if userinfo else node)))
    return found


def _parameters(url: str, ssl_context: ssl.SSLContext | None, timeout: float) -> pika.URLParameters:
    try:
        params = pika.URLParameters(url)
    except Exception as exc:  # pika's messages may echo the URL: never the password
        raise ConfigError(f"invalid AMQP URL {redact_url(url)}: {type(exc).__name__}") from None
    if ssl_context is not None:
        params.ssl_options = pika.SSLOptions(ssl_context, params.host)
    params.connection_attempts = 1  # the layer retries with backoff itself
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    return params

