"""``python -m spec.ecosystem``: the conformance report of real channel layers from the package index, as one table.

Every layer runs in a child ``python -m spec ... --json`` of its own (so one layer's imports, event loops or crash
cannot touch the next), under a prefix, database, vhost or file of this run's own: nothing another program stored
is flushed.  Install the layers first (``pip install 'channel-layers[compat]'``; ``./dev compat`` does both).

Each failure in the table carries a one-line reason.  The reasons are written by a person who read that layer's
code (``REVIEWED`` below): a failure nobody has reviewed yet is shown as such, so a new failure after a release of
a layer (or of this suite) is visible instead of silently explained away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["LAYERS", "REVIEWED", "EcosystemLayer", "NotRunnable", "Row", "main", "render", "run_layer"]

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
NATS = "nats://127.0.0.1:4222"


@dataclass
class Setup:
    """What one layer needs from this run: a target, its options, knobs, and what to remove afterwards."""

    target: str
    config: dict[str, Any] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: The layer cannot be confined by a prefix, but this run gave it a server, database or vhost of its own.
    private: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class EcosystemLayer:
    """One row of the table: a layer class and how to point it at a server of this machine."""

    name: str
    distribution: str  # what to pip install ("channel-layers" for ours)
    service: str | None  # "host:port" that must answer, or None
    prepare: Callable[[str], Setup]  # run tag -> setup
    note: str = ""


# -- setups -------------------------------------------------------------------------------------------------------


def _ours(url: str) -> Callable[[str], Setup]:
    def prepare(tag: str) -> Setup:
        sep = "&" if "?" in url else "?"
        return Setup(f"{url}{sep}prefix=compat{tag}")

    return prepare


class NotRunnable(Exception):
    """This machine lacks what the layer needs (a server of its kind): the row says so instead of failing."""


#: Redis Pub/Sub designs (channels_redis's RedisPubSubChannelLayer and its fork in channels_valkey): what their code
#: shows they lack, with where it shows it (their README documents none of it).
_REDIS_PUBSUB_LACKS = {
    "capacity": "pubsub.py: no capacity option (RedisPubSubLoopLayer swallows extra options in **kwargs) and "
                "_receive_message files every message into an unbounded asyncio.Queue()",
    "named_backlog": "pubsub.py: send() is a bare PUBLISH and a named channel is SUBSCRIBEd only by its first "
                     "receive(), so what is sent before that reaches nobody",
    "multi_loop": "pubsub.py: _get_layer keeps one RedisPubSubLoopLayer per running event loop; channels made in "
                  "one loop exist only there",
    "foreign_members": "pubsub.py group_add: RuntimeError \"You can only call group_add() on channels that exist "
                       "in-process\"",
}

_NATS_LACKS = {
    "capacity": "layer.py docstring and README: \"ChannelFull cannot be raised on the sender's side over "
                "pub/sub\"; a full mailbox drops at the receiver",
    "multi_loop": "layer.py docstring: \"A process-specific channel belongs to the loop whose new_channel() "
                  "handed it out\"",
    "foreign_members": "README: receive or group_add of a channel another process or event loop made raises "
                       "ValueError (layer.py _mailbox)",
}


def _shared(target: str, config: dict[str, Any]) -> Setup:
    """A layer whose instances share a server.  The runner gives the second OS process the same target and options
    (including the fresh prefix it substitutes), so neither is passed here."""
    return Setup(target, config, {"shares_state": True})


def _channels_redis(tag: str) -> Setup:
    return _shared("channels_redis.core.RedisChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"})


def _channels_redis_pubsub(tag: str) -> Setup:
    return _shared("channels_redis.pubsub.RedisPubSubChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"})


def valkey_server_binary() -> str | None:
    """``LAYERS_VALKEY_SERVER`` or ``valkey-server`` on PATH: channels_valkey's Lua scripts call Valkey's
    ``server`` global, which Redis lacks, so its core layer needs a real Valkey."""
    return os.environ.get("LAYERS_VALKEY_SERVER") or shutil.which("valkey-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _private_valkey() -> tuple[str, Callable[[], None]]:
    """Start a Valkey server of this run's own on a free port; its URL and how to stop it."""
    binary = valkey_server_binary()
    if binary is None:
        raise NotRunnable("needs a Valkey server (its Lua scripts use Valkey's `server` global, which Redis "
                          "lacks): put valkey-server on PATH or set LAYERS_VALKEY_SERVER")
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="layers-compat-valkey-")
    try:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise NotRunnable(f"needs a Valkey server: {binary} does not start ({exc})") from exc

    def stop() -> None:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(directory, ignore_errors=True)

    deadline = time.monotonic() + 20
    while not _reachable(f"127.0.0.1:{port}"):
        if server.poll() is not None or time.monotonic() > deadline:
            stop()
            raise NotRunnable(f"{binary} did not start on port {port}")
        time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0", stop


def _channels_valkey(tag: str) -> Setup:
    url, stop = _private_valkey()
    setup = _shared("channels_valkey.core.ValkeyChannelLayer", {"hosts": [url], "prefix": f"compat{tag}"})
    setup.cleanup.append(stop)
    return setup


def _channels_valkey_pubsub(tag: str) -> Setup:
    """PUBLISH/SUBSCRIBE only: Redis serves it as well as Valkey."""
    return _shared("channels_valkey.pubsub.ValkeyPubSubChannelLayer", {"hosts": [REDIS], "prefix": f"compat{tag}"})


