"""The one place that knows the backends: private servers, layer factories, faults, footprints and the figures.

Every reliability test takes the ``target`` fixture (parametrized over ``memory`` and the three server backends)
or ``server_target`` (server backends only) and never names a backend itself.  Each server backend runs on a
PRIVATE server started once per session (RabbitMQ nodes take seconds to boot), so tests may kill, freeze or
restart it without disturbing the shared services other tests use; servers are started lazily, so
``-k redis`` never boots RabbitMQ.

Knobs (environment): ``LAYERS_FAULT_TIMEOUT`` (the layers' ``timeout`` option in fault tests, default 2 s),
``LAYERS_FAULT_GRACE`` (how much longer than ``timeout`` a call may take before it counts as hung, default 3 s),
``LAYERS_STORM_SEED`` (random seed of the cancellation storm), ``LAYERS_RELIABILITY_REPORT`` (write the recorded
figures there as JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from layers import BaseChannelLayer, InMemoryChannelLayer
from tests.servers import port_open

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("memory", "redis", "postgres", "amqp")
SERVER_BACKENDS = BACKENDS[1:]

FAULT_TIMEOUT = float(os.environ.get("LAYERS_FAULT_TIMEOUT", "2.0"))
FAULT_GRACE = float(os.environ.get("LAYERS_FAULT_GRACE", "3.0"))
RECOVERY_LIMIT = 10.0  # seconds: the bound on recovery after the server is back


FIGURES_KEY = pytest.StashKey[list[dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: kills, freezes or restarts private servers while the layer runs")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.stash[FIGURES_KEY] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Our ``slow`` tests (the full 100k leak check) run only when asked for: ``-m slow`` or LAYERS_RUN_SLOW=1."""
    if "slow" in (config.option.markexpr or "") or os.environ.get("LAYERS_RUN_SLOW") == "1":
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="full-size version: run with -m slow (or LAYERS_RUN_SLOW=1)")
    for item in items:
        if item.get_closest_marker("slow") is not None and here in Path(str(item.path)).parents:
            item.add_marker(skip)


# -- servers ---------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One way to break a server: ``begin()`` breaks it, ``end()`` brings it back and returns once it serves."""

    name: str
    begin: Callable[[], None]
    end: Callable[[], None]
    #: True when messages stored before the fault must all survive it (nothing lives only in server memory).
    keeps_stored: bool
    #: True when no message whose send returned may be lost at all, not even one a reader was fetching when the
    #: fault hit (delivery is at-most-once: a pop the server ran after the client gave up on it is lost).
    strict: bool = False
    #: Layer options the scenario needs (e.g. PostgreSQL ``durable=True`` to survive a crash).
    options: dict[str, Any] = field(default_factory=dict)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (PostgreSQL backends call setsid, so a process group misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _signal_tree(pid: int, sig: signal.Signals) -> None:
    for each in _descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, sig)


class _Private:
    """A private server behind one interface: ``url``, ``faults``, ``stop()``."""

    url: str
    faults: dict[str, Fault]
    server: Any  # the tests.servers object; its ``proc`` is the server's process unless ``pid`` says otherwise

    def pid(self) -> int:
        assert self.server.proc is not None
        return int(self.server.proc.pid)

    def freeze_fault(self) -> Fault:
        """SIGSTOP the whole server: connections stay open and nothing answers (the test of every timeout)."""
        return Fault("freeze", lambda: _signal_tree(self.pid(), signal.SIGSTOP),
                     lambda: _signal_tree(self.pid(), signal.SIGCONT), keeps_stored=True)

    def footprint(self, prefix: str) -> dict[str, int] | None:
        """What the server holds under ``prefix``, seen from its admin side (None: ask the backend)."""
        return None

    def stop(self) -> None:
        _signal_tree(self.pid(), signal.SIGCONT)  # a frozen server cannot shut down
        self.server.stop()


class _PrivateRedis(_Private):
    def __init__(self) -> None:
        from tests.servers.redis import RedisServer

        self.server = RedisServer(name="redis-reliability").start()
        self.url = self.server.url
        self.faults = {
            # No persistence (as the shared test servers): a killed Redis comes back empty.
            "kill": Fault("kill", self.server.kill, self.server.start, keeps_stored=False),
            "freeze": self.freeze_fault(),
        }

    def pid(self) -> int:
        assert self.server.process.proc is not None
        return self.server.process.proc.pid


