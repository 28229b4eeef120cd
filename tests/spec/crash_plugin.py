"""A pytest plugin that makes pytest itself fail (INTERNALERROR) in the middle of a conformance run, as CPython
3.11's "AST constructor recursion depth mismatch" did while formatting long chained tracebacks."""

from __future__ import annotations

import pytest


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.when == "call" and "r_deliv_3" in item.nodeid:
        raise SystemError("AST constructor recursion depth mismatch (simulated by tests/spec/crash_plugin.py)")
