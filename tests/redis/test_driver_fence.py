"""The transport take-over is fenced: a redis-py whose private stream attributes are not what the take-over needs
makes the layer log one warning and speak through redis-py's public API, against the real server."""

from __future__ import annotations

import pytest

from tests.conformance.test_redis import _shared_reachable
from tests.driver_fence import assert_one_warning
from tests.servers import REDIS_URL

# Run in a process of its own: the check is made once per process.  The simulated release wraps the connection's
# StreamWriter in an object of its own (as a driver refactoring would), which redis-py itself keeps using.
_CHILD = """
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

    from layers_redis import RedisChannelLayer

    async def main():
        await exercise(lambda prefix: RedisChannelLayer(hosts=[sys.argv[1]], prefix=prefix))
"""


def test_missing_private_attribute_warns_once_and_falls_back() -> None:
    if not _shared_reachable():
        pytest.skip(f"the shared Redis at {REDIS_URL} is not reachable")
    import redis

    assert_one_warning(_CHILD, REDIS_URL, "redis", redis.__version__,
                       "Connection._writer is WrappedWriter, not an asyncio.StreamWriter")
