"""Core behaviour that is not a conformance requirement: errors, settings, serialization details, local state."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
from typing import Any

import pytest

import layers
from layers.envelope import pack_item, unpack_item
from layers.serialization import get_serializer


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- error tree ---------------------------------------------------------------------------------------------


def test_errors_are_catchable_as_channels_errors() -> None:
    channels_exceptions = pytest.importorskip("channels.exceptions")
    assert issubclass(layers.ChannelFull, channels_exceptions.ChannelFull)
    assert issubclass(layers.MessageTooLarge, channels_exceptions.MessageTooLarge)
    layer = layers.InMemoryChannelLayer(capacity=1)

    async def overfill() -> None:
        await layer.send("c", {"n": 1})
        await layer.send("c", {"n": 2})

    with pytest.raises(channels_exceptions.ChannelFull):
        run(overfill())


def test_name_errors_are_type_errors_naming_the_value_and_rule() -> None:
    layer = layers.InMemoryChannelLayer()
    for bad in ["", "a" * 100, "spaces here", "two!bangs!", "ünïcode", 42, None, b"bytes"]:
        with pytest.raises(TypeError) as info:
            run(layer.send(bad, {"type": "x"}))  # type: ignore[arg-type]
        assert isinstance(info.value, layers.InvalidChannelName)
        assert repr(bad)[:20] in str(info.value) and "letters" in str(info.value)
    with pytest.raises(layers.InvalidGroupName, match="'!' is not allowed"):
        run(layer.group_add("group!x", "chan"))


def test_message_errors_name_the_offending_key() -> None:
    layer = layers.InMemoryChannelLayer()
    with pytest.raises(layers.InvalidMessage, match="must be a dict, not list"):
        run(layer.send("c", ["not", "a", "dict"]))  # type: ignore[arg-type]
    with pytest.raises(layers.InvalidMessage, match="key 1 is int"):
        run(layer.send("c", {1: "x"}))  # type: ignore[dict-item]
    with pytest.raises(layers.InvalidMessage, match=r"message\['payload'\]\['when'\] = .*set"):
        run(layer.send("c", {"type": "x", "payload": {"ok": 1, "when": {1, 2}}}))
    with pytest.raises(layers.InvalidMessage, match=r"message\['items'\]\[1\]"):
        run(layer.send("c", {"items": [1, object()]}))
    with pytest.raises(layers.MessageTooLarge, match="over the layer's max_message_size of 100 bytes"):
        run(layers.InMemoryChannelLayer(max_message_size=100).send("c", {"b": b"x" * 200}))


def test_bad_send_leaves_nothing_half_done() -> None:
    layer = layers.InMemoryChannelLayer()

    async def scenario() -> dict[str, int]:
        with pytest.raises(layers.InvalidMessage):
            await layer.group_send("g", {"bad": object()})
        with pytest.raises(layers.InvalidMessage):
            await layer.send("c", {"bad": object()})
        return layer.local_state_size()

    assert run(scenario()) == {"buffers": 0, "waiters": 0, "readers": 0, "queues": 0, "groups": 0, "poppers": 0}


def test_bytes_and_str_stay_distinct_and_json_format_refuses_bytes() -> None:
    msgpack_format = get_serializer("msgpack")
    assert msgpack_format.loads(msgpack_format.dumps({"b": b"x", "s": "x"})) == {"b": b"x", "s": "x"}
    layer = layers.InMemoryChannelLayer(serializer_format="json")
    with pytest.raises(layers.InvalidMessage, match=r"message\['b'\]"):
        run(layer.send("c", {"b": b"x"}))
    with pytest.raises(layers.ConfigError, match="unknown serializer_format 'yaml'; known formats: json, msgpack"):
        layers.InMemoryChannelLayer(serializer_format="yaml")


def test_encryption_rotation_and_unknown_keys() -> None:
    pytest.importorskip("cryptography")
    old = get_serializer("msgpack", ["old-key"])
    rotated = get_serializer("msgpack", ["new-key", "old-key"])
    stranger = get_serializer("msgpack", ["other"])
    sealed = old.dumps({"secret": "s3cr3t"})
    assert b"s3cr3t" not in sealed
    assert rotated.loads(sealed) == {"secret": "s3cr3t"}
    with pytest.raises(ValueError, match="not encrypted with any of this layer.s symmetric_encryption_keys"):
        stranger.loads(sealed)


def test_message_under_an_unknown_key_is_dropped_and_the_layer_keeps_working(caplog: Any) -> None:
    pytest.importorskip("cryptography")
    layer = layers.InMemoryChannelLayer(symmetric_encryption_keys=["k1"])

    async def scenario() -> dict[str, Any]:
        foreign = get_serializer("msgpack", ["k2"]).dumps({"x": 1})
        layer._buffer("c", (float("inf"), foreign))  # a message another site sealed with another key
        await layer.send("c", {"ok": True})
        return await layer.receive("c")

    assert run(scenario()) == {"ok": True}
    assert "dropping undecodable message on 'c'" in caplog.text


def test_item_envelope_round_trip_and_garbage() -> None:
    item = pack_item(12.5, ["a!b", "a!c"], b"payload")
    assert unpack_item(item) == (12.5, ["a!b", "a!c"], b"payload")
    assert unpack_item(pack_item(1.0, None, b"")) == (1.0, None, b"")
    for garbage in [b"", b"L1", b"garbage bytes", item[:12], b"L1" + b"\x00" * 8 + b"\xff\xff\xff\xff"]:
        with pytest.raises(ValueError):
            unpack_item(garbage)


def test_garbage_items_are_skipped_and_the_reader_survives(caplog: Any) -> None:
    layer = layers.InMemoryChannelLayer()

    async def scenario() -> dict[str, Any]:
        channel = await layer.new_channel()
        queue = channel.split("!")[0] + "!"
        backend = layer._state().backend
        await backend.push([layers.Push(queue, b"\x00garbage", 10, float("inf"))])
        await layer.send(channel, {"after": "garbage"})
        return await layer.receive(channel)

    assert run(scenario()) == {"after": "garbage"}
    assert "not a channel-layers message" in caplog.text


# -- settings -----------------------------------------------------------------------------------------------


def test_from_url_options_and_overrides() -> None:
    layer = layers.from_url("memory://?capacity=500&expiry=30&group_expiry=90", capacity=7)
    assert isinstance(layer, layers.InMemoryChannelLayer)
    assert (layer.capacity, layer.expiry, layer.group_expiry) == (7, 30, 90)


def test_from_url_errors() -> None:
    with pytest.raises(layers.ConfigError, match=r"unknown layer URL scheme 'reddis' \(did you mean 'redis'\?\)"):
        layers.from_url("reddis://localhost")
    with pytest.raises(layers.ConfigError, match="known schemes: .*memory.*redis"):
        layers.from_url("nope://x")
    with pytest.raises(layers.ConfigError, match="scheme://"):
        layers.from_url("localhost:6379")
    with pytest.raises(layers.ConfigError, match="capacity='lots' must be int"):
        layers.from_url("memory://?capacity=lots")
    with pytest.raises(layers.ConfigError, match="unknown option.*colour"):
        layers.from_url("memory://?colour=blue")
    with pytest.raises(layers.ConfigError, match="expiry must be a positive number, not -1"):
        layers.from_url("memory://?expiry=-1")
    with pytest.raises(layers.ConfigError, match="capacity must be a positive int"):
        layers.InMemoryChannelLayer(capacity=0)
    with pytest.raises(layers.ConfigError, match=r"channel_capacity\[3\] key|glob string or a compiled regex"):
        layers.InMemoryChannelLayer(channel_capacity={3: 4})  # type: ignore[dict-item]


def test_missing_extra_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['layers_redis'] = None\n"
        "import layers\n"
        "try:\n    layers.from_url('redis://localhost')\n"
        "except layers.ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'channel-layers[redis]'" in out


def test_from_config_and_django_settings() -> None:
    layer = layers.from_config({"BACKEND": "layers.InMemoryChannelLayer", "CONFIG": {"capacity": 3}})
    assert layer.capacity == 3
    with pytest.raises(layers.ConfigError, match="BACKEND"):
        layers.from_config({"CONFIG": {}})
    with pytest.raises(layers.ConfigError, match="cannot import 'nowhere'"):
        layers.from_config({"BACKEND": "nowhere.Layer"})
    # tests/conftest.py configures Django: get_channel_layer reads CHANNEL_LAYERS
    assert layers.get_channel_layer().capacity == 50
    assert layers.get_channel_layer("url").capacity == 7
    assert layers.get_channel_layer() is layers.get_channel_layer()
    with pytest.raises(layers.ConfigError, match="no channel layer 'missing'"):
        layers.get_channel_layer("missing")


def test_get_channel_layer_without_django_reads_the_environment() -> None:
    code = "import layers; l = layers.get_channel_layer(); print(type(l).__name__, l.capacity)"
    env = {**os.environ, "CHANNEL_LAYER_URL": "memory://?capacity=11"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["InMemoryChannelLayer", "11"]
    env.pop("CHANNEL_LAYER_URL")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["InMemoryChannelLayer", "100"]


def test_redact_url_hides_passwords() -> None:
    from layers.settings import redact_url

    assert redact_url("redis://user:hunter2@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("amqp://guest@host") == "amqp://guest@host"


def test_core_imports_no_backend_driver() -> None:
    code = "import sys, layers; print(sorted(m for m in ('redis', 'psycopg', 'pika') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- local state --------------------------------------------------------------------------------------------


def test_100k_channels_used_then_drained_leave_empty_maps() -> None:
    layer = layers.InMemoryChannelLayer(capacity=10)

    async def scenario() -> dict[str, int]:
        base = await layer.new_channel()
        for i in range(100_000):
            channel = f"{base}{i}" if i % 2 else f"named.{i}"
            await layer.group_add(f"g{i % 1000}", channel)
            await layer.send(channel, {"i": i})
            await layer.group_send(f"g{i % 1000}", {"i": i})
            assert (await layer.receive(channel))["i"] == i
            await layer.receive(channel)
            await layer.group_discard(f"g{i % 1000}", channel)
        return layer.local_state_size()

    sizes = run(scenario())
    assert sizes == {"buffers": 0, "waiters": 0, "readers": 0, "queues": 0, "groups": 0, "poppers": 0}


def test_expired_queues_and_lapsed_groups_are_swept() -> None:
    layer = layers.InMemoryChannelLayer(expiry=0.05, group_expiry=0.05)

    async def scenario() -> dict[str, int]:
        for i in range(100):
            await layer.send(f"abandoned.{i}", {"i": i})
            await layer.group_add(f"g{i}", f"abandoned.{i}")
        await asyncio.sleep(0.1)
        await layer.send("trigger", {})  # sends sweep at most once per expiry period
        await layer.receive("trigger")
        return layer.local_state_size()

    sizes = run(scenario())
    assert sizes["queues"] == 0 and sizes["groups"] == 0


def test_sync_callers_with_a_new_loop_per_call() -> None:
    asgiref = pytest.importorskip("asgiref.sync")
    layer = layers.InMemoryChannelLayer()
    channel = asgiref.async_to_sync(layer.new_channel)()
    for i in range(20):
        asgiref.async_to_sync(layer.send)(channel, {"i": i})
    got = [asgiref.async_to_sync(layer.receive)(channel)["i"] for _ in range(20)]
    assert got == list(range(20))
    gc.collect()
    assert len(layer._loops) <= 1  # states of closed loops are dropped


def test_repr_and_new_channel_format() -> None:
    layer = layers.InMemoryChannelLayer(prefix="site")
    assert repr(layer) == "<InMemoryChannelLayer prefix='site'>"
    name = run(layer.new_channel("websocket"))
    assert re.fullmatch(r"websocket\.[0-9a-f]{12}![0-9a-f]{12}", name)
    with pytest.raises(layers.InvalidName):
        run(layer.new_channel("bad!prefix"))


def test_unknown_and_peer_options_are_config_errors_with_hints() -> None:
    with pytest.raises(layers.ConfigError, match=r"'capcity' \(did you mean 'capacity'\?\)"):
        layers.InMemoryChannelLayer(capcity=5)
    with pytest.raises(layers.ConfigError, match="'random_prefix_length' .*12-character process id"):
        layers.InMemoryChannelLayer(random_prefix_length=12)
    with pytest.raises(layers.ConfigError, match="'local_capacity' .*use capacity"):
        layers.from_config({"BACKEND": "layers.InMemoryChannelLayer", "CONFIG": {"local_capacity": 10}})


_ONLY_MSGPACK = """
import sys