class _PrivatePostgres(_Private):
    def __init__(self) -> None:
        from tests.servers.postgres import PostgresServer

        self.server = PostgresServer().init().start()
        self.url = self.server.dsn
        self.faults = {
            # A crash (SIGKILL) keeps only logged tables: durable=True must lose nothing whose send returned.
            "kill": Fault("kill", self.server.kill, self.server.start, keeps_stored=True, strict=True,
                          options={"durable": True}),
            # A clean restart (fast shutdown) keeps even the default UNLOGGED tables.
            "restart": Fault("restart", lambda: self.server.stop(cleanup=False), self.server.start,
                             keeps_stored=True, strict=True),
            "freeze": self.freeze_fault(),
        }

class _PrivateRabbit(_Private):
    def __init__(self) -> None:
        from tests.servers.amqp import RabbitNode

        self.server = RabbitNode().start()
        self.url = self.server.url
        self.faults = {
            # Queues are not durable: a killed broker comes back without them (at-most-once, documented).
            "kill": Fault("kill", self._kill, self.server.start, keeps_stored=False),
            "freeze": self.freeze_fault(),
        }

    def footprint(self, prefix: str) -> dict[str, int] | None:
        """AMQP cannot list queues; the node's ``rabbitmqctl list_queues`` can."""
        listing = self.server.ctl("-q", "list_queues", "name", "messages", "--no-table-headers")
        rows = [line.split("\t") for line in listing.splitlines() if line.startswith(prefix + ":")]
        registry = [int(row[1]) for row in rows if row[0] == f"{prefix}::registry"]
        rest = [int(row[1]) for row in rows if row[0] != f"{prefix}::registry"]
        return {"queues": len(rest), "messages": sum(rest), "registry_records": sum(registry)}

    def _kill(self) -> None:
        self.server.kill()
        deadline = time.monotonic() + 10
        while port_open(self.server.port) and time.monotonic() < deadline:
            time.sleep(0.05)  # the old node lets go of its port before the new one starts

def _private_server(kind: type[_Private], what: str) -> Iterator[_Private]:
    try:
        server = kind()
    except (OSError, RuntimeError, subprocess.CalledProcessError, ImportError) as exc:
        pytest.skip(f"cannot start a private {what}: {type(exc).__name__}: {str(exc)[:300]}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_private() -> Iterator[_Private]:
    from tests.servers.redis import redis_available

    if not redis_available():
        pytest.skip("redis-server is not installed")
    yield from _private_server(_PrivateRedis, "Redis")


@pytest.fixture(scope="session")
def postgres_private() -> Iterator[_Private]:
    from tests.servers.postgres import postgres_available

    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    yield from _private_server(_PrivatePostgres, "PostgreSQL")


@pytest.fixture(scope="session")
def amqp_private() -> Iterator[_Private]:
    from tests.servers.amqp import rabbitmq_available

    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    yield from _private_server(_PrivateRabbit, "RabbitMQ node")


# -- targets: a backend on its private server, with a prefix of its own ----------------------------------------


class Target:
    """One backend for one test: ``layer(**options)`` makes a NEW instance on the same server and prefix (two
    instances act like two processes), ``url(**options)`` the same for a subprocess (``layers.from_url``)."""

    def __init__(self, name: str, server: _Private | None) -> None:
        self.name = name
        self.server = server
        self.prefix = "rel" + uuid.uuid4().hex[:10]
        self.made: list[BaseChannelLayer] = []
        self._memory: InMemoryChannelLayer | None = None

    @property
    def shares_state(self) -> bool:
        return self.server is not None

    def fixed_footprint(self, named_channels: int, processes: int) -> dict[str, int]:
        """What the server keeps by design once everything is drained, for ``processes`` layers that received.

        Redis: a receiving process keeps one list of reader tokens per queue it waits on (leased, withdrawn on
        close).  AMQP removes no queue when it empties: each process's queue and group inbox, and each named
        channel's queue, stay until their ``x-expires`` (process queues: max(2 x expiry, 60 s) after last use;
        named channels: group_expiry + 60 s), and the registry keeps a record per declared name for ``flush``."""
        if self.name == "redis":
            return {"readers": processes}
        if self.name == "amqp":
            return {"queues": 2 * processes + named_channels, "messages": 0,
                    "registry_records": 10 * (2 * processes + 1 + named_channels)}
        return {}

    @property
    def faults(self) -> dict[str, Fault]:
        return self.server.faults if self.server is not None else {}

    def layer(self, **options: Any) -> BaseChannelLayer:
        """A new layer instance; for ``memory`` every call returns the same one (it shares nothing otherwise)."""
        options.setdefault("prefix", self.prefix)
        if self.server is None:
            if self._memory is None:
                self._memory = InMemoryChannelLayer(**options)
                self.made.append(self._memory)
            return self._memory
        layer = self._class()(self.server.url, **options)
        self.made.append(layer)
        return layer

    def url(self, **options: Any) -> str:
        assert self.server is not None, "only server backends reach other processes"
        query = "&".join(f"{key}={value}" for key, value in {"prefix": self.prefix, **options}.items())
        return f"{self.server.url}?{query}"

    def _class(self) -> Any:
        if self.name == "redis":
            from layers_redis import RedisChannelLayer

            return lambda url, **options: RedisChannelLayer(hosts=[url], **options)
        if self.name == "postgres":
            from layers_postgres import PostgresChannelLayer

            return PostgresChannelLayer
        from layers_amqp import AMQPChannelLayer

        return AMQPChannelLayer

    def cleanup(self) -> None:
        if not self.made:
            return

        async def main() -> None:
            if self.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.layer().flush(), 30)
            for layer in self.made:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(layer.close(), 10)

        asyncio.run(main())


