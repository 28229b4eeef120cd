"""Secrets stay secret, unpacking is bounded, no pickle, and a ``prefix`` is a tenant boundary.

Passwords: a distinctive password must not appear in ``repr(layer)``, in any log record emitted while connecting
fails, or in the error raised (nor in the exceptions chained to it, which a traceback prints) — against a port
nothing listens on, and against a server that refuses the password.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import pytest

import layers
from layers.envelope import pack_item
from layers.serialization import EncryptedSerializer, MsgpackSerializer, decode_message
from tests.servers import AMQP_URL
from tests.servers.redis import RedisServer, redis_available

from .backends import Target, unreachable_port
from .conftest import ROLE, ROLE_PASSWORD
from .tls import TLSPostgres

Run = Callable[..., Any]
PASSWORD = "Zq7-DistinctivePassw0rd-xK"
ROOT = Path(__file__).resolve().parents[2]


def _texts(error: BaseException) -> Iterator[str]:
    """The error and everything chained to it, as a traceback would print them."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield f"{type(current).__name__}: {current} {current.args!r}"
        current = current.__cause__ or current.__context__


def _leaks(password: str, texts: list[str]) -> list[str]:
    forms = {password, quote(password, safe=""), quote(password)}
    return [text for text in texts if any(form in text for form in forms)]


def _fail_to_connect(layer: Any, caplog: pytest.LogCaptureFixture) -> tuple[BaseException, list[str]]:
    """Send and receive on ``layer`` (which cannot connect); the error and every log line emitted meanwhile."""

    async def attempt() -> BaseException:
        try:
            with pytest.raises(layers.LayerError) as caught:
                await layer.send("secret.channel", {"type": "x"})
            receiving = asyncio.ensure_future(layer.receive(await layer.new_channel()))
            await asyncio.sleep(1.0)  # the reader fails, logs and retries meanwhile
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
            return caught.value
        finally:
            await layer.close()

    with caplog.at_level(logging.DEBUG):
        error = asyncio.run(asyncio.wait_for(attempt(), 30))
    lines = [record.getMessage() for record in caplog.records]
    lines += [caplog.text]
    return error, lines


def test_password_not_in_repr(server_target: Target) -> None:
    for password in (PASSWORD, "p@ss:w/rd?#%" + PASSWORD):
        url = server_target.url_with_password(quote(password, safe=""), 5)
        assert url is not None
        layer = layers.from_url(url)
        assert not _leaks(password, [repr(layer), str(layer)])
        assert "***" in repr(layer) or "redis" in repr(layer).lower()


def _other_forms(name: str, password: str, port: int) -> list[Any]:
    """Layers given the password in the other places a user can put it (query options, libpq key=value)."""
    if name == "redis":
        return [layers.from_url(f"redis://127.0.0.1:{port}/0?password={password}&timeout=2"),
                layers.from_url(f"redis+sentinel://:{password}@127.0.0.1:{port}/mymaster"
                                f"?sentinel_password={password}&timeout=2"),
                layers.from_config({"BACKEND": "layers_redis.RedisChannelLayer", "CONFIG": {
                    "hosts": [{"address": ("127.0.0.1", port), "password": password}], "timeout": 2}})]
    if name == "postgres":
        from layers_postgres import PostgresChannelLayer

        return [layers.from_url(f"postgresql://postgres@127.0.0.1:{port}/test?password={password}&timeout=2"),
                PostgresChannelLayer(f"host=127.0.0.1 port={port} user=postgres password={password} dbname=test",
                                     timeout=2),
                PostgresChannelLayer(f"host=127.0.0.1 port={port} password = '{password} x' dbname=test",
                                     timeout=2)]
    return []


def test_password_in_query_or_conninfo_not_in_repr(server_target: Target) -> None:
    for layer in _other_forms(server_target.name, PASSWORD, 5):
        assert not _leaks(PASSWORD, [repr(layer), str(layer)]), repr(layer)


