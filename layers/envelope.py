"""The stored item: what a backend keeps for one message in one queue.

An item is ``MAGIC + struct(">dI", deadline, len(header)) + header + payload`` where ``header`` is the msgpack of
``channels``: None for a named channel (the queue is the channel) or the list of process-local channels the copy
is for (a ``group_send`` bundles every member of one process into one item).  ``payload`` is the serialized
message, opaque to backends; it is appended, not re-packed, so large messages are copied once.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

__all__ = ["pack_item", "unpack_item"]

MAGIC = b"L1"
_FIXED = struct.Struct(">dI")
_START = len(MAGIC) + _FIXED.size
_NO_CHANNELS = msgpack.packb(None)
_pack_channels = msgpack.Packer(use_bin_type=True).pack


def pack_item(deadline: float, channels: list[str] | None, payload: bytes) -> bytes:
    header = _NO_CHANNELS if channels is None else _pack_channels(channels)
    return b"".join((MAGIC, _FIXED.pack(deadline, len(header)), header, payload))


def unpack_item(item: bytes) -> tuple[float, list[str] | None, bytes]:
    """Decode an item; raise ValueError when it is not one of ours (garbage written into the server)."""
    if item[:2] != MAGIC or len(item) < _START:
        raise ValueError("not a channel-layers item (bad magic)")
    deadline, header_size = _FIXED.unpack_from(item, len(MAGIC))
    end = _START + header_size
    if end > len(item):
        raise ValueError("truncated item header")
    try:
        channels: Any = msgpack.unpackb(item[_START:end], raw=False)
    except Exception as exc:
        raise ValueError(f"undecodable item header: {exc}") from exc
    if not (channels is None or (type(channels) is list and all(type(c) is str for c in channels))):
        raise ValueError("item header is not a channel list")
    return deadline, channels, item[end:]
