"""channel-layers: pluggable channel layers for Django Channels and any asyncio program."""

from .backend import Backend, Push
from .core import BackendChannelLayer, BaseChannelLayer
from .errors import (
    AccessDenied,
    AuthenticationFailed,
    BackendRefused,
    BackendUnavailable,
    ChannelFull,
    ChannelNotOwned,
    ConfigError,
    DatabaseNotFound,
    InvalidChannelName,
    InvalidGroupName,
    InvalidMessage,
    InvalidName,
    LayerClosed,
    LayerError,
    MessageTooLarge,
    ServerError,
    TLSVerificationFailed,
    Unsupported,
)
from .memory import InMemoryChannelLayer
from .serialization import Serializer, register_serializer
from .settings import from_config, from_url, get_channel_layer

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "Backend",
    "BackendChannelLayer",
    "BackendRefused",
    "BackendUnavailable",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelNotOwned",
    "ConfigError",
    "DatabaseNotFound",
    "InMemoryChannelLayer",
    "InvalidChannelName",
    "InvalidGroupName",
    "InvalidMessage",
    "InvalidName",
    "LayerClosed",
    "LayerError",
    "MessageTooLarge",
    "Push",
    "Serializer",
    "ServerError",
    "TLSVerificationFailed",
    "Unsupported",
    "from_config",
    "from_url",
    "get_channel_layer",
    "register_serializer",
]
