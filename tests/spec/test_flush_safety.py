"""``python -m spec`` / ``layers check`` never flush what they did not write (a private Redis server: the "site" data
lives under the layer's default prefix, as a deployed site's would)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layers_redis import RedisChannelLayer
from spec.runner import EXIT_USAGE
from tests.servers.redis import RedisServer, redis_available

ROOT = Path(__file__).resolve().parents[2]
SELECTION = "r_flush_1 or r_flush_3 or r_deliv_3"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(name="spec-flush").start()
    yield server.url
    server.stop()


async def _store_site_data(url: str) -> str:
    layer = RedisChannelLayer(hosts=[url])  # the default prefix, as a site uses it
    await layer.send("site.tasks", {"keep": "me"})
    channel = "site.member"  # named: any instance may receive it later
    await layer.group_add("site-room", channel)
    await layer.close()
    return channel


async def _site_data_intact(url: str, channel: str) -> None:
    layer = RedisChannelLayer(hosts=[url])
    try:
        assert await asyncio.wait_for(layer.receive("site.tasks"), 5) == {"keep": "me"}
        waiting = asyncio.ensure_future(layer.receive(channel))
        await layer.group_send("site-room", {"room": "still here"})
        assert await asyncio.wait_for(waiting, 5) == {"room": "still here"}, "the site's group membership is gone"
    finally:
        await layer.close()


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", [["-m", "spec"], ["-m", "layers", "check"]], ids=["python-m-spec", "layers-check"])
def test_the_runner_leaves_site_data_alone(redis_url: str, command: list[str]) -> None:
    channel = asyncio.run(_store_site_data(redis_url))
    done = _run(*command, redis_url, "--pytest-args", f"-k '{SELECTION}'")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a fresh prefix of this run" in done.stdout
    assert "  pass       R-FLUSH-1" in done.stdout and "  pass       R-FLUSH-3" in done.stdout
    asyncio.run(_site_data_intact(redis_url, channel))


def test_an_unconfinable_shared_layer_is_refused_without_yes_flush(redis_url: str) -> None:
    channel = asyncio.run(_store_site_data(redis_url))
    env = {"SPEC_TEST_REDIS_URL": redis_url}
    refused = _run("-m", "spec", "tests.spec.variants.unconfined_redis", "--pytest-args", f"-k '{SELECTION}'", env=env)
    assert refused.returncode == EXIT_USAGE, refused.stdout + refused.stderr
    assert "--yes-flush" in refused.stderr and not refused.stdout
    asyncio.run(_site_data_intact(redis_url, channel))
    allowed = _run("-m", "spec", "tests.spec.variants.unconfined_redis", "--yes-flush",
                   "--pytest-args", f"-k '{SELECTION}'", env=env)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "--yes-flush given" in allowed.stdout


def test_the_second_process_works_under_the_runs_prefix_too(redis_url: str) -> None:
    """A process_config naming the site's prefix does not send the second process (R-MULTI-5) there."""
    done = _run("-m", "spec", redis_url, "--knob", 'process_config={"prefix": "asgi"}', "--pytest-args", "-k r_multi_5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  pass       R-MULTI-5" in done.stdout
