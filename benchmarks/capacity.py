"""Capacity inputs: what each operation costs the SERVER, how much server memory a queued message and a group
member take, how many connections a process holds, and (PostgreSQL) what idle listening processes do to NOTIFY.

    python -m benchmarks.capacity [--backends redis,postgres,amqp] [--scale 1.0] [--json FILE]

Every backend runs on a private server started here (Redis, PostgreSQL with pg_stat_statements and
max_connections raised, one RabbitMQ node) and stopped afterwards.  Server CPU is the on-CPU time the kernel
counts for the server's processes and threads (``/proc/<pid>/task/*/schedstat``, nanoseconds), so other load on
the machine does not count; Redis also reports ``INFO commandstats``, PostgreSQL ``pg_stat_statements``.
docs/scaling.md turns these figures into a sizing table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layers import BaseChannelLayer

MESSAGE = {"type": "chat.message", "text": "x" * 100}  # a typical small chat message


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_ns(root: int) -> int:
    """On-CPU nanoseconds of ``root`` and every process below it, all threads (exited processes drop out)."""
    total = 0
    for pid in _descendants(root):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    total += int((task / "schedstat").read_text().split()[0])
    return total


@dataclass
class Server:
    """A private server: its root pid, and how to read its memory and client connections."""

    name: str
    root: int
    memory: Callable[[str], Awaitable[int]]  # bytes the server holds for a prefix (or in total)
    connections: Callable[[], Awaitable[int]]
    layer: Callable[..., BaseChannelLayer]
    stop: Callable[[], None]
    extra: Callable[[], Awaitable[dict[str, Any]]] | None = None
    notes: dict[str, str] = field(default_factory=dict)


# -- servers ---------------------------------------------------------------------------------------------------


def redis_server() -> Server:
    import redis

    from layers_redis import RedisChannelLayer
    from tests.servers.redis import RedisServer

    server = RedisServer(name="capacity").start()
    client = redis.Redis(port=server.port)
    assert server.process.proc is not None

    async def memory(_prefix: str) -> int:
        return int(client.info("memory")["used_memory"])

    async def connections() -> int:
        return int(client.info("clients")["connected_clients"]) - 1  # not our own

    async def extra() -> dict[str, Any]:
        stats = client.info("commandstats")
        return {key.removeprefix("cmdstat_"): {"calls": value["calls"], "usec_per_call": value["usec_per_call"]}
                for key, value in stats.items() if value["calls"] >= 100}

    return Server("redis", server.process.proc.pid, memory, connections,
                  lambda **kw: RedisChannelLayer(hosts=[server.url], **kw), server.stop, extra,
                  {"memory": "INFO used_memory delta", "cpu": "redis-server threads"})


def postgres_server() -> Server:
    import psycopg

    from layers_postgres import PostgresChannelLayer
    from tests.servers.postgres import PostgresServer

    server = PostgresServer(settings={"max_connections": "1100", "shared_preload_libraries": "pg_stat_statements",
                                      "shared_buffers": "256MB"}).init().start()
    admin = psycopg.connect(server.dsn, autocommit=True)
    admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    assert server.proc is not None

    async def memory(prefix: str) -> int:
        row = admin.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                            "WHERE c.relkind = 'r' AND c.relname LIKE %s", (prefix + "%",)).fetchone()
        return int(row[0]) if row else 0

    async def connections() -> int:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'test' "
                            "AND pid <> pg_backend_pid()").fetchone()
        return int(row[0]) if row else 0

    async def extra() -> dict[str, Any]:
        rows = admin.execute("SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60), calls, "
                             "round((total_exec_time * 1000 / calls)::numeric, 1) FROM pg_stat_statements "
                             "WHERE calls >= 100 ORDER BY total_exec_time DESC LIMIT 8").fetchall()
        return {query: {"calls": calls, "usec_per_call": float(usec)} for query, calls, usec in rows}

    def stop() -> None:
        admin.close()
        server.stop()

    srv = Server("postgres", server.proc.pid, memory, connections,
                 lambda **kw: PostgresChannelLayer(server.dsn, **kw), stop, extra,
                 {"memory": "pg_total_relation_size of the prefix's tables (UNLOGGED, default)",
                  "cpu": "postmaster and every backend"})
    srv.notes["dsn"] = server.dsn
    return srv


def amqp_server() -> Server:
    from layers_amqp import AMQPChannelLayer
    from tests.servers.amqp import RabbitNode

    node = RabbitNode().start()
    assert node.proc is not None

    async def memory(_prefix: str) -> int:
        # The whole node's allocated memory after a full garbage collection (queue processes and bindings).
        script = "[erlang:garbage_collect(P) || P <- erlang:processes()], erlang:memory(total)."
        return int((await asyncio.to_thread(node.ctl, "eval", script)).strip())

    async def connections() -> int:
        listing = await asyncio.to_thread(node.ctl, "-q", "list_connections", "name", "--no-table-headers")
        return len([line for line in listing.splitlines() if line.strip()])

    return Server("amqp", node.proc.pid, memory, connections,
                  lambda **kw: AMQPChannelLayer(node.url, **kw), node.stop, None,
                  {"memory": "erlang:memory(total) delta after a full garbage collection (rabbitmqctl eval)",
                   "cpu": "beam.smp (all scheduler threads)"})


SERVERS = {"redis": redis_server, "postgres": postgres_server, "amqp": amqp_server}


# -- measurements ----------------------------------------------------------------------------------------------


async def _settle(server: Server) -> None:
    await asyncio.sleep(0.3)  # let the server finish what the last calls started (background work counts)


async def _cpu_per(server: Server, count: int, work: Callable[[], Awaitable[None]]) -> float:
    """Server CPU microseconds per unit of ``work`` (which performs ``count`` units)."""
    await _settle(server)
    before = cpu_ns(server.root)
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    await _settle(server)
    used = cpu_ns(server.root) - before - int(0.6e9 * _idle_cpu_per_s.get(server.name, 0.0))
    _walls.setdefault(server.name, []).append(elapsed)
    return max(used, 0) / 1000 / count


_idle_cpu_per_s: dict[str, float] = {}
_walls: dict[str, list[float]] = {}


async def _idle_cpu(server: Server) -> float:
    """Nanoseconds per second the idle server burns anyway (timers, heartbeats), subtracted from each figure."""
    before = cpu_ns(server.root)
    await asyncio.sleep(2.0)
    return (cpu_ns(server.root) - before) / 2.0


async def _concurrently(count: int, call: Callable[[int], Awaitable[Any]], width: int = 20) -> None:
    async def worker(start: int) -> None:
        for i in range(start, count, width):
            await call(i)

    await asyncio.gather(*(worker(w) for w in range(width)))


async def measure(server: Server, scale: float) -> dict[str, Any]:
    n = max(200, int(5000 * scale))
    members = max(50, int(1000 * scale))
    prefix = f"cap{os.getpid()}"
    layer = server.layer(prefix=prefix, capacity=10 * n)
    other = server.layer(prefix=prefix, capacity=10 * n)
    out: dict[str, Any] = {"notes": server.notes}
    try:
        await layer.send("warm", MESSAGE)
        await layer.receive("warm")
        _idle_cpu_per_s[server.name] = await _idle_cpu(server) / 1e9
        out["idle_server_cpu_ms_per_s"] = round(_idle_cpu_per_s[server.name] * 1000, 2)
        channels = [f"cap.c{i % 100}" for i in range(n)]

        mem0 = await server.memory(prefix)
        out["send_us"] = await _cpu_per(server, n, lambda: _concurrently(
            n, lambda i: other.send(channels[i], MESSAGE)))
        mem1 = await server.memory(prefix)
        out["bytes_per_queued_message"] = round((mem1 - mem0) / n)
        out["receive_us"] = await _cpu_per(server, n, lambda: _concurrently(
            n, lambda i: layer.receive(f"cap.c{i % 100}"), width=100))

        # A group's members as on a site: WebSockets spread over several processes (one layer each); a group
        # send costs per destination process (the members of one process share one message) and per member.
        processes = 20
        receivers = [server.layer(prefix=prefix, capacity=10 * n) for _ in range(processes)]
        procs = [await receivers[i % processes].new_channel() for i in range(members)]
        mem2 = await server.memory(prefix)
        out["group_add_us"] = await _cpu_per(server, members, lambda: _concurrently(
            members, lambda i: layer.group_add("cap.room", procs[i])))
        mem3 = await server.memory(prefix)
        out["bytes_per_group_member"] = round((mem3 - mem2) / members)
        sends = 20

        async def fan_out() -> None:
            for _ in range(sends):
                await other.group_send("cap.room", MESSAGE)
            await asyncio.gather(*(receivers[i % processes].receive(procs[i]) for i in range(members)
                                   for _ in range(sends)))

        cpu = await _cpu_per(server, sends, fan_out)  # per group send, deliveries included
        out["group_send_us_per_member"] = cpu / members
        out["group_send_us_per_process"] = cpu / processes
        out["group_members"] = members
        out["group_processes"] = processes
        # The same processes with one member each: the cost of one destination process, so that a group send
        # can be modelled as (per process) x destination processes + (per extra member) x members.
        singles = [await receiver.new_channel() for receiver in receivers]
        for channel in singles:
            await layer.group_add("cap.small", channel)

        async def fan_out_small() -> None:
            for _ in range(sends):
                await other.group_send("cap.small", MESSAGE)
            await asyncio.gather(*(receivers[i].receive(singles[i]) for i in range(processes) for _ in range(sends)))

        per_process = await _cpu_per(server, sends * processes, fan_out_small)
        out["group_send_us_per_destination_process"] = per_process
        out["group_send_us_per_extra_member"] = max(cpu - per_process * processes, 0.0) / (members - processes)
        for receiver in receivers:
            await receiver.close()

        out["connections_per_process"] = await _connections_per_process(server, prefix)
        if server.extra is not None:
            out["server_stats"] = await server.extra()
        await layer.flush()
    finally:
        await layer.close()
        await other.close()
    out["operations"] = {"send": n, "receive": n, "group_add": members, "group_send": f"{sends} x {members}"}
    return out


async def _connections_per_process(server: Server, prefix: str) -> int:
    """Server connections of ONE extra layer that sends, receives, waits on a receive and uses groups."""
    await asyncio.sleep(1.0)  # connections closed just before are gone from the server's count
    before = await server.connections()
    layer = server.layer(prefix=prefix)
    me = await layer.new_channel()
    await layer.send(me, MESSAGE)
    await layer.receive(me)
    await layer.group_add("cap.conn", me)
    await layer.group_send("cap.conn", MESSAGE)
    await layer.receive(me)
    pending = asyncio.create_task(layer.receive("cap.pending"))
    await asyncio.gather(*(layer.send(f"cap.x{i}", MESSAGE) for i in range(50)))
    await asyncio.sleep(0.5)
    during = await server.connections()
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    await layer.close()
    return during - before


async def notify_listeners(server: Server, listeners: list[int], messages: int) -> list[dict[str, Any]]:
    """PostgreSQL: send+receive throughput and server CPU per message with N other processes listening.

    The layer LISTENs on one channel per prefix and every process of a site listens on it, so each NOTIFY is
    signalled to every listening backend.  The extra listeners here are idle LISTEN sessions on that channel
    (one per simulated ASGI process); they do not read, so this is the server's side of the cost only."""
    import psycopg

    prefix = f"capn{os.getpid()}"
    rows = []
    producer = server.layer(prefix=prefix, capacity=10 * messages)
    consumer = server.layer(prefix=prefix, capacity=10 * messages)
    await producer.send("n.warm", MESSAGE)
    await consumer.receive("n.warm")
    channel = consumer._state().backend.names.channel  # type: ignore[attr-defined]
    opened: list[psycopg.Connection[Any]] = []
    try:
        for count in listeners:
            while len(opened) < count:
                conn = psycopg.connect(server.notes["dsn"], autocommit=True)
                conn.execute(f'LISTEN "{channel}"')
                opened.append(conn)

            async def traffic() -> None:
                async def receive_all() -> None:
                    for _ in range(messages):
                        await consumer.receive("n.chat")

                reader = asyncio.create_task(receive_all())
                await _concurrently(messages, lambda i: producer.send("n.chat", MESSAGE), width=10)
                await asyncio.wait_for(reader, 120)

            started = time.perf_counter()
            cpu = await _cpu_per(server, messages, traffic)
            rate = messages / (_walls[server.name][-1])
            rows.append({"listeners": count, "msgs_per_s": round(rate), "server_cpu_us_per_msg": round(cpu, 1),
                         "wall_s": round(time.perf_counter() - started, 2)})
            print(f"  postgres NOTIFY with {count:>4} idle listeners: {rows[-1]}", file=sys.stderr)
    finally:
        for conn in opened:
            conn.close()
        await producer.flush()
        await producer.close()
        await consumer.close()
    return rows


