"""The reviewed list of the peers' tests that do not apply to us, each with its one-line reason.

Every other test of the suites in ``peer_sources.SOURCES`` runs unchanged against each of our backends; only the
layer class the test instantiates is swapped for our factory (``peer_plugin.make_layer``). An entry here is one of:

``SKIP``       the test needs the peer's internals (private attributes, key layout, connection objects, log text)
               or options and APIs only that peer has, or it asserts a limitation of the peer that we lift.
``DIFFERENT``  a deliberate semantic difference of ours, documented in DESIGN.md or README: the test runs as
               ``xfail(strict=True)``, so if we ever start to behave like the peer, the run says so.

Entries name a test without its parameters (``file::function`` or ``file::Class::method``) and apply to every
backend unless ``backends`` says otherwise. An entry that matches no collected test fails the run (stale list).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKENDS", "ENTRIES", "SUITES", "Entry", "Suite", "entries_for"]

BACKENDS = ("memory", "redis", "postgres", "amqp")


@dataclass(frozen=True)
class Suite:
    """One peer suite: which test files run, and which services the suite itself touches."""

    name: str
    files: tuple[str, ...]
    needs: tuple[str, ...] = ()  # services the peer's own fixtures use, whatever the backend under test


SUITES: dict[str, Suite] = {
    "channels": Suite("channels", ("tests/test_inmemorychannel.py", "tests/test_layers.py")),
    "channels_redis": Suite("channels_redis", ("tests/test_core.py", "tests/test_pubsub.py")),
    # Its autouse fixture sends a NOTIFY on its own channel through Django's PostgreSQL wrapper after each test.
    "channels_postgres": Suite("channels_postgres", ("tests/test_core.py",), needs=("postgres",)),
    "channels_rabbitmq": Suite("channels_rabbitmq", ("tests/test_core.py",)),
}


@dataclass(frozen=True)
class Entry:
    suite: str
    test: str
    kind: str  # "skip" or "different"
    reason: str
    backends: tuple[str, ...] = BACKENDS


def _skip(suite: str, test: str, reason: str, backends: tuple[str, ...] = BACKENDS) -> Entry:
    return Entry(suite, test, "skip", reason, backends)


def _different(suite: str, test: str, reason: str, backends: tuple[str, ...] = BACKENDS) -> Entry:
    return Entry(suite, test, "different", reason, backends)


_MEM = "tests/test_inmemorychannel.py::"
_LAY = "tests/test_layers.py::"
_RCORE = "tests/test_core.py::"
_PUB = "tests/test_pubsub.py::"
_PG = "tests/test_core.py::"
_RMQ = "tests/test_core.py::"

_QUEUE_NAME = ("pins the process queue through channels_rabbitmq's private _queue_name and receives on its "
               "'x!…' names, which no layer of ours owns")

ENTRIES: tuple[Entry, ...] = (
    # channels 4.3.2 -------------------------------------------------------------------------------------------
    _skip("channels", _MEM + "test_send_receive", "inspects InMemoryChannelLayer.channels, its private dict of queues"),
    _skip("channels", _MEM + "test_race_empty", "deletes an entry of InMemoryChannelLayer.channels (private)"),
    _skip("channels", _MEM + "test_expiry_single", "counts InMemoryChannelLayer.channels (private)"),
    _skip("channels", _MEM + "test_expiry_unread", "counts InMemoryChannelLayer.channels (private)"),
    _skip("channels", _MEM + "test_expiry_multi", "counts InMemoryChannelLayer.channels (private)"),
    _skip("channels", _LAY + "TestChannelLayerManager::test_config_error",
          "exercises Channels' ChannelLayerManager only: no layer is constructed"),
    _skip("channels", _LAY + "TestChannelLayerManager::test_backend_import_error_not_hidden",
          "exercises Channels' ChannelLayerManager with a broken backend class of its own: no layer of ours"),
    # channels_redis 4.3.0: tests/test_core.py -------------------------------------------------------------------
    _skip("channels_redis", _RCORE + "test_default_group_key_format", "calls the private _group_key (key layout)"),
    _skip("channels_redis", _RCORE + "test_custom_group_key_format", "calls the private _group_key (key layout)"),
    _skip("channels_redis", _RCORE + "test_receive_buffer_respects_capacity",
          "fills channels_redis's private receive_buffer queues"),
    # channels_redis 4.3.0: tests/test_pubsub.py -----------------------------------------------------------------
    _skip("channels_redis", _PUB + "test_loop_instance_channel_layer_reference",
          "calls RedisPubSubChannelLayer's private _get_layer()"),
    _skip("channels_redis", _PUB + "test_serialize",
          "calls RedisPubSubChannelLayer.serialize and compares its wire bytes"),
    _skip("channels_redis", _PUB + "test_deserialize", "calls RedisPubSubChannelLayer.deserialize on its wire bytes"),
    _skip("channels_redis", _PUB + "test_multi_event_loop_garbage_collection",
          "counts RedisPubSubChannelLayer's private per-loop _layers"),
    _different("channels_redis", _PUB + "test_receive_on_non_owned_general_channel",
               "sends the str 'message.1' as a message: ours refuse non-dict messages (DESIGN: Messages)"),
    _skip("channels_redis", _PUB + "test_auto_reconnect",
          "closes the private _shards[0]._redis connection (our fault suite restarts real servers instead)"),
    # channels_postgres 1.1.4 ------------------------------------------------------------------------------------
    _skip("channels_postgres", _PG + "test_groups_basic",
          "passes channels_postgres's own group_discard(..., expire=1) argument"),
    _skip("channels_postgres", _PG + "test_guarantee_at_most_once_delivery",
          "waits on channels_postgres's private listener_task_is_running event"),
    _skip("channels_postgres", _PG + "test_default_group_key_format", "calls the private _group_key (key layout)"),
    _skip("channels_postgres", _PG + "test_custom_group_key_format", "calls the private _group_key (key layout)"),
    _skip("channels_postgres", _PG + "test_small_message", "spies on channels_postgres's django_db helper object"),
    _skip("channels_postgres", _PG + "test_big_message", "spies on channels_postgres's django_db helper object"),
    # channels_rabbitmq 4.0.1 ------------------------------------------------------------------------------------
    _different("channels_rabbitmq", _RMQ + "test_multiple_event_loops",
               "expects send() from a second event loop to raise RuntimeError: ours work from any loop (DESIGN 4)"),
    _skip("channels_rabbitmq", _RMQ + "test_reject_send_normal_channel",
          "asserts channels_rabbitmq's lack of normal channels, which we support"),
    _skip("channels_rabbitmq", _RMQ + "test_reject_receive_normal_channel",
          "asserts channels_rabbitmq's lack of normal channels, which we support"),
    _skip("channels_rabbitmq", _RMQ + "test_async_to_sync_without_event_loop",
          "asserts channels_rabbitmq refuses construction outside an event loop; ours are built from settings"),
    _skip("channels_rabbitmq", _RMQ + "test_warn_when_group_expiry_set",
          "asserts channels_rabbitmq's deprecation of group_expiry, which we honour"),
    _skip("channels_rabbitmq", _RMQ + "test_send_capacity",
          _QUEUE_NAME + "; local_capacity/remote_capacity options; its log text"),
    _skip("channels_rabbitmq", _RMQ + "test_send_expire_remotely", _QUEUE_NAME + "; local_capacity/local_expiry"),
    _skip("channels_rabbitmq", _RMQ + "test_send_expire_locally", _QUEUE_NAME + "; local_expiry; its log text"),
    _skip("channels_rabbitmq", _RMQ + "test_process_remote_send_receive", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_multi_send_receive", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_groups_local", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_groups_discard", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_group_discard_when_not_connected", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_groups_remote", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_groups_exchange", _QUEUE_NAME + "; groups_exchange option"),
    _skip("channels_rabbitmq", _RMQ + "test_groups_channel_full",
          _QUEUE_NAME + "; local_capacity/remote_capacity options"),
    _skip("channels_rabbitmq", _RMQ + "test_groups_no_such_group", _QUEUE_NAME),
    _skip("channels_rabbitmq", _RMQ + "test_groups_ack_group_that_only_exists_remotely",
          _QUEUE_NAME + "; calls the private _multi_queue"),
    _skip("channels_rabbitmq", _RMQ + "test_receive_after_close_by_disconnect",
          _QUEUE_NAME + "; awaits the private carehare_connection"),
    _skip("channels_rabbitmq", _RMQ + "test_receive_after_close_before_connect",
          _QUEUE_NAME + "; expects StopConsumer after close(), where ours reopen lazily (DESIGN: close)"),
    _skip("channels_rabbitmq", _RMQ + "test_disconnect_at_same_time_as_everything",
          _QUEUE_NAME + "; touches the private carehare_connection"),
    _skip("channels_rabbitmq", _RMQ + "test_log_connection_refused",
          _QUEUE_NAME + "; awaits the private carehare_connection; its log text"),
    _skip("channels_rabbitmq", _RMQ + "test_no_ssl", _QUEUE_NAME + "; awaits the private carehare_connection"),
    _skip("channels_rabbitmq", _RMQ + "test_reconnect_on_queue_name_conflict",
          _QUEUE_NAME + "; awaits the private carehare_connection and ReconnectDelay"),
    _skip("channels_rabbitmq", _RMQ + "test_concurrent_send", _QUEUE_NAME),
)


def entries_for(suite: str, backend: str) -> dict[str, Entry]:
    return {entry.test: entry for entry in ENTRIES if entry.suite == suite and backend in entry.backends}
