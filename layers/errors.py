"""The one error tree of channel-layers.

Every backend raises these (wrapping driver exceptions with ``raise ... from exc``) so callers never need to know
which backend runs.  Name and message errors are ``TypeError`` subclasses because Django Channels code expects
``TypeError`` for bad names; ``ChannelFull`` and ``MessageTooLarge`` also derive from Channels' own classes when
Channels is installed, so ``except channels.exceptions.ChannelFull`` keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "BackendRefused",
    "BackendUnavailable",
    "ChannelFull",
    "ChannelNotOwned",
    "ConfigError",
    "DatabaseNotFound",
    "InvalidChannelName",
    "InvalidGroupName",
    "InvalidMessage",
    "InvalidName",
    "LayerClosed",
    "LayerError",
    "MessageTooLarge",
    "ServerError",
    "TLSVerificationFailed",
    "Unsupported",
    "caused_by",
]

if TYPE_CHECKING:

    class _ChannelsFull(Exception): ...

    class _ChannelsTooLarge(Exception): ...

else:
    try:  # Channels is optional; when present our errors are also its errors.
        from channels.exceptions import ChannelFull as _ChannelsFull
        from channels.exceptions import MessageTooLarge as _ChannelsTooLarge
    except ImportError:  # pragma: no cover - exercised without Channels installed

        class _ChannelsFull(Exception):
            """Stands in for channels.exceptions.ChannelFull."""

        class _ChannelsTooLarge(Exception):
            """Stands in for channels.exceptions.MessageTooLarge."""


class LayerError(Exception):
    """Base class of every error raised by channel-layers."""


class ChannelFull(LayerError, _ChannelsFull):
    """``send`` found the destination channel at its capacity; the message was not stored.  ``channels``: the
    channels that were full (the one of ``send``; every full one of ``send_many``, whose other messages were
    stored)."""

    def __init__(self, message: str = "", channels: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.channels: list[str] = list(channels)


class MessageTooLarge(LayerError, _ChannelsTooLarge, ValueError):
    """The serialized message is larger than the layer's ``max_message_size``."""


class InvalidName(LayerError, TypeError):
    """A channel or group name breaks the naming rules."""


class InvalidChannelName(InvalidName):
    """A channel name breaks the naming rules."""


class InvalidGroupName(InvalidName):
    """A group name breaks the naming rules."""


class ChannelNotOwned(LayerError, TypeError, AssertionError):
    """``receive()`` of a process-local channel that another layer instance created: only its owner receives it.

    A ``TypeError`` like the name errors (Channels code expects ``TypeError`` for a channel ``receive()`` cannot
    take), but not an ``InvalidChannelName``: the name itself is valid, and any layer may send to it.  Also an
    ``AssertionError``, which channels_redis, channels_postgres and channels_rabbitmq raise here (code and tests
    written against them catch it).
    """


class InvalidMessage(LayerError, TypeError):
    """A message is not a dict with str keys and serializable values."""


class ConfigError(LayerError, ValueError):
    """A layer URL, setting or option is invalid, or the backend it names is not installed."""


class BackendUnavailable(LayerError, ConnectionError):
    """The backend server could not be reached (or did not answer) within the layer's time limit."""


class LayerClosed(LayerError):
    """The layer was closed while this call waited (a ``receive()`` pending when ``close()`` ran)."""


class ServerError(LayerError):
    """The server answered this one call with an error that neither a reconnect nor new settings explain (a Redis
    error reply, a PostgreSQL SQL error, an AMQP channel exception); the driver's error is chained."""


class Unsupported(LayerError, NotImplementedError):
    """This backend cannot do that by design; the message says why (e.g. RabbitMQ routes group messages through
    bindings that AMQP 0-9-1 cannot list, so no process knows a group's members across processes)."""


class BackendRefused(ConfigError):
    """The server answered and refused this client for a reason retrying cannot heal: fix the settings.

    ``send`` and pending ``receive()`` calls raise it at once instead of retrying.  Not a ``BackendUnavailable``
    (nor a ``ConnectionError``): code that retries unavailable servers, ours and the drivers', must not retry it.
    """


class AuthenticationFailed(BackendRefused):
    """Wrong user name or password, or a user (PostgreSQL role) the server does not know."""


class AccessDenied(BackendRefused):
    """The user is known but not allowed in (permissions, ``pg_hba.conf``, a vhost the user may not use)."""


class DatabaseNotFound(BackendRefused):
    """The database does not exist: a PostgreSQL database, an AMQP virtual host, a Redis database number."""


class TLSVerificationFailed(BackendRefused):
    """The server's TLS certificate failed verification (unknown CA, wrong host name, expired)."""


def caused_by(
    error: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first exception of ``kinds`` in ``error``'s chain (itself, ``__cause__``, ``__context__`` and exceptions
    carried in ``args``, ``exceptions`` or ``exception``, as drivers wrap them), or None; for backends mapping
    driver errors."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kinds):
            return current
        # ExceptionGroup and pika's connection workflow errors carry theirs in ``exceptions`` / ``exception``.
        carried = [*current.args, *getattr(current, "exceptions", ()), getattr(current, "exception", None)]
        todo.extend(arg for arg in carried if isinstance(arg, BaseException))
        todo.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    return None
