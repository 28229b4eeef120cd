"""The stored item: what a backend keeps for one message in one queue (envelope version 1).

Layout, byte for byte (a backend that builds items on its server — Lua, PL/pgSQL — must produce exactly this; its
tests compare what the server built with :func:`pack_item`)::

    offset 0   2 bytes   MAGIC b"L1"  (the envelope version: a new layout gets a new MAGIC)
    offset 2   8 bytes   deadline, IEEE-754 float64 big-endian, Unix seconds
    offset 10  4 bytes   len(header), uint32 big-endian
    offset 14  header    msgpack of ``channels``: nil (0xc0) for a named channel (the queue is the channel), or
                         the array of process-local channel names the copy is for (a ``group_send`` bundles every
                         member of one process into one item)
    then       payload   the serialized message, opaque to backends; appended, not re-packed, so a large message
                         is copied once

:func:`item_head` is the first 10 bytes, the same for every item of one message.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

__all__ = ["MAGIC", "item_head", "pack_header", "pack_item", "unpack_item"]

MAGIC = b"L1"
_FIXED = struct.Struct(">dI")
_DEADLINE = struct.Struct(">d")
_START = len(MAGIC) + _FIXED.size
_NO_CHANNELS = msgpack.packb(None)
_pack_channels = msgpack.Packer(use_bin_type=True).pack


def item_head(deadline: float) -> bytes:
    """MAGIC and the deadline: the bytes every item of a message with this deadline starts with."""
    return MAGIC + _DEADLINE.pack(deadline)


def pack_header(channels: list[str] | None) -> bytes:
    """The msgpack header: nil for a named channel, else the array of local channel names."""
    return _NO_CHANNELS if channels is None else bytes(_pack_channels(channels))


def pack_item(deadline: float, channels: list[str] | None, payload: bytes) -> bytes:
    header = pack_header(channels)
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
