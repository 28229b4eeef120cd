"""The one fixture module of the security suite: ``target`` (every backend) and ``server_target`` (the servers).

Each test gets a fresh :class:`~tests.security.backends.Target` (a prefix of its own) and ``run``, which runs
coroutines on one event loop for the whole test with a time limit, so a hang fails the test instead of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from .backends import TARGETS, Target

T = TypeVar("T")
Runner = Callable[..., Any]

SERVERS = [name for name in TARGETS if name != "memory"]


def _target(name: str) -> Iterator[Target]:
    cls = TARGETS[name]
    reason = cls.skip_reason()
    if reason:
        pytest.skip(reason)
    target = cls()
    yield target
    target.cleanup()


@pytest.fixture(params=list(TARGETS))
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _target(request.param)


@pytest.fixture(params=SERVERS)
def server_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _target(request.param)


@pytest.fixture
def run(target_for_run: Target | None) -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """``run(coro, timeout=20)``: run on this test's event loop; its layers are closed on that loop at the end."""
    loop = asyncio.new_event_loop()

    def runner(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    yield runner
    if target_for_run is not None:
        for layer in target_for_run._layers:
            with contextlib.suppress(Exception):  # a test may have broken this layer on purpose
                loop.run_until_complete(asyncio.wait_for(layer.close(), 10))
    loop.close()


@pytest.fixture
def target_for_run(request: pytest.FixtureRequest) -> Target | None:
    for name in ("target", "server_target"):
        if name in request.fixturenames:
            value: Target = request.getfixturevalue(name)
            return value
    return None
