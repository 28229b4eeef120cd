"""The AMQP fast paths are fenced: a pika whose private state is not what a fast path needs (the frame decoding, the
consumer cancellation, the publish marshalling) makes the layer log one warning and use pika's public API for that
piece, against the real broker; ``LAYERS_PLAIN_DRIVERS=pika`` takes every plain path without a warning."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from layers.drivers import PLAIN_DRIVERS_VARIABLE
from layers_amqp import AMQPChannelLayer, wire
from tests.conformance.test_amqp import _reachable
from tests.driver_fence import assert_one_warning
from tests.servers import AMQP_URL

# Each simulated release runs in a process of its own: the check is made once per process.  The child ends with
# the fast paths that must still be in use, so one piece falling back does not drag the others along.
_SURVIVORS = """
    async def main():
        await exercise(lambda prefix: AMQPChannelLayer(sys.argv[1], prefix=prefix))
        from layers_amqp import wire
        kept = [path for path in (wire.CODEC, wire.CANCEL, wire.PUBLISH) if path.usable(lambda: None)]
        assert [path.name for path in kept] == {kept!r}, [path.name for path in kept]
"""

# The channels are kept in a mapping that is not a dict (pika itself only indexes it).
_CHANNELS_NOT_A_DICT = """
    import collections
    import pika.connection

    original = pika.connection.Connection._init_connection_state
    def init_state(self):
        original(self)
        self._channels = collections.UserDict(self._channels)
    pika.connection.Connection._init_connection_state = init_state

    from layers_amqp import AMQPChannelLayer
"""

# The cancelled consumers are kept in a set-like object of pika's own (pika only adds, discards and looks up).
_CANCELLED_NOT_A_SET = """
    import collections.abc
    import pika.channel

    class Tags(collections.abc.MutableSet):
        def __init__(self):
            self._tags = set()
        def __contains__(self, tag):
            return tag in self._tags
        def __iter__(self):
            return iter(self._tags)
        def __len__(self):
            return len(self._tags)
        def add(self, tag):
            self._tags.add(tag)
        def discard(self, tag):
            self._tags.discard(tag)

    original = pika.channel.Channel.__init__
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._cancelled = Tags()
    pika.channel.Channel.__init__ = init

    from layers_amqp import AMQPChannelLayer
"""

# The hook every outgoing frame goes through is renamed.
_EMIT_RENAMED = """
    import pika.connection
    from pika.adapters import base_connection

    base_connection.BaseConnection._adapter_write = base_connection.BaseConnection._adapter_emit_data
    del base_connection.BaseConnection._adapter_emit_data
    del pika.connection.Connection._adapter_emit_data
    def output(self, marshaled_frames):
        for marshaled_frame in marshaled_frames:
            self.bytes_sent += len(marshaled_frame)
            self.frames_sent += 1
            self._adapter_write(marshaled_frame)
    pika.connection.Connection._output_marshaled_frames = output

    from layers_amqp import AMQPChannelLayer
"""


@pytest.fixture
def unforced(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _reachable():
        pytest.skip(f"the shared RabbitMQ at {AMQP_URL} is not reachable")
    monkeypatch.delenv(PLAIN_DRIVERS_VARIABLE, raising=False)  # the child must find the gap itself


@pytest.mark.parametrize(("release", "gap", "kept"), [
    (_CHANNELS_NOT_A_DICT, "Connection._channels as a dict", ["consumer cancellation", "publish marshalling"]),
    (_CANCELLED_NOT_A_SET, "Channel._cancelled as a set", ["frame decoding and socket reader", "publish marshalling"]),
    (_EMIT_RENAMED, "AsyncioConnection._adapter_emit_data", ["frame decoding and socket reader",
                                                             "consumer cancellation"]),
], ids=["frame-decoding", "consumer-cancel", "publish"])
def test_missing_private_attribute_warns_once_and_falls_back(unforced: None, release: str, gap: str,
                                                             kept: list[str]) -> None:
    import pika

    assert_one_warning(release + _SURVIVORS.replace("{kept!r}", repr(kept)), AMQP_URL, "pika", pika.__version__,
                       gap)


def backend(layer: AMQPChannelLayer) -> Any:
    return layer._state().backend


def test_forced_plain_path_uses_the_public_api(make_layer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``LAYERS_PLAIN_DRIVERS=pika``: pika's own channels' cancellation and ``basic_publish``, no warning."""
    monkeypatch.setenv(PLAIN_DRIVERS_VARIABLE, "pika")
    warned = (wire.CANCEL.warned, wire.PUBLISH.warned)

    async def main() -> None:
        layer = make_layer()
        await layer.send("fence.plain", {"i": 1})
        assert await asyncio.wait_for(layer.receive("fence.plain"), 5) == {"i": 1}
        link = backend(layer).link
        assert type(link._pub) is wire.Channel and type(link._ctl) is wire.Channel
        assert link._conn.publish == link._conn._publish_plain
        await layer.close()

    asyncio.run(main())
    assert (wire.CANCEL.warned, wire.PUBLISH.warned) == warned


def test_plain_doorbells_keep_a_named_channel_in_order(make_layer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the plain path pika may hold a doorbell's cancel back behind another call of the channel while its ack
    goes out: the broker then hands the doorbell the next message, which pika rejects back to its place.  The next
    ``basic.get`` waits for the cancel-ok, so it does not take the message behind that one; and nothing is lost or
    received twice."""
    monkeypatch.setenv(PLAIN_DRIVERS_VARIABLE, "pika")
    total = 300

    async def main() -> None:
        layer, sender = make_layer(), make_layer()
        link = backend(layer).link
        await link.ready()
        noise_queue = f"{layer.prefix}:fence.noise"

        async def noise() -> None:  # calls on the receiver's ctl channel, in flight all the time
            while True:
                await link.declare(noise_queue, {"x-expires": 60_000})

        async def send() -> None:
            for i in range(total):
                await sender.send("fence.order", {"i": i})
                if i % 4 == 0:
                    await asyncio.sleep(0.002)  # the receiver catches up and waits on a doorbell

        noisy = asyncio.ensure_future(noise())
        sending = asyncio.ensure_future(send())
        try:
            got = [(await asyncio.wait_for(layer.receive("fence.order"), 10))["i"] for _ in range(total)]
            await sending
        finally:
            noisy.cancel()
            sending.cancel()
        assert got == list(range(total))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive("fence.order"), 0.5)
        for each in (layer, sender):
            await each.close()

    asyncio.run(main())
