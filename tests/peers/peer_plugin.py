"""pytest plugin loaded into the pytest process that runs one peer suite against one of our backends.

The peer's test files run unchanged. The only thing swapped is the layer class they instantiate: the names they
import (``channels_redis.core.RedisChannelLayer``, ``channels.layers.InMemoryChannelLayer`` ...) become
:func:`make_layer`, which builds *our* layer for the backend under test from the options the test passes.
``peer_catalog`` marks the tests that need the peer's internals (skip) or meet a deliberate difference of ours
(strict xfail). The outcome of every test is written as JSON for ``test_peer_suites.py``.

Environment: ``LAYERS_PEER_SUITE``, ``LAYERS_PEER_BACKEND``, ``LAYERS_PEER_PREFIX`` (unique per run: every layer's
prefix starts with it, and only what is under it is cleaned up), ``LAYERS_PEER_REPORT`` (the JSON path), and the
service URLs ``LAYERS_TEST_REDIS_URL`` / ``LAYERS_TEST_POSTGRES_DSN`` / ``LAYERS_TEST_AMQP_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from peer_catalog import entries_for

SUITE = os.environ["LAYERS_PEER_SUITE"]
BACKEND = os.environ["LAYERS_PEER_BACKEND"]
RUN_PREFIX = os.environ["LAYERS_PEER_PREFIX"]
REPORT = Path(os.environ["LAYERS_PEER_REPORT"])
REDIS_URL = os.environ.get("LAYERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("LAYERS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("LAYERS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

# Where a peer connects is decided by the backend under test, not by the peer's test: these options are dropped
# (so are Django DATABASES keys, which are upper case: channels_postgres takes the settings dict as options).
_TARGET_OPTIONS = frozenset({"hosts", "host", "ssl_context", "config"})

_prefixes_used: set[str] = set()
_redis_dbs_used: set[int] = set()


def _redis_url(db: int) -> str:
    parts = urlsplit(REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def make_layer(**options: Any) -> Any:
    """Our layer for ``BACKEND``, configured with the semantic options the peer's test passed."""
    hosts = options.get("hosts")
    for key in list(options):
        if key in _TARGET_OPTIONS or key.isupper():
            del options[key]
    if options.get("group_expiry") == 0:  # channels_postgres spells "no expiry" as 0; ours is a day by default
        del options["group_expiry"]
    options["prefix"] = RUN_PREFIX + str(options.get("prefix", ""))
    _prefixes_used.add(options["prefix"])
    if BACKEND == "memory":
        from layers import InMemoryChannelLayer

        return InMemoryChannelLayer(**options)
    if BACKEND == "redis":
        from layers_redis import RedisChannelLayer

        # As many shards as the test asks hosts for (channels_redis tests use databases 0-9 of one server).
        shards = len(hosts) if isinstance(hosts, (list, tuple)) and hosts else 1
        base_db = int(urlsplit(REDIS_URL).path.strip("/") or 0)
        dbs = [base_db] if shards == 1 else list(range(shards))
        _redis_dbs_used.update(dbs)
        return RedisChannelLayer(hosts=[_redis_url(db) for db in dbs], **options)
    if BACKEND == "postgres":
        from layers_postgres import PostgresChannelLayer

        return PostgresChannelLayer(POSTGRES_DSN, **options)
    if BACKEND == "amqp":
        from layers_amqp import AMQPChannelLayer

        return AMQPChannelLayer(AMQP_URL, **options)
    raise ValueError(f"unknown backend {BACKEND!r}: one of memory, redis, postgres, amqp")


