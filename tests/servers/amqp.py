"""A private RabbitMQ node on free ports, for fault tests that stop, restart or kill the broker.

The node has its own name, ports, data directory, cookie (a private ``HOME``) and no plugins, so stopping it never
touches the shared broker other tests use.  ``ctl(...)`` runs ``rabbitmqctl`` against it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

from . import ServerProcess, free_port, port_open

__all__ = ["RabbitNode", "rabbitmq_available"]

_BIN = "/usr/lib/rabbitmq/bin"


def rabbitmq_available() -> bool:
    return os.path.exists(f"{_BIN}/rabbitmq-server") or shutil.which("rabbitmq-server") is not None


def _bin(name: str) -> str:
    path = f"{_BIN}/{name}"
    return path if os.path.exists(path) else name


class RabbitNode(ServerProcess):
    """``RabbitNode().start()``; ``url``; ``ctl("stop_app")``; ``stop()``."""

    def __init__(self) -> None:
        super().__init__("rabbitmq")
        self.dist_port = free_port()
        self.nodename = f"layers{self.port}@localhost"
        (self.dir / "home").mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }

    def start(self, argv: object = None, ready_timeout: float = 60.0, env: object = None) -> RabbitNode:  # type: ignore[override]
        super().start([_bin("rabbitmq-server")], ready_timeout=ready_timeout, env=self.env())
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run([_bin("rabbitmqctl"), "-n", self.nodename, *args], env=self.env(),
                                capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60.0) -> None:
        self.ctl("start_app")
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError("the RabbitMQ node did not listen again after start_app")
            time.sleep(0.05)

    def stop(self, cleanup: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):  # else fall back to signals
                self.ctl("stop", timeout=30)
        super().stop(cleanup)
