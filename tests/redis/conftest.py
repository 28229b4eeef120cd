"""Fixtures for the Redis backend tests: the shared Redis (unique prefix per test) and private servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from tests.servers import REDIS_URL, port_open
from tests.servers.redis import RedisCluster3, RedisSentinelSetup, RedisServer, redis_available


def _shared_reachable() -> bool:
    parts = urlsplit(REDIS_URL)
    return port_open(parts.port or 6379, parts.hostname or "127.0.0.1")


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def shared_url() -> str:
    if not _shared_reachable():
        pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")
    return REDIS_URL


@pytest.fixture
def shared_client(shared_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(shared_url)
    yield client
    client.close()


def _need_binaries() -> None:
    if not redis_available():
        pytest.skip("redis-server/redis-cli are not installed")


@pytest.fixture(scope="session")
def shards3() -> Iterator[list[RedisServer]]:
    """Three independent private servers: three shards."""
    _need_binaries()
    servers = [RedisServer(name="redis-shard").start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A private server of this test's own (free to kill, restart or inspect)."""
    _need_binaries()
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster3]:
    _need_binaries()
    setup = RedisCluster3().start()
    yield setup
    setup.stop()


@pytest.fixture(scope="session")
def sentinel() -> Iterator[RedisSentinelSetup]:
    _need_binaries()
    setup = RedisSentinelSetup().start()
    yield setup
    setup.stop()
