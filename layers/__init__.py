"""channel-layers: pluggable channel layers for Django Channels and any asyncio program."""

from .backend import Backend, Push
from .core import BackendChannelLayer, BaseChannelLayer
from .errors import (
    BackendUnavailable,
    ChannelFull,
    ConfigError,
    InvalidChannelName,
    InvalidGroupName,
    InvalidMessage,
    InvalidName,
    LayerError,
    MessageTooLarge,
)
from .memory import InMemoryChannelLayer
from .serialization import Serializer, register_serializer
from .settings import from_config, from_url, get_channel_layer

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendChannelLayer",
    "BackendUnavailable",
    "BaseChannelLayer",
    "ChannelFull",
    "ConfigError",
    "InMemoryChannelLayer",
    "InvalidChannelName",
    "InvalidGroupName",
    "InvalidMessage",
    "InvalidName",
    "LayerError",
    "MessageTooLarge",
    "Push",
    "Serializer",
    "from_config",
    "from_url",
    "get_channel_layer",
    "register_serializer",
]
