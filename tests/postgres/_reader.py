"""A reader process for the exactly-once test: receives from a named channel until it stays quiet."""

from __future__ import annotations

import asyncio
import json
import sys

from layers_postgres import PostgresChannelLayer


async def main(dsn: str, prefix: str, channel: str) -> None:
    layer = PostgresChannelLayer(dsn, prefix=prefix)
    await layer.send(f"{channel}.ready", {})
    got: list[int] = []
    quiet = 8.0  # the first message may take a while (all readers start at once)
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), quiet)
        except asyncio.TimeoutError:
            break
        got.append(message["n"])
        quiet = 1.5
    await layer.close()
    print(json.dumps(got))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
