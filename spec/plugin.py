"""pytest plugin of the conformance suite (registered as the ``pytest11`` entry point ``layers_spec``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the spec requirement (e.g. R-CAP-2) a test checks")
    config.addinivalue_line("markers", "spec_needs(*capabilities): extensions or knobs a conformance test needs")
