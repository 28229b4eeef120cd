"""The Redis layer runs the conformance suite unchanged: on the shared Redis, over 3 private shards, on a cluster,
and through a Sentinel."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from layers_redis import RedisChannelLayer
from spec import ConformanceSuite
from tests.servers import REDIS_URL, port_open, with_user
from tests.servers.redis import RedisCluster3, RedisSentinelSetup, RedisServer, redis_available

_PREFIX = "spec" + uuid.uuid4().hex[:8]


def _shared_reachable() -> bool:
    parts = urlsplit(REDIS_URL)
    return port_open(parts.port or 6379, parts.hostname or "127.0.0.1")


@pytest.fixture(scope="module", autouse=True)
def _clean_shared() -> Iterator[None]:
    """Groups live a day by default: delete what this run left under its prefix on the shared server."""
    yield
    if _shared_reachable():
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{_PREFIX}:*", count=1000):
            client.unlink(key)
        client.close()


class TestRedisConformance(ConformanceSuite):
    """One server: the shared Redis, a prefix of this run's own."""

    spec_knobs: ClassVar[dict[str, Any]] = {
        "process_target": f"{REDIS_URL}?prefix={_PREFIX}",
        "refused_target": with_user(REDIS_URL, "nosuchuser:wrong"),  # WRONGPASS
    }

    @pytest.fixture
    def layer_factory(self) -> Any:
        if not _shared_reachable():
            pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")
        return lambda **overrides: RedisChannelLayer(hosts=[REDIS_URL], **{"prefix": _PREFIX, **overrides})


@pytest.fixture(scope="module")
def three_shards() -> Iterator[str]:
    """Three private redis-server processes; the URL naming all three (comma-separated hosts are shards)."""
    if not redis_available():
        pytest.skip("redis-server is not installed")
    servers = [RedisServer(name="spec-shard").start() for _ in range(3)]
    yield "redis://" + ",".join(f"127.0.0.1:{server.port}" for server in servers) + "/0"
    for server in servers:
        server.stop()


class _OnPrivateServers(ConformanceSuite):
    """The suite on private servers: ``servers`` names the module fixture that starts them and yields their URL."""

    servers: ClassVar[str]

    @pytest.fixture
    def layer_factory(self, request: pytest.FixtureRequest) -> Any:
        url: str = request.getfixturevalue(self.servers)
        type(self).spec_knobs = {"process_target": f"{url}?prefix=spec"}  # known once the servers run
        return lambda **overrides: RedisChannelLayer(hosts=[url], **{"prefix": "spec", **overrides})


class TestRedisShardedConformance(_OnPrivateServers):
    """Three shards: every queue and group lives on the shard its name hashes to."""

    servers = "three_shards"


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if not redis_available():
        pytest.skip("redis-server/redis-cli are not installed")
    cluster = RedisCluster3().start()
    yield cluster.url
    cluster.stop()


class TestRedisClusterConformance(_OnPrivateServers):
    """A 3-master Redis Cluster through redis.asyncio.RedisCluster."""

    servers = "cluster_url"


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    setup = RedisSentinelSetup().start()
    yield setup.url
    setup.stop()


class TestRedisSentinelConformance(_OnPrivateServers):
    """A master found through a Sentinel (the master/replica pair and the sentinel are private servers)."""

    servers = "sentinel_url"
