"""The in-memory layer runs the conformance suite unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from layers import InMemoryChannelLayer
from spec import ConformanceSuite


class TestMemoryConformance(ConformanceSuite):
    @pytest.fixture
    def layer_factory(self) -> Any:
        return lambda **overrides: InMemoryChannelLayer(**overrides)
