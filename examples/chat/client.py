"""A terminal client for the chat: ``python client.py [ws://127.0.0.1:8001/ws/rooms/lobby/]``.

Each line typed is said to the room; ``/task NAME TEXT`` asks the worker (NAME: upper, reverse, wordcount) and
``/task! NAME TEXT`` also announces the result to the room.  Every frame from the server is printed as JSON.
With input from a pipe, the client waits ``--linger`` seconds after the last line for answers, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from itertools import count
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import connect


def frame_for(line: str, ids: count[int]) -> dict[str, Any]:
    if line.startswith(("/task ", "/task! ")):
        command, _, rest = line.partition(" ")
        task, _, text = rest.partition(" ")
        return {"action": "task", "task": task, "text": text, "id": f"t{next(ids)}", "broadcast": command == "/task!"}
    return {"action": "say", "text": line}


async def chat(url: str, linger: float) -> None:
    origin = f"http://{urlsplit(url).netloc}"  # the site checks Origin against ALLOWED_HOSTS
    async with connect(url, origin=origin) as ws:

        async def show() -> None:
            async for raw in ws:
                print(raw, flush=True)

        printer = asyncio.create_task(show())
        loop = asyncio.get_running_loop()
        ids = count(1)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip():
                await ws.send(json.dumps(frame_for(line.strip(), ids)))
        await asyncio.sleep(linger)
        printer.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8001/ws/rooms/lobby/")
    parser.add_argument("--linger", type=float, default=2.0, help="seconds to keep listening after input ends")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(chat(args.url, args.linger))


if __name__ == "__main__":
    main()
