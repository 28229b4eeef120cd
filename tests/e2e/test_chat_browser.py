"""The chat example's room page in real headless Chromium: two pages on the two different ASGI servers of the
example (daphne and uvicorn), on every server backend; what one types appears in the other, members come and go.

Needs Debian's ``chromium`` (``./dev test`` installs it); without it the tests skip and say so.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("channels")
pytest.importorskip("daphne")
pytest.importorskip("websockets.asyncio.client")

from tests.e2e.browser import Browser, Page, find_chromium
from tests.e2e.sites import EXAMPLE, Site

pytestmark = pytest.mark.e2e

MEMBERS = "[...document.querySelectorAll('#members li')].map(e => e.textContent)"
MESSAGES = ("[...document.querySelectorAll('#messages li:not(.event)')].map(li => [li.querySelector('.who')"
            ".textContent, li.childNodes[1].textContent, li.querySelector('.via')?.textContent || ''])")
EVENTS = "[...document.querySelectorAll('#messages li.event')].map(e => e.textContent)"
STATUS = "document.getElementById('status').textContent"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed: apt-get install chromium (./dev test installs it)")
    return path


def _run(site: Site, coro: Any, browser_log: list[Browser], timeout: float = 120) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coro, timeout))
    except (AssertionError, asyncio.TimeoutError, RuntimeError) as exc:
        chromium_log = browser_log[0].log_tail() if browser_log else ""
        raise AssertionError(f"{type(exc).__name__}: {exc}\n{site.logs()}\n--- chromium ---\n{chromium_log}") from None


async def _open(browser: Browser, site: Site, port: int, room: str, name: str) -> Page:
    page = await browser.new_page(f"http://127.0.0.1:{port}/rooms/{room}/?name={name}")
    await page.wait_for(f"{STATUS}.startsWith('connected')")
    return page


async def _members(page: Page, expected: list[str]) -> None:
    await page.wait_for(f"JSON.stringify({MEMBERS}) === {json.dumps(json.dumps(expected, separators=(',', ':')))}")


async def _message(page: Page, who: str, text: str) -> str:
    """Wait until the page shows ``who: text``; return its "via server PID" note."""
    found = await page.wait_for(f"{MESSAGES}.find(m => m[0] === {json.dumps(who)} && m[1] === {json.dumps(text)})")
    return str(found[2])


def test_the_lobby_page_is_served_at_the_root(site: Site) -> None:
    for port in (site.port_a, site.port_b):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            page = response.read().decode()
        assert "new WebSocket(" in page and 'id="members"' in page


def test_two_browsers_on_two_servers_chat(site: Site, chromium: str, tmp_path: Path) -> None:
    room = f"browser-{secrets.token_hex(3)}"
    browsers: list[Browser] = []

    async def scenario() -> None:
        async with Browser(chromium) as browser:
            browsers.append(browser)
            alice = await _open(browser, site, site.port_a, room, "alice")  # daphne
            bob = await _open(browser, site, site.port_b, room, "bob")  # uvicorn (or a second daphne)
            await _members(alice, ["alice", "bob"])
            await _members(bob, ["alice", "bob"])

            await alice.type("#text", "hello from alice")
            assert await _message(bob, "alice", "hello from alice") == f"via server {site.a.pid}"
            await _message(alice, "alice", "hello from alice")
            await bob.type("#text", "hi alice, bob here")
            assert await _message(alice, "bob", "hi alice, bob here") == f"via server {site.b.pid}"
            await alice.type("#text", "/task upper layers work")  # the worker answers, and tells the room
            await _message(bob, "worker", "task page-1 (upper): LAYERS WORK")
            await _message(alice, "worker", "upper: LAYERS WORK")
            assert await alice.evaluate("document.getElementById('text').value") == ""  # the input was sent

            await asyncio.sleep(0.3)  # let the last frame render before the picture
            shot = Path(os.environ.get("LAYERS_E2E_SCREENSHOT_DIR", tmp_path)) / f"chat-{site.backend}.png"
            await alice.call("Emulation.setDeviceMetricsOverride", width=900, height=400, deviceScaleFactor=1,
                             mobile=False)
            await asyncio.sleep(0.2)
            await alice.screenshot(shot)
            assert shot.stat().st_size > 10_000

            await bob.close()  # the tab goes away: its WebSocket closes
            await _members(alice, ["alice"])
            await alice.wait_for(f"{EVENTS}.includes('bob left')")
            assert await alice.evaluate(EVENTS) == ["alice joined", "bob joined", "bob left"]

    _run(site, scenario(), browsers)


@contextmanager
def _static_server(directory: Path) -> Iterator[int]:
    """A plain web server for ``directory`` on a free port (another site serving a copy of the page)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()


def test_a_page_served_elsewhere_is_told_why_it_is_refused(site: Site, chromium: str) -> None:
    """A page from a host not in ALLOWED_HOSTS gets HTTP 403 on its WebSocket: the page and the log say why."""
    browsers: list[Browser] = []

    async def scenario(port: int) -> None:
        # elsewhere.test is this machine too, but not one of the site's ALLOWED_HOSTS
        async with Browser(chromium, "--host-resolver-rules=MAP elsewhere.test 127.0.0.1") as browser:
            browsers.append(browser)
            page = await browser.new_page(
                f"http://elsewhere.test:{port}/room.html?room=refused&name=eve&server=127.0.0.1:{site.port_a}")
            status = await page.wait_for(f"{STATUS}.includes('refused') && {STATUS}")
            assert "DJANGO_ALLOWED_HOSTS" in status, status

    with _static_server(EXAMPLE / "chat" / "static") as port:
        _run(site, scenario(port), browsers)
    deadline = time.monotonic() + 10
    while f"refused a WebSocket from http://elsewhere.test:{port}" not in site.a.tail(20_000):
        assert time.monotonic() < deadline, site.a.tail()
        time.sleep(0.1)
    assert "add the host to DJANGO_ALLOWED_HOSTS" in site.a.tail(20_000)


@pytest.mark.parametrize("server", ["a", "b"])
def test_websocket_from_an_unknown_origin_gets_403(site: Site, server: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    port = site.port_a if server == "a" else site.port_b

    async def attempt() -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws/rooms/lobby/", origin="http://elsewhere.example",
                           open_timeout=30):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(attempt())
    assert refused.value.response.status_code == 403
