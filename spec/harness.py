"""What every conformance check runs in: knobs, capabilities, layers made by the author's factory, event loops,
time limits.

A check is an ``async def`` method decorated with :func:`check`; pytest sees a plain sync test that runs the
coroutine on a fresh event loop (``asyncio.run``, in a watchdog thread) under the per-test time limit, so a layer
that hangs fails the check instead of hanging the run.  The harness assumes only what the Django Channels spec
asks of a layer: it builds every layer inside the check's running event loop, reads the layer's attributes there
(some layers answer only inside a loop), uses ``flush()`` only with the ``flush`` extension and ``close()`` only
when the layer has one, and closes every instance it made.  Layers made through :meth:`Harness.layer` are flushed
when made; all are flushed and closed (when they can be) when the check ends.

A check names the capabilities it needs (``@check("R-CAP-1", "capacity")``); a layer without one gets the
requirement shown as *not applicable* instead of failed.  Capabilities are discovered (``groups``/``flush`` from
``extensions``, ``close`` from the attribute) or declared (the knobs ``shares_state``, ``process_target`` and
``lacks``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import random
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import pytest

from .target import LayerFactory

__all__ = [
    "CAPABILITIES", "DECLARABLE", "NOT_APPLICABLE", "NOT_RUN", "OPERATIONS", "ROOM", "Harness", "Knobs", "Message",
    "check", "sync_check",
]

Message = dict[str, Any]
T = TypeVar("T")
AsyncCheck = Callable[..., Coroutine[Any, Any, None]]
SyncCheck = Callable[..., None]

#: Capabilities a design may legitimately lack: list the ones a layer lacks in the knob ``lacks``.  The checks
#: needing them are reported as not applicable (declared) instead of failed.
DECLARABLE: dict[str, str] = {
    "capacity": "send() raises ChannelFull when a channel holds `capacity` messages (pub/sub designs that drop at "
                "the receiver have no capacity the sender can see)",
    "named_backlog": "a named channel keeps messages sent before anybody receives on it (pub/sub designs lose "
                     "them: nobody is subscribed yet)",
    "foreign_members": "group_add/group_discard of a process-local channel that another instance created works "
                       "from this instance (designs whose groups subscribe the calling process cannot)",
    "multi_loop": "one instance works from several event loops, and its process-local channels are not bound to the "
                  "loop that created them (async_to_sync makes a new loop per call)",
}

#: The optional operations API (tier ``operations``): a capability each, discovered from the layer's attribute of
#: that name.  A layer without the method gets the requirements needing it as not applicable.
OPERATIONS: dict[str, str] = {
    "group_channels": "await group_channels(group) -> the members of a group, every process's",
    "group_size": "await group_size(group) -> how many members a group has",
    "send_many": "await send_many([(channel, message), ...]) -> one send per pair, in one call",
    "group_send_many": "await group_send_many([(group, message), ...]) -> one group_send per pair, in one call",
    "stats": "stats() -> this process's counters, a dict of str to int",
    "ping": "await ping() -> seconds one round trip to every server took",
}

#: Capabilities a check may need; anything else in ``needs`` is a bug in the suite.
CAPABILITIES = (
    "groups", "flush", "close", "shares_state", "process_target", "refused_target", "asgiref", "channels",
    *DECLARABLE, *OPERATIONS,
)

#: Room enough for the messages of any check whose writer does not wait for its reader (``capacity=ROOM``).
ROOM = 1000

#: Skip reasons start with one of these, so the report can tell "the requirement does not apply to this design"
#: from "the suite could not run it here".
NOT_APPLICABLE = "n/a: "
NOT_RUN = "not run: "


@dataclass(frozen=True)
class Knobs:
    """What the suite may assume about a layer: the layer class's ``spec_knobs`` over these defaults."""

    #: Two instances made by the factory behave like two processes on one server.
    shares_state: bool = False
    #: The shortest ``expiry`` / ``group_expiry`` (seconds) the layer honours precisely.  Integer seconds by
    #: default (the Channels spec's unit; Redis ``EXPIRE`` refuses fractions); set e.g. 0.2 for sub-second.
    min_expiry: float = 1
    #: A layer URL or dotted class/factory path another OS process can use to reach the same state (None: the
    #: requirements needing a second OS process are not run).
    process_target: str | None = None
    #: Options for the second process's layer (``from_url`` overrides, or constructor keywords for a class path).
    process_config: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds one check may take before it fails as hung.
    timeout: float = 20.0
    #: Seconds the suite watches a channel before concluding that nothing arrives.
    settle: float = 0.3
    #: The message size limit of the factory's layers (bytes, serialized).
    max_message_size: int = 1024 * 1024
    #: Capabilities of DECLARABLE this layer's design lacks, e.g. ``["capacity", "named_backlog"]``.
    lacks: tuple[str, ...] = ()
    #: A layer URL or dotted path whose server answers but refuses the client permanently (R-FAIL-1; None: n/a).
    refused_target: str | None = None
    #: Options for the ``refused_target`` layer.
    refused_config: Mapping[str, Any] = field(default_factory=dict)

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
        lacks = merged.get("lacks", ())
        if isinstance(lacks, str):
            lacks = [part.strip() for part in lacks.split(",") if part.strip()]
        merged["lacks"] = tuple(lacks)
        bad = sorted(set(merged["lacks"]) - set(DECLARABLE))
        if bad:
            raise ValueError(f"unknown capability in knob lacks: {', '.join(bad)}; declarable: {', '.join(DECLARABLE)}")
        knobs = cls(**merged)
        if not (knobs.min_expiry > 0 and knobs.timeout > 0 and knobs.settle > 0):
            raise ValueError(f"min_expiry, timeout and settle must be positive: {knobs.describe()}")
        return knobs

    @property
    def receive_wait(self) -> float:
        """Seconds a sent message may take to arrive before the suite calls it lost."""
        return self.timeout / 4

    def has(self, capability: str) -> bool:
        """Whether a declarable capability is there (not listed in ``lacks``)."""
        return capability not in self.lacks

    def describe(self) -> str:
        hidden = ("process_config", "refused_config")
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name not in hidden)


