"""A private PostgreSQL server for tests: ``initdb`` in a temporary directory, ``postgres`` on a free port.

Tests run as root and PostgreSQL refuses to, so the data directory belongs to the ``postgres`` OS user and the
server runs as that user.  ``kill()`` is a crash (SIGKILL: UNLOGGED tables come back empty after recovery),
``stop()`` a fast shutdown; ``start()`` brings the same data directory back on the same port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from . import die_with_parent, free_port, port_open

__all__ = ["BIN", "PostgresServer", "postgres_available"]

BIN = Path(os.environ.get("LAYERS_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
_OS_USER = "postgres"


def postgres_available() -> str | None:
    """None when a private server can be created, else why not (for a skip reason)."""
    if not (BIN / "initdb").exists() or not (BIN / "postgres").exists():
        return f"no initdb/postgres in {BIN} (set LAYERS_TEST_POSTGRES_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            return f"running as root and there is no {_OS_USER!r} OS user to run PostgreSQL as"
    return None


class PostgresServer:
    """One PostgreSQL cluster of its own, on 127.0.0.1 and a free port, trust authentication, database ``test``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="layers-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = _OS_USER if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def init(self) -> PostgresServer:
        subprocess.run([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, user=self._user)
        return self

    def start(self, timeout: float = 30.0) -> PostgresServer:
        argv = [str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, user=self._user,
                                         start_new_session=True, preexec_fn=die_with_parent())
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited; log:\n{self.log.read_text()[-3000:]}")
            if port_open(self.port):
                try:
                    with psycopg.connect(self.dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'test'").fetchone():
                            conn.execute("CREATE DATABASE test")
                    return
                except psycopg.OperationalError:
                    pass  # still starting up or recovering
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start in {timeout}s; log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Crash: SIGKILL the whole process group (postmaster and backends)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._forget_pid_file()

    def stop(self, cleanup: bool = True) -> None:
        """Fast shutdown (SIGINT: sessions are disconnected), then remove the directory unless ``cleanup=False``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if cleanup:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _forget_pid_file(self) -> None:
        # After SIGKILL the backends may linger a moment; wait until the port is free before a restart.
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
