"""Garbage written straight into a server's storage is logged and skipped; bad URLs and options are ConfigErrors.

The garbage goes where the layer keeps its items (a Redis list element, a row of the message table, a message
published to the AMQP queue) while a ``receive()`` is pending: the reader must log each bad item, keep running, and
hand over the valid message sent after it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import layers
from layers.envelope import MAGIC, pack_item

from .backends import Target

Run = Callable[..., Any]


def _future() -> float:
    return time.time() + 60


def garbage_items() -> dict[str, bytes]:
    """Items a foreign writer, a bug or an attacker could leave in a queue, by what is wrong with them."""
    deep = b"\x91" * 100_000 + b"\xc0"  # 100k nested one-element lists: the unpacker's stack limit
    return {
        "empty": b"",
        "random bytes": os.urandom(64),
        "magic only": MAGIC,
        "truncated header": MAGIC + b"\x00\x01",
        "header longer than item": MAGIC + struct.pack(">dI", _future(), 10_000) + b"\xc0",
        "header not a channel list": MAGIC + struct.pack(">dI", _future(), 1) + b"\x2a" + msgpack.packb({}),
        "header with non-str channels": pack_item(_future(), None, b"")[:2]
        + struct.pack(">dI", _future(), 3) + msgpack.packb([1, 2]) + msgpack.packb({}),
        "invalid msgpack payload": pack_item(_future(), None, b"\xc1\xc1"),
        "payload not a dict": pack_item(_future(), None, msgpack.packb(42)),
        "payload a list": pack_item(_future(), None, msgpack.packb([{"type": "x"}])),
        "payload dict with int keys": pack_item(_future(), None, msgpack.packb({1: 2})),
        "payload claims 4G elements": pack_item(_future(), None, b"\xdd\xff\xff\xff\xff"),
        "payload nested too deep": pack_item(_future(), None, deep),
        "payload with trailing bytes": pack_item(_future(), None, msgpack.packb({"type": "x"}) + b"\x00"),
        "payload bigger than max_message_size": pack_item(_future(), None, msgpack.packb({"b": b"x" * 5000})),
    }


def _process_item(item: bytes, channel: str) -> bytes:
    """The same garbage, addressed to ``channel`` the way a process queue's items are (a channel-list header)."""
    if not item.startswith(MAGIC) or len(item) < 14:
        return item
    deadline, size = struct.unpack_from(">dI", item, 2)
    if item[14:14 + size] != msgpack.packb(None):
        return item
    return pack_item(deadline, [channel], item[14 + size:])


@pytest.mark.parametrize("kind", ["named", "process"])
def test_garbage_in_a_queue_is_logged_and_skipped(target: Target, run: Run, kind: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    layer = target.layer(max_message_size=4096)
    channel = "garbage.named" if kind == "named" else run(layer.new_channel())
    queue = channel if kind == "named" else channel.split("!")[0] + "!"
    run(layer.send(channel, {"n": 0}))  # makes the queue exist on every server
    assert run(layer.receive(channel)) == {"n": 0}

    async def scenario() -> list[Any]:
        pending = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.3)  # the reader is waiting on the server when the garbage arrives
        items = garbage_items()
        for item in items.values():
            target.inject(layer, queue, item if kind == "named" else _process_item(item, channel))
        await asyncio.sleep(0.3)
        await layer.send(channel, {"n": 1})
        first = await pending
        await layer.send(channel, {"n": 2})
        return [first, await layer.receive(channel)]

    with caplog.at_level(logging.WARNING, logger="layers"):
        assert run(scenario()) == [{"n": 1}, {"n": 2}]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("layers")]
    assert len(warnings) >= len(garbage_items()), [r.getMessage() for r in warnings]
    assert layer.local_state_size()["buffers"] == 0


def test_garbage_addressed_to_foreign_channels_does_not_pile_up(target: Target, run: Run) -> None:
    """A process-queue item naming channels that are not this queue's never reaches anyone and is not kept."""
    layer = target.layer()
    channel = run(layer.new_channel())
    queue = channel.split("!")[0] + "!"
    run(layer.send(channel, {"n": 0}))
    assert run(layer.receive(channel)) == {"n": 0}
    payload = msgpack.packb({"type": "forged"})
    for names in (["other.process!x"], ["no bang"], ["x"] * 1000, [queue[:-2] + "!x"]):
        target.inject(layer, queue, pack_item(_future(), names, payload))
    run(layer.send(channel, {"n": 1}))
    assert run(layer.receive(channel)) == {"n": 1}
    assert layer.local_state_size()["buffers"] == 0


def test_unframed_redis_element_does_not_break_the_queue(run: Run) -> None:
    """A Redis list element without the deadline framing (anything a foreign RPUSH leaves) is skipped."""
    from .backends import RedisTarget

    if RedisTarget.skip_reason():
        pytest.skip(RedisTarget.skip_reason() or "")
    target = RedisTarget()
    try:
        layer = target.layer()
        run(layer.send("garbage.unframed", {"n": 0}))
        assert run(layer.receive("garbage.unframed")) == {"n": 0}
        for element in (b"garbage", b"", b"12345", b"abcdefghijklmnopqrstuvwxyz", b"9" * 40):
            target.inject_element(layer, "garbage.unframed", element)
        run(layer.send("garbage.unframed", {"n": 1}))
        assert run(layer.receive("garbage.unframed")) == {"n": 1}
        run(layer.close())
    finally:
        target.cleanup()


