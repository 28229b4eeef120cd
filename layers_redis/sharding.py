"""Which shard owns a name: jump consistent hashing over a stable 64-bit hash.

Jump hashing (Lamping & Veach, 2014) spreads names evenly over ``n`` buckets and, when an ``(n+1)``-th bucket is
appended, moves only the ~1/(n+1) of names that now belong to the new bucket.  It needs no ring and no virtual
nodes, but buckets can only be added or removed at the end: append new hosts to the end of ``hosts``.

The input hash is BLAKE2b, so every process and every Python run agrees (never the salted built-in ``hash()``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

__all__ = ["jump_hash", "shard_of", "stable_hash"]

_MASK64 = (1 << 64) - 1
_LCG = 2862933555777941757


def stable_hash(name: str) -> int:
    """A 64-bit hash of ``name`` that is the same in every process, run and platform."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``range(buckets)`` that owns the 64-bit ``key``."""
    if buckets < 1:
        raise ValueError("need at least one bucket")
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _LCG + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


@lru_cache(maxsize=65536)
def shard_of(name: str, shards: int) -> int:
    """The shard index for a queue or group ``name`` among ``shards`` hosts (cached: hot names repeat)."""
    return 0 if shards == 1 else jump_hash(stable_hash(name), shards)
