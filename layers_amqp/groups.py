"""Group membership of process channels, kept by the process that owns them.

``group_add(group, "specific.abc!x")`` from any process binds that process's queue (``specific.abc!``) to the
group's routing key, with the member's name in the binding's arguments, and then publishes a membership *record*
into the process's *group inbox*, a queue beside it.  A group message therefore costs one publish whatever the
group size, reaches each member process once, in its process queue: behind the direct sends made before it, under
the queue's length limit (a full process refuses it, and the broker nacks the publish), and counted like any
message.  ``group_discard`` removes that member's binding (the process's other members keep theirs) and records
the discard.

The owner reads the inbox with a consumer that it starts before, and runs beside, its process-queue consumer: the
broker hands a record to a running consumer before it confirms the record to the process that wrote it, so the
owner's :class:`Directory` has applied every add and discard that returned before a group message was sent by the
time it resolves that message into one bundle for its live local members (lapsed memberships are skipped here,
which is how ``group_expiry`` is enforced).

The inbox has no length limit, so records are never refused and never take a process channel's capacity; they
expire when their membership would lapse.
"""

from __future__ import annotations

import logging
import time

import msgpack

from layers.envelope import pack_item, unpack_item

__all__ = ["RECORD_TYPE", "Directory", "pack_record"]

log = logging.getLogger("layers.amqp")

#: The AMQP ``type`` property that marks a membership record (messages carry no type).
RECORD_TYPE = "layers.member"
ADD, DISCARD = 0, 1
#: Written by ``flush`` into every group inbox before deleting it: the owner forgets the memberships of that
#: process queue (channel = the process queue) instead of re-binding them when its queue vanishes.
FLUSHED = 2


def pack_record(op: int, group_key: str, channel: str, deadline: float) -> bytes:
    return msgpack.packb((op, group_key, channel, deadline), use_bin_type=True)  # type: ignore[no-any-return]


class Directory:
    """group routing key -> local channel -> membership deadline, for one layer instance (all its event loops)."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, float]] = {}

    def apply(self, record: bytes) -> None:
        try:
            op, key, channel, deadline = msgpack.unpackb(record, raw=False)
            if op not in (ADD, DISCARD, FLUSHED) or type(key) is not str or type(channel) is not str \
                    or not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
                raise ValueError(f"not a membership record: {(op, key, channel, deadline)!r:.80}")
        except Exception as exc:  # not ours: never let garbage break the reader (this runs in pika's callback)
            log.warning("skipping an undecodable group membership record: %s", exc)
            return
        if op == FLUSHED:
            self.forget_process(channel)
            return
        members = self.groups.setdefault(key, {})
        if op == ADD:
            members[channel] = max(deadline, members.get(channel, 0.0))
        else:
            members.pop(channel, None)
            if not members:
                del self.groups[key]

    def members(self, key: str, now: float) -> list[str]:
        """Live members of a group (forgetting lapsed ones)."""
        members = self.groups.get(key)
        if not members:
            return []
        lapsed = [channel for channel, deadline in members.items() if deadline < now]
        for channel in lapsed:
            del members[channel]
        if not members:
            del self.groups[key]
        return list(members)

    def live_members(self, proc: str) -> list[tuple[str, str]]:
        """(routing key, channel) of every live membership of a channel of process queue ``proc`` (to re-bind)."""
        now = time.time()
        return [(key, channel) for key in list(self.groups) for channel in self.members(key, now)
                if channel.startswith(proc)]

    def forget_process(self, proc: str) -> None:
        """Drop every membership of a channel of process queue ``proc`` (a flush deleted it)."""
        for key in list(self.groups):
            members = self.groups[key]
            for channel in [channel for channel in members if channel.startswith(proc)]:
                del members[channel]
            if not members:
                del self.groups[key]

    def resolve(self, key: str, item: bytes, proc: str) -> bytes | None:
        """Turn a group item that reached ``proc``'s inbox into a bundle for that queue's live members, or None
        when it has none (a layer may own several process queues: ``new_channel("other")``)."""
        members = [channel for channel in self.members(key, time.time()) if channel.startswith(proc)]
        if not members:
            return None
        try:
            deadline, _, payload = unpack_item(item)
        except ValueError as exc:
            log.warning("skipping a group message that is not a channel-layers item: %s", exc)
            return None
        return pack_item(deadline, members, payload)

    def sweep(self) -> None:
        """Forget lapsed memberships of groups that no message resolved lately (no unbounded growth)."""
        now = time.time()
        for key in list(self.groups):
            self.members(key, now)

    def clear(self) -> None:
        self.groups.clear()


def record_ttl_ms(deadline: float) -> str:
    """A record is useless once its membership lapsed, so it expires then (and never blocks the queue forever)."""
    return str(max(1, int((deadline - time.time()) * 1000)))

