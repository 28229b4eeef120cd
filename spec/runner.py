"""Running the suite against a target in-process: ``run_suite`` (structured results) and ``run_report`` (the
printed report, optionally JSON too).

Before any check the runner makes one layer inside an event loop (a server that cannot be reached is reported
then, in one line), reads what it declares, discovers whether two instances share state, and confines the run to a
fresh ``prefix`` when the target takes one, so that ``flush()`` cannot touch what others stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shlex
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

from .harness import Knobs
from .report import RequirementCollector, RequirementResult, render, tier_verdicts
from .requirements import GRADED_TIERS, TIERS
from .suite import ConformanceSuite
from .target import LayerFactory, describe, make_factory

__all__ = [
    "EXIT_STATUSES", "FlushRefused", "SuiteRun", "TargetUnusable", "run_report", "run_suite", "setup_django",
]

#: Exit statuses of ``python -m spec`` and ``layers check``.
EXIT_PASS, EXIT_CORE, EXIT_USAGE, EXIT_CRASH, EXIT_RECOMMENDED, EXIT_STRICT, EXIT_UNUSABLE = 0, 1, 2, 3, 4, 5, 6
EXIT_STATUSES: dict[int, str] = {
    EXIT_PASS: "every applicable core and recommended requirement passed (strict ones too, with --strict)",
    EXIT_CORE: "a core requirement failed (the layer is broken for Django Channels)",
    EXIT_USAGE: "bad command line, target, option or knob, or a flush the runner refused; nothing ran",
    EXIT_CRASH: "the runner itself crashed (pytest stopped abnormally); the report shows what ran",
    EXIT_RECOMMENDED: "core passed, a recommended requirement failed",
    EXIT_STRICT: "with --strict: core and recommended passed, a strict or operations requirement was not met",
    EXIT_UNUSABLE: "no layer could be made or used (e.g. the server is unreachable); nothing ran",
}

#: The exit status when a tier fails (the ungraded ones only with --strict).
_TIER_EXIT = {"core": EXIT_CORE, "recommended": EXIT_RECOMMENDED, "strict": EXIT_STRICT, "operations": EXIT_STRICT}

# The generated test module fetches its class from here (pytest imports it in this process).
_PENDING: list[type] = []
_MODULE = "from spec.runner import _PENDING\n\nTestTarget = _PENDING[-1]\n"
#: Default pytest options: native tracebacks (pytest's own formatting re-parses source and can die with
#: "AST constructor recursion depth mismatch" on CPython 3.11 for long chained tracebacks).
#: The suite runs its own event loops: pytest-asyncio (and test-order shufflers) stay out of the way.
_PYTEST_DEFAULTS = ["-q", "--tb=native", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:asyncio"]


#: Why the probe finds a capability lacking, for the report.
_WHY = {
    "named_backlog": "a named channel kept nothing sent before its first receive, or refused it",
    "capacity": "the layer takes no `capacity` option, so the suite cannot set one",
}


class TargetUnusable(Exception):
    """No layer could be made from the target, or the first one could not send or receive."""


class FlushRefused(ValueError):
    """The run would flush state the runner cannot confine to itself (and ``--yes-flush`` was not given)."""


@dataclass
class Probe:
    """What the runner learnt from the first layers it made, before any check."""

    layer_class: type
    extensions: list[str]
    has_close: bool
    spec_knobs: dict[str, Any]
    shares_state: bool | None = None
    prefix_accepted: bool = False
    #: Declarable capabilities the probe found missing (only ``named_backlog`` is discovered).
    lacking: list[str] = field(default_factory=list)


@dataclass
class SuiteRun:
    """The outcome of one run of the suite against one target."""

    target: str
    knobs: Knobs
    results: dict[str, RequirementResult]
    pytest_status: int
    pytest_output: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    crash: str | None = None
    #: Whether an unmet strict requirement (this project's additions) fails the run; by default it is reported only.
    strict: bool = False

    @property
    def failed(self) -> list[str]:
        return [rid for rid, result in self.results.items() if result.failed]

    @property
    def verdicts(self) -> dict[str, str]:
        return tier_verdicts(self.results)

    @property
    def exit_code(self) -> int:
        """See :data:`EXIT_STATUSES`: a crash, else the most fundamental tier that failed, else 0."""
        if self.crash is not None or self.pytest_status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return EXIT_CRASH
        verdicts = self.verdicts
        for tier in TIERS:
            if verdicts[tier] == "FAIL" and (tier in GRADED_TIERS or self.strict):
                return _TIER_EXIT[tier]
        return EXIT_PASS

    def as_json(self) -> dict[str, Any]:
        """Everything the report shows, for tools (the compatibility table)."""
        return {
            "target": self.target, "knobs": _jsonable(self.knobs.__dict__), "verdicts": self.verdicts,
            "graded_tiers": [tier for tier in TIERS if tier in GRADED_TIERS or self.strict],
            "exit_status": self.exit_code, "exit_code": self.exit_code, "exit_meaning": EXIT_STATUSES[self.exit_code],
            "notes": self.notes,
            "crash": self.crash, "seconds": round(self.seconds, 1),
            "requirements": [result.as_json() for result in self.results.values()],
        }


def setup_django(settings: str | None = None) -> bool:
    """Set ``DJANGO_SETTINGS_MODULE`` (when given) and call ``django.setup()`` when a settings module is known, as
    layers built on Django's ORM need before they can be imported.  The environment variable is inherited by the
    second process of R-MULTI-5, which does the same.  Returns whether Django was set up."""
    if settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return False
    import django

    django.setup()
    return True


def run_suite(
    target: str | LayerFactory,
    config: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Any] | None = None,
    pytest_args: Sequence[str] | str = (),
    live: bool = False,
    *,
    yes_flush: bool = False,
    django_settings: str | None = None,
    strict: bool = False,
) -> SuiteRun:
    """Run the whole conformance suite against ``target``: a layer URL, a dotted path to a layer class or to a
    factory function (``package.module.make_layer``, called with the options), or such a callable itself.

    ``config`` is passed to every layer (URL: as ``from_url`` overrides; class or factory: as keywords);
    ``knobs`` override the layer class's ``spec_knobs``.  Unless ``yes_flush``, the run works under a fresh
    ``prefix`` when the target accepts one, and raises :class:`FlushRefused` for a shared-state layer it cannot
    confine.  When the layer shares state and no ``process_target`` is given, the target itself (with the same
    options) is what the second process of R-MULTI-5 uses.  ``pytest_args``: extra pytest arguments (a string is
    split like a shell does); ``live`` lets pytest's own output through instead of capturing it.  ``strict``: an
    unmet strict requirement fails the run (by default strict results are reported, not graded).

    Raises ``ValueError``/``ImportError`` for a bad target or knob, :class:`TargetUnusable` when no layer works.
    """
    setup_django(django_settings)
    chosen = dict(knobs or {})
    Knobs.resolve(chosen)  # an unknown knob is an error before anything is made
    options = dict(config or {})
    notes: list[str] = []
    unique = "spec" + uuid.uuid4().hex[:8]
    probe = _probe(make_factory(target, options), chosen, None if yes_flush else unique)
    if probe.prefix_accepted:
        configured = options.get("prefix")
        options["prefix"] = unique
        notes.append(
            f"flush safety: every layer is made with prefix={unique!r}, a fresh prefix of this run"
            + (f" instead of the configured {configured!r}" if configured is not None else "")
            + " (--yes-flush uses the configured options as given)"
        )
    elif yes_flush:
        notes.append("flush safety: --yes-flush given: the layers use the configured options and are flushed")
    elif probe.shares_state and "flush" in probe.extensions:
        raise FlushRefused(
            f"{describe(target)} keeps state that other instances share, and it takes no 'prefix' option, so "
            "this run cannot confine itself: flush() would delete what others stored there. Point it at a server "
            "or database that holds nothing you need and pass --yes-flush."
        )
    factory = make_factory(target, options)
    suite_knobs = dict(chosen)
    if probe.shares_state is not None and "shares_state" not in chosen:
        suite_knobs["shares_state"] = probe.shares_state
    if probe.lacking:
        declared_lacks = Knobs.resolve(probe.spec_knobs, chosen).lacks
        suite_knobs["lacks"] = [*declared_lacks, *probe.lacking]
        why = "; ".join(_WHY[name] for name in probe.lacking)
        notes.append(f"discovered lacking: {', '.join(probe.lacking)} ({why}), so the checks needing it are not "
                     "applicable")
    resolved = Knobs.resolve(probe.spec_knobs, suite_knobs)
    if resolved.shares_state and not resolved.process_target and isinstance(target, str):
        suite_knobs["process_target"] = target
        suite_knobs.setdefault("process_config", options)
        resolved = Knobs.resolve(probe.spec_knobs, suite_knobs)
    if probe.prefix_accepted and resolved.process_target == target:
        # The second process works under this run's prefix too, whatever process_config was given.
        suite_knobs["process_config"] = {**dict(resolved.process_config), "prefix": unique}
        resolved = Knobs.resolve(probe.spec_knobs, suite_knobs)
    notes.extend(_capability_notes(probe, resolved, chosen))
    suite = type("TestTarget", (ConformanceSuite,), {"spec_knobs": suite_knobs, "layer_factory": _fixture(factory)})
    collector = RequirementCollector()
    extra = shlex.split(pytest_args) if isinstance(pytest_args, str) else list(pytest_args)
    started = time.monotonic()
    status, output, crash = _run_pytest(suite, collector, extra, live)
    results = collector.results(complete=True)
    if crash is None and status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        crash = f"pytest stopped abnormally (exit status {status})"
    return SuiteRun(describe(target), resolved, results, status, output, time.monotonic() - started, notes, crash,
                    strict)


def run_report(
    target: str | LayerFactory,
    config: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
    pytest_args: Sequence[str] | str = (),
    live: bool = False,
    *,
    yes_flush: bool = False,
    django_settings: str | None = None,
    json_path: str | Path | None = None,
    strict: bool = False,
) -> int:
    """Run the suite against ``target``, print the report tier by tier; return the exit status
    (:data:`EXIT_STATUSES`).  ``json_path``: also write the results as JSON there."""
    stream = out or sys.stdout
    run = run_suite(target, config, knobs, pytest_args, live, yes_flush=yes_flush, django_settings=django_settings,
                    strict=strict)
    print(f"Conformance of {run.target} to the channel-layer spec (spec/SPEC.md)", file=stream)
    for note in run.notes:
        print(f"  {note}", file=stream)
    print(f"  knobs: {run.knobs.describe()}", file=stream)
    print("", file=stream)
    for line in render(run.results, strict=strict):
        print(line, file=stream)
    print(f"Ran in {run.seconds:.1f}s. Exit status {run.exit_code}: {EXIT_STATUSES[run.exit_code]}.", file=stream)
    if run.crash is not None:
        print(f"\nTHE RUNNER CRASHED: {run.crash}; requirements it did not reach are shown as untested.\n"
              f"pytest's output:\n{_tail(run.pytest_output)}", file=stream)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(run.as_json(), indent=1) + "\n", encoding="utf-8")
    return run.exit_code


# -- before any check -------------------------------------------------------------------------------------------


def _probe(factory: LayerFactory, knobs: Mapping[str, Any], prefix: str | None) -> Probe:
    """Make a layer inside an event loop (trying ``prefix=`` first when given), read its declarations, and
    discover whether two instances share state; every instance made is closed."""
    limits = Knobs.resolve(knobs)
    result: list[Probe] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(_probe_on_loop(factory, knobs, prefix, limits)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=work, name="spec-probe", daemon=True)
    worker.start()
    worker.join(4 * limits.timeout)
    if worker.is_alive():
        raise TargetUnusable(f"making and using the first layer did not finish within {4 * limits.timeout:g}s")
    if errors:
        error = errors[0]
        if isinstance(error, (TargetUnusable, ValueError, ImportError)):
            raise error
        raise TargetUnusable(_error_text(error)) from error
    return result[0]


async def _probe_on_loop(
    factory: LayerFactory, knobs: Mapping[str, Any], prefix: str | None, limits: Knobs
) -> Probe:
    """Probe with ``prefix`` given to the factory; a layer refusing it (when made or, for lazy layers, when first
    used) is probed again without."""
    if prefix is not None:
        try:
            return await _probe_once(factory, knobs, prefix, limits)
        except Exception as exc:
            if "prefix" not in str(exc):
                raise
    return await _probe_once(factory, knobs, None, limits)


async def _probe_once(factory: LayerFactory, knobs: Mapping[str, Any], prefix: str | None, limits: Knobs) -> Probe:
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        layer = factory(**overrides) if prefix is None else factory(prefix=prefix, **overrides)
        made.append(layer)
        return layer

    try:
        layer = make()
        declared = getattr(layer, "extensions", None)
        probe = Probe(
            type(layer), [str(e) for e in declared] if isinstance(declared, (list, tuple)) else [],
            callable(getattr(layer, "close", None)), dict(getattr(type(layer), "spec_knobs", None) or {}),
            prefix_accepted=prefix is not None,
        )
        declared_knobs = Knobs.resolve(probe.spec_knobs, knobs)
        await _first_send(layer, declared_knobs)
        if "shares_state" in knobs or "shares_state" in probe.spec_knobs:
            probe.shares_state = declared_knobs.shares_state
        else:
            probe.shares_state = await _shares_state(layer, make(), declared_knobs)
        if declared_knobs.has("named_backlog") and not await _keeps_named_backlog(layer, declared_knobs):
            probe.lacking.append("named_backlog")
        if declared_knobs.has("capacity") and not _takes_option(make, "capacity", 3):
            probe.lacking.append("capacity")
        return probe
    finally:
        for layer in made:
            close = getattr(layer, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), limits.timeout)


async def _first_send(layer: Any, knobs: Knobs) -> None:
    """new_channel() and one send to it, and its receive: a layer that cannot be made to do this much (an
    unreachable server) is unusable; a receive that fails is left for the checks to report."""
    try:
        channel = await asyncio.wait_for(layer.new_channel(), knobs.timeout)
        await asyncio.wait_for(layer.send(channel, {"probe": True}), knobs.timeout)
    except Exception as exc:
        raise TargetUnusable(f"the first new_channel() and send failed: {_error_text(exc)}") from exc
    with contextlib.suppress(Exception):
        await asyncio.wait_for(layer.receive(channel), knobs.receive_wait)


async def _shares_state(first: Any, second: Any, knobs: Knobs) -> bool:
    """Whether a message another instance sends to ``first``'s process-local channel reaches a receive waiting on
    it (only process-local channels: some layers refuse named ones)."""
    waiting: asyncio.Future[Any] | None = None
    try:
        channel = await asyncio.wait_for(first.new_channel(), knobs.timeout)
        waiting = asyncio.ensure_future(first.receive(channel))
        await asyncio.sleep(knobs.settle)
        await asyncio.wait_for(second.send(channel, {"probe": True}), knobs.timeout)
        await asyncio.wait_for(asyncio.shield(waiting), max(2.0, 4 * knobs.settle))
    except Exception:  # timed out, or the layer refused: no shared state the suite can use
        return False
    finally:
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
    return True


def _takes_option(make: Callable[..., Any], option: str, value: Any) -> bool:
    """Whether the factory accepts the keyword ``option`` (the suite configures capacity through it)."""
    try:
        make(**{option: value})
    except TypeError as exc:
        return option not in str(exc)
    return True


def _error_text(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, asyncio.TimeoutError) and not text:
        return "it timed out (is the server reachable?)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _keeps_named_backlog(layer: Any, knobs: Knobs) -> bool:
    """Whether a message sent to a named channel nobody receives on yet is there for a later receive().  A layer
    refusing named channels keeps no backlog either (the checks of named channels report the refusal)."""
    channel = f"spec.backlog.{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.wait_for(layer.send(channel, {"probe": True}), knobs.timeout)
        await asyncio.wait_for(layer.receive(channel), max(2.0, 4 * knobs.settle))
    except Exception:
        return False
    return True


def _capability_notes(probe: Probe, knobs: Knobs, chosen: Mapping[str, Any]) -> list[str]:
    notes = [
        f"layer class: {probe.layer_class.__module__}.{probe.layer_class.__qualname__}; "
        f"extensions={probe.extensions!r}; close(): "
        + ("present" if probe.has_close else "absent, so R-CLOSE-* are not applicable"),
    ]
    source = "declared" if "shares_state" in chosen or "shares_state" in probe.spec_knobs else "discovered"
    if knobs.shares_state:
        notes.append(f"shared state: {source} (a message one instance sends to another's process-local channel "
                     "arrives); cross-process checks run")
        if not knobs.process_target:
            notes.append("NOT RUN: the requirements needing a second OS process (R-MULTI-5): no process_target "
                         "(give --knob process_target=URL-or-dotted-path)")
    else:
        notes.append(f"shared state: none ({source}: what one instance sends to another's process-local channel "
                     "never arrives), so "
                     "the cross-process requirements (R-MULTI-*, R-FLUSH-3) are not applicable; if that is wrong, "
                     "give --knob shares_state=true")
    if knobs.lacks:
        notes.append(f"capabilities lacking (knob lacks, or discovered): {', '.join(knobs.lacks)}")
    return notes


# -- pytest -----------------------------------------------------------------------------------------------------


def _fixture(factory: LayerFactory) -> Any:
    def layer_factory(self: object) -> LayerFactory:
        return factory

    return pytest.fixture(layer_factory)


def _run_pytest(
    suite: type, collector: RequirementCollector, extra: Sequence[str], live: bool
) -> tuple[int, str, str | None]:
    """Run ``suite`` with pytest in this process, its terminal output captured unless ``live``; a crash of pytest
    itself is returned as text, never raised, so a report is always printed."""
    _PENDING.append(suite)
    output = io.StringIO()
    crash: str | None = None
    status = int(pytest.ExitCode.INTERNAL_ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="layers-spec-") as tmp:
            # A new module name per run: pytest caches imported test modules by name within a process.
            module = Path(tmp) / f"test_conformance_{uuid.uuid4().hex[:12]}.py"
            module.write_text(_MODULE)
            (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
            args = [str(module), *_PYTEST_DEFAULTS, "--import-mode=importlib", f"--rootdir={tmp}",
                    "-c", str(Path(tmp) / "pytest.ini"), *extra]
            with contextlib.redirect_stdout(sys.stdout if live else output):
                status = int(pytest.main(args, plugins=[collector]))
    except Exception as exc:  # pytest itself failed: keep what was collected
        crash = f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc, limit=-5))}"
    finally:
        _PENDING.remove(suite)
    return status, output.getvalue(), crash


def _tail(text: str, lines: int = 40) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept) or "(no output)"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, (tuple, set)) else repr(o)))
    return value
