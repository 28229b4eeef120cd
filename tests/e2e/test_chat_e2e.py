"""The chat example (examples/chat) end to end, on each server backend, chosen by CHANNEL_LAYER_URL alone.

Per backend: two ASGI servers on free ports (daphne and uvicorn; daphne twice without uvicorn) and ``manage.py
runworker chat-tasks``, all on one layer URL with a prefix unique to this run; real WebSocket clients on both.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import pytest

pytest.importorskip("channels")
pytest.importorskip("daphne")
websockets_client = pytest.importorskip("websockets.asyncio.client")
from websockets.exceptions import ConnectionClosed

from tests.e2e.sites import EXAMPLE, Site

pytestmark = pytest.mark.e2e

BURST_CLIENTS = 200
BURST_MESSAGES = 50
BURST_BOUND_SECONDS = 60.0  # generous: a healthy backend needs a few seconds on the 2-core box


# -- clients ------------------------------------------------------------------------------------------------


class Client:
    """A WebSocket client in a room; a reader task collects every frame the server sends."""

    def __init__(self, ws: Any, label: str) -> None:
        self.ws = ws
        self.label = label
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with suppress(ConnectionClosed):  # wait_for reports a closed connection
            async for raw in self.ws:
                self.frames.append((time.perf_counter(), json.loads(raw)))
                self.changed.set()

    async def send(self, **content: Any) -> None:
        await self.ws.send(json.dumps(content))

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [frame for _, frame in self.frames if predicate(frame)]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], count: int = 1,
                       timeout: float = 15.0) -> list[dict[str, Any]]:
        """Frames matching ``predicate`` once there are at least ``count`` of them (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(found := self.matching(predicate)) < count:
            if self.reader.done():
                raise AssertionError(f"{self.label}: connection closed after {len(found)}/{count} frames")
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.label}: {len(found)}/{count} expected frames after {timeout}s; "
                                     f"last frames: {[f for _, f in self.frames[-3:]]}")
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return found

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


@asynccontextmanager
async def clients(site: Site, room: str, on_a: int, on_b: int) -> AsyncIterator[list[Client]]:
    """``on_a`` clients on server A then ``on_b`` on server B, all in ``room``."""
    limit = asyncio.Semaphore(50)

    async def connect(port: int, label: str) -> Client:
        async with limit:
            ws = await websockets_client.connect(f"ws://127.0.0.1:{port}/ws/rooms/{room}/",
                                                 origin=f"http://127.0.0.1:{port}", open_timeout=30,
                                                 max_queue=None)
            return Client(ws, label)

    ports = [(site.port_a, f"A{i}") for i in range(on_a)] + [(site.port_b, f"B{i}") for i in range(on_b)]
    async with AsyncExitStack() as stack:
        connected = await asyncio.gather(*(connect(port, label) for port, label in ports), return_exceptions=True)
        for client in connected:
            if isinstance(client, Client):
                stack.push_async_callback(client.close)
        errors = [c for c in connected if isinstance(c, BaseException)]
        if errors:
            raise AssertionError(f"{len(errors)} of {len(ports)} WebSocket connects failed on {site.backend}: "
                                 f"{errors[0]!r}\n{site.logs()}")
        yield [client for client in connected if isinstance(client, Client)]


def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _text(text: str, via: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("type") == "message" and f.get("text") == text and (via is None or f.get("via") == via)


def _run(site: Site, coro: Any, timeout: float = 60) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coro, timeout))
    except (AssertionError, asyncio.TimeoutError) as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n{site.logs()}") from None


# -- the tests ----------------------------------------------------------------------------------------------


def test_message_from_one_server_reaches_clients_on_both(site: Site) -> None:
    async def scenario() -> None:
        async with clients(site, "hello", 3, 3) as members:
            sender_a, sender_b = members[0], members[3]
            await sender_a.send(action="say", text="hi from A")
            for client in members:
                [frame] = await client.wait_for(_text("hi from A"))
                assert frame["via"] == "websocket" and frame["server"] == site.a.pid, frame
            await sender_b.send(action="say", text="hi from B")
            for client in members:
                [frame] = await client.wait_for(_text("hi from B"))
                assert frame["server"] == site.b.pid, frame

    _run(site, scenario())
    site.check_alive()


def test_sync_view_and_command_broadcast_reach_both_servers(site: Site) -> None:
    async def scenario() -> None:
        async with clients(site, "news", 2, 2) as members:
            for port, pid in ((site.port_a, site.a.pid), (site.port_b, site.b.pid)):
                text = f"view on {port}"
                answer = await asyncio.to_thread(_post, port, "/rooms/news/broadcast", {"text": text})
                assert answer == {"ok": True, "room": "news", "server": pid}
                for client in members:
                    [frame] = await client.wait_for(_text(text, via="view"))
                    assert frame["server"] == pid
            # Plain sync code outside any server: async_to_sync makes (and closes) its own event loop.
            command = await asyncio.to_thread(
                subprocess.run, [sys.executable, "manage.py", "broadcast", "news", "from the command line"],
                cwd=EXAMPLE, env=site.env, capture_output=True, text=True, timeout=60,
            )
            assert command.returncode == 0, command.stdout + command.stderr
            for client in members:
                await client.wait_for(_text("from the command line", via="command"))

    _run(site, scenario())


