"""Declared layer options: each layer says which options it takes and of what type; this module parses them out of a
URL's query string, refuses unknown ones with a suggestion, and redacts secrets, the same way for every layer.

A layer class declares ``url_options = LayerOptions(own={...}, driver=..., hints=...)``; the options every layer
shares (:data:`COMMON`) are declared here once.  Nothing here knows a backend.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from .errors import ConfigError

__all__ = ["COMMON", "LayerOptions", "Option", "boolean", "explain_unknown", "parse_url", "positive_seconds",
           "redact_url", "seconds"]


def boolean(value: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case)."""
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def seconds(value: str) -> float:
    """A number of seconds; a whole number stays an int (``expiry=30`` is ``30``, as in a CONFIG dict)."""
    number = float(value)
    return int(number) if number.is_integer() else number


def positive_seconds(name: str, value: object) -> float:
    """``value`` as seconds, refused unless it is a positive number (a layer's ``timeout`` and the like)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


_KIND_NAMES: dict[Callable[[str], Any], str] = {int: "int", float: "float", str: "str", seconds: "float",
                                                 boolean: "true or false"}


@dataclass(frozen=True)
class Option:
    """One option a layer takes: how a URL query value becomes the keyword argument, the constructor's default,
    and whether its value is a secret (never shown in repr, logs or errors)."""

    kind: Callable[[str], Any] = str
    default: Any = None
    secret: bool = False
    #: False for options only a CONFIG dict can carry (a pattern mapping, a list of keys).
    in_url: bool = True

    def parse(self, key: str, value: str) -> Any:
        try:
            return self.kind(value)
        except ValueError:
            shown = "***" if self.secret else repr(value)
            raise ConfigError(f"URL option {key}={shown} must be {_KIND_NAMES.get(self.kind, 'valid')}") from None


#: The options every layer takes (``BaseChannelLayer.__init__``).
COMMON: Mapping[str, Option] = {
    "expiry": Option(seconds, 60),
    "group_expiry": Option(seconds, 86400),
    "capacity": Option(int, 100),
    "channel_capacity": Option(default=None, in_url=False),
    "max_message_size": Option(int, 1024 * 1024),
    "serializer_format": Option(str, "msgpack"),
    "symmetric_encryption_keys": Option(default=None, secret=True, in_url=False),
    "prefix": Option(str, "asgi"),
}

# Options of Channels layers elsewhere that people carry over to any layer, and what replaces them here.
_PEER_HINTS: Mapping[str, str] = {
    "random_prefix_length": "not needed: process channel names always carry a 12-character process id",
    "local_capacity": "use capacity (and channel_capacity patterns)",
    "remote_capacity": "use capacity (and channel_capacity patterns)",
    "local_expiry": "expiry covers messages on the server and in the process",
    "groups_exchange": "give each site its own prefix instead",
}


@dataclass(frozen=True)
class LayerOptions:
    """What a layer declares beyond :data:`COMMON`.

    ``own``: its constructor's options a URL may carry, taken out of the query and typed.  ``driver``: option names
    its driver reads from the URL, left in it (``sslmode``, ``heartbeat`` ...); ``driver_secrets`` those of them
    holding secrets.  ``hints``: names people bring from other layers, with what to use instead.
    """

    own: Mapping[str, Option] = field(default_factory=dict)
    driver: frozenset[str] = frozenset()
    driver_secrets: frozenset[str] = frozenset()
    hints: Mapping[str, str] = field(default_factory=dict)

    def url_option(self, key: str) -> Option | None:
        """The declared option ``key`` a URL query may set, common or own (None: the driver's, or unknown)."""
        option = self.own.get(key) or COMMON.get(key)
        return option if option is not None and option.in_url else None

    @property
    def secrets(self) -> frozenset[str]:
        return self.driver_secrets | {key for key, option in {**COMMON, **self.own}.items() if option.secret}


def explain_unknown(layer: str, unknown: Iterable[str], declared: LayerOptions, *, url: bool = False) -> str:
    """Why each of ``unknown`` is refused: what replaces an option of another layer, or the closest declared option
    (for a URL, the driver's option names count too)."""
    names = [*COMMON, *declared.own]
    candidates = [*names, *sorted(declared.driver - set(names))] if url else names
    hints = {**_PEER_HINTS, **declared.hints}
    reasons = []
    for key in unknown:
        hint = hints.get(key)
        if hint is None:
            close = difflib.get_close_matches(key, candidates, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"options every layer takes: {', '.join(COMMON)}"
        reasons.append(f"{key!r} ({hint})")
    return f"{layer} got unknown option(s): {'; '.join(reasons)}"


def parse_url(url: str, declared: LayerOptions, layer: str) -> tuple[str, dict[str, Any]]:
    """Split ``url`` into the URL without the declared options and those options, typed.

    What the driver reads stays in the URL exactly as written; a name neither declared nor the driver's is refused
    here with a suggestion (``?capcity=5``: did you mean 'capacity'?) instead of reaching the driver.
    """
    base, mark, query = url.partition("?")  # by hand: urlunsplit turns unix:///path into unix:/path
    options: dict[str, Any] = {}
    kept: list[str] = []
    unknown: list[str] = []
    for segment in query.split("&") if mark else ():
        if not segment:
            continue
        raw_key, _, raw_value = segment.partition("=")
        key = unquote_plus(raw_key)
        option = declared.url_option(key)
        if option is not None:
            options[key] = option.parse(key, unquote_plus(raw_value))
        elif key in declared.driver:
            kept.append(segment)
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(explain_unknown(layer, unknown, declared, url=True))
    return (f"{base}?{'&'.join(kept)}" if kept else base), options


# Option names that carry secrets whatever the layer: password, passwd, pass, sslpassword, any *_password.
_SECRET_OPTION = r"(?:[A-Za-z]*_)?pass(?:word|wd)?|sslpassword"


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """``url`` with every secret replaced by ``***`` (for repr, logs and errors): the password in the user info,
    query options named like a password or listed in ``secrets`` (a layer's declared secret options), and
    ``password=`` in a libpq key=value connection string.  Everything else is left exactly as written."""
    names = "|".join([_SECRET_OPTION, *(re.escape(name) for name in secrets)])
    if "://" not in url:
        return re.sub(rf"(?i)(^|\s)({names})(\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1\2\3***", url)
    head, mark, query = url.partition("?")
    if mark:
        query = re.sub(rf"(?i)(^|[&;])({names})=([^&;#]*)", r"\1\2=***", query)
    scheme, _, rest = head.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return f"{scheme}://{netloc}{slash}{path}{mark}{query}"