def _channels_nats(tag: str) -> Setup:
    return _shared("channels_nats.NatsChannelLayer", {"servers": NATS, "prefix": f"compat{tag}"})


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _channels_rabbitmq(tag: str) -> Setup:
    """A private vhost: channels_rabbitmq has no prefix option and no flush; the vhost goes when the run ends."""
    vhost = f"compat-{tag}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    setup = _shared("spec.ecosystem.channels_rabbitmq_layer", {"host": f"{AMQP}/{vhost}"})
    setup.private = True
    setup.cleanup.append(lambda: _rabbitmqctl("delete_vhost", vhost))
    return setup


def channels_rabbitmq_layer(**options: Any) -> Any:
    """channels_rabbitmq's RabbitmqChannelLayer, with the suite's ``capacity`` passed as ``remote_capacity``: its
    README names that option for what Channels calls capacity ("When remote_capacity messages are queued in RabbitMQ,
    send() ... will raise ChannelFull").  Every other option goes through unchanged."""
    from channels_rabbitmq.core import RabbitmqChannelLayer  # only installed for this table

    if "capacity" in options:
        options["remote_capacity"] = options.pop("capacity")
    return RabbitmqChannelLayer(**options)


def _django_settings(directory: Path, name: str, body: str) -> dict[str, str]:
    """Write a settings module into ``directory``; the environment that makes the child process use it."""
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path, "DJANGO_SETTINGS_MODULE": name}


def _migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], check=True, timeout=300,
                   env={**os.environ, **env}, capture_output=True)


def _psql(sql: str) -> None:
    subprocess.run(["psql", f"{POSTGRES}/postgres", "-qAtc", sql], check=True, capture_output=True, timeout=60)


def _channels_postgres(tag: str) -> Setup:
    """A private database, migrated for channels_postgres and dropped afterwards (its table names are fixed)."""
    database = f"compat_{tag}"
    _psql(f"CREATE DATABASE {database}")
    directory = Path(tempfile.mkdtemp(prefix="layers-compat-"))
    # Every key Django's DatabaseWrapper reads: channels_postgres builds one from its CONFIG without Django's defaults.
    db: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql", "NAME": database, "USER": "postgres", "PASSWORD": "",
        "HOST": "127.0.0.1", "PORT": "5432", "OPTIONS": {}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False,
    }
    env = _django_settings(directory, "compat_settings", f"""
        SECRET_KEY = "compat-only"
        USE_TZ = True
        INSTALLED_APPS = ["channels_postgres"]
        DATABASES = {{"default": {db!r}, "channels_postgres": {db!r}}}
        """)
    setup = _shared("channels_postgres.core.PostgresChannelLayer", dict(db))
    setup.env, setup.private = env, True
    setup.cleanup += [lambda: _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
                      lambda: shutil.rmtree(directory, ignore_errors=True)]
    _migrate(env)
    return setup


