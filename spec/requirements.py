"""The numbered requirements, read from ``SPEC.md`` (the document is the single source of their titles)."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

__all__ = ["REQUIREMENT_ID", "requirements", "spec_text"]

#: What a requirement id looks like: ``R-CAP-2``.
REQUIREMENT_ID = re.compile(r"R-[A-Z]+-\d+")
_HEADING = re.compile(r"^- \*\*(R-[A-Z]+-\d+) ([^*]+?)\.?\*\*", re.MULTILINE)


def spec_text() -> str:
    """The specification document shipped in this package."""
    return files("spec").joinpath("SPEC.md").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def requirements() -> dict[str, str]:
    """Requirement id -> short title, in document order."""
    return {match[1]: match[2] for match in _HEADING.finditer(spec_text())}
