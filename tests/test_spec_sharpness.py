"""The conformance suite is sharp: it fails, on the right requirements, for layers with known defects.

Channels' own in-memory layer (its ``channel_capacity`` raises ValueError on every send, and it counts capacity
per full ``!`` name instead of per process) and a few deliberately broken variants of our in-memory layer must fail
exactly the requirements their defect breaks, while control requirements still pass.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from layers import InMemoryChannelLayer
from spec import ConformanceSuite, requirements, run_suite
from spec.report import FAIL, PASS
from spec.requirements import TIERS, tiers


def _statuses(target: Any, selection: str) -> dict[str, str]:
    run = run_suite(target, pytest_args=["-k", selection])
    return {rid: result.status for rid, result in run.results.items() if result.tests}


def test_channels_in_memory_layer_fails_its_known_defects() -> None:
    """R-CAP-2 (channel_capacity -> ValueError) and R-CAP-3 (capacity per full '!' name) fail; R-CAP-1 passes."""
    pytest.importorskip("channels.layers", reason="Django Channels is not installed")
    statuses = _statuses("channels.layers.InMemoryChannelLayer", "r_cap_ or r_deliv_2")
    assert statuses["R-CAP-2"] == FAIL
    assert statuses["R-CAP-3"] == FAIL
    assert statuses["R-CAP-1"] == PASS, "the capacity checks must judge capacity, not the missing attribute"
    assert statuses["R-DELIV-2"] == PASS


class _LossyOnCancel(InMemoryChannelLayer):
    """The classic bug: the message is taken, then an await that may be cancelled before it is returned."""

    async def receive(self, channel: str) -> dict[str, Any]:
        message = await super().receive(channel)
        await asyncio.sleep(0)
        return message


class _NeverExpires(InMemoryChannelLayer):
    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "expiry": 3600, "group_expiry": 3600})


class _MarksMessages(InMemoryChannelLayer):
    """Adds a routing key to the caller's dict, as some layers do."""

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        message["__asgi_channel__"] = channel
        await super().send(channel, message)


class _DoubleGroupSend(InMemoryChannelLayer):
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await super().group_send(group, message)
        await super().group_send(group, message)


@pytest.mark.parametrize(
    ("mutant", "selection", "broken", "intact"),
    [
        (_LossyOnCancel, "r_cancel_1 or r_cancel_2 or r_deliv_2", ["R-CANCEL-1", "R-CANCEL-2"], ["R-DELIV-2"]),
        (_NeverExpires, "r_exp or r_gexp_1 or r_cap_1", ["R-EXP-1", "R-EXP-2", "R-GEXP-1"], ["R-CAP-1"]),
        (_MarksMessages, "r_msg_6 or r_msg_7", ["R-MSG-6", "R-MSG-7"], []),
        (_DoubleGroupSend, "r_group_1 or r_group_3 or r_group_2", ["R-GROUP-1", "R-GROUP-3"], []),
    ],
    ids=lambda value: value.__name__.strip("_") if isinstance(value, type) else None,
)
def test_broken_variants_fail_the_requirement_they_break(
    mutant: type, selection: str, broken: list[str], intact: list[str]
) -> None:
    statuses = _statuses(mutant, selection)
    assert {rid: statuses[rid] for rid in broken} == dict.fromkeys(broken, FAIL)
    assert {rid: statuses[rid] for rid in intact} == dict.fromkeys(intact, PASS)


def test_every_requirement_is_checked_and_every_check_names_one() -> None:
    """Each requirement of SPEC.md has a check; each check carries a known id in its marker and its name."""
    known = requirements()
    checked: set[str] = set()
    for name in dir(ConformanceSuite):
        if not name.startswith("test_"):
            continue
        marks = [m for m in getattr(getattr(ConformanceSuite, name), "pytestmark", []) if m.name == "requirement"]
        assert len(marks) == 1, f"{name} has {len(marks)} requirement markers"
        rid = marks[0].args[0]
        assert rid in known, f"{name} names {rid}, which SPEC.md does not define"
        assert name.startswith(f"test_{rid.lower().replace('-', '_')}_"), f"{name} does not carry its id {rid}"
        checked.add(rid)
    assert sorted(set(known) - checked) == []


def test_every_requirement_has_a_tier() -> None:
    """Each requirement heading in SPEC.md carries ``[core]``, ``[recommended]`` or ``[strict]``."""
    missing = {rid: tier for rid, tier in tiers().items() if tier not in TIERS}
    assert missing == {}, f"requirements without a valid [tier] tag in SPEC.md: {missing}"


def test_cli_reports_and_exit_status() -> None:
    """``python -m spec`` prints a report and exits 0 on a passing selection (the rest deselected), 2 on a bad
    target."""
    ok = subprocess.run(
        [sys.executable, "-m", "spec", "memory://", "--pytest-args", "-k r_deliv_2"],
        capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stdout
    assert "  pass       R-DELIV-2" in ok.stdout and "deselected R-CAP-1" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "spec", "no_such_module.Layer"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no_such_module" in bad.stderr
