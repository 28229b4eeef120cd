"""Private server processes for tests: free ports, start, wait until ready, stop.

Backend-specific starters live beside this module (``tests/servers/redis.py`` and so on) and build on
:class:`ServerProcess`.  Shared services on the standard ports are reached through the URLs below, which the
environment can override; a test that needs one skips with a clear reason when it cannot be reached.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "AMQP_URL", "POSTGRES_DSN", "REDIS_URL", "ServerProcess", "free_port", "port_open", "wait_for_port", "with_user",
]

REDIS_URL = os.environ.get("LAYERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("LAYERS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("LAYERS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def with_user(url: str, userinfo: str) -> str:
    """``url`` with its user (and password) replaced by ``userinfo`` (``"user"`` or ``"user:password"``)."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{userinfo}@{netloc.rpartition('@')[2]}{slash}{path}"


try:  # loaded here, not in the child: after fork the child may already run as another user (PostgreSQL)
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not glibc Linux: servers are then only stopped by their fixtures
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` for a private server: the kernel sends it SIGTERM when the test process dies, even by
    SIGKILL (a killed or timed-out pytest would otherwise leave servers running that no fixture stops).

    Only from the main thread: the signal follows the *thread* that started the server, and a server restarted
    from an executor thread (the fault tests do) would be stopped when that thread ends."""
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.05)


class ServerProcess:
    """A server process on a free port with its own temporary directory, stopped (and cleaned) on ``stop``."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"layers-{name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    def start(self, argv: Sequence[str], ready_timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                         env=env, start_new_session=True, preexec_fn=die_with_parent())
        try:
            wait_for_port(self.port, ready_timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; log:\n{self.log.read_text()[-3000:]}") from None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), keeping the data directory so the server can be started again."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, cleanup: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if cleanup:
            shutil.rmtree(self.dir, ignore_errors=True)
