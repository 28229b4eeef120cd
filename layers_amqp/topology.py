"""Where things live on the broker: queue names, routing keys and queue arguments for one layer ``prefix``.

Every queue is a plain classic queue (not durable, not exclusive, not auto-delete): senders declare a process queue
before its owner's first receive, so it must outlive the declaring connection, and an idle owner cancels its
consumer, which must not delete the queue.  Unused queues expire on the server (``x-expires``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["GROUP_EXCHANGE", "Topology"]

#: Group messages go through the broker's built-in direct exchange: it always exists, so no declaration can race
#: a ``flush`` that deletes it, and its bindings disappear with the queues they point to.
GROUP_EXCHANGE = "amq.direct"
_MAX_NAME = 255  # AMQP short string


@dataclass(frozen=True)
class Topology:
    """Names and arguments derived from the layer settings (shared by every process using the same prefix)."""

    prefix: str
    expiry: float  # message expiry, seconds
    group_expiry: float  # membership lifetime after the latest group_add, seconds

    # -- names -------------------------------------------------------------------------------------------------

    def queue(self, queue: str) -> str:
        """The AMQP queue of a named channel or a process queue (``specific.abc!``)."""
        return f"{self.prefix}:{queue}"

    def group_key(self, group: str) -> str:
        """The routing key of ``group`` on :data:`GROUP_EXCHANGE`."""
        return f"{self.prefix}:{group}"

    def group_inbox(self, queue: str) -> str:
        """A process's group inbox: the membership records of its channels, with no length limit (channel names
        never hold ':', so this never names a channel)."""
        return f"{self.prefix}:{queue}:groups"

    def inbox_process(self, name: str) -> str | None:
        """The process queue whose group inbox is AMQP queue ``name``, or None when ``name`` is no inbox."""
        head, tail = f"{self.prefix}:", ":groups"
        if not (name.startswith(head) and name.endswith(tail)):
            return None
        queue = name[len(head):-len(tail)]
        return queue if queue.endswith("!") and ":" not in queue else None

    @staticmethod
    def member_binding(channel: str) -> dict[str, Any]:
        """The arguments of the binding that routes a group into the process queue for member ``channel``."""
        return {"x-member": channel}

    def member_queue(self, group: str, channel: str) -> str:
        """The membership queue of a named channel in a group (its existence *is* the membership)."""
        name = f"{self.prefix}::member:{group}:{channel}"
        if len(name.encode()) <= _MAX_NAME:
            return name
        digest = hashlib.sha1(f"{group}\0{channel}".encode()).hexdigest()
        return f"{self.prefix}::member:{digest}"

    @property
    def registry(self) -> str:
        """The queue listing every queue this prefix declared, so ``flush`` can find them without a management API."""
        return f"{self.prefix}::registry"

    # -- lifetimes (milliseconds) ----------------------------------------------------------------------------

    @property
    def process_expires_ms(self) -> int:
        """A process queue unused this long is deleted by the broker.

        Twice the message expiry: a sender re-declares the queues it sends to at least every half of this, so a
        queue can only expire once every message it held has expired too.  Its owner re-declares it while alive.
        """
        return _ms(max(2 * self.expiry, 60.0))

    @property
    def named_expires_ms(self) -> int:
        """Named channel queues also outlive any group membership pointing at them (see :meth:`member_args`)."""
        return max(self.process_expires_ms, _ms(self.group_expiry + 60.0))

    @property
    def registry_ttl_ms(self) -> int:
        """Registry records are re-written at least every half of this while their queue may exist."""
        return 2 * max(self.process_expires_ms, self.named_expires_ms)

    @property
    def registry_expires_ms(self) -> int:
        """The registry itself goes once nobody declared it (or flushed) for this long.  A layer re-declares it
        before writing a record when its last declaration is older than half a record TTL, so the registry
        outlives every record in it; after a flush and no more use of the prefix it does not stay forever."""
        return 2 * self.registry_ttl_ms

    # -- queue arguments ----------------------------------------------------------------------------------------

    def channel_args(self, queue: str, capacity: int) -> dict[str, Any]:
        """Capacity is a queue length limit: a publish past it is nacked (reject-publish), never stored."""
        expires = self.named_expires_ms if "!" not in queue else self.process_expires_ms
        return {"x-max-length": capacity, "x-overflow": "reject-publish", "x-expires": expires}

    def inbox_args(self) -> dict[str, Any]:
        return {"x-expires": self.process_expires_ms}

    def member_args(self, channel_queue: str) -> dict[str, Any]:
        """A membership queue bound to the group: each group message expires on arrival (TTL 0) and is
        dead-lettered to the member's channel queue; the queue itself lapses ``group_expiry`` after the last add."""
        return {
            "x-message-ttl": 0,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": channel_queue,
            "x-expires": _ms(self.group_expiry),
        }

    def registry_args(self) -> dict[str, Any]:
        return {"x-message-ttl": self.registry_ttl_ms, "x-max-length": 100_000, "x-overflow": "drop-head",
                "x-expires": self.registry_expires_ms}


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
