"""The stored item: what a backend keeps for one message in one queue.

An item is ``msgpack([deadline, channels, payload])``: ``channels`` is None for a named channel (the queue is the
channel) or the list of process-local channels the copy is for (a ``group_send`` bundles every member of one
process into one item).  ``payload`` is the serialized message, opaque to backends.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["pack_item", "unpack_item"]

_pack = msgpack.Packer(use_bin_type=True).pack


def pack_item(deadline: float, channels: list[str] | None, payload: bytes) -> bytes:
    return _pack((deadline, channels, payload))  # type: ignore[no-any-return]


def unpack_item(item: bytes) -> tuple[float, list[str] | None, bytes]:
    """Decode an item; raise ValueError when it is not one of ours (garbage written into the server)."""
    try:
        fields: Any = msgpack.unpackb(item, raw=False, max_array_len=1 << 20)
    except Exception as exc:
        raise ValueError(f"undecodable item: {exc}") from exc
    if (
        type(fields) is not list
        or len(fields) != 3
        or not isinstance(fields[0], (int, float))
        or not (fields[1] is None or type(fields[1]) is list)
        or type(fields[2]) is not bytes
    ):
        raise ValueError("item does not have the [deadline, channels, payload] shape")
    return float(fields[0]), fields[1], fields[2]
