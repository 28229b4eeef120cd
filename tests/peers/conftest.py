"""The per-suite, per-backend counts of the peer suites at the end of the run."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.peers.test_peer_suites import REPORTS

    if not REPORTS:
        return
    terminalreporter.section("peer suites (passed/failed/skipped, xfailed/xpassed)")
    for (suite, backend), data in sorted(REPORTS.items()):
        counts: dict[str, int] = {}
        for result in data["results"].values():
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        failed = counts.get("failed", 0) + counts.get("error", 0)
        terminalreporter.write_line(
            f"{suite:18} {backend:9} {counts.get('passed', 0):3} / {failed:2} / {counts.get('skipped', 0):2}"
            f"   {counts.get('xfailed', 0)} / {counts.get('xpassed', 0)}")
