"""The transport take-over is fenced: a redis-py whose private stream attributes are not what the take-over needs
makes the layer log one warning and speak through redis-py's public API, against the real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conformance.test_redis import _shared_reachable
from tests.servers import REDIS_URL

# Run in a process of its own: the check is made once per process.  The simulated release wraps the connection's
# StreamWriter in an object of its own (as a driver refactoring would), which redis-py itself keeps using.
_CHILD = textwrap.dedent("""
    import asyncio, logging, sys, uuid
    import redis.asyncio.connection as rc

    class WrappedWriter:
        def __init__(self, writer):
            self._inner = writer
        def __getattr__(self, name):
            return getattr(self._inner, name)

    original = rc.Connection._connect
    async def connect(self):
        await original(self)
        self._writer = WrappedWriter(self._writer)
    rc.Connection._connect = connect

    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    logging.getLogger("layers").addHandler(Keep())

    from layers_redis import RedisChannelLayer

    async def main():
        prefix = "fence" + uuid.uuid4().hex[:8]
        for _ in range(2):  # two layers, four links: still one warning
            layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix=prefix)
            channel = await layer.new_channel()
            for i in range(50):
                await layer.send(channel, {"type": "t", "i": i})
            assert [(await layer.receive(channel))["i"] for _ in range(50)] == list(range(50))
            await layer.group_add("fence.g", channel)
            await layer.group_send("fence.g", {"type": "g"})
            assert (await layer.receive(channel))["type"] == "g"
            receiving = asyncio.ensure_future(layer.receive("fence.named"))
            await asyncio.sleep(0.1)  # armed: the push is handed over through the subscriber link
            await layer.send("fence.named", {"type": "n"})
            assert (await asyncio.wait_for(receiving, 5))["type"] == "n"
            await layer.flush()
            await layer.close()
        warnings = [r for r in records if r.levelno == logging.WARNING]
        print(len(warnings))
        print(warnings[0].getMessage() if warnings else "")

    asyncio.run(main())
""")


def test_missing_private_attribute_warns_once_and_falls_back() -> None:
    if not _shared_reachable():
        pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")
    import redis

    done = subprocess.run([sys.executable, "-c", _CHILD, REDIS_URL], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.splitlines()[:2]
    assert count == "1", done.stdout
    assert f"redis {redis.__version__}" in message
    assert "Connection._writer is WrappedWriter, not an asyncio.StreamWriter" in message
    assert "plain redis path" in message