def _channels_lite(tag: str) -> Setup:
    """A SQLite file of this run's own, migrated; the whole directory goes afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="layers-compat-"))
    db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(directory / "channels.sqlite3")}
    env = _django_settings(directory, "compat_settings", f"""
        SECRET_KEY = "compat-only"
        USE_TZ = True
        INSTALLED_APPS = ["channels_lite"]
        DATABASES = {{"default": {db!r}}}
        """)
    setup = _shared("channels_lite.layers.core.SQLiteChannelLayer", {"database": "default"})
    setup.env, setup.private = env, True
    setup.cleanup.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    _migrate(env)
    return setup


def _channels_inmemory(tag: str) -> Setup:
    return Setup("channels.layers.InMemoryChannelLayer")


LAYERS: list[EcosystemLayer] = [
    EcosystemLayer("layers memory://", "channel-layers", None, _ours("memory://")),
    EcosystemLayer("layers Redis", "channel-layers", "127.0.0.1:6379", _ours(REDIS)),
    EcosystemLayer("layers PostgreSQL", "channel-layers", "127.0.0.1:5432", _ours(f"{POSTGRES}/test")),
    EcosystemLayer("layers AMQP", "channel-layers", "127.0.0.1:5672", _ours(f"{AMQP}/%2F")),
    EcosystemLayer("channels InMemoryChannelLayer", "channels", None, _channels_inmemory),
    EcosystemLayer("channels_redis RedisChannelLayer", "channels-redis", "127.0.0.1:6379", _channels_redis),
    EcosystemLayer("channels_redis RedisPubSubChannelLayer", "channels-redis", "127.0.0.1:6379",
                   _channels_redis_pubsub),
    EcosystemLayer("channels_valkey ValkeyChannelLayer", "channels-valkey", None, _channels_valkey,
                   "against a private valkey-server of this run (its Lua scripts need Valkey, not Redis)"),
    EcosystemLayer("channels_valkey ValkeyPubSubChannelLayer", "channels-valkey", "127.0.0.1:6379",
                   _channels_valkey_pubsub),
    EcosystemLayer("channels_nats NatsChannelLayer", "channels-nats", "127.0.0.1:4222", _channels_nats),
    EcosystemLayer("channels_postgres PostgresChannelLayer", "channels-postgres", "127.0.0.1:5432",
                   _channels_postgres),
    EcosystemLayer("channels_rabbitmq RabbitmqChannelLayer", "channels-rabbitmq", "127.0.0.1:5672",
                   _channels_rabbitmq, "through spec.ecosystem.channels_rabbitmq_layer, which passes the "
                   "suite's `capacity` as its documented `remote_capacity`"),
    EcosystemLayer("channels_lite SQLiteChannelLayer", "channels-lite", None, _channels_lite),
]

#: (layer name, requirement id) -> why that layer fails it, from reading the layer's code.  A failure without an
#: entry is shown as not reviewed: a new release of a layer (or of this suite) must not be explained away silently.
REVIEWED: dict[tuple[str, str], str] = {}

#: What every layer that validates through channels.layers.BaseChannelLayer (or copies its checks) fails.
_BASE_LAYER_STRICT = {
    "R-NAMES-4": "BaseChannelLayer.require_valid_channel_name raises its fixed invalid_name_error sentence, which "
                 "never names the refused value",
    "R-NAMES-5": "BaseChannelLayer.channel_name_regex ends in `$`, which also matches before a trailing newline",
    "R-MSG-1": "send() checks the message with `assert isinstance(message, dict)`: an AssertionError, not a TypeError",
    "R-MSG-5": "no message size limit and no MessageTooLarge attribute",
}

_INMEMORY = "channels InMemoryChannelLayer"
REVIEWED.update({(_INMEMORY, rid): why for rid, why in _BASE_LAYER_STRICT.items()})
REVIEWED.update({
    (_INMEMORY, "R-API-1"): "no ChannelFull attribute: channels/layers.py imports ChannelFull and raises it, but "
                            "neither BaseChannelLayer nor InMemoryChannelLayer sets it on the class",
    (_INMEMORY, "R-CAP-2"): "InMemoryChannelLayer keeps channel_capacity as the raw dict (it never calls "
                            "compile_capacities), so get_capacity's `for pattern, capacity in ...` unpacks a key "
                            "string: ValueError on every send",
    (_INMEMORY, "R-CAP-3"): "send() makes one asyncio.Queue per full channel name (self.channels.setdefault), so "
                            "every local channel has a capacity of its own instead of sharing the process's",
    (_INMEMORY, "R-EXP-2"): "send() never calls _clean_expired (only receive and group_send do): expired messages "
                            "keep filling the queue's maxsize",
    (_INMEMORY, "R-CLOSE-3"): "close() does nothing (`# Nothing to go`): a pending receive keeps waiting",
    (_INMEMORY, "R-MSG-3"): "messages are stored with deepcopy and never serialized, so tuples stay tuples",
    (_INMEMORY, "R-MSG-4"): "nothing is serialized: any object is accepted (deepcopy) and delivered",
    (_INMEMORY, "R-PROC-5"): "instances share nothing and a new_channel() name records no owner: receive() on "
                             "another instance's channel makes an empty queue and waits on it",
})

_REDIS = "channels_redis RedisChannelLayer"
_VALKEY = "channels_valkey ValkeyChannelLayer"
_CANCELLED_BZPOPMIN = (
    "a receive() cancelled while BZPOPMIN is in flight (core.py _brpop_with_clean) raises the client's "
    "TimeoutError('Timeout reading from ...') instead of CancelledError: the read timeout of redis-py's asyncio "
    "Connection.read_response turns the cancellation into a timeout (their #134/#151/#163: cancelled receives)"
)
REVIEWED.update({(_REDIS, rid): why for rid, why in _BASE_LAYER_STRICT.items()})
REVIEWED.update({
    (_REDIS, "R-API-1"): "no ChannelFull attribute: core.py imports channels.exceptions.ChannelFull and raises it, "
                         "but never sets it on the class (BaseChannelLayer has none)",
    (_REDIS, "R-MSG-4"): "msgpack's own error ('can not serialize 'object' object') comes out of serialize(); "
                         "nothing names the key",
    (_REDIS, "R-MSG-6"): "receive() files the ONE dict receive_single deserialized into every local member's buffer "
                         "(`for chan in message_channel: self.receive_buffer[chan].put_nowait(message)`): members "
                         "in one process share it, so one consumer's change shows in the others'",
    (_REDIS, "R-GROUP-5"): "group_send stores one message per process carrying a list of members, and receive() "
                           "puts that one deserialized dict into every member's buffer: the copies are one object",
    (_REDIS, "R-PROC-5"): "receive() refuses with `assert real_channel.endswith(self.client_prefix + \"!\"), "
                          "\"Wrong client prefix\"`: an AssertionError that does not name the channel",
    (_REDIS, "R-CANCEL-1"): _CANCELLED_BZPOPMIN,
    (_REDIS, "R-CANCEL-2"): _CANCELLED_BZPOPMIN,
    (_REDIS, "R-CANCEL-3"): "messages are lost to cancellation: _brpop_with_clean awaits ZADD to the $inflight "
                            "backup only after BZPOPMIN has removed the message, and receive()'s CancelledError "
                            "handler does `del self.receive_buffer[channel]`, dropping what was buffered for it "
                            "(their #134/#151/#163)",
    (_REDIS, "R-MULTI-4"): "send() checks ZCOUNT and ZADDs in separate round trips ('This can allow the list to leak "
                           "slightly over capacity, but that's fine'), so concurrent senders all pass the check",
})
# channels_valkey's core.py is channels_redis's, renamed (the Lua calls `server.` instead of `redis.`).
REVIEWED.update({(_VALKEY, rid): why.replace("redis-py", "valkey-py") for (name, rid), why in REVIEWED.items()
                 if name == _REDIS})

_REDIS_PUBSUB = "channels_redis RedisPubSubChannelLayer"
_VALKEY_PUBSUB = "channels_valkey ValkeyPubSubChannelLayer"
_PUBSUB_CANCEL = ("a cancelled receive() UNSUBSCRIBEs the channel and drops its queue (pubsub.py receive: \"We "
                  "assume here that the reason we are cancelled is because the consumer is exiting\"): what was "
                  "queued for it, or arrives after, is lost")
_PUBSUB_NAMES = "no name is validated: send() PUBLISHes to, and group_add() records, whatever string it gets"
REVIEWED.update({
    (_REDIS_PUBSUB, "R-API-1"): "no ChannelFull attribute: RedisPubSubChannelLayer.__getattr__ forwards to "
                                "RedisPubSubLoopLayer, which has none",
    (_REDIS_PUBSUB, "R-NAMES-2"): _PUBSUB_NAMES,
    (_REDIS_PUBSUB, "R-NAMES-3"): _PUBSUB_NAMES,
    (_REDIS_PUBSUB, "R-NAMES-4"): _PUBSUB_NAMES,
    (_REDIS_PUBSUB, "R-NAMES-5"): _PUBSUB_NAMES,
    (_REDIS_PUBSUB, "R-MSG-1"): "send() hands the message to msgpack unchecked: None is published",
    (_REDIS_PUBSUB, "R-MSG-4"): "msgpack's own error ('can not serialize 'object' object'); nothing names the key",
    (_REDIS_PUBSUB, "R-MSG-5"): "no message size limit and no MessageTooLarge attribute",
    (_REDIS_PUBSUB, "R-PROC-1"): "new_channel() returns f\"{self.prefix}{prefix}{uuid4().hex}\": no '!', so its "
                                 "channels are not process-local by the Channels naming rule",
    (_REDIS_PUBSUB, "R-PROC-5"): "no ownership: any instance's receive() SUBSCRIBEs the name (a channel is a plain "
                                 "Pub/Sub channel) and waits",
    (_REDIS_PUBSUB, "R-PROC-6"): "no ownership: another instance's receive() SUBSCRIBEs the owner's channel and "
                                 "gets its messages",
    (_REDIS_PUBSUB, "R-PROC-7"): "new_channel() puts the layer's prefix before the requested one "
                                 "(f\"{self.prefix}{prefix}...\")",
    (_REDIS_PUBSUB, "R-EXP-1"): "no expiry: messages wait in the unbounded local asyncio.Queue until received",
    (_REDIS_PUBSUB, "R-GEXP-1"): "no group expiry: memberships are a local set that only group_discard and flush "
                                 "empty",
    (_REDIS_PUBSUB, "R-FLUSH-3"): "flush() resets only this instance's subscriptions and queues; the other "
                                  "instance's queued message stays",
    (_REDIS_PUBSUB, "R-CANCEL-1"): _PUBSUB_CANCEL,
    (_REDIS_PUBSUB, "R-CANCEL-2"): _PUBSUB_CANCEL,
    (_REDIS_PUBSUB, "R-CANCEL-3"): _PUBSUB_CANCEL,
    (_REDIS_PUBSUB, "R-MULTI-1"): "a named channel is a Pub/Sub channel: every instance receiving on it gets its "
                                  "own copy of every message",
    (_REDIS_PUBSUB, "R-COMPAT-1"): "RedisPubSubChannelLayer subclasses object, not channels.layers.BaseChannelLayer",
})
# channels_valkey's pubsub.py is channels_redis's, renamed.
REVIEWED.update({(_VALKEY_PUBSUB, rid): why.replace("RedisPubSub", "ValkeyPubSub")
                 for (name, rid), why in REVIEWED.items() if name == _REDIS_PUBSUB})

_NATS = "channels_nats NatsChannelLayer"
_NATS_CLOSED = ("close() retires this loop's client id, and a process channel made before belongs to it (close()'s "
                "docstring: \"no longer this loop's to receive\"): _mailbox raises ValueError")
REVIEWED.update({
    (_NATS, "R-NAMES-4"): _BASE_LAYER_STRICT["R-NAMES-4"],
    (_NATS, "R-NAMES-5"): "BaseChannelLayer's regex (`$`) lets the trailing newline through; nats-py then refuses "
                          "the subject with BadSubjectError, not a TypeError",
    (_NATS, "R-MSG-1"): _BASE_LAYER_STRICT["R-MSG-1"],
    (_NATS, "R-MSG-4"): "msgpack's own error ('can not serialize 'object' object'); nothing names the key",
    (_NATS, "R-DELIV-5"): "send() to a process channel goes out on the process subject and group_send on the group "
                          "subject, two subscriptions that nats-py dispatches independently, so their order mixes",
    (_NATS, "R-GEXP-1"): "documented: \"group_expiry is stored and never enforced\" (layer.py docstring, README)",
    (_NATS, "R-CLOSE-2"): _NATS_CLOSED,
    (_NATS, "R-CLOSE-3"): "the pending receive ends with ChannelLayerClosed as asked, but then " + _NATS_CLOSED,
})

_RABBITMQ = "channels_rabbitmq RabbitmqChannelLayer"
_NO_NAMED = ("refuses named channels: send/receive raise RuntimeError from _assert_channel_is_reply_channel "
             "(README, Deviations from the Channel Layer Specification: No \"normal channels\")")
_RECEIVE_ONLY = ("receive() never opens the connection (only send and the group calls touch carehare_connection), so "
                 "an instance that has only received has no queue yet: what others send to its channels is "
                 "unroutable and RabbitMQ drops it")
REVIEWED.update({(_RABBITMQ, rid): _NO_NAMED for rid in (
    "R-NAMES-1", "R-MSG-2", "R-MSG-7", "R-DELIV-1", "R-DELIV-2", "R-DELIV-3", "R-DELIV-4", "R-GROUP-1", "R-SYNC-2",
    "R-MULTI-1")})
REVIEWED.update({
    (_RABBITMQ, "R-API-1"): "no ChannelFull attribute: core.py raises channels.exceptions.ChannelFull but never "
                            "sets it on the class (BaseChannelLayer has none)",
    (_RABBITMQ, "R-NAMES-4"): "valid_channel_name (BaseChannelLayer) raises its fixed sentence, which never names "
                              "the refused value",
    (_RABBITMQ, "R-NAMES-5"): "BaseChannelLayer's regex (`$`) lets the trailing newline through; what refuses it is "
                              "the named-channel RuntimeError, not a TypeError",
    (_RABBITMQ, "R-MSG-1"): "util.serialize_message checks with `assert isinstance(data, dict)`: an AssertionError",
    (_RABBITMQ, "R-MSG-4"): "msgpack's own error ('can not serialize 'object' object'); nothing names the key",
    (_RABBITMQ, "R-MSG-5"): _BASE_LAYER_STRICT["R-MSG-5"],
    (_RABBITMQ, "R-MSG-6"): "MultiQueue.put_nowait files ONE _Message(data) for every local member of a group: the "
                            "members share one dict",
    (_RABBITMQ, "R-GROUP-5"): "MultiQueue.put_nowait files ONE _Message(data) for every local member of a group: "
                              "the copies are one object",
    (_RABBITMQ, "R-PROC-5"): "receive() refuses with a bare `assert channel.startswith(self._queue_name + \"!\")`: "
                             "an AssertionError without the channel's name",
    (_RABBITMQ, "R-PROC-6"): _RECEIVE_ONLY,
    (_RABBITMQ, "R-PROC-7"): "new_channel(prefix) ignores prefix: it returns f\"{self._queue_name}!{letters}\"",
    (_RABBITMQ, "R-EXP-1"): "expiry is RabbitMQ's x-message-ttl; a message the consumer already prefetched into the "
                            "local MultiQueue only expires with local_expiry, which defaults to None",
    (_RABBITMQ, "R-GEXP-1"): "documented: \"No group_expiry option\" (README, Deviations); memberships last until "
                             "group_discard or the connection ends",
    (_RABBITMQ, "R-CLOSE-2"): "documented: after close() \"All pending and future calls to receive() will raise "
                              "StopConsumer ... Undelivered messages will be lost\" (close() docstring)",
    (_RABBITMQ, "R-CLOSE-3"): "the pending receive ends with StopConsumer as asked, but every later call raises "
                              "StopConsumer too (close() docstring: \"future calls ... will raise StopConsumer\")",
    (_RABBITMQ, "R-MULTI-2"): _RECEIVE_ONLY,
    (_RABBITMQ, "R-MULTI-5"): _RECEIVE_ONLY,
    (_RABBITMQ, "R-COMPAT-1"): "RabbitmqChannelLayer subclasses BaseChannelLayer but its __init__ never calls "
                               "BaseChannelLayer.__init__, so the inherited get_capacity() reads a channel_capacity "
                               "that does not exist (AttributeError)",
})

_LITE = "channels_lite SQLiteChannelLayer"
REVIEWED.update({(_LITE, rid): why for rid, why in _BASE_LAYER_STRICT.items()})
REVIEWED.update({
    (_LITE, "R-API-1"): "no ChannelFull attribute: layers/__init__.py raises channels.exceptions.ChannelFull but "
                        "never sets it on the class (BaseChannelLayer has none)",
    (_LITE, "R-MSG-2"): "SQLiteChannelLayer defaults to serializer_format=\"json\" (layers/core.py), and JSON "
                        "cannot carry the bytes values Channels messages hold",
    (_LITE, "R-MSG-4"): "the JSON serializer's own error ('Object of type object is not JSON serializable'); "
                        "nothing names the key",
    (_LITE, "R-PROC-5"): "receive() refuses with `assert real_channel.endswith(self.client_prefix + \"!\"), "
                         "\"Wrong client prefix\"`: an AssertionError that does not name the channel",
    (_LITE, "R-CLOSE-3"): "close() cancels the process-channel polling tasks only; a receive() on a named channel "
                          "polls in its own `while True` loop that close() does not stop",
    (_LITE, "R-CANCEL-2"): "a named-channel receive marks the row delivered with aupdate(delivered=True) (a "
                           "sync_to_async thread that completes even when the caller is cancelled) and only then "
                           "returns: a cancellation there drops the message",
    (_LITE, "R-CANCEL-3"): "a named-channel receive marks the row delivered with aupdate(delivered=True) (a "
                           "sync_to_async thread that completes even when the caller is cancelled) and only then "
                           "returns: every wait_for timeout there drops a message",
    (_LITE, "R-SYNC-1"): "the receive buffers (BoundedQueue) and polling locks are asyncio objects made in the first "
                         "event loop and reused from the next one async_to_sync makes",
    (_LITE, "R-MULTI-4"): "_prepare_message_for_send counts pending rows and then inserts, two statements with no "
                          "lock between them, so concurrent senders all pass the check",
})

_POSTGRES = "channels_postgres PostgresChannelLayer"
REVIEWED.update({(_POSTGRES, rid): why for rid, why in _BASE_LAYER_STRICT.items()})
REVIEWED.update({
    (_POSTGRES, "R-API-1"): "no ChannelFull attribute (core.py never mentions ChannelFull; BaseChannelLayer has "
                            "none)",
    (_POSTGRES, "R-NAMES-2"): "group_add validates neither name: it goes straight to add_channel_to_group",
    (_POSTGRES, "R-NAMES-3"): "group_add validates neither name: it goes straight to add_channel_to_group",
    (_POSTGRES, "R-MSG-4"): "msgpack's own error ('can not serialize 'object' object'); nothing names the key",
    (_POSTGRES, "R-PROC-5"): "receive() refuses with `assert real_channel.endswith(self.client_prefix + '!'), "
                             "'Wrong client prefix'`: an AssertionError that does not name the channel",
    (_POSTGRES, "R-GEXP-1"): "retrieve_group_channels selects members without looking at their expire column; "
                             "expired rows go only when delete_expired_groups runs, 10-20 minutes after a "
                             "group_discard (db.py)",
    (_POSTGRES, "R-SYNC-1"): "the per-channel asyncio.Queue lives in the module-global ASYNCIO_EVENT_CHANNEL_MAPPING "
                             "and stays bound to the first event loop; async_to_sync's next loop cannot use it",
})
_PG_TWO_LISTENERS = (
    "every receive() that starts before the process's LISTEN task is up starts another one "
    "(_get_or_create_listener_task says 'new' until the first has set its event), and each files every NOTIFY into "
    "the same module-global queue: concurrent first receives get each message twice"
)
_PG_NOT_YET_LOCKED = (
    "the LISTEN task drops the NOTIFY of a channel whose receive() has not yet recorded its advisory lock "
    "(\"Discarding event for channel ... because we don't have the advisory lock\") and never reads that row again: "
    "a message sent right after a receive() starts, or to a channel made after the listener started, is lost"
)
_PG_LOCK_RACE = (
    "competing receives race pg_try_advisory_lock on different pooled connections and the last answer, False, is "
    "what _get_or_create_channel_advisory_lock records: the listener then discards every event of the channel"
)
REVIEWED.update({(_POSTGRES, rid): _PG_TWO_LISTENERS for rid in (
    "R-DELIV-4", "R-PROC-4", "R-PROC-6", "R-GROUP-1", "R-CANCEL-1", "R-CANCEL-2", "R-CANCEL-3")})
REVIEWED.update({(_POSTGRES, rid): _PG_NOT_YET_LOCKED for rid in ("R-NAMES-1", "R-MSG-6", "R-DELIV-2", "R-GEXP-2")})
REVIEWED.update({(_POSTGRES, rid): _PG_LOCK_RACE for rid in ("R-DELIV-1", "R-MULTI-1")})
REVIEWED[_POSTGRES, "R-EXP-1"] = (
    "flaky (it passed in some runs): the check's message is sent right after receive() starts, and is lost when its "
    "NOTIFY beats the advisory lock (as in R-NAMES-1) or when it commits between the listener's startup read "
    "(DELETE ... RETURNING) and its LISTEN on another connection"
)
REVIEWED[_POSTGRES, "R-MULTI-5"] = (
    "flaky, mechanism not traced: it passed alone and beside the other R-MULTI checks, but in the full run the second "
    "process's first message never arrived (the listener races of R-EXP-1 are the candidates)"
)

# channels_rabbitmq's capacity, run with the suite's capacity as remote_capacity (see channels_rabbitmq_layer).
_RABBITMQ_PREFETCH = (
    "two-level capacity (README: local_capacity, remote_capacity): the consumer prefetches up to local_capacity "
    "(default 100) messages into the process (prefetch_count=self.local_capacity), and only what waits in RabbitMQ "
    "beyond that counts toward remote_capacity"
)
REVIEWED.update({
    (_RABBITMQ, "R-CAP-1"): _RABBITMQ_PREFETCH + ", so send() raises ChannelFull only after local + remote",
    (_RABBITMQ, "R-CAP-4"): _RABBITMQ_PREFETCH + ", so a full channel is local + remote messages",
    (_RABBITMQ, "R-GROUP-7"): _RABBITMQ_PREFETCH + ": group_send drops only when RabbitMQ nacks, so a member whose "
                              "prefetch buffer holds its capacity still gets more",
    (_RABBITMQ, "R-CAP-3"): "RabbitmqChannelLayer takes no channel_capacity option (TypeError when the check makes its "
                            "pattern layer); its only capacities are per connection queue",
    (_RABBITMQ, "R-EXP-2"): "expiry is RabbitMQ's x-message-ttl; messages the consumer already prefetched into the "
                            "local MultiQueue only expire with local_expiry (default None), so the old one is "
                            "delivered first",
})


#: Layer name -> capabilities (spec.harness.DECLARABLE) it lacks on its author's word, and where the author says so;
#: passed as the knob ``lacks`` and printed with the citation under the table.
DECLARED: dict[str, dict[str, str]] = {
    _REDIS_PUBSUB: _REDIS_PUBSUB_LACKS,
    _VALKEY_PUBSUB: {name: text.replace("pubsub.py", "channels_valkey/pubsub.py (channels_redis's, forked)", 1)
                     for name, text in _REDIS_PUBSUB_LACKS.items()},
    _NATS: _NATS_LACKS,
    _RABBITMQ: {
        "multi_loop": "core.py: \"The caller tried using channels_rabbitmq on a different event loop than the one it "
                      "was initialized with\" (carehare_connection; the constructor's error text says the same of "
                      "async_to_sync)",
        "foreign_members": "group_add/group_discard docstrings: \"Spec deviation: ... you can't subscribe someone "
                           "else's channel to a group\"",
    },
    _POSTGRES: {
        "capacity": "README, channel_capacity: \"there's no channel capacity\" (core.py never raises ChannelFull)",
    },
}


# -- running ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    layer: EcosystemLayer
    version: str
    report: dict[str, Any] | None = None
    problem: str = ""  # why there is no report (not installed, server down, crash), short enough for a table cell
    problem_detail: str = ""  # the whole story, shown below the table
    seconds: float = 0.0
    declared: dict[str, str] = field(default_factory=dict)  # capability -> where its author says it is lacking


def _reachable(service: str) -> bool:
    host, _, port = service.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=2):
        return True
    return False


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _spec_command(setup: Setup, out: Path) -> list[str]:
    command = [sys.executable, "-m", "spec", setup.target, "--json", str(out)]
    if setup.config:
        command += ["--config", json.dumps(setup.config)]
    if setup.private:
        command.append("--yes-flush")
    for name, value in setup.knobs.items():
        command += ["--knob", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    return command


def run_layer(layer: EcosystemLayer, timeout: float) -> Row:
    installed = _version(layer.distribution)
    row = Row(layer, installed or "")
    if installed is None:
        row.problem = "not installed"
        row.problem_detail = f"not installed here (pip install {layer.distribution})"
        return row
    if layer.service and not _reachable(layer.service):
        row.problem = f"server {layer.service} not reachable"
        row.problem_detail = f"its server {layer.service} did not answer, so it was not run"
        return row
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    try:
        setup = layer.prepare(tag)
    except NotRunnable as exc:
        row.problem = f"not run: {str(exc).split(' (')[0].split(':')[0]}"
        row.problem_detail = f"not run: {exc}"
        return row
    except (OSError, subprocess.SubprocessError) as exc:  # a database, vhost or migration this run could not make
        row.problem = "setup failed"
        row.problem_detail = f"setting up its server state failed: {exc!r}"
        return row
    row.declared = dict(DECLARED.get(layer.name, {}))
    if row.declared:
        setup.knobs["lacks"] = list(row.declared)
    try:
        with tempfile.TemporaryDirectory(prefix="layers-compat-") as tmp:
            out = Path(tmp) / "report.json"
            env = {**os.environ, **setup.env}
            try:
                done = subprocess.run(_spec_command(setup, out), env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                row.problem = f"did not finish within {timeout:g} s"
                row.problem_detail = f"the suite did not finish within {timeout:g} s (--timeout)"
                return row
            if out.exists():
                row.report = json.loads(out.read_text())
            else:
                said = (done.stderr or done.stdout).strip()
                row.problem = f"runner exit {done.returncode}, no report"
                row.problem_detail = (f"`python -m spec` exited with {done.returncode} without a report; its last "
                                      f"output:\n\n```\n{_tail(said, 15)}\n```")
    finally:
        for step in setup.cleanup:
            with contextlib.suppress(Exception):
                step()
        row.seconds = time.monotonic() - started
    return row


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


# -- the table ----------------------------------------------------------------------------------------------------


def _requirements(report: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = report["requirements"]
    return found


_FAILING = ("FAIL", "untested")
#: The tiers python -m spec grades without --strict (its JSON says so in "graded_tiers"; older reports do not): a
#: strict requirement a layer misses is "not met", not failed.
_GRADED = ("core", "recommended")


def _graded(report: dict[str, Any]) -> tuple[str, ...]:
    return tuple(report.get("graded_tiers") or _GRADED)


def _tier_cell(report: dict[str, Any], tier: str) -> str:
    rows = [r for r in _requirements(report) if r["tier"] == tier]
    failed = sum(r["status"] in _FAILING for r in rows)
    passed = sum(r["status"] == "pass" for r in rows)
    not_applicable = sum(r["status"] == "n/a" for r in rows)
    not_run = len(rows) - passed - failed - not_applicable
    graded = tier in _graded(report)
    shown = {(True, True): f"**FAIL {failed}**", (True, False): "pass",
             (False, True): f"{failed} not met", (False, False): "all met"}
    verdict = shown[graded, bool(failed)]
    counts = [f"{passed}/{passed + failed} {'passed' if graded else 'met'}"]
    counts += [f"{not_applicable} n/a"] if not_applicable else []
    counts += [f"{not_run} not run"] if not_run else []
    return f"{verdict} ({', '.join(counts)})"


def render(rows: Sequence[Row], tiers: Sequence[str], command: str) -> str:
    lines = [
        "# Compatibility of channel layers with the channel-layer spec",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} (Python {sys.version.split()[0]}), every layer",
        "installed from the package index and run unmodified against the servers of one machine, each under a",
        "prefix, database, vhost or file of the run's own.",
        "Tiers: **core** = what the Channels spec requires; **recommended** = what Channels users rely on;",
        "**strict** = this project's own additions (see spec/SPEC.md), reported as met or not met: a layer built on",
        "Channels' own base class cannot meet some of them. Cells: verdict (passed/applicable, n/a = not applicable",
        "by a declared or discovered capability, or skipped).",
        "",
        "| layer | version | " + " | ".join(tiers) + " | run |",
        "|---|---|" + "---|" * len(tiers) + "---|",
    ]
    for row in rows:
        if row.report is None:
            lines.append(f"| {row.layer.name} | {row.version or '-'} | " + " | ".join(["-"] * len(tiers))
                         + f" | {row.problem} |")
        else:
            lines.append(f"| {row.layer.name} | {row.version} | "
                         + " | ".join(_tier_cell(row.report, tier) for tier in tiers) + f" | {row.seconds:.0f} s |")
    lines += [
        "",
        "## Failures, with the reason read from each layer's code",
        "",
        "Each reason was written by reading that layer's source (`REVIEWED` in spec/ecosystem.py); a failure",
        "marked *not reviewed* is new since then and has no explanation yet.",
        "",
    ]
    for row in rows:
        lines += _failures(row)
    return "\n".join(lines) + "\n"


def reason(row: Row, requirement: str) -> str | None:
    """The reviewed reason for ``row``'s layer failing ``requirement``, if somebody wrote one."""
    return REVIEWED.get((row.layer.name, requirement))


