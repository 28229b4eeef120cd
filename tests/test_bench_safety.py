"""``layers bench`` on a server that holds a site's channel layer: the site's data survives, the run leaves nothing.

The "site" uses the default prefix ``asgi`` (what a deployment without a prefix has) plus the raw names a peer
layer of the site would use; ``layers bench`` runs against the same server, ours and the peers, and afterwards
every key, row and queue of the site is still there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import layers
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, port_open

pytestmark = pytest.mark.slow

WORKLOADS = {"redis": ["process", "named", "group-10", "named-xproc"],
             "postgresql": ["process-rf", "named-rf", "group-10", "named-xproc"],  # channels_postgres strands
             "amqp": ["process", "named", "group-10", "named-xproc"]}  # messages sent before a first receive
PEERS = {"redis": ["channels_redis", "channels_redis_pubsub"], "postgresql": ["channels_postgres"],
         "amqp": ["channels_rabbitmq"]}
PEER_MODULES = {"channels_redis": "channels_redis", "channels_redis_pubsub": "channels_redis",
                "channels_postgres": "channels_postgres", "channels_rabbitmq": "channels_rabbitmq"}


@dataclass
class Site:
    """What a deployment keeps on the server, and how to find it again."""

    url: str  # the layer URL of the site (default prefix)

    @property
    def layer_url(self) -> str:
        """The site's layer: default prefix; its messages outlive the run (a slow peer takes minutes)."""
        return f"{self.url}{'&' if '?' in self.url else '?'}expiry=3600"
    token: str
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return f"site.{self.token}"

    @property
    def group(self) -> str:
        return f"site-{self.token}"


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _on_layer(url: str, body: Any) -> Any:
    layer = layers.from_url(url)
    try:
        return await body(layer)
    finally:
        await layer.close()


def _store_site_messages(site: Site) -> None:
    async def body(layer: Any) -> None:
        await layer.send(site.channel, {"type": "site.message", "token": site.token})
        await layer.group_add(site.group, site.channel)

    _run(_on_layer(site.layer_url, body))


def _site_messages_intact(site: Site) -> None:
    """The stored message is still there, and so is the group membership (a group message reaches it)."""

    async def body(layer: Any) -> list[dict[str, Any]]:
        await layer.group_send(site.group, {"type": "site.group", "token": site.token})
        received = [await asyncio.wait_for(layer.receive(site.channel), 10) for _ in range(2)]
        await layer.group_discard(site.group, site.channel)
        return received

    received = _run(_on_layer(site.layer_url, body))
    assert received == [{"type": "site.message", "token": site.token},
                        {"type": "site.group", "token": site.token}], received


def _require(url: str, port: int, module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'channel-layers[all]')")
    parts = urlsplit(url)
    if not port_open(parts.port or port, parts.hostname or "127.0.0.1"):
        pytest.skip(f"no server at {url} (./dev test starts one)")


# -- per server: the site's raw data beside the layer's, and what the run might leave ------------------------


@pytest.fixture
def redis_site() -> Iterator[Site]:
    _require(REDIS_URL, 6379, "redis")
    import redis

    site = Site(REDIS_URL, secrets.token_hex(4))
    client = redis.Redis.from_url(REDIS_URL)
    # What a channels_redis site under the default prefix keeps (its flush deletes KEYS asgi*).
    site.raw = {f"asgi:group:{site.group}": "zset", f"asgi{site.token}": "string"}
    client.zadd(f"asgi:group:{site.group}", {"specific.abc!def": 1e12})
    client.set(f"asgi{site.token}", "keep")
    _store_site_messages(site)
    yield site
    client.delete(*site.raw)
    client.close()


