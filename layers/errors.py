"""The one error tree of channel-layers.

Every backend raises these (wrapping driver exceptions with ``raise ... from exc``) so callers never need to know
which backend runs.  Name and message errors are ``TypeError`` subclasses because Django Channels code expects
``TypeError`` for bad names; ``ChannelFull`` and ``MessageTooLarge`` also derive from Channels' own classes when
Channels is installed, so ``except channels.exceptions.ChannelFull`` keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "BackendUnavailable",
    "ChannelFull",
    "ConfigError",
    "InvalidChannelName",
    "InvalidGroupName",
    "InvalidMessage",
    "InvalidName",
    "LayerError",
    "MessageTooLarge",
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
    """``send`` found the destination channel at its capacity; the message was not stored."""


class MessageTooLarge(LayerError, _ChannelsTooLarge, ValueError):
    """The serialized message is larger than the layer's ``max_message_size``."""


class InvalidName(LayerError, TypeError):
    """A channel or group name breaks the naming rules."""


class InvalidChannelName(InvalidName):
    """A channel name breaks the naming rules."""


class InvalidGroupName(InvalidName):
    """A group name breaks the naming rules."""


class InvalidMessage(LayerError, TypeError):
    """A message is not a dict with str keys and serializable values."""


class ConfigError(LayerError, ValueError):
    """A layer URL, setting or option is invalid, or the backend it names is not installed."""


class BackendUnavailable(LayerError, ConnectionError):
    """The backend server could not be reached (or did not answer) within the layer's time limit."""