# -- the sizing model ------------------------------------------------------------------------------------------

#: The workload docs/scaling.md sizes for (Centrifugo's published million-connection test, in our terms): every
#: WebSocket has its process channel and is in one group of 10; each WebSocket causes 0.05 group sends/s (so 0.5
#: deliveries/s) and receives 0.05 direct messages/s; a 20% share of the connections re-joins its group per
#: minute (group_discard + group_add).  5,000 WebSockets per ASGI process; servers planned at 50% CPU.
WORKLOAD = {"group_size": 10, "group_sends_per_ws": 0.05, "direct_per_ws": 0.05, "rejoins_per_ws": 0.2 / 60,
            "ws_per_process": 5000, "target_cpu": 0.5}
SIZES = (10_000, 100_000, 1_000_000)


def _destination_processes(processes: int, members: int) -> float:
    """Expected distinct processes holding ``members`` members spread at random over ``processes``."""
    return processes * (1 - (1 - 1 / processes) ** members)


def _notify_cost_per_listener(figures: dict[str, Any]) -> float:
    rows = figures.get("notify_listeners") or []
    base = next((r["server_cpu_us_per_msg"] for r in rows if r["listeners"] == 0), None)
    most = max(rows, key=lambda r: r["listeners"], default=None)
    if base is None or most is None or most["listeners"] == 0:
        return 0.0
    return float(most["server_cpu_us_per_msg"] - base) / most["listeners"]


