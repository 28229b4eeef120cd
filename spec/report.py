"""Per-requirement results: collected from pytest reports, rendered as the conformance report (tiers first)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from .harness import NOT_APPLICABLE, NOT_RUN
from .requirements import GRADED_TIERS, TIER_MEANING, TIERS, requirements, tier_of

__all__ = [
    "FAIL", "NA", "NOT_RUN_STATUS", "PASS", "SKIP", "UNTESTED", "RequirementCollector", "RequirementResult",
    "TestOutcome", "render", "summarize", "tier_verdicts",
]

PASS, FAIL, SKIP = "pass", "FAIL", "skip"
NA = "n/a"  # the requirement does not apply to this design (a capability it lacks, discovered or declared)
NOT_RUN_STATUS = "not run"  # it applies, but the suite could not run it here (no second-process target, ...)
UNTESTED = "untested"  # a requirement of SPEC.md no collected test checks: the suite is incomplete
DESELECTED = "deselected"  # every test of it was deselected (-k, -m): not part of this run
NO_REQUIREMENT = "(none)"  # tests without a requirement marker
#: Longest failure text kept per requirement (the whole first error, e.g. a second process's traceback).
DETAIL_LIMIT = 3000


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
    tier: str = "strict"

    @property
    def failed(self) -> bool:
        return self.status in (FAIL, UNTESTED)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "tier": self.tier, "status": self.status, "detail": self.detail,
            "tests": [{"name": _short_name(t.nodeid), "status": t.status, "detail": t.detail} for t in self.tests],
        }


class RequirementCollector:
    """A pytest plugin object: maps every test to its requirement and records its outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, TestOutcome] = {}
        self._requirement_of: dict[str, str] = {}
        self.deselected: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self._requirement_of[item.nodeid] = _requirement(item)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.deselected[item.nodeid] = _requirement(item)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        requirement = self._requirement_of.get(report.nodeid, NO_REQUIREMENT)
        outcome = self.outcomes.setdefault(report.nodeid, TestOutcome(report.nodeid, requirement))
        if outcome.status == FAIL:
            return  # the first failure (setup, call or teardown) is the one to show
        if report.failed:
            phase = "" if report.when == "call" else f"[{report.when}] "
            outcome.status, outcome.detail = FAIL, phase + _failure_text(report)
        elif report.skipped:
            outcome.status, outcome.detail = _skip_status(_skip_reason(report))

    def results(self, complete: bool = True) -> dict[str, RequirementResult]:
        return summarize(self.outcomes.values(), complete, set(self.deselected.values()))

    def results_per_suite(self) -> dict[str, dict[str, RequirementResult]]:
        """Results per test class (``path::Class``): one report per layer when several suites ran."""
        suites: dict[str, list[TestOutcome]] = {}
        for outcome in self.outcomes.values():
            suites.setdefault(outcome.nodeid.rsplit("::", 1)[0], []).append(outcome)
        return {suite: summarize(outcomes, complete=False) for suite, outcomes in suites.items()}


def _requirement(item: pytest.Item) -> str:
    marker = item.get_closest_marker("requirement")
    return str(marker.args[0]) if marker and marker.args else NO_REQUIREMENT


def summarize(
    outcomes: Iterable[TestOutcome], complete: bool = True, deselected: Iterable[str] = ()
) -> dict[str, RequirementResult]:
    """Fold test outcomes into one result per requirement (unknown ids are reported too).

    ``complete``: list every requirement of SPEC.md; those no test checked are untested (a failure: the whole suite
    was expected to run), or ``deselected`` when their tests were deselected; else only the requirements some test
    checked (a selection ran).
    """
    titles = requirements()
    results = {rid: RequirementResult(rid, title) for rid, title in titles.items()} if complete else {}
    for outcome in outcomes:
        title = titles.get(outcome.requirement, "(not in SPEC.md)")
        results.setdefault(outcome.requirement, RequirementResult(outcome.requirement, title)).tests.append(outcome)
    skipped = set(deselected)
    for result in results.values():
        result.tier = tier_of(result.id)
        _decide(result)
        if result.status == UNTESTED and result.id in skipped:
            result.status = DESELECTED
    order = list(titles)
    return dict(sorted(results.items(), key=lambda item: order.index(item[0]) if item[0] in order else 999))


def _decide(result: RequirementResult) -> None:
    """FAIL if any test failed; pass if any passed; else not run, n/a or skip (with the first reason)."""
    for status in (FAIL, PASS, NOT_RUN_STATUS, SKIP, NA):
        chosen = [test for test in result.tests if test.status == status]
        if chosen:
            result.status = status
            first = chosen[0]
            result.detail = f"{_short_name(first.nodeid)}: {first.detail}" if status == FAIL else first.detail
            return