def test_garbage_membership_records_do_not_break_amqp_readers(run: Run) -> None:
    """The AMQP group inbox carries membership records: forged ones must not break the consumer."""
    from layers_amqp.groups import RECORD_TYPE

    from .backends import AMQPTarget

    if AMQPTarget.skip_reason():
        pytest.skip(AMQPTarget.skip_reason() or "")
    target = AMQPTarget()
    try:
        layer = target.layer()
        channel = run(layer.new_channel())
        run(layer.group_add("garbage-group", channel))
        run(layer.group_send("garbage-group", {"n": 0}))
        assert run(layer.receive(channel)) == {"n": 0}
        queue = channel.split("!")[0] + "!"
        inbox = layer.topology.group_inbox(queue)[len(layer.prefix) + 1:]  # type: ignore[attr-defined]
        for record in (b"", os.urandom(20), msgpack.packb([0, [1], "c", 1.0]), msgpack.packb([0, "k", "c", "x"]),
                       msgpack.packb([9, "k", "c", 1.0]), msgpack.packb({"a": 1}), msgpack.packb([0, "k", 5, 1.0])):
            target.inject(layer, inbox, record, type=RECORD_TYPE)
        run(layer.group_send("garbage-group", {"n": 1}))
        assert run(layer.receive(channel)) == {"n": 1}
        run(layer.send(channel, {"n": 2}))
        assert run(layer.receive(channel)) == {"n": 2}
        run(layer.close())
    finally:
        target.cleanup()


# -- configuration ------------------------------------------------------------------------------------------

BAD_QUERIES = ["capacity=abc", "capacity=0", "capacity=-3", "capacity=1.5", "expiry=-1", "expiry=nan", "expiry=inf",
               "group_expiry=inf", "group_expiry=0", "max_message_size=0", "serializer_format=pickle", "prefix=",
               "prefix=a%7Bb", "bogus_option=1"]


def _url_of(target: Target) -> str:
    return target.url_with_password("pw", 1) or "memory://"


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_bad_url_options_raise_config_error(target: Target, query: str) -> None:
    url = _url_of(target)
    with pytest.raises(layers.ConfigError) as caught:
        layers.from_url(url + ("&" if "?" in url else "?") + query)
    assert query.split("=")[0] in str(caught.value) or "option" in str(caught.value)


BAD_OPTIONS: list[dict[str, Any]] = [
    {"capacity": "abc"}, {"capacity": -1}, {"capacity": True}, {"expiry": "5"}, {"expiry": float("inf")},
    {"group_expiry": 1e300}, {"max_message_size": True}, {"channel_capacity": "x"},
    {"channel_capacity": {"a*": "x"}}, {"channel_capacity": {5: 1}}, {"symmetric_encryption_keys": "one key"},
    {"symmetric_encryption_keys": [5]}, {"symmetric_encryption_keys": [None]}, {"serializer_format": "pickle"},
    {"prefix": "a{b"}, {"prefix": 5}, {"hosts_typo": 1},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: next(iter(o)) + "=" + repr(next(iter(o.values())))[:12])
def test_bad_options_raise_config_error(target: Target, options: dict[str, Any]) -> None:
    with pytest.raises(layers.ConfigError):
        target.build(**options)


BAD_URLS = {
    "memory": [],
    "redis": ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/0?bogus=1",
              "redis+sentinel://127.0.0.1:26379", "redis://127.0.0.1:6379/0?timeout=x"],
    "postgres": ["postgresql://127.0.0.1:5432/test?bogus=1", "postgresql://127.0.0.1:5432/test?durable=maybe",
                 "postgresql://127.0.0.1:5432/test?timeout=0"],
    "amqp": ["amqp://127.0.0.1:abc/", "amqp://127.0.0.1/%2F?heartbeat=abc", "amqp://127.0.0.1/%2F?timeout=-1"],
}


def test_bad_backend_urls_raise_config_error(target: Target) -> None:
    for url in BAD_URLS[target.name] + ["nonsense", "", "redis:/no-slashes", "unknown://x"]:
        with pytest.raises(layers.ConfigError):
            layers.from_url(url)


def _random_item(draw_kind: str, data: bytes, channels: list[str], value: Any) -> bytes:
    if draw_kind == "bytes":
        return data
    if draw_kind == "envelope+bytes":
        return pack_item(_future(), None, data)
    if draw_kind == "envelope+value":
        return pack_item(_future(), None, msgpack.packb(value, use_bin_type=True))
    return pack_item(_future(), channels, data)


def test_fuzzed_garbage_never_breaks_receive(target: Target, run: Run) -> None:
    """Random bytes, random envelopes and random msgpack values in a named queue: every receive still returns a
    message (a dict with str keys) and the marker sent after the garbage always arrives."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    layer = target.layer(max_message_size=2048)
    run(layer.send("garbage.fuzz", {"marker": -1}))
    assert run(layer.receive("garbage.fuzz")) == {"marker": -1}
    markers = iter(range(1_000_000))
    values = st.recursive(st.one_of(st.none(), st.integers(-10, 10), st.text(max_size=5), st.binary(max_size=5)),
                          lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c,
                                                                                        max_size=3)), max_leaves=8)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(items=st.lists(st.tuples(st.sampled_from(["bytes", "envelope+bytes", "envelope+value", "channels"]),
                                    st.binary(max_size=64), st.lists(st.text(max_size=8), max_size=3), values),
                          min_size=1, max_size=4))
    def check(items: list[tuple[str, bytes, list[str], Any]]) -> None:
        for item in items:
            target.inject(layer, "garbage.fuzz", _random_item(*item))
        marker = next(markers)
        run(layer.send("garbage.fuzz", {"marker": marker}))
        for _ in range(len(items) + 1):
            received = run(layer.receive("garbage.fuzz"), timeout=10)
            assert type(received) is dict and all(type(k) is str for k in received)
            if received == {"marker": marker}:
                return
        raise AssertionError("the marker never arrived")

    check()
