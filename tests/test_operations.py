"""The operations API of the core (issue 15), and ``layers ping``: what the conformance tier ``operations``
cannot see from outside — one backend call per bulk send, one membership lookup per introspection, errors named by
the call, groups sent concurrently, and the counters only a layer's own traffic can move (expired and undecodable
entries, held ones)."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest

from layers import BackendUnavailable, ChannelFull, InMemoryChannelLayer, ServerError, Unsupported
from layers.backend import Backend, GroupMessage, Push
from layers.envelope import pack_item
from layers.memory import _MemoryBackend
from spec import run_suite
from spec.report import NA
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL


def _sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the suite runs without an asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


class _CountingBackend(_MemoryBackend):
    """The in-memory backend, counting the calls the core makes (and optionally slowing group pushes)."""

    group_push_delay = 0.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pushes: list[int] = []  # the length of each push() call's list
        self.member_lookups = 0

    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        self.pushes.append(len(pushes))
        return await super().push(pushes)

    async def group_members(self, group: str) -> list[str]:
        self.member_lookups += 1
        return await super().group_members(group)

    async def group_push(self, group: str, message: GroupMessage) -> int:
        await asyncio.sleep(self.group_push_delay)
        return await super().group_push(group, message)


class _Counted(InMemoryChannelLayer):
    def make_backend(self) -> Backend:
        return _CountingBackend(self._store)

    @property
    def calls(self) -> _CountingBackend:
        backend = self._state().backend
        assert isinstance(backend, _CountingBackend)
        return backend


class _Failing(InMemoryChannelLayer):
    """Its backend's membership lookup fails as a driver would, unwrapped."""

    def __init__(self, error: Exception, **options: Any) -> None:
        super().__init__(**options)
        self.error = error

    def make_backend(self) -> Backend:
        error = self.error

        class Broken(_MemoryBackend):
            async def group_members(self, group: str) -> list[str]:
                raise error

        return Broken(self._store)


@_sync
async def test_send_many_is_one_backend_call_whatever_the_count() -> None:
    layer = _Counted(capacity=1000)
    local = await layer.new_channel()
    await layer.send_many([(channel, {"i": i}) for i in range(100) for channel in ("tasks", local)])
    assert layer.calls.pushes == [200]
    assert [(await layer.receive("tasks"))["i"] for _ in range(100)] == list(range(100))
    assert [(await layer.receive(local))["i"] for _ in range(100)] == list(range(100))


@_sync
async def test_send_lists_its_full_channel() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    await layer.send("a", {"i": 0})
    with pytest.raises(ChannelFull) as raised:
        await layer.send("a", {"i": 1})
    assert raised.value.channels == ["a"]


@_sync
async def test_send_many_lists_each_full_channel_once_and_counts_each_message() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    with pytest.raises(ChannelFull) as raised:
        await layer.send_many([("a", {"i": 0}), ("a", {"i": 1}), ("a", {"i": 2}), ("b", {"i": 3})])
    assert raised.value.channels == ["a"]
    assert "2 of 4 message(s) not stored" in str(raised.value) and "'a'" in str(raised.value)
    stats = layer.stats()
    assert (stats["sent"], stats["full"]) == (2, 2)
    assert await layer.receive("a") == {"i": 0} and await layer.receive("b") == {"i": 3}


@pytest.mark.parametrize("pairs", ["ab", {"a": {}}, [("a", {}, "extra")], ["a"]], ids=repr)
@_sync
async def test_send_many_refuses_what_is_not_pairs(pairs: Any) -> None:
    layer = _Counted()
    with pytest.raises(TypeError, match="pairs"):
        await layer.send_many(pairs)
    assert layer.calls.pushes == []


@_sync
async def test_send_many_reads_an_iterator_once() -> None:
    layer = InMemoryChannelLayer()
    await layer.send_many(("tasks", {"i": i}) for i in range(3))
    assert [(await layer.receive("tasks"))["i"] for _ in range(3)] == [0, 1, 2]


@_sync
async def test_group_size_and_channels_are_one_membership_lookup() -> None:
    layer = _Counted()
    for channel in ("b", "a", "c"):
        await layer.group_add("room", channel)
    assert await layer.group_channels("room") == ["a", "b", "c"]
    assert await layer.group_size("room") == 3
    assert layer.calls.member_lookups == 2


@pytest.mark.parametrize(("error", "wrapped"), [(ConnectionResetError("reset"), BackendUnavailable),
                                                (RuntimeError("boom"), ServerError)])
@pytest.mark.parametrize("call", ["group_channels", "group_size"])
@_sync
async def test_introspection_errors_are_wrapped_and_named(error: Exception, wrapped: type, call: str) -> None:
    layer = _Failing(error)
    with pytest.raises(wrapped, match=f"^{call} failed") as raised:
        await getattr(layer, call)("room")
    assert raised.value.__cause__ is error


