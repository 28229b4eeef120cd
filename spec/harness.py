"""What every conformance check runs in: knobs, layers made by the author's factory, event loops, time limits.

A check is an ``async def`` method decorated with :func:`check`; pytest sees a plain sync test that runs the
coroutine on a fresh event loop (``asyncio.run``) under the per-test time limit, so a layer that hangs fails the
check instead of hanging the run.  Layers made through :meth:`Harness.layer` are flushed when made and flushed and
closed when the check ends.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import random
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import pytest

from .target import LayerFactory

__all__ = ["Harness", "Knobs", "Message", "check", "sync_check"]

Message = dict[str, Any]
T = TypeVar("T")
AsyncCheck = Callable[..., Coroutine[Any, Any, None]]
SyncCheck = Callable[..., None]

#: Capabilities a check may need; anything else in ``needs`` is a bug in the suite.
CAPABILITIES = ("groups", "flush", "shares_state", "process_target", "asgiref")


@dataclass(frozen=True)
class Knobs:
    """What the suite may assume about a layer: the layer class's ``spec_knobs`` over these defaults."""

    #: Two instances made by the factory behave like two processes on one server.
    shares_state: bool = False
    #: The shortest ``expiry`` / ``group_expiry`` (seconds) the layer honours precisely.
    min_expiry: float = 1.0
    #: A layer URL or dotted class path another OS process can use to reach the same state (None: skip).
    process_target: str | None = None
    #: Options for the second process's layer (``from_url`` overrides, or constructor keywords for a class path).
    process_config: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds one check may take before it fails as hung.
    timeout: float = 20.0
    #: Seconds the suite watches a channel before concluding that nothing arrives.
    settle: float = 0.3
    #: The message size limit of the factory's layers (bytes, serialized).
    max_message_size: int = 1024 * 1024

    @classmethod
    def resolve(cls, *sources: Mapping[str, Any] | None) -> Knobs:
        """Merge knob dicts (later ones win) over the defaults; an unknown knob name is an error, not a no-op."""
        merged: dict[str, Any] = {}
        for source in sources:
            merged.update(source or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(merged) - set(known))
        if unknown:
            raise ValueError(f"unknown spec knob(s) {', '.join(unknown)}; known knobs: {', '.join(known)}")
        knobs = cls(**merged)
        if not (knobs.min_expiry > 0 and knobs.timeout > 0 and knobs.settle > 0):
            raise ValueError(f"min_expiry, timeout and settle must be positive: {knobs.describe()}")
        return knobs

    @property
    def receive_wait(self) -> float:
        """Seconds a sent message may take to arrive before the suite calls it lost."""
        return self.timeout / 4

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "process_config")


