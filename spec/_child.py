"""The second OS process of R-MULTI-5: ``python -m spec._child JSON`` (spawned by the suite).

It sets up Django when ``DJANGO_SETTINGS_MODULE`` is set, opens the layer from ``target``/``config`` inside its
event loop, adds its own local channel to ``group`` (when given: the group is then this process's own business,
no foreign membership needed), announces the channel on ``reply_to``, then echoes ``count`` messages received on
that channel, ``named_count`` on the ``named`` channel and ``grouped`` more on its channel (sent through the
group), each back to ``reply_to`` with ``"echo": True``.  It never flushes: the state belongs to the parent.  It
closes its layer when the layer has ``close()``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from .runner import setup_django
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
        if arguments.get("group"):
            await layer.group_add(arguments["group"], mine)
        named = arguments["named"]
        # Receive the named channel from the start: a layer without named backlog keeps only what arrives then.
        named_echoes = asyncio.ensure_future(_echo(layer, named, reply_to, arguments.get("named_count", 0)))
        await asyncio.sleep(arguments.get("settle", 0))
        await layer.send(reply_to, {"channel": mine})
        await _echo(layer, mine, reply_to, arguments["count"])
        await named_echoes
        await _echo(layer, mine, reply_to, arguments["grouped"])
    finally:
        close = getattr(layer, "close", None)
        if callable(close):
            await close()


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    setup_django()
    asyncio.run(asyncio.wait_for(main(options), options["timeout"]))
