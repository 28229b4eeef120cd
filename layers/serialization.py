"""Message serialization: a registry of formats, validation at send time, optional encryption.

The layer serializes a message once, at ``send``, so a mutation of the caller's dict afterwards can never change
what is received, and so a message that one backend would refuse is refused by every backend (the in-memory layer
included).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import msgpack

from .errors import ConfigError, InvalidMessage, MessageTooLarge

__all__ = [
    "EncryptedSerializer",
    "JSONSerializer",
    "MsgpackSerializer",
    "Serializer",
    "get_serializer",
    "register_serializer",
]

log = logging.getLogger("layers")

Message = dict[str, Any]


class Serializer(Protocol):
    """Turns a message dict into bytes and back."""

    def dumps(self, message: Message) -> bytes: ...

    def loads(self, data: bytes) -> Message: ...


class MsgpackSerializer:
    """The default format: compact, keeps ``bytes`` and ``str`` distinct (tuples come back as lists)."""

    def __init__(self) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def dumps(self, message: Message) -> bytes:
        return self._pack(message)  # type: ignore[no-any-return]

    def loads(self, data: bytes) -> Message:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


class JSONSerializer:
    """JSON for interoperability with non-Python consumers; ``bytes`` values are refused."""

    def dumps(self, message: Message) -> bytes:
        return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Message:
        return json.loads(data)  # type: ignore[no-any-return]


class EncryptedSerializer:
    """Wraps another serializer with Fernet encryption.

    Keys are derived exactly as channels_redis derives them (SHA-256 of the UTF-8 key, urlsafe base64), so a site
    can migrate without re-keying.  The first key encrypts; every key decrypts, which allows rotation.
    """

    def __init__(self, inner: Serializer, keys: Iterable[str | bytes]) -> None:
        try:
            from cryptography.fernet import Fernet, InvalidToken, MultiFernet
        except ImportError as exc:
            raise ConfigError(
                "symmetric_encryption_keys needs the 'cryptography' package: pip install 'channel-layers[crypto]'"
            ) from exc
        key_list = list(keys)
        if not key_list or isinstance(keys, (str, bytes)):
            raise ConfigError("symmetric_encryption_keys must be a non-empty list of keys")
        for position, key in enumerate(key_list):
            if not isinstance(key, (str, bytes)) or not key:
                raise ConfigError(f"symmetric_encryption_keys[{position}] must be a non-empty str or bytes, "
                                  f"not {type(key).__name__}")
        self._inner = inner
        self._fernet = MultiFernet([Fernet(_derive_key(key)) for key in key_list])
        self._invalid_token = InvalidToken

    def dumps(self, message: Message) -> bytes:
        return self._fernet.encrypt(self._inner.dumps(message))

    def loads(self, data: bytes) -> Message:
        try:
            plain = self._fernet.decrypt(bytes(data))
        except self._invalid_token:
            raise ValueError("message is not encrypted with any of this layer's symmetric_encryption_keys") from None
        return self._inner.loads(plain)


def _derive_key(key: str | bytes) -> bytes:
    raw = key.encode("utf8") if isinstance(key, str) else key
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


_REGISTRY: dict[str, Callable[[], Serializer]] = {"msgpack": MsgpackSerializer, "json": JSONSerializer}


def register_serializer(name: str, factory: Callable[[], Serializer]) -> None:
    """Make a serializer available as ``serializer_format=name``."""
    _REGISTRY[name] = factory


def get_serializer(name: str = "msgpack", encryption_keys: Iterable[str | bytes] | None = None) -> Serializer:
    """Build the serializer named ``name``, wrapped in encryption when keys are given."""
    try:
        serializer = _REGISTRY[name]()
    except KeyError:
        raise ConfigError(
            f"unknown serializer_format {name!r}; known formats: {', '.join(sorted(_REGISTRY))}"
        ) from None
    if encryption_keys:
        serializer = EncryptedSerializer(serializer, encryption_keys)
    return serializer


def encode_message(serializer: Serializer, message: object, max_size: int) -> bytes:
    """Validate and serialize ``message``; raise ``InvalidMessage`` naming the bad key, or ``MessageTooLarge``."""
    if type(message) is not dict:
        raise InvalidMessage(f"a message must be a dict, not {type(message).__name__}: {_short(message)}")
    for key in message:
        if type(key) is not str:
            raise InvalidMessage(f"message keys must be str; key {key!r} is {type(key).__name__}")
    try:
        data = serializer.dumps(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidMessage(_explain_unserializable(serializer, message, exc)) from exc
    if len(data) > max_size:
        raise MessageTooLarge(
            f"message is {len(data)} bytes serialized, over the layer's max_message_size of {max_size} bytes"
        )
    return data


def decode_message(serializer: Serializer, data: bytes, max_size: int) -> Message:
    """The message in ``data``; ValueError when it is not one a layer could have sent.

    ``data`` comes from the server, so anything may be in it (garbage, a foreign writer, another key): it must be
    no larger than ``max_size`` (the same limit ``send`` applies to the same bytes, so unpacking never allocates
    for more than a sendable message) and decode to a dict with str keys.
    """
    if len(data) > max_size:
        raise ValueError(f"{len(data)} bytes, over the layer's max_message_size of {max_size} bytes")
    message = serializer.loads(data)
    if type(message) is not dict or not _str_keys(message):
        raise ValueError(f"decodes to {_short(message)}, not a dict with str keys")
    return message


def _str_keys(message: dict[Any, Any]) -> bool:
    # Runs once per delivered message: a loop, because any()/all() over a generator costs more.
    for key in message:  # noqa: SIM110
        if type(key) is not str:
            return False
    return True


def _explain_unserializable(serializer: Serializer, message: Message, exc: Exception) -> str:
    path = _find_bad_value(serializer, message, "message")
    if path is None:
        return f"message cannot be serialized: {exc}"
    where, value = path
    return f"{where} = {_short(value)} ({type(value).__name__}) cannot be serialized: {exc}"


def _find_bad_value(serializer: Serializer, value: object, where: str) -> tuple[str, object] | None:
    """Walk into dicts and lists to name the innermost value the serializer refuses."""
    children: Iterable[tuple[str, object]]
    if isinstance(value, Mapping):
        children = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        children = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return (where, value)
    for child_where, child in children:
        try:
            serializer.dumps({"v": child})
        except (TypeError, ValueError, OverflowError):
            return _find_bad_value(serializer, child, child_where)
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
