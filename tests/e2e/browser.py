"""A real headless Chromium driven over the Chrome DevTools protocol (a WebSocket; no driver binary, no extra
package): pages that load a URL, type with keyboard events, read the DOM and take screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

__all__ = ["Browser", "Page", "find_chromium"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*"]


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or $LAYERS_CHROMIUM, or another Chrome on $PATH)."""
    for candidate in (os.environ.get("LAYERS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


class Browser:
    """One Chromium process with a fresh profile; ``async with Browser(path) as browser``."""

    def __init__(self, executable: str, *flags: str) -> None:
        self.executable = executable
        self.flags = flags
        self.profile = Path(tempfile.mkdtemp(prefix="layers-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.listeners: list[tuple[str | None, str, asyncio.Future[dict[str, Any]]]] = []
        self.reader: asyncio.Task[None] | None = None

    def _launch(self) -> None:
        with open(self.profile / "chromium.log", "wb") as log:
            self.process = subprocess.Popen(
                [self.executable, *FLAGS, *self.flags, f"--user-data-dir={self.profile}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def __aenter__(self) -> Browser:
        self._launch()
        address = await self._devtools_address(timeout=60)
        self.ws = await connect(address, max_size=None, open_timeout=30)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("Browser.close"), 5)
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.profile / "chromium.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def _devtools_address(self, timeout: float) -> str:
        """Chromium writes the port it chose, and the browser target's path, to DevToolsActivePort."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                port, path = marker.read_text().split()[:2]
                return f"ws://127.0.0.1:{int(port)}{path}"
            await asyncio.sleep(0.1)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout}s:\n{self.log_tail()}")

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                future = self.pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            for listener in list(self.listeners):
                session, method, future = listener
                if message.get("method") == method and session in (None, message.get("sessionId")):
                    self.listeners.remove(listener)
                    if not future.done():
                        future.set_result(message.get("params", {}))

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        number = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[number] = future
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer.get("result", {})  # type: ignore[no-any-return]

    def event(self, method: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.listeners.append((session, method, future))
        return future

    async def new_page(self, url: str, width: int = 900, height: int = 560) -> Page:
        target = (await self.call("Target.createTarget", url="about:blank"))["targetId"]
        session = (await self.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        page = Page(self, target, session)
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        await page.goto(url)
        return page


class Page:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.call(method, self.session, **params)

    async def goto(self, url: str) -> None:
        loaded = self.browser.event("Page.loadEventFired", self.session)
        answer = await self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise RuntimeError(f"loading {url} failed: {answer['errorText']}")
        await asyncio.wait_for(loaded, 30)

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression!r} raised: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} still {value!r} after {timeout}s")
            await asyncio.sleep(0.1)

    async def type(self, selector: str, text: str, enter: bool = True) -> None:
        """Focus an element and type into it as a user does (keyboard input events, then Enter)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", text=text)
        if enter:
            for kind in ("keyDown", "keyUp"):
                await self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                                windowsVirtualKeyCode=13, nativeVirtualKeyCode=13,
                                **({"text": "\r"} if kind == "keyDown" else {}))

    async def texts(self, selector: str) -> list[str]:
        return await self.evaluate(  # type: ignore[no-any-return]
            f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)")

    async def screenshot(self, path: Path) -> None:
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data))

    async def close(self) -> None:
        await self.browser.call("Target.closeTarget", targetId=self.target)
