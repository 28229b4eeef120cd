"""The server-side group fan-out builds exactly the items the core would (layers.envelope, version 1)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from layers.backend import GroupMessage
from layers_postgres.backend import PostgresBackend

GROUP = "g1"
# Short names; 20 members in one process (a MessagePack array16); names of 32 bytes and more (str8).
PROCESSES = {"a.one!": ["a", "b", "c"], "a.two!": [f"m{n:02d}" for n in range(20)], "a.three!": ["x" * 40, "y"]}
NAMED = ["named.p", "named.q"]


def test_server_side_bundles_match_the_envelope_byte_for_byte(make_layer: Any, prefix: str,
                                                              sql: psycopg.Connection[Any]) -> None:
    message = GroupMessage(b"\x81\xa4type\xa4test", time.time() + 60, lambda queue: 100, 100)

    async def main() -> int:
        layer = make_layer()
        backend = layer._state().backend
        assert isinstance(backend, PostgresBackend)
        deadline = time.time() + 60
        members = NAMED + [proc + local for proc, locals_ in PROCESSES.items() for local in locals_]
        for channel in members:
            await backend.group_add(GROUP, channel, deadline)
        calls: list[str] = []
        fetch_one = backend._fetch_one

        async def counted(sql_text: str, args: Any) -> Any:
            calls.append(sql_text)
            return await fetch_one(sql_text, args)

        backend._fetch_one = counted  # type: ignore[method-assign]
        dropped = await backend.group_push(GROUP, message)
        assert any("_group_push" in text for text in calls), "the fan-out did not run on the server"
        await layer.close()
        return dropped

    assert asyncio.run(main()) == 0
    rows = sql.execute(f'SELECT queue, item FROM "{prefix}_msg" ORDER BY queue').fetchall()
    stored = {queue: bytes(item) for queue, item in rows}
    expected = {channel: message.named_item for channel in NAMED}
    expected.update({proc: message.bundle(sorted(proc + local for local in locals_))
                     for proc, locals_ in PROCESSES.items()})
    assert stored == expected
