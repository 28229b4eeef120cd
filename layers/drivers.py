"""Fences around the fast paths that drive a database driver through its private internals.

A backend may speak to a driver's raw socket or patch its frame parser where the public API costs too much per
message.  Each such fast path is a :class:`FastPath`: before its first use in a process it checks that the private
attributes it relies on exist and look as expected; when they do not (a driver release renamed them), the backend
takes its plain path through the driver's public API instead, and the process logs ONE warning naming the driver
version and what is missing.  ``LAYERS_PLAIN_DRIVERS`` forces the plain paths (``1``/``all``, or a comma-separated
list of driver names such as ``redis,pika``), so they are tested, and so an operator can rule the fast paths out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import metadata

__all__ = ["PLAIN_DRIVERS_VARIABLE", "FastPath", "plain_driver_forced"]

PLAIN_DRIVERS_VARIABLE = "LAYERS_PLAIN_DRIVERS"

log = logging.getLogger("layers")


def plain_driver_forced(driver: str) -> bool:
    """Whether ``LAYERS_PLAIN_DRIVERS`` asks for the plain path of ``driver`` (read at every check: cheap, and a
    test may switch it)."""
    value = os.environ.get(PLAIN_DRIVERS_VARIABLE, "").strip().lower()
    if value in ("", "0", "no", "false", "off"):
        return False
    if value in ("1", "yes", "true", "on", "all"):
        return True
    return driver.lower() in {name.strip() for name in value.split(",")}


def driver_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


class FastPath:
    """One fast path through ``driver``'s internals, checked once per process.

    ``missing`` names what the fast path needs and the driver lacks (None when all is there); it runs on the first
    call of :meth:`usable` and may inspect a live driver object handed to it."""

    def __init__(self, driver: str, distribution: str, name: str) -> None:
        self.driver = driver
        self.distribution = distribution
        self.name = name
        self._usable: bool | None = None
        self.warned = 0  # how many warnings this fast path logged (at most one per process)

    def usable(self, missing: Callable[[], str | None]) -> bool:
        if plain_driver_forced(self.driver):
            return False
        if self._usable is None:
            try:
                gap = missing()
            except Exception as exc:  # a check that itself trips over a changed driver means the same
                gap = f"the check failed: {type(exc).__name__}: {exc}"
            if gap:
                self.give_up(gap)
            else:
                self._usable = True
        return bool(self._usable)

    def give_up(self, gap: str) -> None:
        """The fast path cannot be used in this process (also when found broken after the first check)."""
        if self._usable is False:
            return
        self._usable = False
        self.warned += 1
        log.warning("%s %s lacks what the layer's %s relies on (%s): using the plain %s path, which is slower; "
                    "install a %s version within the bounds this package declares", self.distribution,
                    driver_version(self.distribution), self.name, gap, self.driver, self.distribution)
