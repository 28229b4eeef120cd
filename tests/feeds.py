"""A :class:`~layers.backend.Feed` that keeps what a backend delivers, for tests that call ``fill`` directly."""

from __future__ import annotations

from collections.abc import Sequence

from layers.backend import Backend, Feed


class ListFeed(Feed):
    """What a test reader got, in delivery order (the core's feed files items for receivers instead)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.items: list[bytes] = []

    def deliver(self, items: Sequence[bytes]) -> None:
        self.items.extend(items)


async def fill(backend: Backend, queue: str, credit: int, timeout: float) -> list[bytes]:
    """What one ``fill`` of ``queue`` delivered (claimed itself or handed over by a push of the backend)."""
    feed = ListFeed(queue)
    await backend.fill(feed, credit, timeout)
    return feed.items
