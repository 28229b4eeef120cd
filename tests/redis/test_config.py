"""Configuration: the channels_redis host forms, URLs, options, and passwords kept out of repr and errors."""

from __future__ import annotations

import pytest

import layers
from layers import BackendUnavailable, ConfigError
from layers_redis import RedisChannelLayer
from layers_redis.hosts import parse_hosts
from tests.redis.helpers import run
from tests.servers import free_port


def test_host_forms() -> None:
    specs = parse_hosts([
        "redis://:pw@10.0.0.1:6379/2",
        "rediss://10.0.0.2:6380",
        "unix:///run/redis.sock?db=1",
        ("10.0.0.3", 6379),
        {"address": "redis://10.0.0.4:6379", "password": "pw", "db": 3},
        {"address": ("10.0.0.5", 6390), "password": "pw"},
        {"master_name": "mymaster", "sentinels": [("10.0.0.6", 26379)], "sentinel_kwargs": {"password": "s"}},
        "redis+sentinel://:pw@10.0.0.7:26379,10.0.0.8:26379/mymaster/1?sentinel_password=s",
        "redis+cluster://:pw@10.0.0.9:7000,10.0.0.10:7000",
        {"cluster": True, "address": ("10.0.0.11", 7000)},
    ])
    assert [s.kind for s in specs] == ["single"] * 6 + ["sentinel"] * 2 + ["cluster"] * 2
    assert specs[0].url == "redis://:pw@10.0.0.1:6379/2"
    assert specs[3].kwargs == {"host": "10.0.0.3", "port": 6379}
    assert specs[4].kwargs == {"password": "pw", "db": 3}
    assert specs[5].kwargs == {"host": "10.0.0.5", "port": 6390, "password": "pw"}
    assert specs[6].nodes == [("10.0.0.6", 26379)] and specs[6].master_name == "mymaster"
    assert specs[6].sentinel_kwargs == {"password": "s"}
    assert specs[7].nodes == [("10.0.0.7", 26379), ("10.0.0.8", 26379)]
    assert specs[7].kwargs == {"password": "pw", "db": 1} and specs[7].sentinel_kwargs == {"password": "s"}
    assert specs[8].nodes == [("10.0.0.9", 7000), ("10.0.0.10", 7000)] and specs[8].kwargs == {"password": "pw"}
    assert specs[9].nodes == [("10.0.0.11", 7000)]
    for spec in specs:
        assert "pw" not in spec.label and "pw" not in repr(spec)


def test_several_hosts_in_one_url_are_shards() -> None:
    specs = parse_hosts("redis://:pw@h1:6379,h2:6380/0")
    assert [s.url for s in specs] == ["redis://:pw@h1:6379/0", "redis://:pw@h2:6380/0"]


def test_channels_redis_config_keys() -> None:
    layer = RedisChannelLayer(hosts=[("127.0.0.1", 6379)], prefix="p", expiry=30, group_expiry=600, capacity=7,
                              channel_capacity={"http.*": 3}, serializer_format="json",
                              symmetric_encryption_keys=None)
    assert (layer.prefix, layer.expiry, layer.group_expiry, layer.capacity) == ("p", 30, 600, 7)
    assert layer.capacity_rules.lookup("http.request") == 3


def test_from_url_and_from_config() -> None:
    layer = layers.from_url("redis://:secret@127.0.0.1:6379/0?capacity=5&expiry=9&timeout=1.5&prefix=x")
    assert isinstance(layer, RedisChannelLayer)
    assert (layer.capacity, layer.expiry, layer.timeout, layer.prefix) == (5, 9, 1.5, "x")
    assert "secret" not in repr(layer) and "***" in repr(layer)
    for url in ("redis+sentinel://127.0.0.1:26379/mymaster", "redis+cluster://127.0.0.1:7000",
                "unix:///tmp/redis.sock", "rediss://127.0.0.1:6380"):
        assert isinstance(layers.from_url(url), RedisChannelLayer)
    configured = layers.from_config({"BACKEND": "layers_redis.RedisChannelLayer",
                                     "CONFIG": {"hosts": ["redis://127.0.0.1:6379"], "capacity": 3}})
    assert configured.capacity == 3


@pytest.mark.parametrize("bad", [
    {"hosts": []}, {"hosts": [42]}, {"hosts": ["http://x"]}, {"timeout": 0}, {"max_connections": 0},
    {"hosts": [{"master_name": "m"}]}, {"hosts": ["redis+sentinel://127.0.0.1:26379"]},
])
def test_bad_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        RedisChannelLayer(**bad)


def test_bad_url_option() -> None:
    with pytest.raises(ConfigError):
        layers.from_url("redis://127.0.0.1:6379?timeout=soon")


def test_password_not_in_unavailable_error() -> None:
    port = free_port()  # nothing listens there
    layer = RedisChannelLayer(hosts=[f"redis://:hunter2@127.0.0.1:{port}/0"], timeout=1)

    async def send() -> None:
        try:
            await layer.send("x", {"a": 1})
        finally:
            await layer.close()

    with pytest.raises(BackendUnavailable) as info:
        run(send())
    assert "hunter2" not in str(info.value) and str(port) in str(info.value)
    assert "hunter2" not in repr(layer)