def _redis_check(site: Site) -> set[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.zscore(f"asgi:group:{site.group}", "specific.abc!def") == 1e12
        assert client.get(f"asgi{site.token}") == b"keep"
        return {key.decode() for key in client.scan_iter(match="layers_bench_*")}
    finally:
        client.close()


@pytest.fixture
def postgres_site() -> Iterator[Site]:
    """A database of the test's own holds the site: our layer's tables and channels_postgres' table."""
    _require(POSTGRES_DSN, 5432, "psycopg")
    import psycopg

    token = secrets.token_hex(4)
    database = f"site_{token}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    site_dsn = urlunsplit(urlsplit(POSTGRES_DSN)._replace(path=f"/{database}"))
    site = Site(site_dsn, token)
    try:
        with psycopg.connect(site_dsn, autocommit=True) as conn:  # the name channels_postgres' flush TRUNCATEs
            conn.execute("CREATE TABLE channels_postgres_message (id serial, channel text, message bytea)")
            conn.execute("INSERT INTO channels_postgres_message (channel, message) VALUES (%s, 'keep')",
                         (site.channel,))
        _store_site_messages(site)
        yield site
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _postgres_check(site: Site) -> set[str]:
    import psycopg

    with psycopg.connect(site.url, autocommit=True) as conn:
        rows = conn.execute("SELECT channel, message FROM channels_postgres_message").fetchall()
        assert rows == [(site.channel, b"keep")], rows
        left = {row[0] for row in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'layers_bench%'")}
        left |= {row[0] for row in conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'layers_bench%'")}
        left |= {row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'layers_bench%'")}
    return left


@pytest.fixture
def amqp_site() -> Iterator[Site]:
    _require(AMQP_URL, 5672, "pika")
    import pika

    site = Site(AMQP_URL, secrets.token_hex(4))
    queue = f"site-{site.token}"
    site.raw = {"queue": queue}
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"keep")
    _store_site_messages(site)
    yield site
    channel.queue_delete(queue)
    connection.close()


def _amqp_check(site: Site) -> set[str]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        declared = connection.channel().queue_declare(site.raw["queue"], passive=True)
        assert declared.method.message_count == 1
    finally:
        connection.close()
    return _rabbitmq_queues()


def _rabbitmq_queues() -> set[str]:
    """Queue names of the run's kind on the broker (empty when rabbitmqctl is not on this machine)."""
    if shutil.which("rabbitmqctl") is None:
        return set()
    listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True,
                             timeout=60)
    return {line for line in listing.stdout.split() if line.startswith("layers_bench_")}


SERVERS = {
    "redis": ("redis_site", _redis_check),
    "postgresql": ("postgres_site", _postgres_check),
    "amqp": ("amqp_site", _amqp_check),
}


@pytest.mark.parametrize("with_peers", [False, True], ids=["ours", "with-peers"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_bench_leaves_the_site_intact_and_nothing_of_its_own(server: str, with_peers: bool,
                                                             request: pytest.FixtureRequest) -> None:
    fixture, check = SERVERS[server]
    peers = PEERS[server] if with_peers else []
    missing = sorted({PEER_MODULES[p] for p in peers if importlib.util.find_spec(PEER_MODULES[p]) is None})
    if missing:
        pytest.skip(f"peer(s) {', '.join(missing)} not installed: pip install 'channel-layers[bench]'")
    site: Site = request.getfixturevalue(fixture)
    before = check(site)
    args = [site.url, *(f"--vs={peer}={site.url}" for peer in peers)]
    for workload in WORKLOADS[server]:
        args += ["--workload", workload]
    done = subprocess.run([sys.executable, "-m", "layers", "bench", *args, "-n", "200", "--rounds", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr  # 1 if a workload failed on our layer
    after = check(site)  # the site's raw data; raises if any of it is gone
    _site_messages_intact(site)
    assert after - before == set(), f"the run left {sorted(after - before)}"


@pytest.mark.parametrize("command", [["spec"], ["layers", "check"]], ids=["python-m-spec", "layers-check"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_conformance_runs_leave_the_site_intact(server: str, command: list[str],
                                                request: pytest.FixtureRequest) -> None:
    """``python -m spec`` / ``layers check`` flush the layers they make: pointed at the site's own URL (default
    prefix), they work under a fresh prefix of their own, and the site's messages, membership and raw data stay."""
    fixture, check = SERVERS[server]
    site: Site = request.getfixturevalue(fixture)
    check(site)
    selection = "r_flush_1 or r_flush_3 or r_deliv_3"
    done = subprocess.run([sys.executable, "-m", *command, site.url, "--pytest-args", f"-k '{selection}'"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a fresh prefix of this run" in done.stdout, done.stdout
    assert "  pass       R-FLUSH-1" in done.stdout and "  pass       R-FLUSH-3" in done.stdout, done.stdout
    check(site)  # the site's raw data; raises if any of it is gone
    _site_messages_intact(site)