def test_worker_receives_and_answers_tasks(site: Site) -> None:
    async def scenario() -> None:
        async with clients(site, "work", 2, 2) as members:
            asker_a, asker_b = members[0], members[2]
            await asker_a.send(action="task", task="upper", text="layers", id="t-a")
            await asker_b.send(action="task", task="wordcount", text="one two three", id="t-b")
            [result_a] = await asker_a.wait_for(lambda f: f.get("type") == "result", timeout=30)
            [result_b] = await asker_b.wait_for(lambda f: f.get("type") == "result", timeout=30)
            assert result_a == {"type": "result", "id": "t-a", "task": "upper", "result": "LAYERS",
                                "worker": site.worker.pid}
            assert result_b == {"type": "result", "id": "t-b", "task": "wordcount", "result": 3,
                                "worker": site.worker.pid}
            # A result announced to the room by the worker reaches everyone; only the asker gets the reply.
            await asker_b.send(action="task", task="reverse", text="abc", id="t-room", broadcast=True)
            for client in members:
                [frame] = await client.wait_for(_text("task t-room (reverse): cba", via="worker"), timeout=30)
                assert frame["server"] == site.worker.pid
            await asker_b.wait_for(lambda f: f.get("type") == "result", count=2)
            assert len(asker_a.matching(lambda f: f.get("type") == "result")) == 1  # replies are not broadcast

    _run(site, scenario())
    site.check_alive()


def test_tasks_queued_while_the_worker_is_down_reach_the_next_worker(site: Site) -> None:
    """A worker deploy: tasks sent while no worker runs wait in the named channel for the new one."""

    def is_result(frame: dict[str, Any]) -> bool:
        return frame.get("type") == "result"

    async def scenario() -> None:
        async with clients(site, "deploy", 1, 1) as members:
            asker_a, asker_b = members
            old = site.worker
            await asyncio.to_thread(old.stop)
            await asyncio.sleep(0.5)  # let the server notice the old worker's connection is gone
            await asker_a.send(action="task", task="upper", text="queued on A", id="q-a")
            await asker_b.send(action="task", task="reverse", text="queued on B", id="q-b")
            await asyncio.sleep(1.0)
            assert not asker_a.matching(is_result) and not asker_b.matching(is_result), "answered with no worker?"
            new = await asyncio.to_thread(site.start_worker)
            [result_a] = await asker_a.wait_for(is_result, timeout=30)
            [result_b] = await asker_b.wait_for(is_result, timeout=30)
            assert (result_a["result"], result_a["worker"]) == ("QUEUED ON A", new.pid), result_a
            assert (result_b["result"], result_b["worker"]) == ("B no deueuq", new.pid), result_b
            assert new.pid != old.pid

    _run(site, scenario())
    site.check_alive()


def _last_done(members: list[Client], per_client: list[float], server: str) -> float:
    return round(max(t for c, t in zip(members, per_client, strict=True) if c.label.startswith(server)), 3)


def test_burst_reaches_200_clients_on_both_servers(site: Site, e2e_report: list[dict[str, Any]],
                                                   record_property: Callable[[str, object], None]) -> None:
    texts = [f"burst-{i}" for i in range(BURST_MESSAGES)]
    expected = set(texts)

    def burst_frames(client: Client) -> list[str]:
        return [f["text"] for f in client.matching(lambda f: f.get("type") == "message") if f["text"] in expected]

    async def scenario() -> tuple[float, list[float], list[Client]]:
        half = BURST_CLIENTS // 2
        async with clients(site, "burst", half, BURST_CLIENTS - half) as members:
            sender = members[0]
            start = time.perf_counter()
            for text in texts:
                await sender.send(action="say", text=text)
            waits = [c.wait_for(lambda f: f.get("text") in expected, BURST_MESSAGES, BURST_BOUND_SECONDS)
                     for c in members]
            results = await asyncio.gather(*waits, return_exceptions=True)
            failures = [(c.label, r) for c, r in zip(members, results, strict=True) if isinstance(r, BaseException)]
            await asyncio.sleep(0.5)  # a late duplicate would arrive now
            lost = {c.label: sorted(expected - set(burst_frames(c)), key=texts.index) for c in members}
            missing = {label: f"{len(m)} missing, first {m[0]}" for label, m in lost.items() if m}
            dupes = {c.label: len(burst_frames(c)) - len(set(burst_frames(c))) for c in members}
            dupes = {label: n for label, n in dupes.items() if n}
            assert not failures and not missing, (
                f"{len(missing)} of {len(members)} clients missed messages on {site.backend} "
                f"(e.g. {dict(list(missing.items())[:3])}); first failure: {failures[:1]}"
            )
            assert not dupes, f"duplicated deliveries on {site.backend}: {dict(list(dupes.items())[:5])}"
            per_client = [max(t for t, f in c.frames if f.get("text") in expected) - start for c in members]
            return max(per_client), per_client, members

    seconds, per_client, members = _run(site, scenario(), timeout=BURST_BOUND_SECONDS + 60)
    out_of_order = [c.label for c in members if burst_frames(c) != texts]
    row = {"backend": site.backend, "clients": BURST_CLIENTS, "messages": BURST_MESSAGES,
           "deliveries": BURST_CLIENTS * BURST_MESSAGES, "seconds": round(seconds, 3),
           "server_a": site.a.name, "server_b": site.b.name,
           "median_client_seconds": round(statistics.median(per_client), 3), "out_of_order": len(out_of_order),
           "server_a_clients_seconds": _last_done(members, per_client, "A"),
           "server_b_clients_seconds": _last_done(members, per_client, "B")}
    e2e_report.append(row)
    record_property("burst", json.dumps(row))
    print(f"\n{site.backend}: {row}")
    assert not out_of_order, f"FIFO broken for one writer/one reader on {site.backend}: {out_of_order[:5]}"
    assert seconds < BURST_BOUND_SECONDS
    site.check_alive()