async def housekeeping(layer: BaseChannelLayer) -> None:
    """Let a live process do the clean-up it does in the course of receiving, and run now what a backend
    otherwise does periodically, so a leak check does not wait for either: a receive of one second (AMQP
    applies the membership records waiting in the process's group inbox), then PostgreSQL's sweep (it deletes
    empty queue counters at most once per ``min(expiry, 60)`` seconds)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(await layer.new_channel()), 1.0)
    backend = layer._state().backend  # type: ignore[attr-defined]
    sweep = getattr(backend, "_sql_sweep", None)
    if sweep is not None:
        await backend._fetch_one(sweep, (time.time(), 0.0))


async def footprint(layer: BaseChannelLayer, server: _Private | None = None) -> dict[str, Any]:
    """In-process map sizes plus what the server holds for the layer's prefix: the backend's
    ``server_footprint()``, or the private server's admin view when the backend cannot tell."""
    sizes: dict[str, Any] = dict(layer.local_state_size())  # type: ignore[attr-defined]
    backend = layer._state().backend  # type: ignore[attr-defined]
    sizes["server"] = await backend.server_footprint()
    if sizes["server"] is None and server is not None:
        sizes["server"] = await asyncio.to_thread(server.footprint, layer.prefix)
    return sizes


def _make_target(request: pytest.FixtureRequest, name: str) -> Iterator[Target]:
    server = None if name == "memory" else request.getfixturevalue(f"{name}_private")
    target = Target(name, server)
    try:
        yield target
    finally:
        target.cleanup()


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _make_target(request, request.param)


@pytest.fixture(params=SERVER_BACKENDS)
def server_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _make_target(request, request.param)


#: The faults each private server offers (see the ``_Private*`` classes).
FAULTS = {"redis": ("kill", "freeze"), "postgres": ("kill", "restart", "freeze"), "amqp": ("kill", "freeze")}


@pytest.fixture(params=[f"{name}/{fault}" for name, faults in FAULTS.items() for fault in faults])
def fault_case(request: pytest.FixtureRequest) -> Iterator[tuple[Target, Fault]]:
    """A server backend and one fault of its private server."""
    name, fault = request.param.split("/")
    for target in _make_target(request, name):
        assert target.server is not None
        yield target, target.server.faults[fault]


# -- subprocesses ----------------------------------------------------------------------------------------------


class Workers:
    """``tests.reliability._worker`` processes, one per URL; ``results()`` waits for the JSON line each prints."""

    def __init__(self, mode: str, urls: list[str], args: list[str]) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-m", "tests.reliability._worker", mode, url, str(index),
                                        *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for index, url in enumerate(urls)]

    def results(self, timeout: float = 180.0) -> list[Any]:
        results = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- figures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(section, backend, **figures)``: kept for the summary at the end of the session."""
    rows = request.config.stash[FIGURES_KEY]

    def add(section: str, backend: str, **figures: Any) -> None:
        rows.append({"section": section, "backend": backend, **figures})

    return add


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(FIGURES_KEY, [])
    if not rows:
        return
    terminalreporter.section("reliability figures")
    for section in dict.fromkeys(row["section"] for row in rows):
        terminalreporter.write_line(f"[{section}]")
        for row in (r for r in rows if r["section"] == section):
            cells = "  ".join(f"{k}={_cell(v)}" for k, v in row.items() if k not in ("section", "backend"))
            terminalreporter.write_line(f"  {row['backend']:<9} {cells}")
    path = os.environ.get("LAYERS_RELIABILITY_REPORT")
    if path:
        Path(path).write_text(json.dumps(rows, indent=2))
