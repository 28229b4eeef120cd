"""The chat example's processes: two ASGI servers (daphne and uvicorn; daphne twice without uvicorn) and
``manage.py runworker chat-tasks`` on one layer URL with a prefix unique to the run, per server backend.

The ``site`` fixture (tests/e2e/conftest.py) starts them once per test module and backend.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, free_port, port_open, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chat"
TASK_CHANNEL = "chat-tasks"
WORKER_ARGV = [sys.executable, "manage.py", "runworker", TASK_CHANNEL]

# backend id -> (package, layer class, shared-service URL, default port)
BACKENDS = {
    "redis": ("layers_redis", "RedisChannelLayer", REDIS_URL, 6379),
    "postgresql": ("layers_postgres", "PostgresChannelLayer", POSTGRES_DSN, 5432),
    "amqp": ("layers_amqp", "AMQPChannelLayer", AMQP_URL, 5672),
}


# -- processes ----------------------------------------------------------------------------------------------


class Proc:
    """A subprocess in its own session, logging to a file; ``stop`` ends the whole process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(argv, cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            if not self.alive():
                return
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Site:
    """The two servers and the worker of one backend; every process ever started is in ``procs`` (for teardown)."""

    backend: str
    url: str
    env: dict[str, str]
    logdir: Path
    procs: list[Proc]
    a: Proc  # daphne
    b: Proc  # uvicorn (or a second daphne)
    worker: Proc
    port_a: int
    port_b: int

    def start_worker(self) -> Proc:
        self.worker = _spawn(self.procs, "worker", WORKER_ARGV, self.env, self.logdir)
        return self.worker

    def processes(self) -> list[Proc]:
        return [self.a, self.b, self.worker]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}, {'alive' if p.alive() else 'exited'}) ---\n{p.tail()}"
                         for p in self.processes())

    def check_alive(self) -> None:
        dead = [p.name for p in self.processes() if not p.alive()]
        assert not dead, f"{', '.join(dead)} exited on {self.backend}:\n{self.logs()}"


def _spawn(procs: list[Proc], name: str, argv: list[str], env: dict[str, str], logdir: Path) -> Proc:
    procs.append(proc := Proc(name, argv, env, logdir / f"{len(procs)}-{name}.log"))
    return proc


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if urlsplit(url).query else '?'}prefix={prefix}"


def _skip_unless_ready(backend: str) -> str:
    package, cls_name, url, default_port = BACKENDS[backend]
    try:
        getattr(importlib.import_module(package), cls_name)
    except ImportError as exc:  # the package or its driver is not installed; a missing class is a failure
        pytest.skip(f"{package} is not importable: {exc} (pip install 'channel-layers[all]')")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if not port_open(port, host):
        pytest.skip(f"{backend} server unreachable at {host}:{port} (set the LAYERS_TEST_* URL to point at one)")
    return url


def _start_site(backend: str, url: str, logdir: Path, procs: list[Proc]) -> Site:
    env = dict(os.environ)
    env.update(
        CHANNEL_LAYER_URL=url,
        # Another settings module (importable through $PYTHONPATH) can swap in a peer layer to compare with.
        DJANGO_SETTINGS_MODULE=os.environ.get("LAYERS_E2E_SETTINGS", "chat_site.settings"),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        # The example, then this checkout's packages (what the test process imports too, whatever is installed).
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
    )
    python, app = sys.executable, "chat_site.asgi:application"
    port_a = port_b = free_port()
    while port_b == port_a:
        port_b = free_port()
    a = _spawn(procs, "daphne", [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port_a), app], env, logdir)
    if importlib.util.find_spec("uvicorn"):
        b = _spawn(procs, "uvicorn", [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port_b),
                                      "--lifespan", "off", "--no-access-log", app], env, logdir)
    else:
        b = _spawn(procs, "daphne-b", [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port_b), app], env, logdir)
    worker = _spawn(procs, "worker", WORKER_ARGV, env, logdir)
    site = Site(backend, url, env, logdir, procs, a, b, worker, port_a, port_b)
    for proc, port in ((site.a, site.port_a), (site.b, site.port_b)):
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            pytest.fail(f"{proc.name} did not listen on {port} on {backend}:\n{site.logs()}")
    site.check_alive()
    return site


def _clean_up(backend: str, url: str, prefix: str) -> None:
    """Leave nothing under this run's prefix on the shared server (best effort: the test result stands)."""
    import layers

    async def flush() -> None:
        layer = layers.from_url(url)
        try:
            await layer.flush()
        finally:
            await layer.close()

    try:
        asyncio.run(asyncio.wait_for(flush(), 30))
        if backend == "postgresql":  # the prefix names tables and functions: drop them, not just their rows
            import psycopg

            from layers_postgres import drop_ddl

            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(drop_ddl(prefix))
    except Exception as exc:
        print(f"warning: cleaning up {backend} prefix {prefix!r} after the e2e run failed: {type(exc).__name__}: {exc}")


def run_site(request: pytest.FixtureRequest) -> Iterator[Site]:
    """The body of the ``site`` fixture: start the processes for ``request.param``, stop and clean them after."""
    backend = request.param
    prefix = f"e2e{secrets.token_hex(4)}"
    url = _with_prefix(_skip_unless_ready(backend), prefix)
    procs: list[Proc] = []
    logdir = Path(tempfile.mkdtemp(prefix=f"layers-e2e-{backend}-"))

    def stop_all() -> None:
        for proc in procs:
            proc.stop()

    request.addfinalizer(lambda: shutil.rmtree(logdir, ignore_errors=True))  # failures quote the log tails
    request.addfinalizer(stop_all)
    site = _start_site(backend, url, logdir, procs)
    yield site
    stop_all()
    _clean_up(backend, url, prefix)
