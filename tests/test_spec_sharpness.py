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

from layers import ChannelFull, InMemoryChannelLayer
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


class _SendManyStopsAtFull(InMemoryChannelLayer):
    """send_many that checks every pair first, then sends them one by one: the first full channel stops the rest."""

    async def send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for channel, message in messages:
            self._push_for(channel, message)
        for channel, message in messages:
            await self.send(channel, message)


class _SendManyHalfDone(InMemoryChannelLayer):
    """send_many that checks each pair only when it gets to it: the pairs before a bad one are stored."""

    async def send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        full = []
        for pair in messages:
            try:
                await super().send_many([pair])
            except ChannelFull as exc:
                full += exc.channels
        if full:
            raise ChannelFull(f"full: {', '.join(full)}", full)


class _GroupSendManyHalfDone(InMemoryChannelLayer):
    async def group_send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for group, message in messages:
            await self.group_send(group, message)


class _GroupSizeCountsAdds(InMemoryChannelLayer):
    """group_size kept as a counter of group_add calls: a channel added twice counts twice, discards are missed."""

    adds: dict[str, int]

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        self.adds = getattr(self, "adds", {})
        self.adds[group] = self.adds.get(group, 0) + 1

    async def group_size(self, group: str) -> int:
        await super().group_size(group)  # the same validation
        return getattr(self, "adds", {}).get(group, 0)


class _StatsCountsAttempts(InMemoryChannelLayer):
    """stats() whose ``sent`` counts sends tried, also those refused as full."""

    def stats(self) -> dict[str, int]:
        counts = super().stats()
        counts["sent"] += counts["full"]
        return counts


@pytest.mark.parametrize(
    ("mutant", "failing"),
    [
        (_SendManyStopsAtFull, {"R-OPS-2": ["test_r_ops_2_full_channel_does_not_stop_the_others"]}),
        (_SendManyHalfDone, {"R-OPS-2": ["test_r_ops_2_bad_pairs_store_nothing"]}),
        (_GroupSendManyHalfDone, {"R-OPS-3": ["test_r_ops_3_bad_pairs_send_nothing"]}),
        (_GroupSizeCountsAdds, {"R-OPS-1": ["test_r_ops_1_lapsed_members_not_listed", "test_r_ops_1_members_listed"]}),
        (_StatsCountsAttempts, {"R-OPS-4": ["test_r_ops_4_refusals"]}),
    ],
    ids=lambda value: value.__name__.strip("_") if isinstance(value, type) else None,
)
def test_operations_mutants_fail_the_check_they_break(mutant: type, failing: dict[str, list[str]]) -> None:
    """Each wrong operations API fails its requirement in exactly the check of its defect; the other operations
    requirements (the layer has every method) still pass."""
    run = run_suite(mutant, pytest_args=["-k", "r_ops_"])
    failed = {rid: sorted(test.nodeid.rsplit("::", 1)[-1] for test in result.tests if test.status == FAIL)
              for rid, result in run.results.items() if result.tests}
    assert {rid: tests for rid, tests in failed.items() if tests} == failing
    assert {rid: result.status for rid, result in run.results.items()
            if result.tests and rid not in failing} == {rid: PASS for rid in requirements()
                                                        if rid.startswith("R-OPS-") and rid not in failing}
    assert run.exit_code == 0, "the operations tier is reported, not graded, without --strict"


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
