"""pytest plugin of the conformance suite (entry point ``pytest11``: ``layers_spec = "spec.plugin"``).

It registers the ``requirement`` and ``spec_needs`` markers, and with ``--spec-report`` prints the results
requirement by requirement at the end of the run.
"""

from __future__ import annotations

import pytest

from .report import RequirementCollector, render

_COLLECTOR = "layers-spec-collector"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("layers-spec", "channel-layer conformance suite")
    group.addoption(
        "--spec-report",
        action="store_true",
        default=False,
        help="print the conformance results per spec requirement (R-...) at the end of the run",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the spec requirement (e.g. R-CAP-2) a test checks")
    config.addinivalue_line("markers", "spec_needs(*capabilities): extensions or knobs a conformance test needs")
    if config.getoption("spec_report", default=False):
        config.pluginmanager.register(RequirementCollector(), _COLLECTOR)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    collector = config.pluginmanager.get_plugin(_COLLECTOR)
    if not isinstance(collector, RequirementCollector):
        return
    for suite, results in collector.results_per_suite().items():
        terminalreporter.section(f"conformance per requirement: {suite}")
        for line in render(results):
            terminalreporter.write_line(line)
