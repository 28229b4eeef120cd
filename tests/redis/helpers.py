"""Small helpers shared by the Redis tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` in a new event loop (the suite's style: sync tests, no pytest-asyncio)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