class OnlyStdlibAndMsgpack:  # every third-party package but msgpack is "not installed"
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in ("layers", "msgpack"):
            return None
        raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, OnlyStdlibAndMsgpack())
"""


def test_core_works_with_only_msgpack_installed() -> None:
    code = _ONLY_MSGPACK + (
        "import asyncio, layers\n"
        "l = layers.from_url('memory://?capacity=1')\n"
        "assert all(c.__module__.startswith(('layers', 'abc', 'builtins')) for c in type(l).__mro__)\n"
        "assert l.require_valid_channel_name('a!b') and l.non_local_name('a!b') == 'a!' and l.get_capacity('x') == 1\n"
        "async def main():\n    await l.send('c', {})\n    try:\n        await l.send('c', {})\n"
        "    except layers.ChannelFull:\n        print('full')\n    await l.close_pools()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in ('channels', 'django', 'asgiref')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["full", "[]"]


def test_layers_are_channels_layers_with_our_name_rules() -> None:
    channels_layers = pytest.importorskip("channels.layers")
    layer = layers.InMemoryChannelLayer(capacity=3, channel_capacity={"specific.*!": 9, "big.*": 50})
    assert isinstance(layer, channels_layers.BaseChannelLayer)
    assert layer.MAX_NAME_LENGTH == channels_layers.BaseChannelLayer.MAX_NAME_LENGTH == 100
    local = run(layer.new_channel())
    assert layer.get_capacity(local) == 9  # the process's capacity (R-CAP-3), as send applies it
    assert layer.get_capacity("big.x") == 50
    assert layer.get_capacity("other") == 3
    assert layer.non_local_name(local) == local[: local.index("!") + 1]
    assert layer.non_local_name("named") == "named"
    assert layer.require_valid_channel_name(local, receive=True) is True  # our receive takes full local names
    assert layer.valid_channel_names([local, "a"]) is True
    for bad in ("bad\n", "local!ünï", "x" * 100):  # Channels' own regex accepts the first two
        with pytest.raises(layers.InvalidChannelName, match=re.escape(repr(bad))):
            layer.require_valid_channel_name(bad)
    with pytest.raises(layers.InvalidGroupName):
        layer.require_valid_group_name("group!x")
    with pytest.raises(TypeError):
        layer.valid_channel_names([])
    with pytest.warns(DeprecationWarning):
        assert layer.valid_channel_name("a") is True
    with pytest.warns(DeprecationWarning):
        assert layer.valid_group_name("a") is True
    assert not layer.match_type_and_length("x" * 100)
    # Code written for Channels matches its own sentence; ours starts with it and still names the value.
    assert layer.invalid_name_error == channels_layers.BaseChannelLayer.invalid_name_error
    for helper, kind in ((layer.require_valid_channel_name, "Channel"), (layer.require_valid_group_name, "Group")):
        with pytest.raises(TypeError, match=re.escape(layer.invalid_name_error.format(kind))) as refused:
            helper("x" * 100)
        assert repr("x" * 100) in str(refused.value)


def test_group_expiry_zero_says_what_to_use_instead() -> None:
    with pytest.raises(layers.ConfigError, match=r"group_expiry .* not 0: .* use e\.g\. 31536000"):
        layers.InMemoryChannelLayer(group_expiry=0)


def test_close_pools_is_close() -> None:
    layer = layers.InMemoryChannelLayer()

    async def use() -> None:
        await layer.send("c", {"n": 1})
        await layer.close_pools()
        await layer.close_pools()
        assert (await layer.receive("c")) == {"n": 1}  # close releases connections, not data (R-CLOSE-2)
        await layer.close_pools()
        assert not layer._loops

    run(use())


def test_foreign_local_channel_receive_is_refused_also_through_async_to_sync() -> None:
    asgiref = pytest.importorskip("asgiref.sync")
    owner, other = layers.InMemoryChannelLayer(), layers.InMemoryChannelLayer()
    channel = asgiref.async_to_sync(owner.new_channel)()
    with pytest.raises(layers.ChannelNotOwned, match=re.escape(repr(channel))) as refused:
        asgiref.async_to_sync(other.receive)(channel)
    assert isinstance(refused.value, TypeError) and not isinstance(refused.value, layers.InvalidChannelName)
    assert isinstance(refused.value, AssertionError)  # what channels_redis/_postgres/_rabbitmq raise here
    for i in range(3):  # each call runs on a new event loop; the channel stays the owner's
        asgiref.async_to_sync(owner.send)(channel, {"i": i})
        assert asgiref.async_to_sync(owner.receive)(channel) == {"i": i}
    bare = channel[: channel.index("!") + 1]  # the process part itself is the owner's channel too
    asgiref.async_to_sync(owner.send)(bare, {"bare": True})
    assert asgiref.async_to_sync(owner.receive)(bare) == {"bare": True}