class PeerInternal:
    """Stands for a peer module's private helper that a test imports: using it means the test needs the skip list."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{self.name} is the peer's internal: this test belongs on the skip list")


def _shim(name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    if "." not in name:
        module.__path__ = []
    sys.modules[name] = module


def _install_factory() -> None:
    from channels.exceptions import ChannelFull

    if SUITE == "channels":
        import channels.layers

        channels.layers.InMemoryChannelLayer = make_layer  # also what BACKEND strings in settings resolve to
    elif SUITE == "channels_redis":
        _shim("channels_redis")
        _shim("channels_redis.core", ChannelFull=ChannelFull, RedisChannelLayer=make_layer)
        _shim("channels_redis.pubsub", RedisPubSubChannelLayer=make_layer)
        _shim("channels_redis.utils", _close_redis=PeerInternal("channels_redis.utils._close_redis"))
    elif SUITE == "channels_postgres":
        _shim("channels_postgres")
        _shim("channels_postgres.core", PostgresChannelLayer=make_layer)
    elif SUITE == "channels_rabbitmq":
        _shim("channels_rabbitmq")
        _shim("channels_rabbitmq.core", RabbitmqChannelLayer=make_layer,
              ReconnectDelay=PeerInternal("channels_rabbitmq.core.ReconnectDelay"))
    else:
        raise ValueError(f"unknown peer suite {SUITE!r}")


# Names a test module binds at import time and calls while it is being imported (in decorators), so they are
# swapped only while that module is imported: ``BaseChannelLayer()`` there becomes a layer of ours.
_IMPORT_TIME = {("channels", "test_layers.py"): ("channels.layers", "BaseChannelLayer")}


def _configure_django() -> None:
    from django.conf import settings

    if settings.configured:
        return
    dsn = urlsplit(POSTGRES_DSN)
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": dsn.path.strip("/") or "postgres",
                "USER": dsn.username or "postgres", "PASSWORD": dsn.password or "",
                "HOST": dsn.hostname or "127.0.0.1", "PORT": str(dsn.port or 5432)}
    settings.configure(SECRET_KEY="peer-suites", INSTALLED_APPS=[], USE_TZ=True,
                       DATABASES={"default": database, "channels_postgres": dict(database)},
                       CHANNEL_LAYERS={"default": {"BACKEND": "layers.InMemoryChannelLayer"}})
    import django
    from django.db import connections

    django.setup()
    connections.settings  # noqa: B018 -- fills Django's defaults into the dicts, which the peer reads raw


def pytest_configure(config: pytest.Config) -> None:
    # Import our layers before any swap, so no class of ours is ever built against a swapped Channels name.
    import layers  # noqa: F401

    _configure_django()
    _install_factory()


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    target = _IMPORT_TIME.get((SUITE, collector.path.name)) if isinstance(collector, pytest.Module) else None
    if target is None:
        return (yield)
    module = sys.modules[target[0]] if target[0] in sys.modules else __import__(target[0], fromlist=["_"])
    original = getattr(module, target[1])
    setattr(module, target[1], make_layer)
    try:
        return (yield)
    finally:
        setattr(module, target[1], original)


def _entry_key(item: pytest.Item) -> str:
    return item.nodeid.split("[", 1)[0]


_matched: set[str] = set()
_kinds: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    entries = entries_for(SUITE, BACKEND)
    for item in items:
        entry = entries.get(_entry_key(item))
        if entry is None:
            continue
        _matched.add(entry.test)
        _kinds[item.nodeid] = entry.kind
        if entry.kind == "skip":
            item.add_marker(pytest.mark.skip(reason=entry.reason))
        else:
            item.add_marker(pytest.mark.xfail(strict=True, reason=entry.reason))


_results: dict[str, dict[str, Any]] = {}


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(longrepr)[-800:] if longrepr else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    result = _results.setdefault(report.nodeid, {"outcome": "passed", "message": "", "duration": 0.0})
    result["duration"] += report.duration
    wasxfail = getattr(report, "wasxfail", None)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if wasxfail is not None:
            result["outcome"] = "xfailed" if report.skipped else "xpassed"
            result["message"] = _message(report) if report.skipped else str(wasxfail)
        elif report.failed:
            result["outcome"] = "failed" if report.when == "call" else "error"
            result["message"] = _message(report)
        else:
            result["outcome"] = report.outcome
            result["message"] = _message(report) if report.skipped else ""
    elif report.when == "teardown" and report.failed:
        result["outcome"] = "error"
        result["message"] = "teardown: " + _message(report)
    result["kind"] = _kinds.get(report.nodeid, "")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a module that cannot even be imported: every test in it is lost
        _results[report.nodeid] = {"outcome": "error", "message": "collection: " + _message(report),
                                   "duration": 0.0, "kind": ""}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    unmatched = sorted(set(entries_for(SUITE, BACKEND)) - _matched)
    cleanup_error = ""
    try:
        _clean_up()
    except Exception as exc:  # reported, not raised: the outer test shows it
        cleanup_error = f"{type(exc).__name__}: {exc}"
    REPORT.write_text(json.dumps({"suite": SUITE, "backend": BACKEND, "exitstatus": int(exitstatus),
                                  "results": _results, "unmatched_entries": unmatched,
                                  "cleanup_error": cleanup_error}, indent=1))


def _clean_up() -> None:
    """Delete what this run created: everything under the run's prefix, nothing else."""
    if BACKEND == "redis" and _redis_dbs_used:
        import redis

        for db in sorted(_redis_dbs_used):
            client = redis.Redis.from_url(_redis_url(db))
            try:
                for key in client.scan_iter(match=f"{RUN_PREFIX}*", count=1000):
                    client.unlink(key)
            finally:
                client.close()
    elif BACKEND in ("postgres", "amqp") and _prefixes_used:
        import layers

        url = POSTGRES_DSN if BACKEND == "postgres" else AMQP_URL

        async def drop_all() -> None:  # drop(): the data, and the tables or registry queue flush keeps
            for prefix in sorted(_prefixes_used):
                layer = layers.from_url(url, prefix=prefix)
                with contextlib.suppress(Exception):
                    await layer.drop()
                await layer.close()

        asyncio.run(drop_all())
