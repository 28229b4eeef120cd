"""Running the suite against a target in-process: ``run_suite`` (results) and ``run_report`` (printed report)."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

from .harness import Knobs
from .report import RequirementCollector, RequirementResult, render
from .suite import ConformanceSuite
from .target import LayerFactory, describe, make_factory

__all__ = ["SuiteRun", "run_report", "run_suite"]

# The generated test module fetches its class from here (pytest imports it in this process).
_PENDING: list[type] = []
_MODULE = "from spec.runner import _PENDING\n\nTestTarget = _PENDING[-1]\n"


@dataclass
class SuiteRun:
    """The outcome of one run of the suite against one target."""

    target: str
    knobs: Knobs
    results: dict[str, RequirementResult]
    pytest_status: int
    pytest_output: str
    seconds: float

    @property
    def failed(self) -> list[str]:
        return [rid for rid, result in self.results.items() if result.failed]

    @property
    def exit_code(self) -> int:
        """0 only when every applicable requirement passed and pytest itself ran normally."""
        if self.pytest_status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return int(self.pytest_status) or 1
        return 1 if self.failed else 0


def run_suite(
    target: str | LayerFactory,
    config: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Any] | None = None,
    pytest_args: Sequence[str] = (),
    live: bool = False,
) -> SuiteRun:
    """Run the whole conformance suite against ``target`` (a layer URL, a dotted class path or a class).

    ``config`` is passed to every layer (URL: as ``from_url`` overrides; class: as constructor keywords);
    ``knobs`` override the layer class's ``spec_knobs``.  When the layer shares state and no ``process_target``
    is given, the target itself (with ``config``) is what the second process of R-MULTI-5 uses.
    ``live`` lets pytest's own output through (e.g. with ``pytest_args=["-v"]``) instead of capturing it.
    """
    factory = make_factory(target, config)
    suite_knobs = _knobs_for(target, config, factory, knobs)
    resolved = Knobs.resolve(getattr(type(factory()), "spec_knobs", None), suite_knobs)
    suite = type("TestTarget", (ConformanceSuite,), {"spec_knobs": suite_knobs, "layer_factory": _fixture(factory)})
    collector = RequirementCollector()
    started = time.monotonic()
    status, output = _run_pytest(suite, collector, pytest_args, live)
    return SuiteRun(describe(target), resolved, collector.results(), status, output, time.monotonic() - started)


def run_report(
    target: str | LayerFactory,
    config: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
    pytest_args: Sequence[str] = (),
    live: bool = False,
) -> int:
    """Run the suite against ``target``, print the requirement-by-requirement report; return the exit status."""
    stream = out or sys.stdout
    run = run_suite(target, config, knobs, pytest_args, live)
    print(f"Conformance of {run.target} to the channel-layer spec (spec/SPEC.md)", file=stream)
    print(f"knobs: {run.knobs.describe()}", file=stream)
    print("", file=stream)
    for line in render(run.results):
        print(line, file=stream)
    print(f"Ran in {run.seconds:.1f}s.", file=stream)
    if run.pytest_status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"pytest stopped abnormally ({run.pytest_status!r}):\n{run.pytest_output}", file=stream)
    return run.exit_code


def _knobs_for(
    target: str | LayerFactory, config: Mapping[str, Any] | None, factory: LayerFactory, knobs: Mapping[str, Any] | None
) -> dict[str, Any]:
    chosen = dict(knobs or {})
    declared = Knobs.resolve(getattr(type(factory()), "spec_knobs", None), chosen)
    if declared.shares_state and "process_target" not in chosen and isinstance(target, str):
        chosen["process_target"] = target
        if config:
            chosen.setdefault("process_config", dict(config))
    return chosen


def _fixture(factory: LayerFactory) -> Any:
    def layer_factory(self: object) -> LayerFactory:
        return factory

    return pytest.fixture(layer_factory)


def _run_pytest(suite: type, collector: RequirementCollector, extra: Sequence[str], live: bool) -> tuple[int, str]:
    """Run ``suite`` with pytest in this process, its terminal output captured unless ``live``."""
    _PENDING.append(suite)
    output = io.StringIO()
    try:
        with tempfile.TemporaryDirectory(prefix="layers-spec-") as tmp:
            # A new module name per run: pytest caches imported test modules by name within a process.
            module = Path(tmp) / f"test_conformance_{uuid.uuid4().hex[:12]}.py"
            module.write_text(_MODULE)
            (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
            args = [str(module), "-q", "-p", "no:cacheprovider", "--import-mode=importlib", f"--rootdir={tmp}",
                    "-c", str(Path(tmp) / "pytest.ini"), *extra]
            with contextlib.redirect_stdout(sys.stdout if live else output):
                status = pytest.main(args, plugins=[collector])
    finally:
        _PENDING.remove(suite)
    return int(status), output.getvalue()
