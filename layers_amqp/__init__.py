"""The AMQP 0-9-1 (RabbitMQ) channel layer: ``layers_amqp.AMQPChannelLayer`` or ``layers.from_url("amqp://...")``.

How the channel-layer model maps onto RabbitMQ (details in each module):

* every channel queue is a classic, non-durable queue ``<prefix>:<name>`` (a named channel, or a process queue
  ``<prefix>:specific.abc!``) with ``x-max-length`` = capacity, ``x-overflow: reject-publish`` and ``x-expires``;
  messages carry a per-message TTL; sends are confirmed publishes, and a nack is ``ChannelFull``
  (:mod:`.topology`, :mod:`.declarations`);
* a process reads its queue with a manual-ack consumer (prefetch: the core's receive batch) while someone
  receives; a named channel is read with ``basic.get``, so a message goes to exactly one reader and no idle
  process holds one (:mod:`.backend`);
* groups go through ``amq.direct``: a process channel's membership is a binding of its process queue (so group
  messages meet its capacity and keep their order with sends) plus a record in its process's *group inbox*,
  resolved by the owner, one copy per process; a named channel's membership is a durable queue that expires
  ``group_expiry`` after the last add and dead-letters group messages into the channel (:mod:`.groups`);
* one connection per event loop with publisher confirms, reconnection with backoff, and a bounded ``timeout``
  after which calls raise ``BackendUnavailable`` (:mod:`.connection`).
"""

from .layer import AMQPChannelLayer

__all__ = ["AMQPChannelLayer"]
