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

__all__ = ["RedisCluster3", "RedisClusterWithReplicas", "RedisSentinelSetup", "RedisServer", "redis_available"]

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
        return redis.Redis(host="127.0.0.1", port=self.port, **{"socket_timeout": 5, **kwargs})

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()


class RedisCluster3:
    """A Redis Cluster of three masters (no replicas) built with ``redis-cli --cluster create``."""

    replicas = 0
    node_timeout_ms = 2000

    def __init__(self) -> None:
        # No diskless-sync delay: a replica must hold its master's data (and may take over) within moments.
        self.nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", str(self.node_timeout_ms),
                                  "--repl-diskless-sync-delay", "0", name="redis-cluster", port=_cluster_port())
                      for _ in range(3 * (1 + self.replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:1])

    def start(self) -> RedisCluster3:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
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


class RedisClusterWithReplicas(RedisCluster3):
    """Three masters, each with one replica (six nodes); a master that stops answering for ``node_timeout_ms``
    is replaced by its replica (the cluster's own failover)."""

    replicas = 1
    node_timeout_ms = 1000

    def start(self) -> RedisClusterWithReplicas:
        super().start()
        self.wait_replicated()
        return self

    def topology(self, via: RedisServer | None = None) -> dict[int, tuple[str, list[int]]]:
        """``{master port: (node id, [replica ports])}`` as the node ``via`` (default: any live one) sees it;
        failed masters are left out."""
        for node in [via] if via is not None else self.live_nodes():
            text = node.client().execute_command("CLUSTER", "NODES")
            lines = [line.split() for line in (text.decode() if isinstance(text, bytes) else text).splitlines()]
            ids = {fields[0]: int(fields[1].split(":")[1].split("@")[0]) for fields in lines}
            topology: dict[int, tuple[str, list[int]]] = {}
            for fields in lines:
                if "master" in fields[2] and "fail" not in fields[2]:
                    topology[ids[fields[0]]] = (fields[0], [])
            for fields in lines:
                if "slave" in fields[2] and "fail" not in fields[2] and ids.get(fields[3]) in topology:
                    topology[ids[fields[3]]][1].append(ids[fields[0]])
            return topology
        raise RuntimeError("no live cluster node")

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process.proc is not None and node.process.proc.poll() is None]

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def master_of_slot(self, slot: int) -> RedisServer:
        for start, end, master, *_replicas in self.live_nodes()[0].client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self.node(int(master[1]))
        raise RuntimeError(f"slot {slot} is not covered")

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until every master has a replica linked to it whose replication offset has caught up with it (a replica
        still in its first sync holds nothing and would not take over)."""
        deadline = time.monotonic() + timeout
        while True:
            lagging = []
            for port, (_id, replica_ports) in self.topology().items():
                offset = self.node(port).client().info("replication")["master_repl_offset"]
                replicas = [self.node(p).client().info("replication") for p in replica_ports]
                synced = [info for info in replicas if info.get("master_link_status") == "up"
                          and info.get("slave_repl_offset", -1) >= offset > 0]
                if not synced:
                    lagging.append(port)
            if not lagging and len(self.topology()) == 3:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"masters without a synced replica: {lagging}")
            time.sleep(0.1)


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