def server_cpu(figures: dict[str, Any], backend: str, websockets: int) -> dict[str, float]:
    """Server CPU cores the WORKLOAD needs at ``websockets`` concurrent WebSockets, by operation."""
    w = WORKLOAD
    processes = max(1, round(websockets / w["ws_per_process"]))
    members = int(w["group_size"])
    dest = _destination_processes(processes, members)
    # PostgreSQL: every process LISTENs on the prefix's one channel, so each NOTIFY costs per listener.
    per_listener = _notify_cost_per_listener(figures) if backend == "postgres" else 0.0
    direct_us = figures["send_us"] + figures["receive_us"] + per_listener * processes
    group_us = (figures["group_send_us_per_destination_process"] * dest
                + figures["group_send_us_per_extra_member"] * max(members - dest, 0)
                + per_listener * max(processes - 20, 0) * dest / max(processes, 1))
    rejoin_us = 2 * figures["group_add_us"]  # a discard costs about what an add does
    cores = {
        "direct": websockets * w["direct_per_ws"] * direct_us / 1e6,
        "groups": websockets * w["group_sends_per_ws"] * group_us / 1e6,
        "rejoins": websockets * w["rejoins_per_ws"] * rejoin_us / 1e6,
    }
    cores["total"] = sum(cores.values())
    cores["processes"] = processes
    return cores


