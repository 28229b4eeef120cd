"""Redis backend for channel-layers: consistent-hash sharding, Sentinel and Redis Cluster (redis-py asyncio)."""

from .layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
