"""Naming rules for channels and groups (spec R-NAMES-*)."""

from __future__ import annotations

import re

from .errors import InvalidChannelName, InvalidGroupName

__all__ = ["INVALID_NAME_ERROR", "MAX_NAME_LENGTH", "check_channel", "check_group", "process_part"]

MAX_NAME_LENGTH = 100
_CHANNEL = re.compile(r"[A-Za-z0-9\-_.]+(![A-Za-z0-9\-_.]*)?")
_GROUP = re.compile(r"[A-Za-z0-9\-_.]+")
_RULE = "ASCII letters, digits, '-', '_' and '.', shorter than 100 characters"
#: Channels' own wording (``channels.layers.BaseChannelLayer.invalid_name_error``), which code and tests written
#: for Channels match on; every name error starts with it, then says which value broke which rule.
INVALID_NAME_ERROR = (
    "{} name must be a valid unicode string "
    f"with length < {MAX_NAME_LENGTH} "
    "containing only ASCII alphanumerics, hyphens, underscores, or periods."
)


def check_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``InvalidChannelName``."""
    if type(name) is str and len(name) < MAX_NAME_LENGTH and _CHANNEL.fullmatch(name):
        return name
    raise InvalidChannelName(
        f"{INVALID_NAME_ERROR.format('Channel')} Invalid channel name {name!r}: a channel name is {_RULE}, with at "
        "most one '!' (a process-local channel like 'specific.abc!def')"
    )


def check_group(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise ``InvalidGroupName``."""
    if type(name) is str and len(name) < MAX_NAME_LENGTH and _GROUP.fullmatch(name):
        return name
    raise InvalidGroupName(
        f"{INVALID_NAME_ERROR.format('Group')} Invalid group name {name!r}: a group name is {_RULE} ('!' is not "
        "allowed)"
    )


def process_part(channel: str) -> str | None:
    """The non-local part of a process-local channel (up to and including ``!``), or None for a named channel."""
    bang = channel.find("!")
    return None if bang < 0 else channel[: bang + 1]