#: What ``python -m spec --help`` says about each knob.
KNOB_HELP: dict[str, str] = {
    "shares_state": "true if two instances made by the factory behave like two processes on one server (enables "
                    "the R-MULTI and R-FLUSH-3 checks; python -m spec discovers it when not given)",
    "min_expiry": "shortest expiry/group_expiry in seconds the layer honours precisely (default 1, an integer; "
                  "e.g. 0.2 for sub-second layers)",
    "process_target": "layer URL or dotted path a second OS process uses to reach the same state (R-MULTI-5; "
                      "python -m spec uses the target itself for a shared-state layer)",
    "process_config": "JSON object of options for the second process's layer (default: --config)",
    "timeout": "seconds one check may take before it fails as hung (default 20)",
    "settle": "seconds the suite watches a channel before concluding nothing arrives (default 0.3)",
    "max_message_size": "the layer's message size limit in bytes, serialized (default 1048576)",
    "refused_target": "layer URL or dotted path whose server refuses the client permanently, e.g. a wrong "
                      "password (R-FAIL-1; not applicable without it)",
    "refused_config": "JSON object of options for the refused_target layer",
    "lacks": f"capabilities the design lacks, a JSON list or comma-separated ({', '.join(DECLARABLE)}; see "
             "below)",
}


