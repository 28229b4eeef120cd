"""Private Redis servers for tests: single servers (restartable), a 3-master cluster, a Sentinel setup.

Each starter runs real ``redis-server`` processes on free loopback ports and stops them in ``stop()``.  Nothing
persists to disk (``--save ''``), so a restarted server comes back empty, as after a crash without persistence.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import redis

from . import ServerProcess, free_port, port_open

__all__ = ["RedisCluster3", "RedisSentinelSetup", "RedisServer", "redis_available"]

_BASE = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class RedisServer:
    """One redis-server on a free port; ``kill()`` + ``start()`` restart it on the same port."""

    def __init__(self, *extra: str, name: str = "redis", port: int | None = None) -> None:
        self.process = ServerProcess(name, port)
        self.extra = list(extra)

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process.start(["redis-server", "--port", str(self.port), "--dir", str(self.process.dir),
                            *_BASE, *self.extra])
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()


class RedisCluster3:
    """A Redis Cluster of three masters (no replicas) built with ``redis-cli --cluster create``."""

    def __init__(self) -> None:
        self.nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", "2000", name="redis-cluster", port=_cluster_port())
                      for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:1])

    def start(self) -> RedisCluster3:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        info = node.client().execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelSetup:
    """A master, a replica of it and one sentinel monitoring them as ``mymaster`` (quorum 1)."""

    master_name = "mymaster"

    def __init__(self) -> None:
        self.master = RedisServer(name="redis-master")
        self.replica = RedisServer(name="redis-replica")
        self.sentinel = ServerProcess("redis-sentinel")

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.master_name}/0"

    @property
    def config(self) -> dict[str, Any]:
        """The channels_redis-style Sentinel host dict."""
        return {"master_name": self.master_name, "sentinels": [("127.0.0.1", self.sentinel.port)],
                "sentinel_kwargs": {"socket_timeout": 2}}

    def start(self) -> RedisSentinelSetup:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        conf = self.sentinel.dir / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.sentinel.port}", "bind 127.0.0.1", "protected-mode no", f"dir {self.sentinel.dir}",
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {self.master_name} 1000",
            f"sentinel failover-timeout {self.master_name} 4000",
            f"sentinel parallel-syncs {self.master_name} 1", ""]))
        self.sentinel.start(["redis-server", str(conf), "--sentinel"])
        self._wait(self._replica_known, "the sentinel to see the replica in sync")
        return self

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel.port, socket_timeout=5)

    def master_port(self) -> int:
        _host, port = self.sentinel_client().execute_command("SENTINEL", "get-master-addr-by-name",
                                                            self.master_name)
        return int(port)

    def failover(self) -> None:
        """Promote the replica (``SENTINEL FAILOVER``) and wait until the sentinel reports the new master."""
        old = self.master_port()
        self.sentinel_client().execute_command("SENTINEL", "FAILOVER", self.master_name)
        self._wait(lambda: self.master_port() != old, "the failover")
        new = self.replica if self.master_port() == self.replica.port else self.master
        self._wait(lambda: new.client().info("replication")["role"] == "master", "the new master")

    def _replica_known(self) -> bool:
        replicas = self.sentinel_client().execute_command("SENTINEL", "replicas", self.master_name)
        for fields in replicas or []:
            flags = fields.get(b"flags", b"").decode()
            if "s_down" not in flags and "disconnected" not in flags and \
                    fields.get(b"master-link-status") == b"ok":
                return True
        return False

    @staticmethod
    def _wait(condition: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.sentinel.stop()
        self.replica.stop()
        self.master.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536 and port_open(port + 10000) is False:
            return port
