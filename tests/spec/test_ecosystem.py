"""``python -m spec.ecosystem``: the compatibility table's generator, on the layers this machine runs offline."""

from __future__ import annotations

import importlib.util

import pytest

from spec import ecosystem
from spec.ecosystem import LAYERS, REVIEWED, EcosystemLayer, NotRunnable, Row, render, run_layer
from spec.requirements import requirements

pytestmark = pytest.mark.timeout(600)


def _layer(name: str) -> EcosystemLayer:
    return next(layer for layer in LAYERS if layer.name == name)


def _failing(row: Row) -> dict[str, str]:
    assert row.report is not None, row.problem_detail
    return {r["id"]: r["status"] for r in row.report["requirements"] if r["status"] == "FAIL"}


def test_our_memory_layer_passes_every_tier() -> None:
    row = run_layer(_layer("layers memory://"), timeout=300)
    assert _failing(row) == {}
    table = render([row], ["core", "recommended", "strict"], "python -m spec.ecosystem --only memory")
    assert "| layers memory:// |" in table
    line = next(line for line in table.splitlines() if line.startswith("| layers memory://"))
    assert line.count("pass (") == 2 and "all met (" in line, line  # core, recommended; strict is met / not met
    assert "### layers memory://" not in table  # nothing failed, nothing declared: no section


@pytest.mark.skipif(importlib.util.find_spec("channels") is None, reason="Django Channels is not installed")
def test_channels_in_memory_layer_fails_what_its_code_shows_with_the_reviewed_reason() -> None:
    layer = _layer("channels InMemoryChannelLayer")
    row = run_layer(layer, timeout=300)
    failing = _failing(row)
    assert {"R-API-1", "R-CAP-2"} <= failing.keys(), failing
    table = render([row], ["core", "recommended", "strict"], "test")
    for requirement in ("R-API-1", "R-CAP-2"):
        line = next(line for line in table.splitlines() if f"**{requirement}**" in line)
        assert REVIEWED[layer.name, requirement] in line, line
        assert "not reviewed" not in line


def test_a_failure_nobody_reviewed_says_so() -> None:
    report = {"requirements": [
        {"id": "R-DELIV-1", "title": "At most once", "tier": "core", "status": "FAIL",
         "detail": "test_r_deliv_1: AssertionError: 3 messages arrived twice\nmore"},
        {"id": "R-API-1", "title": "Declared", "tier": "core", "status": "pass", "detail": ""},
    ]}
    row = Row(EcosystemLayer("someone's layer", "someones-layer", None, lambda tag: ecosystem.Setup("x")), "1.0",
              report=report, declared={"capacity": "README: no capacity"})
    table = render([row], ["core"], "test")
    assert "| someone's layer | 1.0 | **FAIL 1** (1/2 passed) |" in table
    assert "*not reviewed*: test_r_deliv_1: AssertionError: 3 messages arrived twice" in table
    assert "- capacity: README: no capacity" in table


def test_a_layer_without_a_report_has_a_short_cell_and_the_whole_story_below() -> None:
    row = Row(_layer("channels_valkey ValkeyChannelLayer"), "0.3.0", problem="not run: needs a Valkey server",
              problem_detail="not run: needs a Valkey server (its Lua scripts use Valkey's `server` global)")
    table = render([row], ["core", "recommended", "strict"], "test")
    assert "| - | - | - | not run: needs a Valkey server |" in table
    assert "No report: not run: needs a Valkey server (its Lua scripts" in table


def test_valkey_missing_is_not_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERS_VALKEY_SERVER", "/nonexistent/valkey-server")
    with pytest.raises(NotRunnable, match="needs a Valkey server"):
        ecosystem._private_valkey()


def test_every_reviewed_reason_names_a_listed_layer_and_a_real_requirement() -> None:
    names = {layer.name for layer in LAYERS}
    known = requirements()
    for layer_name, requirement in REVIEWED:
        assert layer_name in names, layer_name
        assert requirement in known, (layer_name, requirement)
