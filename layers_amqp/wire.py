"""The pika connection, with the frames of every message (publish, confirm, delivery) coded here.

pika codes each frame through generic objects and a callback registry, and trims its input buffer frame by frame;
for one message sent and received that was about a quarter of the process's CPU, all of it on the round trip a
sequential sender waits for.  Here the three hot cases are coded directly with ``struct``:

* ``basic.publish`` with its content is marshalled in one go (the method frame of each route is cached);
* ``basic.ack`` / ``basic.nack`` on the confirm channel go straight to the :class:`~layers_amqp.connection.Link`;
* a ``basic.deliver`` whose content is complete in the buffer goes straight to pika's channel ``_on_deliver`` (so
  pika still applies its consumer bookkeeping); one whose content has not fully arrived waits for more data.

Every other frame, and anything unusual (interleaved content, unknown channels), takes pika's own path, one
frame at a time and in order.  Everything written during one event-loop iteration goes out in one system call, and
the socket is read 64 KiB at a time (see :func:`_reader`).  Measured on sequential send+receive of a process
channel (3,000 messages, 5 runs each way): ~175 -> ~120 µs of CPU (user + system) per message, ~3.8k -> ~4.6k msgs/s.

Each piece that relies on pika's private state is a :class:`~layers.drivers.FastPath`, checked once per process
(:data:`CODEC` the read side, :data:`CANCEL` the consumer cancellation of :class:`DirectChannel`, :data:`PUBLISH`
the publish marshalling); without what it needs, or with ``LAYERS_PLAIN_DRIVERS=pika``, that piece goes through
pika's public API.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pika.channel
from pika import frame, spec
from pika.adapters.asyncio_connection import AsyncioConnection

from layers.drivers import FastPath

__all__ = ["Channel", "Connection"]

_FRAME_HEADER = struct.Struct(">BHI")  # type, channel, payload size
_METHOD_ID = struct.Struct(">HH")  # class id, method id
_CONFIRM = struct.Struct(">QB")  # delivery tag, bits (multiple)
_CONTENT_HEADER = struct.Struct(">HxxQ")  # class id, weight, body size
_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_BASIC = 60
_DELIVER, _ACK, _NACK = 60, 80, 120
_CACHED_ROUTES = 1024
_RECV_BYTES = 65536

#: The read side (frame decoding in :meth:`Connection._on_data_available`, the 64 KiB socket reader, the direct
#: send) relies on these private pika attributes, checked on the first connection of a process; without them
#: pika's own frame-by-frame path and buffered writes are used (one warning).  ``LAYERS_PLAIN_DRIVERS=pika``
#: forces that.
CODEC = FastPath("pika", "pika", "frame decoding and socket reader")
_CONNECTION_NEEDS = ("_frame_buffer", "_read_frame", "_trim_frame_buffer", "_process_frame", "_channels",
                     "bytes_received", "frames_received")
_TRANSPORT_NEEDS = ("_sock", "_protocol", "_state", "_STATE_ACTIVE", "_MAX_CONSUME_BYTES", "RxEndOfFile", "_consume")


def codec_missing(connection: Any, transport: Any) -> str | None:
    """What the read side needs from pika and lacks (None: all there)."""
    lacking = [f"Connection.{name}" for name in _CONNECTION_NEEDS if not hasattr(connection, name)]
    if not isinstance(getattr(connection, "_frame_buffer", b""), (bytes, bytearray)):
        lacking.append("Connection._frame_buffer as bytes")
    if not isinstance(getattr(connection, "_channels", {}), dict):
        lacking.append("Connection._channels as a dict")
    if not callable(getattr(pika.channel.Channel, "_on_deliver", None)):  # where a decoded delivery goes
        lacking.append("Channel._on_deliver")
    if _plaintext(transport):
        lacking += [f"{type(transport).__name__}.{name}" for name in _TRANSPORT_NEEDS if not hasattr(transport, name)]
    return ", ".join(lacking) or None


#: The publish marshalling (:meth:`Connection._publish_frames`) and the writes gathered per loop iteration rely on
#: these private pika attributes, checked once the first connection of a process is open (its frame size known);
#: without them :meth:`Connection._publish_plain` publishes through ``basic_publish`` and pika writes as it does.
PUBLISH = FastPath("pika", "pika", "publish marshalling")
_COUNTERS = ("bytes_sent", "frames_sent")  # pika's heartbeat checker watches bytes_sent


def publish_missing(connection: Any) -> str | None:
    """What the publish marshalling needs from pika and ``connection`` lacks (None: all there)."""
    limit = getattr(connection, "_body_max_length", None)
    lacking = [] if isinstance(limit, int) and limit > 0 else ["Connection._body_max_length as a positive int"]
    lacking += [f"Connection.{name} as an int" for name in _COUNTERS
                if not isinstance(getattr(connection, name, None), int)]
    if not callable(getattr(AsyncioConnection, "_adapter_emit_data", None)):
        lacking.append("AsyncioConnection._adapter_emit_data")
    return ", ".join(lacking) or None


#: Called with (delivery tag, multiple, acked) for each confirm on the confirm channel.
OnConfirm = Callable[[int, bool, bool], None]
#: ``publish(channel, exchange, routing key, body, properties, mandatory)``.
Publish = Callable[["Channel", str, str, bytes, "spec.BasicProperties | None", bool], None]


class Channel(pika.channel.Channel):  # type: ignore[misc]
    """A channel with the consumer cancellation the backend needs, through pika's public API only (the plain path;
    :class:`DirectChannel` is the fast one, used when :data:`CANCEL` finds pika's consumer state).

    :meth:`cancel_at_once` is ``basic.cancel`` waiting for its ``cancel-ok`` (pika then forgets the consumer) plus
    our own set of consumers being cancelled.  pika may hold that cancel back behind another call of this channel
    that waits for its reply, while ``basic.ack`` goes out at once: the broker may then hand the consumer one more
    message, which pika rejects back to its place in the queue (all consumers cancelled this way ack manually).  A
    ``basic.get`` written before that reject would take the message behind it, so :meth:`basic_get` waits until
    every such cancel is confirmed.  Deliveries arriving after any other cancel get pika's own treatment: rejected
    back to the queue (manual ack) or dropped (auto-ack: see :meth:`Link.consume
    <layers_amqp.connection.Link.consume>`, which acks those itself on this path)."""

    #: Whether deliveries arriving between ``basic.cancel`` and ``cancel-ok`` still reach the consumer's callback.
    keeps_late_deliveries = False

    def __init__(self, connection: Any, channel_number: int, on_open_callback: Callable[[Any], Any]) -> None:
        super().__init__(connection, channel_number, on_open_callback)
        self._unconfirmed_cancels: set[str] = set()  # cancel_at_once sent, cancel-ok not yet here
        self._held_gets: list[Callable[[], None]] = []
        self._watching_cancel_ok = False

    def cancelling(self, consumer_tag: str) -> bool:
        """Whether :meth:`cancel_at_once` was called for this consumer (and its cancel is not confirmed yet)."""
        return consumer_tag in self._unconfirmed_cancels

    def cancel_at_once(self, consumer_tag: str) -> None:
        """Stop the consumer: nothing reaches its callback any more (see the class documentation)."""
        if consumer_tag in self._unconfirmed_cancels or consumer_tag not in self.consumer_tags:
            return
        if not self._watching_cancel_ok:  # one callback for every cancel-ok: pika's per-call one is not per tag
            self.add_callback(self._on_cancel_ok, [spec.Basic.CancelOk], one_shot=False)
            self._watching_cancel_ok = True
        self._unconfirmed_cancels.add(consumer_tag)
        self.basic_cancel(consumer_tag, callback=_ignore)

    def forget_cancelled(self, consumer_tag: str) -> None:
        """Nothing to do here: the cancel-ok already ended the cancel (a ``basic.get`` waits for it)."""

    def basic_get(self, queue: str, callback: Callable[..., Any], auto_ack: bool = False) -> None:
        if self._unconfirmed_cancels:
            self._held_gets.append(lambda: super(Channel, self).basic_get(queue, callback, auto_ack))
            return
        super().basic_get(queue, callback, auto_ack)

    def _on_cancel_ok(self, method_frame: frame.Method) -> None:
        self._unconfirmed_cancels.discard(method_frame.method.consumer_tag)
        if not self._unconfirmed_cancels and self._held_gets:
            held, self._held_gets = self._held_gets, []
            for get in held if self.is_open else ():  # closing: the link fails the get that waits
                get()


#: The consumer cancellation of :class:`DirectChannel` relies on these private pika attributes, checked on the
#: first channel of a process; without them :class:`Channel` is used (one warning).
CANCEL = FastPath("pika", "pika", "consumer cancellation")
_CHANNEL_STATE = (("_consumers", dict), ("_cancelled", set), ("_consumers_with_noack", set))
_CHANNEL_METHODS = ("_send_method", "_on_deliver")


def cancel_missing(channel: Any) -> str | None:
    """What :class:`DirectChannel` needs from pika and ``channel`` lacks (None: all there)."""
    lacking = [f"Channel.{name} as a {kind.__name__}" for name, kind in _CHANNEL_STATE
               if not isinstance(getattr(channel, name, None), kind)]
    lacking += [f"Channel.{name}" for name in _CHANNEL_METHODS if not callable(getattr(channel, name, None))]
    return ", ".join(lacking) or None


class DirectChannel(Channel):
    """A channel that hands deliveries arriving after ``basic.cancel`` was sent to their consumer's callback.

    pika drops them (auto-ack: the broker already took the message off its queue, so it is lost) or rejects them
    back to the queue (manual ack: the process-queue consumer would then see that message again after the ones it
    still holds, and pay a round trip per bounce); the process-queue consumer is cancelled whenever its reader
    goes idle.  The callback stays registered until ``basic.cancel-ok``, after which the broker sends nothing
    more; a callback that does not want a delivery rejects it itself (the doorbells do)."""

    keeps_late_deliveries = True
    basic_get = pika.channel.Channel.basic_get  # cancels go out at once here: nothing to wait for

    def _on_deliver(self, method_frame: frame.Method, header_frame: frame.Header, body: bytes) -> None:
        tag = method_frame.method.consumer_tag
        callback = self._consumers.get(tag)
        if callback is not None and tag in self._cancelled:
            callback(self, method_frame.method, header_frame.properties, body)
            return
        super()._on_deliver(method_frame, header_frame, body)

    def cancelling(self, consumer_tag: str) -> bool:
        """Whether ``basic.cancel`` was already sent for this consumer."""
        return consumer_tag in self._cancelled

    def cancel_at_once(self, consumer_tag: str) -> None:
        """``basic.cancel`` (nowait), written now, ahead of the calls pika holds back while another call of this
        channel waits for its reply: the broker then stops the consumer before it sees what we send next (a
        reject that requeues a message must not hand it straight back to this consumer).  Deliveries the broker
        sent before are rejected back by pika; call :meth:`forget_cancelled` once a later reply has arrived."""
        if consumer_tag in self._cancelled or consumer_tag not in self._consumers:
            return
        self._cancelled.add(consumer_tag)
        del self._consumers[consumer_tag]
        self._consumers_with_noack.discard(consumer_tag)
        self._send_method(spec.Basic.Cancel(consumer_tag=consumer_tag, nowait=True))

    def forget_cancelled(self, consumer_tag: str) -> None:
        """A reply to a call sent after :meth:`cancel_at_once` arrived: nothing more can come for the consumer."""
        self._cancelled.discard(consumer_tag)


def _ignore(_frame: Any) -> None:
    pass


class Connection(AsyncioConnection):  # type: ignore[misc]
    """pika's asyncio connection with the hot frames coded here (see the module documentation)."""

    _frame_buffer: bytes  # pika's: received bytes not yet decoded
    bytes_received: int  # pika's: its heartbeat checker watches it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outgoing: list[bytes] = []
        self._flush_scheduled: asyncio.Handle | None = None
        self._flush_loop: asyncio.AbstractEventLoop = kwargs["custom_ioloop"]
        self._routes: dict[tuple[int, str, str, bool], bytes] = {}
        self._properties: tuple[spec.BasicProperties | None, bytes] = (None, b"\x00\x00")
        self._short = 0  # bytes still missing before the buffer is worth decoding again
        self._parts: list[bytes] = []  # what arrived meanwhile (the first is the buffer)
        self._wanted = 0
        self.on_confirm: OnConfirm | None = None
        self.confirm_channel = -1
        self._fast_read = False  # decided when the transport is up (CODEC)
        #: ``basic.publish`` of a message on an open channel; :meth:`choose_publisher` decides which (PUBLISH).
        self.publish: Publish = self._publish_plain
        super().__init__(*args, **kwargs)

    def _create_channel(self, channel_number: int, on_open_callback: Callable[[Channel], Any]) -> Channel:
        channel = DirectChannel(self, channel_number, on_open_callback)
        if CANCEL.usable(lambda: cancel_missing(channel)):
            return channel
        return Channel(self, channel_number, on_open_callback)

    def choose_publisher(self) -> None:
        """Decide how to publish, once the connection is open (pika knows the largest body frame then)."""
        if PUBLISH.usable(lambda: publish_missing(self)):
            self._adapter_emit_data = self._emit_buffered  # pika writes all its frames through this
            self.publish = self._publish_frames

    def _proto_connection_made(self, transport: Any) -> None:
        super()._proto_connection_made(transport)
        self._fast_read = CODEC.usable(lambda: codec_missing(self, transport))
        if self._fast_read and _plaintext(transport):
            transport._consume = _reader(transport)

    # -- writing ---------------------------------------------------------------------------------------------

    def _publish_plain(self, channel: Channel, exchange: str, key: str, body: bytes,
                       properties: spec.BasicProperties | None, mandatory: bool) -> None:
        channel.basic_publish(exchange, key, body, properties, mandatory)

    def _publish_frames(self, pub: Channel, exchange: str, key: str, body: bytes,
                        properties: spec.BasicProperties | None, mandatory: bool) -> None:
        """``basic.publish`` of ``body`` on ``pub``, marshalled here (the caller checked that it is open)."""
        channel = pub.channel_number
        route = self._routes.get((channel, exchange, key, mandatory))
        if route is None:
            route = self._route(channel, exchange, key, mandatory)
        size = len(body)
        header = _CONTENT_HEADER.pack(_BASIC, size) + self._encoded(properties)
        pieces = [route, _FRAME_HEADER.pack(_HEADER, channel, len(header)), header, _END]
        limit = self._body_max_length
        for start in range(0, size, limit):
            chunk = body[start:start + limit]
            pieces += (_FRAME_HEADER.pack(_BODY, channel, len(chunk)), chunk, _END)
        data = b"".join(pieces)
        self.bytes_sent += len(data)
        self.frames_sent += 2 + -(-size // limit)
        self._emit_buffered(data)

    def _route(self, channel: int, exchange: str, key: str, mandatory: bool) -> bytes:
        """The whole ``basic.publish`` method frame, which depends only on where the message goes."""
        method = spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory)
        route: bytes = frame.Method(channel, method).marshal()
        if len(self._routes) >= _CACHED_ROUTES:
            self._routes.clear()
        self._routes[(channel, exchange, key, mandatory)] = route
        return route

    def _encoded(self, properties: spec.BasicProperties | None) -> bytes:
        """Encoded properties; consecutive messages usually share one properties object (same TTL)."""
        last, encoded = self._properties
        if properties is not last:
            encoded = b"".join(properties.encode()) if properties is not None else b"\x00\x00"
            self._properties = (properties, encoded)
        return encoded

    def _emit_buffered(self, data: bytes) -> None:
        """What is written during one loop iteration goes out together at its end (or at :meth:`flush_outgoing`)."""
        if not self._outgoing:
            self._flush_scheduled = self._flush_loop.call_soon(self._flush_outgoing)
        self._outgoing.append(data)

    def flush_outgoing(self) -> None:
        """Write now what was published so far (and drop the flush scheduled for the end of the iteration)."""
        if self._flush_scheduled is not None:
            self._flush_scheduled.cancel()
        self._flush_outgoing()

    def _flush_outgoing(self) -> None:
        self._flush_scheduled = None
        if not self._outgoing:
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        transport = getattr(self, "_transport", None)
        if not data or transport is None:
            return
        sock = getattr(transport, "_sock", None)
        if (self._fast_read and _plaintext(transport) and sock is not None
                and getattr(transport, "_state", None) == getattr(transport, "_STATE_ACTIVE", 0)
                and transport.get_write_buffer_size() == 0):
            # Nothing queued: send right away instead of arming a write watcher for the next loop iteration
            # (two epoll updates and one more iteration per write).  What the kernel does not take goes through
            # pika's own buffered path, which also reports socket errors.
            try:
                data = data[sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass  # pika's transport sees the same error on its next read or write and closes cleanly
        if data:
            transport.write(data)

    # -- reading ---------------------------------------------------------------------------------------------

    def _on_data_available(self, data_in: bytes) -> None:
        if not self._fast_read:
            super()._on_data_available(data_in)
            return
        if self._short > 0 and self._parts and self._parts[0] is self._frame_buffer:
            # A known number of bytes is still missing: collect without decoding (or copying) until it is here.
            self._parts.append(data_in)
            self._short -= len(data_in)
            if self._short > 0:
                return
            buf, self._parts = b"".join(self._parts), []
        else:
            buf = self._frame_buffer + data_in if self._frame_buffer else data_in
        received = self.bytes_received
        pos, end = 0, len(buf)
        while True:
            wanted = pos + 8
            if wanted > end:
                break
            kind, channel, size = _FRAME_HEADER.unpack_from(buf, pos)
            wanted = pos + 8 + size
            if wanted > end:
                break  # incomplete
            if kind == _METHOD and size >= 4:
                taken = self._fast_method(buf, pos, end, channel, wanted - 1)
                if taken == 0:
                    wanted = self._wanted  # a delivery whose content has not all arrived: wait for the rest
                    break
                if taken > 0:
                    pos = taken
                    continue
            # Anything else: pika's own path, for exactly this frame.
            self._frame_buffer, self.bytes_received = buf[pos:], received + pos
            consumed, frame_value = self._read_frame()
            if not frame_value:
                return
            self._trim_frame_buffer(consumed)
            self._process_frame(frame_value)
            buf, received = self._frame_buffer, self.bytes_received
            pos, end = 0, len(buf)
        self._frame_buffer, self.bytes_received = buf[pos:], received + pos
        self._short = wanted - end
        if self._short > 0:
            self._parts = [self._frame_buffer]

    def _fast_method(self, buf: bytes, pos: int, end: int, channel: int, stop: int) -> int:
        """Handle the (complete) method frame at ``pos`` if it is a hot one: the position after what it used, 0
        when more data is needed first (at least up to ``self._wanted``), -1 when pika should handle it; ``stop``
        is where its frame-end octet is."""
        if buf[stop] != 0xCE:
            return -1
        cls, method = _METHOD_ID.unpack_from(buf, pos + 7)
        if cls != _BASIC:
            return -1
        if method in (_ACK, _NACK) and channel == self.confirm_channel and self.on_confirm is not None:
            tag, bits = _CONFIRM.unpack_from(buf, pos + 11)
            self.frames_received += 1
            self.on_confirm(tag, bool(bits & 1), method == _ACK)
            return stop + 1
        if method == _DELIVER:
            return self._fast_deliver(buf, stop + 1, end, channel, pos)
        return -1

    def _fast_deliver(self, buf: bytes, pos: int, end: int, channel: int, start: int) -> int:
        """A ``basic.deliver`` method frame at ``start``; its content header and body frames follow at ``pos``."""
        target = self._channels.get(channel)
        if target is None:
            return -1
        if end - pos < 8:
            return self._need(pos + 8)
        header = pos
        kind, number, size = _FRAME_HEADER.unpack_from(buf, header)
        header_end = header + 7 + size
        if kind != _HEADER or number != channel or size < 14:
            return -1  # not the plain layout: let pika assemble it
        if header_end >= end:
            return self._need(header_end + 1)
        if buf[header_end] != 0xCE:
            return -1
        body_size = _CONTENT_HEADER.unpack_from(buf, header + 7)[1]
        pos = header_end + 1
        chunks = []
        remaining = body_size
        while remaining > 0:
            if end - pos < 8:
                return self._need(pos + 8 + remaining)
            kind, number, size = _FRAME_HEADER.unpack_from(buf, pos)
            if kind != _BODY or number != channel or size > remaining:
                return -1
            if pos + 8 + size > end:
                return self._need(pos + 8 + remaining)
            if buf[pos + 7 + size] != 0xCE:
                return -1
            chunks.append(buf[pos + 7:pos + 7 + size])
            remaining -= size
            pos += 8 + size
        method = spec.Basic.Deliver().decode(buf, start + 11)
        properties = spec.BasicProperties()
        properties.decode(buf, header + 7 + _CONTENT_HEADER.size)
        self.frames_received += 2 + len(chunks)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        target._on_deliver(frame.Method(channel, method), frame.Header(channel, body_size, properties), body)
        return pos

    def _need(self, wanted: int) -> int:
        """More data is needed: at least up to offset ``wanted`` of the buffer (so it is not decoded before)."""
        self._wanted = wanted
        return 0


def _plaintext(transport: Any) -> bool:
    """pika's plain TCP transport (TLS transports read and write differently: left alone)."""
    return type(transport).__name__ == "_AsyncPlaintextTransport"


def _reader(transport: Any) -> Callable[[], None]:
    """pika reads 4 KiB per ``recv`` and keeps reading until one fails with EAGAIN: two system calls and an
    exception for every readable event, and a 1 MB message in 256 pieces.  This reads 64 KiB at a time and stops
    after a short read (the socket is drained then; the event loop's readiness is level-triggered, so data arriving
    later is read on the next iteration), within pika's per-event limit so other callbacks are not starved."""
    sock, protocol = transport._sock, transport._protocol
    active, limit = transport._STATE_ACTIVE, transport._MAX_CONSUME_BYTES

    def consume() -> None:
        consumed = 0
        while transport._state == active and consumed < limit:
            data = sock.recv(_RECV_BYTES)
            if not data:
                raise transport.RxEndOfFile()
            consumed += len(data)
            protocol.data_received(data)
            if len(data) < _RECV_BYTES:
                return

    return consume