class Harness:
    """Per-check helper: makes layers, names channels, receives with time limits, runs the check."""

    def __init__(self, factory: LayerFactory, knobs: Knobs, seed: str, probe: Any = None) -> None:
        self.factory = factory
        self.knobs = knobs
        self.rng = random.Random(seed)  # reproducible schedules for a given test id
        # The layer that told the suite its class and extensions; it becomes the check's first plain layer().
        self._probe: Any = factory() if probe is None else probe
        self.extensions: list[str] = list(getattr(self._probe, "extensions", None) or [])
        self._layers: list[Any] = []

    # -- capabilities -------------------------------------------------------------------------------------

    def skip_unless(self, needs: Iterable[str]) -> None:
        """Skip the check, with the reason, when the layer lacks a capability it needs."""
        for need in needs:
            reason = self._lacks(need)
            if reason:
                pytest.skip(reason)

    def _lacks(self, need: str) -> str | None:
        if need in ("groups", "flush"):
            have = need in self.extensions
            return None if have else f"the layer does not declare the {need!r} extension ({self.extensions!r})"
        if need == "shares_state":
            return None if self.knobs.shares_state else "needs instances that share state (knob shares_state)"
        if need == "process_target":
            return None if self.knobs.process_target else "needs a second process target (knob process_target)"
        if need == "asgiref":
            return None if importlib.util.find_spec("asgiref") else "asgiref is not installed"
        raise ValueError(f"unknown capability {need!r}; known: {', '.join(CAPABILITIES)}")

    # -- layers and names ---------------------------------------------------------------------------------

    def make_layer(self, **overrides: Any) -> Any:
        """A new layer from the factory, closed (and flushed) when the check ends; not flushed now."""
        if not overrides and self._probe is not None:
            layer, self._probe = self._probe, None
        else:
            layer = self.factory(**overrides)
        self._layers.append(layer)
        return layer

    async def layer(self, **overrides: Any) -> Any:
        """A new, flushed layer.  With ``shares_state``, make every layer of a check before sending anything:
        flushing a new instance empties what the others stored."""
        layer = self.make_layer(**overrides)
        if "flush" in self.extensions:
            await self.bounded(layer.flush(), "flush() of a new layer")
        return layer

    @staticmethod
    def name(tag: str) -> str:
        """A named channel (or group) name no other check uses."""
        return f"spec.{tag}.{uuid.uuid4().hex[:10]}"

    async def channel(self, layer: Any, kind: str) -> str:
        """A fresh channel of ``kind``: ``"named"`` or ``"process"`` (a local channel of ``layer``)."""
        if kind == "named":
            return self.name("named")
        if kind == "process":
            return str(await layer.new_channel())
        raise ValueError(f"unknown channel kind {kind!r}")

    # -- receiving ----------------------------------------------------------------------------------------

    async def receive(self, layer: Any, channel: str, wait: float | None = None) -> Message:
        """The next message on ``channel``; fails the check if none arrives in time."""
        limit = self.knobs.receive_wait if wait is None else wait
        try:
            message: Message = await asyncio.wait_for(layer.receive(channel), limit)
        except asyncio.TimeoutError:
            raise AssertionError(f"no message arrived on {channel!r} within {limit:g}s") from None
        return message

    async def receive_many(self, layer: Any, channel: str, count: int) -> list[Message]:
        return [await self.receive(layer, channel) for _ in range(count)]

    async def expect_nothing(self, layer: Any, channel: str, why: str = "") -> None:
        """Fail if a message arrives on ``channel`` within the ``settle`` period."""
        try:
            message = await asyncio.wait_for(layer.receive(channel), self.knobs.settle)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected message on {channel!r}{': ' + why if why else ''}: {message!r}")

    async def outlive(self, seconds: float) -> None:
        """Sleep well past a period of ``seconds`` (expiry margins: twice the period plus a quarter second)."""
        await asyncio.sleep(seconds * 2 + 0.25)

    # -- running ------------------------------------------------------------------------------------------

    async def bounded(self, awaitable: Coroutine[Any, Any, T], what: str) -> T:
        """Await ``awaitable`` within the per-check time limit; a hang becomes an assertion failure."""
        try:
            return await asyncio.wait_for(awaitable, self.knobs.timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{what} did not finish within {self.knobs.timeout:g}s (hung?)") from None

    def run(self, check: Coroutine[Any, Any, None]) -> None:
        """Run an async check on a fresh event loop, then flush and close its layers on that loop."""
        try:
            self._in_thread(lambda: asyncio.run(self._run(check)), "the check's event loop")
        finally:
            check.close()  # no "never awaited" warning when the loop never started it

    async def _run(self, check: Coroutine[Any, Any, None]) -> None:
        try:
            await self.bounded(check, "the check")
        finally:
            await self.bounded(self.cleanup(), "flushing and closing the check's layers")

    def run_sync(self, check: Callable[[], None]) -> None:
        """Run a sync check in a thread without an event loop (as a sync Django view runs), then clean up."""
        try:
            self._in_thread(check, "the sync check")
        finally:
            self._in_thread(lambda: asyncio.run(self.bounded(self.cleanup(), "cleanup")), "the cleanup loop")

    def _in_thread(self, work: Callable[[], None], what: str) -> None:
        """Run ``work`` in a daemon thread: even a layer that blocks its event loop cannot hang the test run."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                work()
            except BaseException as exc:  # handed to the test thread below
                errors.append(exc)

        worker = threading.Thread(target=target, name="spec-check", daemon=True)
        worker.start()
        limit = 2 * self.knobs.timeout + 5  # the check's own limit, then the cleanup's, then a margin
        worker.join(limit)
        if worker.is_alive():
            raise AssertionError(f"{what} did not finish within {limit:g}s (blocked?); its thread is left behind")
        if errors:
            raise errors[0]

    async def cleanup(self) -> None:
        """Flush and close every layer the check made (close twice is fine: R-CLOSE-1)."""
        layers, self._layers = self._layers, []
        for layer in layers:
            if "flush" in self.extensions:
                await layer.flush()
            await layer.close()


def _mark(test: Callable[..., None], requirement: str, needs: tuple[str, ...]) -> Callable[..., None]:
    unknown = [need for need in needs if need not in CAPABILITIES]
    if unknown:
        raise ValueError(f"unknown capabilities {unknown} in a check of {requirement}")
    marked: Callable[..., None] = pytest.mark.requirement(requirement)(test)
    if needs:
        marked = pytest.mark.spec_needs(*needs)(marked)
    return marked


def check(requirement: str, *needs: str) -> Callable[[AsyncCheck], Callable[..., None]]:
    """Make an async method a sync pytest test of ``requirement`` that runs it on a fresh event loop."""

    def decorate(method: AsyncCheck) -> Callable[..., None]:
        @functools.wraps(method)
        def test(*args: Any, **kwargs: Any) -> None:
            kwargs["harness"].run(method(*args, **kwargs))

        return _mark(test, requirement, needs)

    return decorate


def sync_check(requirement: str, *needs: str) -> Callable[[SyncCheck], Callable[..., None]]:
    """Make a sync method (no event loop; it uses ``async_to_sync``) a test of ``requirement``."""

    def decorate(method: SyncCheck) -> Callable[..., None]:
        @functools.wraps(method)
        def test(*args: Any, **kwargs: Any) -> None:
            kwargs["harness"].run_sync(functools.partial(method, *args, **kwargs))

        return _mark(test, requirement, needs)

    return decorate
