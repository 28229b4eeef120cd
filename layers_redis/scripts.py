"""The Lua scripts that make each operation one atomic server call, and how items are framed in a queue.

A queue is a Redis list.  Each element is the item prefixed by its deadline in milliseconds as 15 ASCII digits, so
a script can drop expired items from the head without decoding the item.  Deadlines in one queue only grow when
every writer uses the same ``expiry`` (the usual case), so expired items are always at the head and never count
toward capacity.  If layers with *different* expiries share a queue, an item with a shorter expiry behind one with
a longer expiry keeps counting toward capacity until it reaches the head (capacity errs on the full side; the item
itself is still never delivered after its deadline, because the reader checks it again).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["ARM", "GIVE_BACK", "GROUP_ADD", "GROUP_MEMBERS", "HEADER", "PUSH", "Script", "frame", "unframe"]

HEADER = 15  # digits of the deadline (ms) in front of every element


def frame(deadline: float, item: bytes) -> bytes:
    return b"%015d" % int(deadline * 1000) + item


def unframe(element: bytes) -> bytes:
    return element[HEADER:]


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Drops expired elements from the head of KEYS[1] (ARGV[1] is "now" in ms).  Shared by PUSH and ARM.  An element
# without a numeric deadline (written by something else than this layer) counts as expired: comparing its nil
# deadline would raise an error on every later push and pop of the queue.
_TRIM = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local head = redis.call('LINDEX', key, 0)
while head and (tonumber(string.sub(head, 1, 15)) or 0) < now do
  redis.call('LPOP', key)
  head = redis.call('LINDEX', key, 0)
end
"""

# KEYS[1] queue, KEYS[2] its readers list; ARGV: now ms, capacity, framed element, key TTL ms.
# Returns 1 if stored or handed over, 0 if full.  When the queue is empty and a reader is waiting (a token in
# KEYS[2]: 15-digit lease deadline, 6-digit arm generation, its SUBSCRIBE channel; one token per item it can take),
# the element is PUBLISHed to that reader, prefixed by the generation, instead of stored: no pop round trip.
# PUBLISH answers how many subscribers got it, so a token of a reader that went away is skipped and the element
# is stored as usual.  The queue's TTL only ever grows, so the
# key outlives its newest item and then vanishes by itself if nobody reads it.
PUSH = Script("push", _TRIM + """
local length = redis.call('LLEN', key)
if length >= tonumber(ARGV[2]) then return 0 end
if length == 0 then
  local token = redis.call('LPOP', KEYS[2])
  while token do
    if (tonumber(string.sub(token, 1, 15)) or 0) >= now
        and redis.call('PUBLISH', string.sub(token, 22), string.sub(token, 16, 21) .. ARGV[3]) > 0 then
      return 1
    end
    token = redis.call('LPOP', KEYS[2])
  end
end
redis.call('RPUSH', key, ARGV[3])
local ttl = tonumber(ARGV[4])
if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
return 1
""")

# KEYS[1] queue; ARGV: key TTL ms, then the framed elements, last first.  Puts them back at the head in order (items
# a process took and nobody there claimed); like PUSH, a queue the list newly creates expires by itself.
GIVE_BACK = Script("give_back", """
redis.call('LPUSH', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
""")

# KEYS[1] queue, KEYS[2] readers; ARGV: now ms, limit, new token, previous token (or ''), readers TTL ms.
# Withdraws the reader's previous token, then pops up to ``limit`` elements; if there are none, registers
# ``limit`` tokens so the next pushes are handed over by PUBLISH.
ARM = Script("arm", _TRIM + """
if ARGV[4] ~= '' then redis.call('LREM', KEYS[2], 0, ARGV[4]) end
local n = tonumber(ARGV[2])
if head then
  local items = redis.call('LRANGE', key, 0, n - 1)
  redis.call('LTRIM', key, n, -1)
  return items
end
local tokens = {}
for i = 1, n do tokens[i] = ARGV[3] end
redis.call('RPUSH', KEYS[2], unpack(tokens))
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {}
""")

# KEYS[1] group zset (member -> membership deadline ms); ARGV: channel, deadline ms, key TTL ms.
GROUP_ADD = Script("group_add", """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
""")

# KEYS[1] group zset; ARGV[1] now ms.  Forgets lapsed members, returns the live ones.
GROUP_MEMBERS = Script("group_members", """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
""")
