"""A private PostgreSQL server for tests: ``initdb`` in a temporary directory, ``postgres`` on a free port.

Tests run as root and PostgreSQL refuses to, so the data directory belongs to the ``postgres`` OS user and the
server runs as that user.  ``kill()`` is a crash (SIGKILL: UNLOGGED tables come back empty after recovery),
``stop()`` a fast shutdown; ``start()`` brings the same data directory back on the same port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import die_with_parent, free_port, port_open

__all__ = ["BIN", "PostgresServer", "PostgresStandbyPair", "postgres_available"]

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

    def __init__(self, port: int | None = None, settings: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.settings = {"max_connections": "50", **(settings or {})}
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
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                *(arg for key, value in self.settings.items() for arg in ("-c", f"{key}={value}"))]
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


class PostgresStandbyPair:
    """A primary and a streaming standby of it (``pg_basebackup -R``), each on its own port.

    ``dsn`` names both hosts with ``target_session_attrs=read-write``, so libpq connects to whichever is the
    primary.  ``synchronous=True`` makes the primary wait for the standby before a commit returns
    (``synchronous_standby_names='*'``): a commit acknowledged to the client is then on the standby too.
    """

    def __init__(self, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        self.primary = PostgresServer()
        self.standby = PostgresServer()

    @property
    def dsn(self) -> str:
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/test"
                "?target_session_attrs=read-write")

    def start(self) -> PostgresStandbyPair:
        self.primary.init().start()
        subprocess.run([str(BIN / "pg_basebackup"), "-D", str(self.standby.data), "-h", "127.0.0.1",
                        "-p", str(self.primary.port), "-U", "postgres", "-X", "stream", "-R", "--no-sync",
                        "--checkpoint=fast"],
                       check=True, capture_output=True, user=self.standby._user, timeout=120)
        self.standby.start()
        self._wait(self._streaming, "the standby to stream from the primary")
        if self.synchronous:  # only now: until a standby streams, every commit would wait for one
            import psycopg

            with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                conn.execute("SELECT pg_reload_conf()")
            self._wait(self._synchronous, "the standby to become synchronous")
        return self

    def _synchronous(self) -> bool:
        import psycopg

        with psycopg.connect(self.primary.dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").fetchone()
        return bool(row and row[0] >= 1)

    def _streaming(self) -> bool:
        import psycopg

        with psycopg.connect(self.primary.dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
        return bool(row and row[0] >= 1)

    def promote(self) -> None:
        """Make the standby the primary (``pg_promote``) and return once it accepts writes."""
        import psycopg

        with psycopg.connect(self.standby.dsn, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT pg_promote(wait => true, wait_seconds => 30)")
        self._wait(self._standby_writable, "the promoted standby to accept writes")

    def _standby_writable(self) -> bool:
        import psycopg

        with psycopg.connect(self.standby.dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return row is not None and row[0] is False

    @staticmethod
    def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(psycopg.OperationalError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()