def test_password_not_leaked_when_nothing_listens(server_target: Target, caplog: pytest.LogCaptureFixture) -> None:
    url = server_target.url_with_password(PASSWORD, unreachable_port())
    assert url is not None
    layer = layers.from_url(url + ("&" if "?" in url else "?") + "timeout=2")
    started = time.monotonic()
    error, lines = _fail_to_connect(layer, caplog)
    assert isinstance(error, layers.BackendUnavailable)
    assert time.monotonic() - started < 15
    assert not _leaks(PASSWORD, list(_texts(error)) + lines + [repr(layer)])
    for other in _other_forms(server_target.name, PASSWORD, unreachable_port())[:2]:
        caplog.clear()
        error, lines = _fail_to_connect(other, caplog)
        assert isinstance(error, layers.BackendUnavailable)
        assert not _leaks(PASSWORD, list(_texts(error)) + lines + [repr(other)])


@pytest.fixture
def refusing_url(server_target: Target, request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """``url(password)`` for a server that checks passwords (only ``ROLE_PASSWORD``/``right`` is accepted)."""
    if server_target.name == "redis":
        if not redis_available():
            pytest.skip("redis-server is not installed")
        server = RedisServer(name="redis-auth")  # started by hand: its readiness probe has no password
        server.process.start(["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--save", "",
                              "--requirepass", "right-" + ROLE_PASSWORD])
        yield lambda password: f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0?timeout=2"
        server.stop()
    elif server_target.name == "postgres":
        pg: TLSPostgres = request.getfixturevalue("tls_postgres")
        yield lambda password: (f"postgresql://{ROLE}:{quote(password, safe='')}@127.0.0.1:{pg.port}/test"
                                "?sslmode=require&timeout=2")
        return
    else:
        base = AMQP_URL.split("@", 1)[1]
        yield lambda password: f"amqp://guest:{quote(password, safe='')}@{base}?timeout=2"


def _right_password(server_target: Target) -> str:
    return {"redis": "right-" + ROLE_PASSWORD, "postgres": ROLE_PASSWORD, "amqp": "guest"}[server_target.name]


def test_password_not_leaked_when_refused(server_target: Target, refusing_url: Callable[[str], str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    layer = layers.from_url(refusing_url(PASSWORD))
    error, lines = _fail_to_connect(layer, caplog)
    assert isinstance(error, (layers.BackendUnavailable, layers.ConfigError)), error
    assert not _leaks(PASSWORD, list(_texts(error)) + lines + [repr(layer)])
    # ... and the same server with the right password works, also without leaking it.
    right = _right_password(server_target)
    good = layers.from_url(refusing_url(right), prefix=server_target.prefix)

    async def round_trip() -> Any:
        try:
            await good.send("secret.ok", {"type": "ok"})
            return await good.receive("secret.ok")
        finally:
            await good.flush()
            await good.close()

    assert asyncio.run(asyncio.wait_for(round_trip(), 30)) == {"type": "ok"}
    if right != "guest":
        assert not _leaks(right, [repr(good)])


# -- bounded unpacking -----------------------------------------------------------------------------------------


def test_unpacking_is_bounded_by_max_message_size() -> None:
    """1 byte of msgpack can become ~70 bytes of Python objects: a payload larger than a sendable one is refused
    before it is unpacked, and a header claiming more elements than the bytes hold is refused too."""
    bomb = b"\xdd" + (10_000_000).to_bytes(4, "big") + b"\x80" * 10_000_000  # 10M empty dicts, ~700 MB unpacked
    started = time.monotonic()
    with pytest.raises(ValueError, match="max_message_size"):
        decode_message(MsgpackSerializer(), bomb, 1024 * 1024)
    assert time.monotonic() - started < 0.5
    with pytest.raises(ValueError):
        decode_message(MsgpackSerializer(), b"\x81\xa1a\xdd\xff\xff\xff\xff", 1024)
    encrypted = EncryptedSerializer(MsgpackSerializer(), ["k"])
    token = encrypted.dumps({"b": b"x" * 2000})
    with pytest.raises(ValueError, match="max_message_size"):
        decode_message(encrypted, token, 1000)
    assert decode_message(encrypted, token, len(token)) == {"b": b"x" * 2000}


def test_receiver_with_a_smaller_limit_drops_oversized_payloads(target: Target, run: Run,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    sender = target.layer()
    receiver = target.peer(sender, max_message_size=1000)
    run(sender.send("secret.big", {"b": b"x" * 5000}))
    run(sender.send("secret.big", {"b": b"small"}))
    with caplog.at_level(logging.WARNING, logger="layers"):
        assert run(receiver.receive("secret.big")) == {"b": b"small"}
    assert any("max_message_size" in record.getMessage() for record in caplog.records)


def test_envelope_header_cannot_claim_more_than_the_item() -> None:
    from layers.envelope import unpack_item

    item = pack_item(time.time(), ["a!b"] * 3, b"payload")
    for cut in range(len(item)):
        try:
            unpack_item(item[:cut])
        except ValueError:
            continue
    huge = b"L1" + item[2:10] + (2**32 - 1).to_bytes(4, "big") + msgpack.packb(None)
    with pytest.raises(ValueError):
        unpack_item(huge)


# -- no pickle -------------------------------------------------------------------------------------------------

PACKAGES = ["layers", "layers_redis", "layers_postgres", "layers_amqp", "spec"]
# Modules, not attributes: pika's frame objects have a harmless .marshal() (AMQP wire encoding).
UNSAFE = re.compile(r"(?<![.\w])(c?[Pp]ickle|cloudpickle|dill|marshal|shelve|jsonpickle)\b|\beval\(|\bexec\(")


def test_no_pickle_or_eval_in_the_packages() -> None:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 20
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in files for number, line in enumerate(path.read_text().splitlines(), 1)
            if UNSAFE.search(line)]
    assert hits == []


def test_unknown_serializer_formats_are_refused() -> None:
    for name in ("pickle", "marshal", "Pickle"):
        with pytest.raises(layers.ConfigError, match="unknown serializer_format"):
            layers.InMemoryChannelLayer(serializer_format=name)


# -- prefixes isolate tenants ------------------------------------------------------------------------------------


def _nested_prefixes(base: str) -> list[str]:
    """Prefixes that extend ``base`` in ways that could confuse key patterns (``base:q`` holds ``base:q:...``)."""
    return [base + "x", base + ":q", base + ":g", base + ":r", base + "_msg", base + ":"]


async def _nothing_within(layer: Any, channel: str, seconds: float) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), seconds)
    except asyncio.TimeoutError:
        return True
    return False


def test_prefixes_isolate_tenants(server_target: Target, run: Run) -> None:
    tenant_a = server_target.layer(capacity=3)
    others = [server_target.layer(prefix=prefix, capacity=3) for prefix in _nested_prefixes(tenant_a.prefix)]

    async def scenario() -> None:
        a_channel = await tenant_a.new_channel()
        await tenant_a.group_add("iso-group", a_channel)
        for _ in range(3):
            await tenant_a.send("iso.full", {"from": "a"})
        await tenant_a.send("iso.keep", {"from": "a"})
        for b in others:
            b_channel = await b.new_channel()
            await b.group_add("iso-group", b_channel)
            await b.send("iso.full", {"from": b.prefix})  # A's full channel is not B's: capacity is per tenant
            await b.send(a_channel, {"from": b.prefix})  # a channel name of A, sent in B's namespace
            await b.group_send("iso-group", {"from": b.prefix})
            assert await b.receive(b_channel) == {"from": b.prefix}  # the group copy for B's own member
            await b.flush()  # must not touch A
            assert await _nothing_within(b, b_channel, 0.3)
        await tenant_a.group_send("iso-group", {"from": "a-group"})
        assert await tenant_a.receive(a_channel) == {"from": "a-group"}  # B's sends never reached A's channel
        assert await _nothing_within(tenant_a, a_channel, 0.5)
        assert [await tenant_a.receive("iso.full") for _ in range(3)] == [{"from": "a"}] * 3
        assert await tenant_a.receive("iso.keep") == {"from": "a"}
        for b in others:
            assert await _nothing_within(b, "iso.keep", 0.2)
            await b.send("iso.keep", {"from": b.prefix})
            await b.group_add("iso-kept", "iso.kept-member")
        await tenant_a.send("iso.keep", {"from": "a"})
        await tenant_a.flush()  # must not touch the tenants whose prefixes extend A's
        assert await _nothing_within(tenant_a, "iso.keep", 0.3)
        for b in others:
            assert await b.receive("iso.keep") == {"from": b.prefix}
            await b.group_send("iso-kept", {"from": b.prefix})
            assert await b.receive("iso.kept-member") == {"from": b.prefix}
            await b.flush()

    run(scenario(), timeout=60)
