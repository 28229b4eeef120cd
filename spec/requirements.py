"""The numbered requirements and their tiers, read from ``SPEC.md`` (the document is the single source of both).

A requirement's heading in ``SPEC.md`` is ``- **R-XXX-N Title.** [tier]`` where the tier is one of :data:`TIERS`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

__all__ = ["GRADED_TIERS", "REQUIREMENT_ID", "TIERS", "TIER_MEANING", "requirements", "spec_text", "tier_of", "tiers"]

#: What a requirement id looks like: ``R-CAP-2``.
REQUIREMENT_ID = re.compile(r"R-[A-Z]+-\d+")
#: The tiers, most fundamental first.
TIERS = ("core", "recommended", "strict", "operations")
#: The tiers that decide a run's result and exit status.  Strict requirements are this project's own additions, which
#: a layer built on Channels' base class cannot meet (its name errors do not name the value, for one): they are
#: reported as met or not met, and count only with ``--strict``; so are the optional operations APIs (a layer
#: without such a method gets its requirement as not applicable).
GRADED_TIERS = ("core", "recommended")
TIER_MEANING = {
    "core": "what the Django Channels channel-layer spec requires: a layer failing one is broken for Channels",
    "recommended": "what Channels users rely on in practice (capacity, expiry, FIFO, cancellation safety, "
                   "at-most-once across processes, sync callers)",
    "strict": "this project's own additions (error texts, size refusal, close() semantics, exact name rules)",
    "operations": "optional: introspection, bulk and health APIs this project adds (group_channels, group_size, "
                  "send_many, group_send_many, stats, ping); a layer without the method gets n/a, never a failure",
}
_HEADING = re.compile(r"^- \*\*(R-[A-Z]+-\d+) ([^*]+?)\.?\*\*(?: \[([a-z]+)\])?", re.MULTILINE)


def spec_text() -> str:
    """The specification document shipped in this package."""
    return files("spec").joinpath("SPEC.md").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def requirements() -> dict[str, str]:
    """Requirement id -> short title, in document order."""
    return {match[1]: match[2] for match in _HEADING.finditer(spec_text())}


@lru_cache(maxsize=1)
def tiers() -> dict[str, str | None]:
    """Requirement id -> its tier as written in SPEC.md (None when the heading has no ``[tier]`` tag)."""
    return {match[1]: match[3] for match in _HEADING.finditer(spec_text())}


def tier_of(requirement: str) -> str:
    """The tier of ``requirement``; one without a valid tag counts as ``strict`` (a test insists on the tag)."""
    tier = tiers().get(requirement)
    return tier if tier in TIERS else "strict"
