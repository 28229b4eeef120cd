"""A private RabbitMQ node on free ports, for fault tests that stop, restart or kill the broker.

The node has its own name, ports, data directory, cookie (a private ``HOME``) and no plugins, so stopping it never
touches the shared broker other tests use.  ``ctl(...)`` runs ``rabbitmqctl`` against it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time

from . import ServerProcess, free_port, port_open

__all__ = ["RabbitCluster", "RabbitNode", "rabbitmq_available"]

_BIN = "/usr/lib/rabbitmq/bin"


def rabbitmq_available() -> bool:
    return os.path.exists(f"{_BIN}/rabbitmq-server") or shutil.which("rabbitmq-server") is not None


def _bin(name: str) -> str:
    path = f"{_BIN}/{name}"
    return path if os.path.exists(path) else name


class RabbitNode(ServerProcess):
    """``RabbitNode().start()``; ``url``; ``ctl("stop_app")``; ``stop()``."""

    def __init__(self, cookie: str | None = None) -> None:
        super().__init__("rabbitmq")
        self.dist_port = free_port()
        self.nodename = f"layers{self.port}@localhost"
        (self.dir / "home").mkdir()
        if cookie is not None:  # nodes of one cluster share their Erlang cookie
            path = self.dir / "home" / ".erlang.cookie"
            path.write_text(cookie)
            path.chmod(0o400)
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


class RabbitCluster:
    """Three (``size``) private RabbitMQ nodes with a shared Erlang cookie, joined with ``rabbitmqctl
    join_cluster``: one cluster, each node with its own AMQP port, name and data directory."""

    def __init__(self, size: int = 3) -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes = [RabbitNode(cookie=cookie) for _ in range(size)]

    @property
    def url(self) -> str:
        """Every node, comma-separated: the layer connects to the first that answers."""
        return "amqp://guest:guest@" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes) + "/%2F"

    def start(self) -> RabbitCluster:
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:  # boots take seconds: in parallel
            list(pool.map(RabbitNode.start, self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.start_app()
        self.wait_running(len(self.nodes))
        return self

    def running(self, via: RabbitNode | None = None) -> list[str]:
        """Names of the nodes the cluster reports running, as ``via`` (default: the first live node) sees it."""
        node = via or next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return list(status.get("running_nodes", []))

    def wait_running(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running()) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster does not report {count} running nodes: {self.running()}")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
