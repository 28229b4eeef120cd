"""The AMQP read side is fenced: a pika whose private connection state is not what the fast frame decoding needs
makes the layer log one warning and use pika's own decoding, against the real broker."""

from __future__ import annotations

import pytest

from tests.conformance.test_amqp import _reachable
from tests.driver_fence import assert_one_warning
from tests.servers import AMQP_URL

# Run in a process of its own: the check is made once per process.  The simulated release keeps its channels in a
# mapping that is not a dict (pika itself only indexes it).
_CHILD = """
    import collections
    import pika.connection

    original = pika.connection.Connection._init_connection_state
    def init_state(self):
        original(self)
        self._channels = collections.UserDict(self._channels)
    pika.connection.Connection._init_connection_state = init_state

    from layers_amqp import AMQPChannelLayer

    async def main():
        await exercise(lambda prefix: AMQPChannelLayer(sys.argv[1], prefix=prefix))
"""


def test_missing_private_attribute_warns_once_and_falls_back() -> None:
    if not _reachable():
        pytest.skip(f"the shared RabbitMQ at {AMQP_URL} is not reachable")
    import pika

    assert_one_warning(_CHILD, AMQP_URL, "pika", pika.__version__, "Connection._channels as a dict")