def _failures(row: Row) -> list[str]:
    heading = [f"### {row.layer.name} {row.version}".rstrip(), ""]
    notes = [f"Run: {row.layer.note}.", ""] if row.layer.note else []
    if row.report is None:
        return [*heading, *notes, f"No report: {row.problem_detail or row.problem}.", ""]
    failed = [r for r in _requirements(row.report) if r["status"] in _FAILING]
    if not failed and not row.report.get("crash") and not row.declared:
        return []
    lines = [*heading, *notes]
    if row.declared:
        lines += ["Declared lacking, as its documentation or code says:", ""]
        lines += [f"- {name}: {where}" for name, where in row.declared.items()]
        lines.append("")
    if row.report.get("crash"):
        lines += [f"The runner reported a crash: {_first_line(row.report['crash'])}", ""]
    for result in failed:
        shown = reason(row, result["id"])
        if shown is None:
            shown = f"*not reviewed*: {_first_line(result.get('detail') or result['status'])}"
        tier = result["tier"] if result["tier"] in _graded(row.report) else f"{result['tier']} (not met)"
        lines.append(f"- {tier} **{result['id']}** {result['title']}: {shown}")
    lines.append("")
    return lines


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spec.ecosystem", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here (default: stdout)")
    p.add_argument("--only", action="append", default=[], help="run only layers whose name contains this")
    p.add_argument("--timeout", type=float, default=900, help="seconds one layer's run may take")
    p.add_argument("--raw", type=Path, default=None, help="also write every row (report, version, time) as JSON here")
    p.add_argument("--from-raw", type=Path, default=None, metavar="RAW",
                   help="run nothing: render the rows a --raw file of an earlier run holds (after reviewing failures)")
    args = p.parse_args(argv)
    chosen = [layer for layer in LAYERS if not args.only or any(o in layer.name for o in args.only)]
    if args.from_raw:
        saved = json.loads(args.from_raw.read_text())
        rows = [_saved_row(layer, saved[layer.name]) for layer in chosen if layer.name in saved]
    else:
        rows = []
        for layer in chosen:
            print(f"[ecosystem] {layer.name} ...", file=sys.stderr, flush=True)
            row = run_layer(layer, args.timeout)
            print(f"[ecosystem]   {row.problem or 'report'} ({row.seconds:.0f}s)", file=sys.stderr, flush=True)
            rows.append(row)
    tiers = _tiers(rows)
    command = "python -m spec.ecosystem" + "".join(f" --only '{o}'" for o in args.only)
    text = render(rows, tiers, command)
    if args.raw:
        args.raw.write_text(json.dumps({row.layer.name: _row_record(row) for row in rows}, indent=1))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _row_record(row: Row) -> dict[str, Any]:
    return {"version": row.version, "seconds": row.seconds, "report": row.report, "problem": row.problem,
            "problem_detail": row.problem_detail}


def _saved_row(layer: EcosystemLayer, saved: Any) -> Row:
    """A row from a --raw file (also the first format: the report itself, or the problem as a string)."""
    if isinstance(saved, str):
        saved = {"problem": saved, "problem_detail": saved}
    elif "requirements" in saved:
        saved = {"report": saved, "seconds": saved.get("seconds", 0.0)}
    return Row(layer, saved.get("version") or _version(layer.distribution) or "", saved.get("report"),
               saved.get("problem", ""), saved.get("problem_detail", ""), float(saved.get("seconds") or 0.0),
               dict(DECLARED.get(layer.name, {})))


def _tiers(rows: Sequence[Row]) -> list[str]:
    order = ["core", "recommended", "strict"]
    seen = {r["tier"] for row in rows if row.report for r in _requirements(row.report)}
    return [t for t in order if t in seen] + sorted(seen - set(order))


if __name__ == "__main__":
    sys.exit(main())
