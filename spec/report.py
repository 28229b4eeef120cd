"""Per-requirement results: collected from pytest reports, rendered as the conformance report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from .requirements import requirements

__all__ = ["RequirementCollector", "RequirementResult", "TestOutcome", "render", "summarize"]

PASS, FAIL, SKIP = "pass", "FAIL", "skip"
UNTESTED = "untested"  # a requirement of SPEC.md no collected test checks: the suite is incomplete
NO_REQUIREMENT = "(none)"  # tests without a requirement marker


@dataclass
class TestOutcome:
    """What happened to one test (all its phases)."""

    __test__ = False  # not a pytest test class

    nodeid: str
    requirement: str
    status: str = PASS
    detail: str = ""


@dataclass
class RequirementResult:
    id: str
    title: str
    status: str = UNTESTED
    detail: str = ""
    tests: list[TestOutcome] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in (FAIL, UNTESTED)


class RequirementCollector:
    """A pytest plugin object: maps every test to its requirement and records its outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, TestOutcome] = {}
        self._requirement_of: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("requirement")
            self._requirement_of[item.nodeid] = str(marker.args[0]) if marker and marker.args else NO_REQUIREMENT

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        requirement = self._requirement_of.get(report.nodeid, NO_REQUIREMENT)
        outcome = self.outcomes.setdefault(report.nodeid, TestOutcome(report.nodeid, requirement))
        if outcome.status == FAIL:
            return  # the first failure (setup, call or teardown) is the one to show
        if report.failed:
            phase = "" if report.when == "call" else f"[{report.when}] "
            outcome.status, outcome.detail = FAIL, phase + _failure_line(report)
        elif report.skipped:
            outcome.status, outcome.detail = SKIP, _skip_reason(report)

    def results(self, complete: bool = True) -> dict[str, RequirementResult]:
        return summarize(self.outcomes.values(), complete)

    def results_per_suite(self) -> dict[str, dict[str, RequirementResult]]:
        """Results per test class (``path::Class``): one report per layer when several suites ran."""
        suites: dict[str, list[TestOutcome]] = {}
        for outcome in self.outcomes.values():
            suites.setdefault(outcome.nodeid.rsplit("::", 1)[0], []).append(outcome)
        return {suite: summarize(outcomes, complete=False) for suite, outcomes in suites.items()}


def summarize(outcomes: Iterable[TestOutcome], complete: bool = True) -> dict[str, RequirementResult]:
    """Fold test outcomes into one result per requirement (unknown ids are reported too).

    ``complete``: list every requirement of SPEC.md, those no test checked as untested (a failure: the whole suite
    was expected to run); else only the requirements some test checked (a selection ran).
    """
    titles = requirements()
    results = {rid: RequirementResult(rid, title) for rid, title in titles.items()} if complete else {}
    for outcome in outcomes:
        title = titles.get(outcome.requirement, "(not in SPEC.md)")
        results.setdefault(outcome.requirement, RequirementResult(outcome.requirement, title)).tests.append(outcome)
    for result in results.values():
        _decide(result)
    if not complete:
        order = list(titles)
        results = dict(sorted(results.items(), key=lambda item: order.index(item[0]) if item[0] in order else 999))
    return results


def _decide(result: RequirementResult) -> None:
    """FAIL if any test failed; pass if any passed; skip (with the first reason) if all were skipped."""
    for status in (FAIL, PASS, SKIP):
        chosen = [test for test in result.tests if test.status == status]
        if chosen:
            result.status = status
            first = chosen[0]
            result.detail = f"{_short_name(first.nodeid)}: {first.detail}" if status == FAIL else first.detail
            return


def render(results: dict[str, RequirementResult]) -> list[str]:
    """The report lines: one per requirement (a second, indented line for details), then a summary."""
    width = max((len(rid) for rid in results), default=0)
    lines = []
    for result in results.values():
        lines.append(f"  {result.status:8} {result.id:{width}}  {result.title}")
        if result.detail and result.status != PASS:
            lines.append(f"  {'':8} {'':{width}}  -> {result.detail}")
    counts = {status: sum(r.status == status for r in results.values()) for status in (PASS, FAIL, SKIP, UNTESTED)}
    tests = sum(len(r.tests) for r in results.values())
    lines.append("")
    lines.append(
        f"{len(results)} requirements: {counts[PASS]} pass, {counts[FAIL]} FAIL, {counts[SKIP]} skipped"
        + (f", {counts[UNTESTED]} untested" if counts[UNTESTED] else "")
        + f" ({tests} tests)"
    )
    failed = [r.id for r in results.values() if r.status == FAIL]
    untested = [r.id for r in results.values() if r.status == UNTESTED]
    problems = [f"{label}: {', '.join(ids)}" for label, ids in (("failed", failed), ("untested", untested)) if ids]
    lines.append(f"Result: FAIL ({'; '.join(problems)})" if problems else "Result: PASS")
    return lines


def _short_name(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")
