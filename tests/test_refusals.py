"""Permanent refusals fail fast with a typed error naming the cause; what can heal is still retried; URL option
typos get the same suggestion on every backend (issue 13 item 4).  Real servers on loopback, no mocks."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

import layers
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, free_port, port_open, with_user

FAIL_WITHIN = 3.0


def _up(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    return port_open(parts.port or default_port, parts.hostname or "127.0.0.1")


def _with_path(url: str, path: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[0] + "/" + path


REFUSED = [
    pytest.param(with_user(REDIS_URL, "nosuchuser:wrong"), layers.AuthenticationFailed, "invalid username-password",
                 6379, id="redis-wrongpass"),
    pytest.param(_with_path(REDIS_URL, "999"), layers.DatabaseNotFound, "DB index", 6379, id="redis-no-db"),
    pytest.param(with_user(POSTGRES_DSN, "nosuchrole"), layers.AuthenticationFailed, 'role "nosuchrole"', 5432,
                 id="postgres-no-role"),
    pytest.param(_with_path(POSTGRES_DSN, "nosuchdb"), layers.DatabaseNotFound, 'database "nosuchdb"', 5432,
                 id="postgres-no-database"),
    pytest.param(with_user(AMQP_URL, "guest:wrong"), layers.AuthenticationFailed, "ACCESS_REFUSED", 5672,
                 id="amqp-access-refused"),
    pytest.param(_with_path(AMQP_URL, "nosuchvhost"), layers.DatabaseNotFound, "vhost nosuchvhost not found", 5672,
                 id="amqp-no-vhost"),
]


@pytest.mark.parametrize(("url", "kind", "cause", "port"), REFUSED)
def test_permanent_refusal_fails_send_and_pending_receives_fast(
        url: str, kind: type[layers.BackendRefused], cause: str, port: int) -> None:
    if not _up(url, port):
        pytest.skip(f"the shared server for {url} is not reachable")
    layer = layers.from_url(url)

    async def main() -> dict[str, float]:
        local = await layer.new_channel()
        pending = {what: asyncio.ensure_future(layer.receive(channel))
                   for what, channel in (("receive named", "refusal.named"), ("receive local", local))}
        await asyncio.sleep(0.05)  # the receives are waiting (their readers are connecting)
        took: dict[str, float] = {}
        for what, call in (("send", layer.send("refusal.named", {"x": 1})), *pending.items()):
            started = time.monotonic()
            with pytest.raises(kind) as refused:
                await asyncio.wait_for(call, FAIL_WITHIN)
            took[what] = time.monotonic() - started
            assert cause in str(refused.value), f"{what}: {refused.value}"
            assert not isinstance(refused.value, layers.BackendUnavailable)  # never retried as unavailable
        started = time.monotonic()
        with pytest.raises(kind):  # the next call tries again (the settings may have been fixed) and fails as fast
            await asyncio.wait_for(layer.receive("refusal.named"), FAIL_WITHIN)
        took["receive again"] = time.monotonic() - started
        await layer.close()
        return took

    took = asyncio.run(asyncio.wait_for(main(), 30))
    assert max(took.values()) < FAIL_WITHIN, took
    assert "wrong" not in repr(layer)


@pytest.mark.parametrize("scheme", ["redis", "postgresql", "amqp"])
def test_refused_tcp_connection_is_still_retried(scheme: str) -> None:
    """Nothing listens on the port: that can heal (a server starting), so a pending receive keeps waiting."""
    port = free_port()
    url = {"redis": f"redis://127.0.0.1:{port}/0", "postgresql": f"postgresql://postgres@127.0.0.1:{port}/test",
           "amqp": f"amqp://guest:guest@127.0.0.1:{port}/%2F"}[scheme]
    layer = layers.from_url(url)

    async def main() -> None:
        waiting = asyncio.ensure_future(layer.receive("refusal.heal"))
        await asyncio.sleep(1.5)
        assert not waiting.done(), waiting.exception()  # still retrying, not refused
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await layer.close()

    asyncio.run(asyncio.wait_for(main(), 30))


TYPO_URLS = ["memory://?capcity=5", f"{REDIS_URL}?capcity=5", f"{POSTGRES_DSN}?capcity=5", f"{AMQP_URL}?capcity=5"]


@pytest.mark.parametrize("url", TYPO_URLS, ids=["memory", "redis", "postgres", "amqp"])
def test_url_option_typo_gets_the_same_suggestion_on_every_backend(url: str) -> None:
    with pytest.raises(layers.ConfigError, match=r"got unknown option\(s\): 'capcity' \(did you mean 'capacity'\?\)"):
        layers.from_url(url)


@pytest.mark.parametrize(("url", "typo", "meant"), [
    (f"{REDIS_URL}?socket_timout=1", "socket_timout", "socket_timeout"),
    (f"{POSTGRES_DSN}?sslmod=disable", "sslmod", "sslmode"),
    (f"{AMQP_URL}?heartbeet=30", "heartbeet", "heartbeat"),
])
def test_driver_option_typos_are_suggested_too(url: str, typo: str, meant: str) -> None:
    with pytest.raises(layers.ConfigError, match=rf"'{typo}' \(did you mean '{meant}'\?\)"):
        layers.from_url(url)


@pytest.mark.parametrize("url", [
    f"{REDIS_URL}?health_check_interval=5&timeout=2&capacity=3",
    f"{POSTGRES_DSN}?sslmode=disable&schema=public&capacity=3",
    f"{AMQP_URL}?heartbeat=30&timeout=2&capacity=3",
])
def test_driver_and_layer_options_are_accepted(url: str) -> None:
    layer: Any = layers.from_url(url)
    assert layer.capacity == 3