def sizing_table(results: dict[str, Any]) -> str:
    """Markdown: server cores (at 100% CPU) and servers at the planning target, per backend and size."""
    lines = ["| backend | WebSockets | ASGI processes | deliveries/s | server CPU (cores) | servers at 50% CPU |",
             "|---|---:|---:|---:|---:|---|"]
    for backend in ("redis", "amqp", "postgres"):
        if backend not in results:
            continue
        for size in SIZES:
            cores = server_cpu(results[backend], backend, size)
            deliveries = size * (WORKLOAD["group_sends_per_ws"] * WORKLOAD["group_size"] + WORKLOAD["direct_per_ws"])
            needed = cores["total"] / WORKLOAD["target_cpu"]
            if backend == "redis":
                servers = f"{max(1, math.ceil(needed))} shard(s) (one core each)"
            elif backend == "amqp":
                servers = f"{needed:.1f} cores: {max(1, math.ceil(needed / 8))} node(s) of 8 cores"
            else:
                servers = f"{needed:.1f} cores on one primary" + (" (beyond one server)" if needed > 32 else "")
            lines.append(f"| {backend} | {size:,} | {cores['processes']:,} | {deliveries:,.0f} | "
                         f"{cores['total']:.2f} | {servers} |")
    return "\n".join(lines)


def _round(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}


async def main_async(backends: list[str], scale: float, listeners: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": _machine(), "scale": scale, "message": MESSAGE}
    for name in backends:
        print(f"[capacity] {name}: starting a private server", file=sys.stderr)
        server = SERVERS[name]()  # from the main thread: the server then dies with this process
        try:
            figures = _round(await measure(server, scale))
            if name == "postgres" and listeners:
                figures["notify_listeners"] = await notify_listeners(server, listeners, max(200, int(2000 * scale)))
            results[name] = figures
            print(f"[capacity] {name}: " + json.dumps({k: v for k, v in figures.items()
                                                       if k not in ("server_stats", "notes")}), file=sys.stderr)
        finally:
            await asyncio.to_thread(server.stop)
    return results


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1) if found else cpu
    return {"cpus": os.cpu_count(), "cpu": cpu}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="redis,postgres,amqp")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the operation counts (default 1.0)")
    parser.add_argument("--listeners", default="0,100,1000", help="PostgreSQL: idle LISTEN sessions to add")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--table-from", metavar="JSON", help="only print the sizing table for figures saved before")
    args = parser.parse_args(argv)
    if args.table_from:
        print(sizing_table(json.loads(Path(args.table_from).read_text())))
        return
    listeners = [int(x) for x in args.listeners.split(",") if x.strip()]
    results = asyncio.run(main_async(args.backends.split(","), args.scale, listeners))
    text = json.dumps(results, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    print(sizing_table(results))


if __name__ == "__main__":
    main()
