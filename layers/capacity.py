"""Capacity lookup: ``channel_capacity`` patterns first, then the layer's ``capacity`` (spec R-CAP-*)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import lru_cache

from .errors import ConfigError

__all__ = ["CapacityRules"]

Pattern = str | re.Pattern[str]


class CapacityRules:
    """Maps a queue name (a named channel, or the non-local part of a process channel) to its capacity."""

    def __init__(self, default: int, patterns: Mapping[Pattern, int] | None = None) -> None:
        self.default = _check_capacity("capacity", default)
        self._rules: list[tuple[re.Pattern[str], int]] = []
        for pattern, capacity in (patterns or {}).items():
            self._rules.append(
                (_compile(pattern), _check_capacity(f"channel_capacity[{pattern!r}]", capacity))
            )
        self.lookup = lru_cache(maxsize=4096)(self._lookup)

    @property
    def uniform(self) -> bool:
        """True when every queue gets the default capacity (no ``channel_capacity`` patterns).

        A backend that fans a group message out on its server can then apply one capacity to every member.
        """
        return not self._rules

    def _lookup(self, name: str) -> int:
        for regex, capacity in self._rules:
            if regex.match(name):
                return capacity
        return self.default


def _compile(pattern: Pattern) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, str):
        return re.compile(fnmatch.translate(pattern))
    raise ConfigError(f"channel_capacity key {pattern!r} must be a glob string or a compiled regex")


def _check_capacity(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(f"{what} must be a positive int, not {value!r}")
    return value
