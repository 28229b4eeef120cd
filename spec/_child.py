"""The second OS process of R-MULTI-5: ``python -m spec._child JSON`` (spawned by the suite).

It opens the layer from ``target``/``config``, announces its own local channel on ``reply_to``, then echoes
``count`` messages received on that channel, ``count`` on the ``named`` channel and ``grouped`` more on its
channel (sent through a group), each back to ``reply_to`` with ``"echo": True``.  It never flushes: the state
belongs to the parent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from .target import make_factory


async def _echo(layer: Any, channel: str, reply_to: str, count: int) -> None:
    for _ in range(count):
        message = await layer.receive(channel)
        await layer.send(reply_to, {**message, "echo": True})


async def main(arguments: dict[str, Any]) -> None:
    layer = make_factory(arguments["target"], arguments["config"])()
    reply_to = arguments["reply_to"]
    try:
        mine = await layer.new_channel()
        await layer.send(reply_to, {"channel": mine})
        await _echo(layer, mine, reply_to, arguments["count"])
        await _echo(layer, arguments["named"], reply_to, arguments["count"])
        await _echo(layer, mine, reply_to, arguments["grouped"])
    finally:
        await layer.close()


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    asyncio.run(asyncio.wait_for(main(options), options["timeout"]))
