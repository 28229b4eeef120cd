"""Fuzzed names and messages on every backend (hypothesis).

Valid messages round-trip exactly (type for type: ``bytes`` is not ``str``, ``True`` is not ``1``, ``1.0`` is not
``1``; tuples come back as lists); invalid names and messages raise the documented errors; and a call that raised
stored nothing (the raw storage of the queue is empty afterwards, and the next message is the next one received).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layers
from layers.names import MAX_NAME_LENGTH

from .backends import Target

EXAMPLES = 60
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

# -- strategies --------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),  # NaN != NaN; it round-trips too, checked separately
    st.text(max_size=40), st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.tuples(children, children),
                               st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=25,
)
messages = st.dictionaries(st.text(max_size=20), values, max_size=8)

group_names = st.text(NAME_CHARS, min_size=1, max_size=MAX_NAME_LENGTH - 1)
channel_names = st.one_of(
    group_names,
    st.tuples(st.text(NAME_CHARS, min_size=1, max_size=40), st.text(NAME_CHARS, max_size=40))
    .map(lambda parts: f"{parts[0]}!{parts[1]}"),
)
bad_names = st.one_of(
    st.just(""),
    st.text(NAME_CHARS, min_size=MAX_NAME_LENGTH, max_size=MAX_NAME_LENGTH + 20),
    st.text(min_size=1, max_size=30).filter(lambda s: any(c not in NAME_CHARS + "!" for c in s)),
    st.builds(lambda a, b: f"{a}!{b}!", st.text(NAME_CHARS, min_size=1, max_size=5), st.text(NAME_CHARS, max_size=5)),
    st.builds(lambda a: f"!{a}", st.text(NAME_CHARS, max_size=5)),
    st.binary(min_size=1, max_size=10), st.integers(), st.none(), st.lists(st.text(NAME_CHARS, min_size=1)),
)
bad_group_names = st.one_of(bad_names, st.builds(lambda a, b: f"{a}!{b}", st.text(NAME_CHARS, min_size=1, max_size=5),
                                                 st.text(NAME_CHARS, max_size=5)))


class _Opaque:
    pass


unserializable = st.one_of(
    st.builds(_Opaque), st.sets(st.integers(), min_size=1, max_size=3), st.complex_numbers(allow_nan=False),
    st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1), st.frozensets(st.integers(), min_size=1),
)


def _bury(value: Any, path: list[int]) -> Any:
    """Put ``value`` inside lists/dicts, one level per element of ``path``."""
    for step in path:
        value = [value] if step % 2 else {"k": value}
    return value


bad_messages = st.one_of(
    st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=5), st.integers(), st.none(), st.binary()),
    st.builds(lambda key, v: {key: v}, st.one_of(st.integers(), st.binary(min_size=1), st.tuples(st.integers())),
              scalars),
    st.builds(lambda key, bad, path: {"type": "x", key: _bury(bad, path)}, st.text(max_size=5), unserializable,
              st.lists(st.integers(0, 1), max_size=3)),
)


# -- exact comparison ----------------------------------------------------------------------------------------


def expected(value: Any) -> Any:
    """What a receiver gets for ``value``: tuples become lists, everything else unchanged."""
    if isinstance(value, (list, tuple)):
        return [expected(v) for v in value]
    if isinstance(value, dict):
        return {k: expected(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down (``==`` says True == 1 == 1.0 and that is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


# -- tests -------------------------------------------------------------------------------------------------

Run = Callable[..., Any]


def test_valid_messages_round_trip_exactly(target: Target, run: Run) -> None:
    layer = target.layer()
    process_channel = run(layer.new_channel())
    count = 0

    @FUZZ
    @given(message=messages, name=channel_names)
    def check(message: dict[str, Any], name: str) -> None:
        nonlocal count
        if "!" in name:  # only the owner receives a process-local channel (R-PROC-5): put the local part on ours
            name = process_channel[: process_channel.index("!") + 1] + name.split("!", 1)[1]
        for channel in (name, process_channel):
            run(layer.send(channel, message))
            received = run(layer.receive(channel))
            assert same(received, expected(message)), (message, received)
        count += 1

    check()
    assert count >= EXAMPLES // 2


def test_special_values_round_trip(target: Target, run: Run) -> None:
    layer = target.layer()
    message = {"nan": float("nan"), "inf": float("-inf"), "max": 2**64 - 1, "min": -(2**63), "b": b"", "s": "",
               "nested": [[[]], {"": {}}], "bool": [True, False, 0, 1, 1.0], "t": ("a", b"a")}
    run(layer.send("fuzz.special", message))
    assert same(run(layer.receive("fuzz.special")), expected(message))


def test_sent_message_is_a_snapshot(target: Target, run: Run) -> None:
    layer = target.layer()
    inner = {"list": [1, 2]}
    message = {"type": "x", "inner": inner}
    run(layer.send("fuzz.snapshot", message))
    inner["list"].append(3)
    message["type"] = "changed"
    assert run(layer.receive("fuzz.snapshot")) == {"type": "x", "inner": {"list": [1, 2]}}
    assert message["type"] == "changed" and inner == {"list": [1, 2, 3]}  # the caller's dict is not mutated


def test_invalid_names_raise_typed_errors_and_store_nothing(target: Target, run: Run) -> None:
    layer = target.layer()
    channel = run(layer.new_channel())
    tried = 0

    @FUZZ
    @given(bad=bad_names, bad_group=bad_group_names)
    def check(bad: Any, bad_group: Any) -> None:
        nonlocal tried
        calls = [
            (layers.InvalidChannelName, layer.send(bad, {"type": "x"})),
            (layers.InvalidChannelName, layer.receive(bad)),
            (layers.InvalidGroupName, layer.group_add(bad_group, channel)),
            (layers.InvalidChannelName, layer.group_add("fuzz-group", bad)),
            (layers.InvalidGroupName, layer.group_discard(bad_group, channel)),
            (layers.InvalidGroupName, layer.group_send(bad_group, {"type": "x"})),
        ]
        for error, call in calls:
            with pytest.raises(error) as caught:
                run(call)
            assert isinstance(caught.value, TypeError)
            assert repr(bad)[:20] in str(caught.value) or repr(bad_group)[:20] in str(caught.value)
        tried += 1

    check()
    # Nothing was half-applied: the failed group_add(..., bad) made no member, so this group_send reaches
    # only the one member added now, and nothing else waits in its queue.
    run(layer.group_add("fuzz-group", channel))
    run(layer.group_send("fuzz-group", {"type": "only"}))
    assert run(layer.receive(channel)) == {"type": "only"}
    assert target.stored(layer, channel.split("!")[0] + "!") == []
    assert tried >= EXAMPLES // 2


def test_invalid_messages_raise_invalid_message_and_store_nothing(target: Target, run: Run) -> None:
    layer = target.layer()
    channel = run(layer.new_channel())
    run(layer.group_add("fuzz-bad", channel))

    @FUZZ
    @given(bad=bad_messages)
    def check(bad: Any) -> None:
        for call in (layer.send("fuzz.bad", bad), layer.send(channel, bad), layer.group_send("fuzz-bad", bad)):
            with pytest.raises(layers.InvalidMessage) as caught:
                run(call)
            assert isinstance(caught.value, TypeError)

    check()
    assert target.stored(layer, "fuzz.bad") == []
    assert target.stored(layer, channel.split("!")[0] + "!") == []
    run(layer.send("fuzz.bad", {"type": "next"}))
    assert run(layer.receive("fuzz.bad")) == {"type": "next"}


def test_error_names_the_offending_key(target: Target, run: Run) -> None:
    layer = target.layer()
    with pytest.raises(layers.InvalidMessage, match=r"\['payload'\]\[1\]\['deep'\]"):
        run(layer.send("fuzz.key", {"type": "x", "payload": [1, {"deep": {1, 2}}]}))
    with pytest.raises(layers.InvalidMessage, match="key 3"):
        run(layer.send("fuzz.key", {3: "x"}))


def test_too_large_messages_raise_and_store_nothing(target: Target, run: Run) -> None:
    limit = 300
    layer = target.layer(max_message_size=limit)
    channel = run(layer.new_channel())
    run(layer.group_add("fuzz-big", channel))

    @FUZZ
    @given(size=st.integers(limit, 4 * limit), kind=st.sampled_from(["bytes", "str", "list"]))
    def check(size: int, kind: str) -> None:
        blob: Any = {"bytes": b"x" * size, "str": "é" * size, "list": list(range(size))}[kind]
        for call in (layer.send("fuzz.big", {"blob": blob}), layer.send(channel, {"blob": blob}),
                     layer.group_send("fuzz-big", {"blob": blob})):
            with pytest.raises(layers.MessageTooLarge):
                run(call)

    check()
    assert target.stored(layer, "fuzz.big") == []
    assert target.stored(layer, channel.split("!")[0] + "!") == []
    just_fits = {"b": b"x" * (limit - 20)}
    run(layer.send("fuzz.big", just_fits))
    assert run(layer.receive("fuzz.big")) == just_fits


def test_valid_messages_round_trip_encrypted(target: Target, run: Run) -> None:
    """The same exactness through Fernet (fewer examples: the plain test covers the value space)."""
    writer = target.layer(symmetric_encryption_keys=["fuzz-new", "fuzz-old"])
    reader = target.peer(writer, symmetric_encryption_keys=["fuzz-other", "fuzz-new"])

    @settings(FUZZ, max_examples=EXAMPLES // 2)
    @given(message=messages)
    def check(message: dict[str, Any]) -> None:
        run(writer.send("fuzz.encrypted", message))
        assert same(run(reader.receive("fuzz.encrypted")), expected(message))

    check()