def tier_verdicts(results: dict[str, RequirementResult]) -> dict[str, str]:
    """Tier -> ``PASS`` or ``FAIL`` (a tier fails when one of its requirements failed or was untested)."""
    return {
        tier: "FAIL" if any(r.failed for r in results.values() if r.tier == tier) else "PASS" for tier in TIERS
    }


def render(results: dict[str, RequirementResult], strict: bool = False) -> list[str]:
    """The report lines: the verdict per tier, then the requirements of each tier (a second, indented line for
    details), then a summary.  Unless ``strict``, the strict tier is reported as met / not met, not graded."""
    width = max((len(rid) for rid in results), default=0)
    verdicts = tier_verdicts(results)
    graded = [tier for tier in TIERS if tier in GRADED_TIERS or strict]
    lines = []
    for tier in TIERS:
        rows = [r for r in results.values() if r.tier == tier]
        if rows:
            verdict_text = verdicts[tier] if tier in graded else _UNGRADED[verdicts[tier]]
            lines.append(f"{tier.capitalize():12} {verdict_text:7} {_counts(rows, tier in graded)}")
    for tier in TIERS:
        rows = [r for r in results.values() if r.tier == tier]
        if not rows:
            continue
        lines.append("")
        lines.append(f"{tier} — {TIER_MEANING[tier]}")
        for result in rows:
            status = result.status if tier in graded or result.status != FAIL else NOT_MET
            lines.append(f"  {status:10} {result.id:{width}}  {result.title}")
            if result.detail and result.status != PASS:
                shown = result.detail.splitlines() or [""]
                lines.append(f"  {'':10} {'':{width}}  -> {shown[0]}")
                lines.extend(f"  {'':10} {'':{width}}     {line}" for line in shown[1:])
    lines.append("")
    tests = sum(len(r.tests) for r in results.values())
    graded_rows = [r for r in results.values() if r.tier in graded]
    ungraded_rows = [r for r in results.values() if r.tier not in graded]
    totals = _counts(graded_rows) + (f"; {_counts(ungraded_rows, graded=False)} (ungraded)" if ungraded_rows else "")
    lines.append(f"{len(results)} requirements, {tests} tests: {totals}")
    failing = {tier: [r.id for r in results.values() if r.tier == tier and r.failed] for tier in TIERS}
    parts = [f"{tier} FAIL ({', '.join(failing[tier])})" if failing[tier] else f"{tier} PASS" for tier in graded]
    verdict = "FAIL" if any(failing[tier] for tier in graded) else "PASS"
    ungraded = [tier for tier in TIERS if tier not in graded]
    for tier in ungraded:
        unmet = failing[tier]
        parts.append(f"{tier}, reported only (--strict grades it): "
                     + (f"{len(unmet)} not met ({', '.join(unmet)})" if unmet else "all met"))
    lines.append(f"Result: {verdict} — " + "; ".join(parts))
    return lines


#: How an ungraded tier's verdict reads: a strict requirement a layer does not meet is not a failure of that layer.
_UNGRADED = {"PASS": "met", "FAIL": "not met"}
NOT_MET = "not met"


def _counts(rows: list[RequirementResult], graded: bool = True) -> str:
    labels = ((PASS, "pass"), (FAIL, "FAIL" if graded else NOT_MET), (UNTESTED, "untested"), (NA, "n/a"),
              (NOT_RUN_STATUS, "not run"), (SKIP, "skipped"), (DESELECTED, "deselected"))
    parts = [f"{n} {label}" for status, label in labels if (n := sum(r.status == status for r in rows))]
    return ", ".join(parts) or "nothing"


def _short_name(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _failure_text(report: pytest.TestReport) -> str:
    """The failing test's error: the exception line(s) pytest recorded, whole up to DETAIL_LIMIT."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    shown = "\n".join(lines) or "failed"
    return shown if len(shown) <= DETAIL_LIMIT else shown[:DETAIL_LIMIT] + " [...]"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(reason).removeprefix("Skipped: ")


def _skip_status(reason: str) -> tuple[str, str]:
    if reason.startswith(NOT_APPLICABLE):
        return NA, reason.removeprefix(NOT_APPLICABLE)
    if reason.startswith(NOT_RUN):
        return NOT_RUN_STATUS, reason.removeprefix(NOT_RUN)
    return SKIP, reason