class _Unlisted(InMemoryChannelLayer):
    """Its backend knows only this process's members (as AMQP's): it cannot list a group."""

    def make_backend(self) -> Backend:
        class OwnMembersOnly(_MemoryBackend):
            lists_group_members = False

        return OwnMembersOnly(self._store)


@pytest.mark.parametrize("call", ["group_channels", "group_size"])
@_sync
async def test_a_backend_that_cannot_list_members_refuses_instead_of_answering_wrongly(call: str) -> None:
    layer = _Unlisted()
    await layer.group_add("room", "member")
    with pytest.raises(Unsupported, match=f"^{call}: OwnMembersOnly cannot list a group's members"):
        await getattr(layer, call)("room")


def test_the_conformance_suite_finds_group_listing_not_applicable_where_unsupported() -> None:
    run = run_suite(_Unlisted, pytest_args=["-k", "r_ops_1"])
    assert run.results["R-OPS-1"].status == NA
    assert "group_channels() raised Unsupported: group_channels: OwnMembersOnly" in run.results["R-OPS-1"].detail


@_sync
async def test_group_send_many_sends_the_groups_concurrently_each_in_order() -> None:
    layer = _Counted()
    layer.calls.group_push_delay = 0.2
    members = {group: await layer.new_channel() for group in ("g1", "g2", "g3")}
    for group, channel in members.items():
        await layer.group_add(group, channel)
    started = time.monotonic()
    await layer.group_send_many([(group, {"i": i}) for i in range(2) for group in members])
    assert time.monotonic() - started < 0.2 * 4  # sequentially: 6 x 0.2 s; per group in order: 2 x 0.2 s
    for channel in members.values():
        assert [(await layer.receive(channel))["i"] for _ in range(2)] == [0, 1]
    assert layer.stats()["group_sends"] == 6


@_sync
async def test_group_send_many_counts_drops_as_group_send_does() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    await layer.group_add("room", "full")
    await layer.send("full", {"already": "here"})
    await layer.group_send_many([("room", {"one": 1}), ("room", {"two": 2})])
    assert layer.group_drops == 2 and layer.stats()["group_drops"] == 2


@_sync
async def test_stats_counts_held_expired_and_undecodable_entries() -> None:
    layer = InMemoryChannelLayer(expiry=0.3)
    first, second = await layer.new_channel(), await layer.new_channel()
    for i in range(3):
        await layer.send(second, {"i": i})
    await layer.send(first, {"first": True})
    assert await layer.receive(first) == {"first": True}  # one pop took the whole process queue
    assert layer.stats()["messages_held"] == 3
    await asyncio.sleep(0.4)
    process_queue = first[: first.index("!") + 1]
    deadline = time.time() + 60
    garbage = Push(process_queue, b"not an item", 100, deadline)
    undecodable = Push(process_queue, pack_item(deadline, [first], b"\xc1 not msgpack"), 100, deadline)
    await layer._state().backend.push([garbage, undecodable])
    await layer.send(first, {"after": True})
    assert await layer.receive(first) == {"after": True}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(second), 0.1)
    stats = layer.stats()
    assert (stats["expired_on_read"], stats["undecodable"], stats["messages_held"]) == (3, 2, 0), stats
    assert (stats["sent"], stats["received"]) == (5, 2), stats


@_sync
async def test_ping_times_a_round_trip_and_says_when_the_backend_has_none() -> None:
    assert isinstance(await InMemoryChannelLayer().ping(), float)

    class NoPing(InMemoryChannelLayer):
        def make_backend(self) -> Backend:
            class Silent(_MemoryBackend):
                async def ping(self) -> None:
                    await Backend.ping(self)

            return Silent(self._store)

    with pytest.raises(Unsupported, match="Silent has no ping"):
        await NoPing().ping()


def _layers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layers", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("url", ["memory://", POSTGRES_DSN, AMQP_URL, REDIS_URL],
                         ids=["memory", "postgresql", "amqp", "redis"])
def test_layers_ping_prints_the_round_trip(url: str) -> None:
    done = _layers("ping", url)
    assert done.returncode == 0 and done.stdout.strip().endswith(" ms"), done.stdout + done.stderr
    report = json.loads(_layers("ping", url, "--json").stdout)
    assert report["ok"] is True and report["seconds"] >= 0, report


def test_layers_ping_says_why_a_server_refuses() -> None:
    parts = urlsplit(POSTGRES_DSN)
    refused = parts._replace(netloc=f"nosuchrole@{parts.hostname}:{parts.port or 5432}").geturl()
    done = _layers("ping", refused)
    assert done.returncode == 1 and "nosuchrole" in done.stderr, done.stderr
    report = json.loads(_layers("ping", refused, "--json").stdout)
    assert (report["ok"], report["error"]) == (False, "AuthenticationFailed") and "nosuchrole" in report["detail"]