class Harness:
    """Per-check helper: makes layers, names channels, receives with time limits, runs the check."""

    def __init__(
        self, factory: LayerFactory, knobs: Knobs, seed: str, probe: Any = None,
        suite_knobs: Mapping[str, Any] | None = None, needs: Iterable[str] = (),
    ) -> None:
        """``knobs``: what is known before a layer exists; with ``suite_knobs`` given, the knobs are resolved
        again from the layer class's ``spec_knobs`` once the first layer is made (inside the check's loop)."""
        self.factory = factory
        self.knobs = knobs
        self.rng = random.Random(seed)  # reproducible schedules for a given test id
        self.needs = tuple(needs)
        self._suite_knobs = suite_knobs
        # The layer that tells the suite its class and extensions; it becomes the check's first plain layer().
        self._probe: Any = probe
        self._prepared = False
        self._probe_taken = False
        self.extensions: list[str] = []
        self.has_close = False
        #: The methods of :data:`OPERATIONS` the layer has.
        self.operations: frozenset[str] = frozenset()
        self._layers: list[Any] = []
        #: Errors of flush()/close() while cleaning up: they do not fail the check (R-FLUSH/R-CLOSE judge those).
        self.cleanup_errors: list[str] = []

    # -- capabilities -------------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Make the probe layer inside the running loop and read what it declares (once per check)."""
        if self._prepared:
            return
        self._prepared = True
        if self._probe is None:
            self._probe = self.factory()
        self._layers.append(self._probe)
        self._read_declarations(self._probe)

    def _read_declarations(self, layer: Any) -> None:
        if self._suite_knobs is not None:
            self.knobs = Knobs.resolve(getattr(type(layer), "spec_knobs", None), self._suite_knobs)
        declared = getattr(layer, "extensions", None)
        self.extensions = [str(name) for name in declared] if isinstance(declared, (list, tuple)) else []
        self.has_close = callable(getattr(layer, "close", None))
        self.operations = frozenset(name for name in OPERATIONS if _has_method(layer, name))

    def skip_unless(self, needs: Iterable[str]) -> None:
        """Skip the check, with the reason, when the layer lacks a capability it needs."""
        for need in needs:
            reason = self._lacks(need)
            if reason:
                pytest.skip(reason)

    def require(self, *needs: str) -> None:
        """Inside a check: end it as not applicable when the layer lacks a capability (e.g. for one variant)."""
        self.skip_unless(needs)

    def can(self, capability: str) -> bool:
        """Whether the layer has ``capability`` (for checks that adapt instead of skipping)."""
        return self._lacks(capability) is None

    def _lacks(self, need: str) -> str | None:
        if need in ("groups", "flush"):
            have = need in self.extensions
            return None if have else f"{NOT_APPLICABLE}the layer does not declare the {need!r} extension " \
                                     f"(extensions={self.extensions!r})"
        if need == "close":
            return None if self.has_close else f"{NOT_APPLICABLE}the layer has no close() (the Channels spec has none)"
        if need in OPERATIONS:
            return None if need in self.operations else f"{NOT_APPLICABLE}the layer has no {need}() (optional: " \
                                                        "the operations API of this project)"
        if need in DECLARABLE:
            return None if self.knobs.has(need) else f"{NOT_APPLICABLE}declared: the layer lacks {need!r} " \
                                                     f"(knob lacks)"
        if need == "shares_state":
            return None if self.knobs.shares_state else f"{NOT_APPLICABLE}instances do not share state " \
                                                        f"(knob shares_state)"
        if need == "process_target":
            if self.knobs.process_target:
                return None
            if not self.knobs.shares_state:
                return f"{NOT_APPLICABLE}instances do not share state, so no other process can (knob shares_state)"
            return f"{NOT_RUN}no second-process target was given (knob process_target)"
        if need == "refused_target":
            return None if self.knobs.refused_target else f"{NOT_APPLICABLE}no target the server refuses " \
                                                          f"(knob refused_target)"
        if need == "channels":
            return None if importlib.util.find_spec("channels") else f"{NOT_APPLICABLE}Django Channels is not " \
                                                                     f"installed"
        if need == "asgiref":
            return None if importlib.util.find_spec("asgiref") else f"{NOT_RUN}asgiref is not installed"
        raise ValueError(f"unknown capability {need!r}; known: {', '.join(CAPABILITIES)}")

    # -- layers and names ---------------------------------------------------------------------------------

    def make_layer(self, **overrides: Any) -> Any:
        """A new layer from the factory, closed (and flushed) when the check ends; not flushed now.  Built inside
        the check's running loop, or (from sync code) on a short-lived loop of its own: some layers need one.

        ``capacity=ROOM`` (or more) alone asks for room for a check's messages, not for the capacity feature: a
        layer that takes no ``capacity`` option is made without it."""
        if not overrides and self._probe is not None and not self._probe_taken:
            self._probe_taken = True
            return self._probe
        try:
            layer = self._build(overrides)
        except TypeError as exc:
            if set(overrides) != {"capacity"} or overrides["capacity"] < ROOM or "capacity" not in str(exc):
                raise
            layer = self._build({})
        self._layers.append(layer)
        return layer

    def _build(self, overrides: Mapping[str, Any]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # sync code: build it as an async caller would have, then use it from here
            async def build() -> Any:
                return self.factory(**overrides)

            return asyncio.run(build())
        return self.factory(**overrides)

    async def layer(self, **overrides: Any) -> Any:
        """A new, flushed layer.  With ``shares_state``, make every layer of a check before sending anything:
        flushing a new instance empties what the others stored."""
        await self.prepare()
        layer = self.make_layer(**overrides)
        if "flush" in self.extensions:
            await self.bounded(layer.flush(), "flush() of a new layer")
        return layer

    @staticmethod
    def name(tag: str) -> str:
        """A named channel (or group) name no other check uses."""
        return f"spec.{tag}.{uuid.uuid4().hex[:10]}"

    async def new_channel(self, layer: Any, prefix: str | None = None) -> str:
        """``layer.new_channel()`` (or ``new_channel(prefix)``), checked to be a str.  Its form (one ``!``) is
        R-PROC-1's business: other checks use whatever channel the layer hands out."""
        name = await (layer.new_channel() if prefix is None else layer.new_channel(prefix))
        call = "new_channel()" if prefix is None else f"new_channel({prefix!r})"
        assert isinstance(name, str), f"{call} returned {type(name).__name__} {name!r}, not a str"
        return name

    @staticmethod
    def non_local(name: str) -> str | None:
        """The non-local part of a process-local channel name (up to and including ``!``); None for a name from
        new_channel() without '!' (R-PROC-1 reports that)."""
        return name[: name.index("!") + 1] if "!" in name else None

    async def channel(self, layer: Any, kind: str) -> str:
        """A fresh channel of ``kind``: ``"named"`` or ``"process"`` (a local channel of ``layer``)."""
        if kind == "named":
            return self.name("named")
        if kind == "process":
            return await self.new_channel(layer)
        raise ValueError(f"unknown channel kind {kind!r}")

    def expiry(self, periods: float = 1) -> float:
        """``periods`` times ``min_expiry``: an ``int`` when whole (the Channels spec's expiries are integers)."""
        value = self.knobs.min_expiry * periods
        return int(value) if float(value).is_integer() else value

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

    async def listening(self, *channels: str) -> None:
        """Let receives just started on ``channels`` get ready before a send.  A layer whose named channels keep
        nothing sent before a receive (pub/sub designs) subscribes inside receive(): a named channel gets the
        settle period, so that checks of other features never depend on a named backlog."""
        await asyncio.sleep(self.knobs.settle if any("!" not in channel for channel in channels) else 0)

    def reader(self, layer: Any, channel: str, count: int = 1) -> asyncio.Task[list[Message]]:
        """Start receiving ``count`` messages on ``channel`` now (await :meth:`listening` before sending)."""
        return asyncio.ensure_future(self.receive_many(layer, channel, count))

    async def deliver(self, layer: Any, channel: str, message: Message, sender: Any = None) -> Message:
        """Send ``message`` to ``channel`` while a receive already waits on it, and return what arrives: a round
        trip that needs no backlog on named channels."""
        waiting = self.reader(layer, channel)
        await self.listening(channel)
        await (sender or layer).send(channel, message)
        return (await waiting)[0]

    async def expect_nothing(self, layer: Any, channel: str, why: str = "") -> None:
        """Fail if a message arrives on ``channel`` within the ``settle`` period.

        The receive that watches is never cancelled (a cancelled receive unsubscribes on some pub/sub designs, and
        what cancellation does is R-CANCEL's business): after the settle period the suite sends a marker to the
        channel, which that same receive must return; anything else it returns is the unexpected message."""
        waiting = asyncio.ensure_future(layer.receive(channel))
        done, _ = await asyncio.wait({waiting}, timeout=self.knobs.settle)
        if not done:
            marker = {"spec_marker": uuid.uuid4().hex}
            try:
                await layer.send(channel, marker)
                done, _ = await asyncio.wait({waiting}, timeout=self.knobs.receive_wait)
            except Exception:  # e.g. ChannelFull on a process's shared capacity: nothing more to learn here
                done = set()
            if not done:  # the marker did not come back: nothing unexpected was seen, whatever became of it
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                return
            if waiting.exception() is None and waiting.result() == marker:
                return
        message = waiting.result()  # raises what receive() raised
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
            await self.bounded(self.prepare(), "making the first layer")
            self.skip_unless(self.needs)
            await self.bounded(check, "the check")
        finally:
            await self.cleanup()

    def run_sync(self, check: Callable[[], None]) -> None:
        """Run a sync check in a thread without an event loop (as a sync Django view runs), then clean up.  The
        first layer is made (and closed) on a loop of its own to read what the layer declares."""

        async def declarations() -> None:
            try:
                await self.bounded(self.prepare(), "making the first layer")
            finally:
                probe, self._probe = self._probe, None
                self._layers = [layer for layer in self._layers if layer is not probe]
                await self._close(probe)

        try:
            self._in_thread(lambda: asyncio.run(declarations()), "reading the layer's declarations")
            self.skip_unless(self.needs)
            self._in_thread(check, "the sync check")
        finally:
            self._in_thread(lambda: asyncio.run(self.cleanup()), "the cleanup loop")

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
        started = time.monotonic()
        # The check's own limit, then the cleanup's, then a margin (the knobs may change once a layer exists).
        while worker.is_alive() and time.monotonic() - started < 2 * self.knobs.timeout + 5:
            worker.join(0.2)
        if worker.is_alive():
            limit = 2 * self.knobs.timeout + 5
            raise AssertionError(f"{what} did not finish within {limit:g}s (blocked?); its thread is left behind")
        if errors:
            raise errors[0]

    async def cleanup(self) -> None:
        """Flush and close every layer the check made, as far as the layer can; never raises (a layer whose
        flush() or close() fails is judged by R-FLUSH / R-CLOSE, not by every check)."""
        layers, self._layers = self._layers, []
        for layer in layers:
            if "flush" in self.extensions:
                await self._quietly(layer.flush(), f"flush() of {type(layer).__name__}")
            await self._close(layer)

    async def _close(self, layer: Any) -> None:
        close = getattr(layer, "close", None)
        if callable(close):
            await self._quietly(close(), f"close() of {type(layer).__name__}")

    async def _quietly(self, awaitable: Any, what: str) -> None:
        try:
            await asyncio.wait_for(awaitable, self.knobs.timeout)
        except asyncio.TimeoutError:
            self.cleanup_errors.append(f"{what} did not finish within {self.knobs.timeout:g}s")
        except Exception as exc:
            self.cleanup_errors.append(f"{what} raised {type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            self.cleanup_errors.append(f"{what} was cancelled")


def _has_method(layer: Any, name: str) -> bool:
    """Whether ``layer`` has a callable ``name``; a layer whose attribute lookup raises has none."""
    try:
        return callable(getattr(layer, name, None))
    except Exception:
        return False


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
