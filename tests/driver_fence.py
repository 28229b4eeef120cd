"""Runs a layer in a child process whose driver was changed to lack a fast path's private internals, and checks
that the process logged exactly one warning naming the driver version and what is missing (layers.drivers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Keeps the layer's log records and defines ``exercise``; the body's ``main()`` runs next, then the warnings print.
_PROLOGUE = textwrap.dedent("""
    import asyncio, logging, sys, uuid
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    logging.getLogger("layers").addHandler(Keep())

    async def exercise(make_layer):
        prefix = "fence" + uuid.uuid4().hex[:8]
        for _ in range(2):  # two layers, several connections: still one warning
            layer = make_layer(prefix)
            channel = await layer.new_channel()
            for i in range(50):
                await layer.send(channel, {"type": "t", "i": i})
            assert [(await layer.receive(channel))["i"] for _ in range(50)] == list(range(50))
            await layer.group_add("fence.g", channel)
            await layer.group_send("fence.g", {"type": "g"})
            assert (await layer.receive(channel))["type"] == "g"
            receiving = asyncio.ensure_future(layer.receive("fence.named"))
            await asyncio.sleep(0.1)  # a receiver waits (Redis: armed, the push is handed over by Pub/Sub)
            await layer.send("fence.named", {"type": "n"})
            assert (await asyncio.wait_for(receiving, 10))["type"] == "n"
            await layer.flush()
            await layer.close()
""")
_EPILOGUE = textwrap.dedent("""
    asyncio.run(main())
    warnings = [r for r in records if r.levelno == logging.WARNING]
    print(len(warnings))
    print(warnings[0].getMessage() if warnings else "")
""")


def assert_one_warning(body: str, url: str, distribution: str, version: str, gap: str) -> None:
    """Run ``body`` (it changes the driver and defines ``async def main()``, which calls ``exercise`` with a
    factory of layers on ``url`` = ``sys.argv[1]``) and check the single warning it causes."""
    child = _PROLOGUE + textwrap.dedent(body) + _EPILOGUE
    done = subprocess.run([sys.executable, "-c", child, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.splitlines()[:2]
    assert count == "1", done.stdout
    assert f"{distribution} {version}" in message
    assert gap in message
    assert "plain " in message and " path" in message
