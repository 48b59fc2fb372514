"""AMQP channels: synchronous methods, publishing with confirms, consuming.

One concept, kept whole although past 400 lines: a channel and its
methods.
"""

from __future__ import annotations

from collections import deque
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio
from pamqp import base, body, commands, header

from ._confirm import Confirmation, Outcome, PendingConfirms, Returned
from ._consume import Consumer, Deliveries
from ._errors import AMQPError, ChannelClosedError
from ._frames import FrameError, body_frame_count, marshal_content, marshal_method
from ._properties import EncodedProperties, Message, Properties
from ._stats import ChannelStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    # Only for annotations: a runtime import would be circular, and attrs
    # does not evaluate annotations under `from __future__ import annotations`.
    from ._connection import Connection  # noqa: TC004

_T = TypeVar("_T", bound=base.Frame)

CLOSE_TIMEOUT: Final = 2.0
# Publishing waits once this much is written but not yet sent...
MAX_UNFLUSHED: Final = 1 << 20
# ...and lets the writer task run once this much is pending, so that a long
# burst of publishes goes out in large writes while it is still being made.
YIELD_UNFLUSHED: Final = 64 << 10
_METHOD_CACHE_SIZE: Final = 1024
_CONSUMER_BUFFER: Final = 256
_NO_PROPERTIES: Final = commands.Basic.Properties().marshal()

# Methods the broker sends on its own, rather than in reply to ours.
_Deliver = commands.Basic.Deliver
_GetOk = commands.Basic.GetOk
_Return = commands.Basic.Return
_Ack = commands.Basic.Ack
_Nack = commands.Basic.Nack


@attrs.frozen
class QueueDeclared:
    """The broker's answer to Queue.Declare."""

    name: str
    message_count: int
    consumer_count: int


@attrs.define(eq=False)
class _Rpc:
    """One synchronous method waiting for its reply."""

    reply: tuple[type[base.Frame], ...]
    event: trio.Event = attrs.Factory(trio.Event)
    result: object = None
    error: AMQPError | None = None

    def finish(self, result: object = None, error: AMQPError | None = None) -> None:
        self.result = result
        self.error = error
        self.event.set()


@attrs.define(eq=False)
class _Content:
    """A message being reassembled from its method, header and body frames."""

    method: commands.Basic.Deliver | commands.Basic.GetOk | commands.Basic.Return
    properties: commands.Basic.Properties | None = None
    size: int = 0
    received: int = 0
    parts: list[bytes] = attrs.Factory(list)


@attrs.define(eq=False, repr=False)
class Channel:
    """An open AMQP channel; get one from :meth:`Connection.open_channel`.

    Synchronous methods (declare, bind, ...) run one at a time per channel.
    Publishing is pipelined: see :meth:`publish`.
    """

    _conn: Connection
    _number: int
    _window: int
    _pending: PendingConfirms | None = None
    _error: AMQPError | None = None
    _closing: bool = False
    _rpcs: deque[_Rpc] = attrs.Factory(deque)
    _rpc_lock: trio.Lock = attrs.Factory(trio.Lock)
    _window_lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    _consumers: dict[str, Consumer] = attrs.Factory(dict)
    _consumer_count: int = 0
    _content: _Content | None = None
    _method_cache: dict[tuple[str, str, bool], bytes] = attrs.Factory(dict)
    _published: int = 0
    _prefetch: int = 0

    def __repr__(self) -> str:
        mode = " confirm" if self._pending is not None else ""
        state = "closed" if self.closed else "open"
        return f"<Channel {self._number}{mode} {state} on {self._conn._url.redacted()}>"

    @property
    def channel_id(self) -> int:
        """The channel number on the connection."""
        return self._number

    @property
    def confirm(self) -> bool:
        """Whether the channel is in confirm mode."""
        return self._pending is not None

    @property
    def closed(self) -> bool:
        """Whether the channel is closed (or closing)."""
        return self._error is not None or self._closing

    def statistics(self) -> ChannelStatistics:
        """A snapshot of this channel's state."""
        return ChannelStatistics(
            channel_id=self._number,
            confirm=self._pending is not None,
            window=self._window,
            unconfirmed=0 if self._pending is None else len(self._pending),
            published=self._published,
            consumers=len(self._consumers),
            closed=self.closed,
        )

    # -- publishing ---------------------------------------------------------

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        properties: Properties | EncodedProperties | None = None,
        mandatory: bool = False,
    ) -> Confirmation:
        """Publish one message and return its :class:`Confirmation` at once.

        This does not wait for the broker: it waits only while the connection
        is blocked by the broker, while ``window`` messages are unconfirmed on
        a confirm channel, or while 1 MiB is written but not yet sent. If it
        raises :class:`trio.Cancelled`, the message was not sent.

        ``mandatory`` needs a confirm channel and a ``properties.message_id``,
        by which the broker's Basic.Return is matched to the message.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"the body must be bytes, not {type(body).__name__}")
        pending = self._pending
        message_id = self._mandatory_id(properties) if mandatory else None
        conn = self._conn
        if (
            self._error is not None
            or self._closing
            or conn._refusal is not None
            or conn._blocked_reason is not None
            or (pending is not None and len(pending) >= self._window)
            or len(conn._out) > MAX_UNFLUSHED
        ):
            await self._wait_for_room()

        number = self._number
        key = (exchange, routing_key, mandatory)
        method = self._method_cache.get(key)
        if method is None:
            method = marshal_method(
                number,
                commands.Basic.Publish(
                    exchange=exchange, routing_key=routing_key, mandatory=mandatory
                ),
            )
            if len(self._method_cache) >= _METHOD_CACHE_SIZE:
                self._method_cache.clear()
            self._method_cache[key] = method
        encoded = _NO_PROPERTIES if properties is None else properties.encode()
        chunk = conn._chunk_size
        if len(encoded) + 12 > chunk:
            # A content header cannot be split across frames.
            raise ValueError(
                f"the message properties take {len(encoded)} bytes, more than one frame "
                f"holds (frame_max {conn._tuned.frame_max}); put less in the headers"
            )
        frames = marshal_content(number, encoded, body, chunk)
        conn._write_message(method, frames, 2 + body_frame_count(len(body), chunk))

        self._published += 1
        if pending is None:
            confirmation = Confirmation(0, Outcome.UNCONFIRMED)
        else:
            confirmation = pending.add(message_id)
        if conn._unflushed >= YIELD_UNFLUSHED:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return confirmation

    def _mandatory_id(self, properties: Properties | EncodedProperties | None) -> str:
        if self._pending is None:
            raise ValueError(
                "mandatory=True needs a channel opened with confirm=True: "
                "otherwise a returned message could not be reported"
            )
        message_id = None if properties is None else properties.message_id
        if not message_id:
            raise ValueError(
                "mandatory=True needs properties.message_id: Basic.Return "
                "carries no delivery tag, so returns are matched by message_id"
            )
        return message_id

    async def _wait_for_room(self) -> None:
        # Every wait parks until the reader or writer changes the state, and
        # then all conditions are checked again.
        conn = self._conn
        pending = self._pending
        while True:
            self._check_usable()
            if conn._blocked_reason is not None:
                await conn.wait_unblocked()
            elif pending is not None and len(pending) >= self._window:
                await self._window_lot.park()
            elif len(conn._out) > MAX_UNFLUSHED:
                await conn._drain_lot.park()
            else:
                return

    # -- synchronous methods ------------------------------------------------

    async def exchange_declare(
        self,
        name: str,
        type: str = "topic",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        passive: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare an exchange (or check it exists, with ``passive``)."""
        await self._call(
            commands.Exchange.Declare(
                exchange=name,
                exchange_type=type,
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=_arguments(arguments),
            ),
            commands.Exchange.DeclareOk,
        )

    async def exchange_delete(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange."""
        await self._call(
            commands.Exchange.Delete(exchange=name, if_unused=if_unused),
            commands.Exchange.DeleteOk,
        )

    async def queue_declare(
        self,
        name: str = "",
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> QueueDeclared:
        """Declare a queue; an empty name lets the broker choose one."""
        reply = await self._call(
            commands.Queue.Declare(
                queue=name,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=_arguments(arguments),
            ),
            commands.Queue.DeclareOk,
        )
        return QueueDeclared(
            name=reply.queue or "",
            message_count=reply.message_count or 0,
            consumer_count=reply.consumer_count or 0,
        )

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        await self._call(
            commands.Queue.Bind(
                queue=queue,
                exchange=exchange,
                routing_key=routing_key,
                arguments=_arguments(arguments),
            ),
            commands.Queue.BindOk,
        )

    async def queue_delete(
        self, name: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete a queue; return how many messages it held."""
        reply = await self._call(
            commands.Queue.Delete(queue=name, if_unused=if_unused, if_empty=if_empty),
            commands.Queue.DeleteOk,
        )
        return int(reply.message_count or 0)

    async def queue_purge(self, name: str) -> int:
        """Remove every ready message of a queue; return how many there were."""
        reply = await self._call(commands.Queue.Purge(queue=name), commands.Queue.PurgeOk)
        return int(reply.message_count or 0)

    async def basic_qos(self, prefetch_count: int) -> None:
        """Limit the unacknowledged deliveries the broker pushes to this channel."""
        await self._call(commands.Basic.Qos(prefetch_count=prefetch_count), commands.Basic.QosOk)
        self._prefetch = prefetch_count

    # -- consuming ----------------------------------------------------------

    @asynccontextmanager
    async def consume(
        self,
        queue: str,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str = "",
    ) -> AsyncIterator[AsyncIterator[Message]]:
        """Consume ``queue``: yields an async iterator of delivered messages.

        Deliveries are buffered in a bounded channel; set :meth:`basic_qos`
        so the broker does not push more than the consumer keeps up with.
        On exit the consumer is cancelled; unacknowledged messages go back
        to the queue when the channel closes.
        """
        if not consumer_tag:
            self._consumer_count += 1
            consumer_tag = f"consumer.{self._number}.{self._consumer_count}"
        if consumer_tag in self._consumers:
            raise ValueError(f"consumer tag {consumer_tag!r} is already in use on this channel")
        send, receive = trio.open_memory_channel[Message](max(self._prefetch, _CONSUMER_BUFFER))
        consumer = Consumer(consumer_tag, send)
        # Registered before Basic.Consume is sent: deliveries may follow the
        # ConsumeOk frame before this task runs again.
        self._consumers[consumer_tag] = consumer
        try:
            await self._call(
                commands.Basic.Consume(
                    queue=queue, consumer_tag=consumer_tag, no_ack=no_ack, exclusive=exclusive
                ),
                commands.Basic.ConsumeOk,
            )
            with receive:
                yield Deliveries(receive, consumer)
        finally:
            with trio.CancelScope(shield=True):
                await self._cancel_consumer(consumer)

    async def _cancel_consumer(self, consumer: Consumer) -> None:
        if self._consumers.get(consumer.tag) is consumer:
            # An AMQPError means the channel or connection closed meanwhile,
            # which ends the consumer as well.
            with trio.move_on_after(CLOSE_TIMEOUT), suppress(AMQPError):
                await self._call(
                    commands.Basic.Cancel(consumer_tag=consumer.tag),
                    commands.Basic.CancelOk,
                )
        if self._consumers.get(consumer.tag) is consumer:
            del self._consumers[consumer.tag]
        consumer.stop(None)

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (and every earlier one, with ``multiple``)."""
        await trio.lowlevel.checkpoint()
        self._check_usable()
        self._conn._send_method(
            self._number, commands.Basic.Ack(delivery_tag=delivery_tag, multiple=multiple)
        )

    async def basic_get(self, queue: str, *, no_ack: bool = True) -> Message | None:
        """Fetch one message from ``queue``, or None if it is empty."""
        result = await self._call_any(
            commands.Basic.Get(queue=queue, no_ack=no_ack),
            (commands.Basic.GetOk, commands.Basic.GetEmpty),
        )
        return result if isinstance(result, Message) else None

    # -- plumbing -------------------------------------------------------------

    def _raise_unusable(self) -> None:
        if self._error is not None:
            raise self._error._fresh()
        if self._conn._refusal is not None:
            raise self._conn._refusal._fresh()
        if self._closing:
            raise ChannelClosedError(
                200, "channel is closing", channel_id=self._number, by_client=True
            )

    def _check_usable(self) -> None:
        if self._error is not None or self._closing or self._conn._refusal is not None:
            self._raise_unusable()

    async def _call(self, method: base.Frame, reply: type[_T]) -> _T:
        result = await self._call_any(method, (reply,))
        assert isinstance(result, reply)
        return result

    async def _call_any(self, method: base.Frame, reply: tuple[type[base.Frame], ...]) -> object:
        async with self._rpc_lock:
            self._check_usable()
            return await self._call_unlocked(method, reply)

    async def _call_unlocked(
        self, method: base.Frame, reply: tuple[type[base.Frame], ...]
    ) -> object:
        rpc = _Rpc(reply)
        # If the caller is cancelled, the entry stays queued so that the
        # late reply is matched to it and dropped, not to the next call.
        self._rpcs.append(rpc)
        self._conn._send_method(self._number, method)
        await rpc.event.wait()
        if rpc.error is not None:
            raise rpc.error._fresh()
        return rpc.result

    async def _open(self, confirm: bool) -> None:
        # Without the lock, whose acquisition is a checkpoint: Channel.Open
        # is then always on its way before anything can cancel us, and the
        # Channel.Close sent on exit never reaches the broker alone (which
        # would be a connection error).
        await self._call_unlocked(commands.Channel.Open(), (commands.Channel.OpenOk,))
        if confirm:
            await self._call(commands.Confirm.Select(), commands.Confirm.SelectOk)
            self._pending = PendingConfirms()

    async def _close(self) -> None:
        """Close with Channel.Close / CloseOk, unless already closed."""
        if self._error is not None or self._closing:
            return
        if self._conn._refusal is not None:
            # The connection is closing: its Connection.Close ends the channel.
            self._set_closed(self._conn._refusal)
            return
        self._closing = True
        # An AMQPError means the broker closed the channel meanwhile, or the
        # connection went: closed either way.
        with trio.move_on_after(CLOSE_TIMEOUT), suppress(AMQPError):
            await self._call_unlocked(
                commands.Channel.Close(
                    reply_code=200, reply_text="Normal shutdown", class_id=0, method_id=0
                ),
                (commands.Channel.CloseOk,),
            )
        # Without a CloseOk in time the number stays reserved; a late CloseOk
        # still releases it.
        self._set_closed(
            ChannelClosedError(200, "Normal shutdown", channel_id=self._number, by_client=True)
        )

    def _set_closed(self, error: AMQPError) -> None:
        if self._error is not None:
            return
        self._error = error
        self._content = None
        if self._pending is not None:
            self._pending.fail_all(error)
        rpcs, self._rpcs = self._rpcs, deque()
        for rpc in rpcs:
            rpc.finish(error=error)
        consumers = list(self._consumers.values())
        self._consumers.clear()
        for consumer in consumers:
            consumer.stop(error)
        self._window_lot.unpark_all()

    # -- frames from the reader task ------------------------------------------

    def _handle_frame(
        self, frame: object
    ) -> tuple[trio.MemorySendChannel[Message], Message] | None:
        """Process one frame; return a delivery the reader must still hand over.

        Deliveries are handed over without waiting when the consumer's buffer
        has room; otherwise the reader waits, which stops reading from the
        socket until the consumer catches up.
        """
        if self._content is not None:
            return self._content_frame(frame)
        kind = type(frame)
        if self._error is not None:
            self._frame_after_close(frame)
            return None
        if kind is _Ack:
            assert isinstance(frame, _Ack)
            self._settle(frame.delivery_tag, frame.multiple, ack=True)
        elif kind is _Deliver or kind is _GetOk or kind is _Return:
            assert isinstance(frame, _Deliver | _GetOk | _Return)
            self._content = _Content(frame)
        elif kind is _Nack:
            assert isinstance(frame, _Nack)
            self._settle(frame.delivery_tag, frame.multiple, ack=False)
        elif kind is commands.Channel.Close:
            assert isinstance(frame, commands.Channel.Close)
            self._closed_by_broker(frame)
        elif kind is commands.Channel.CloseOk:
            assert isinstance(frame, commands.Channel.CloseOk)
            self._reply(frame)
            self._set_closed(
                ChannelClosedError(200, "Normal shutdown", channel_id=self._number, by_client=True)
            )
            self._conn._release_channel(self._number)
        elif kind is commands.Basic.Cancel:
            assert isinstance(frame, commands.Basic.Cancel)
            self._cancelled_by_broker(frame)
        elif kind is commands.Channel.Flow:
            assert isinstance(frame, commands.Channel.Flow)
            self._conn._send_method(self._number, commands.Channel.FlowOk(active=frame.active))
        elif isinstance(frame, base.Frame):
            self._reply(frame)
        else:
            raise FrameError(f"unexpected {type(frame).__name__} frame on channel {self._number}")
        return None

    def _frame_after_close(self, frame: object) -> None:
        # After a close only the end of the close handshake matters.
        if isinstance(frame, commands.Channel.CloseOk):
            self._conn._release_channel(self._number)
        elif isinstance(frame, commands.Channel.Close):
            self._conn._send_method(self._number, commands.Channel.CloseOk())
            self._conn._release_channel(self._number)

    def _reply(self, frame: base.Frame) -> None:
        if self._rpcs and isinstance(frame, self._rpcs[0].reply):
            self._rpcs.popleft().finish(frame)
        # Anything else is a reply nobody waits for; it is dropped.

    def _settle(self, delivery_tag: int, multiple: bool, *, ack: bool) -> None:
        counters = self._conn._counters
        if ack:
            counters.acks_received += 1
        else:
            counters.nacks_received += 1
        if multiple:
            counters.multiple_acks_received += 1
        if self._pending is None:
            return
        settled = self._pending.settle(delivery_tag, multiple, ack=ack)
        if settled and self._window_lot:
            self._window_lot.unpark(count=settled)

    def _closed_by_broker(self, frame: commands.Channel.Close) -> None:
        error = ChannelClosedError(
            frame.reply_code or 0,
            frame.reply_text,
            frame.class_id or 0,
            frame.method_id or 0,
            channel_id=self._number,
        )
        self._conn._send_method(self._number, commands.Channel.CloseOk())
        # If we sent Channel.Close too, the broker will still answer it with
        # CloseOk, and the number must stay reserved until then.
        awaiting_close_ok = self._closing
        self._set_closed(error)
        if not awaiting_close_ok:
            self._conn._release_channel(self._number)

    def _cancelled_by_broker(self, frame: commands.Basic.Cancel) -> None:
        consumer = self._consumers.pop(frame.consumer_tag or "", None)
        if consumer is not None:
            consumer.cancelled_by_broker = True
            consumer.stop(None)
        if not frame.nowait:
            self._conn._send_method(
                self._number, commands.Basic.CancelOk(consumer_tag=frame.consumer_tag)
            )

    def _content_frame(
        self, frame: object
    ) -> tuple[trio.MemorySendChannel[Message], Message] | None:
        content = self._content
        assert content is not None
        if isinstance(frame, body.ContentBody):
            if content.properties is None:
                raise FrameError(f"a body frame came before its header on channel {self._number}")
            content.parts.append(frame.value)
            content.received += len(frame.value)
            if content.received < content.size:
                return None
        elif isinstance(frame, header.ContentHeader) and content.properties is None:
            content.properties = frame.properties
            content.size = frame.body_size
            if content.size:
                return None
        else:
            raise FrameError(
                f"expected a content frame on channel {self._number}, got {type(frame).__name__}"
            )
        self._content = None
        return self._content_done(content)

    def _content_done(
        self, content: _Content
    ) -> tuple[trio.MemorySendChannel[Message], Message] | None:
        assert content.properties is not None
        parts = content.parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        method = content.method
        if isinstance(method, _Return):
            self._returned(method, content.properties)
            return None
        message = Message(
            body=data,
            exchange=method.exchange,
            routing_key=method.routing_key or "",
            delivery_tag=method.delivery_tag or 0,
            redelivered=bool(method.redelivered),
            properties=Properties.from_pamqp(content.properties),
        )
        if isinstance(method, _GetOk):
            if self._rpcs and _GetOk in self._rpcs[0].reply:
                self._rpcs.popleft().finish(message)
            return None
        consumer = self._consumers.get(method.consumer_tag or "")
        if consumer is None:
            return None  # Cancelled meanwhile; the broker requeues it.
        try:
            consumer.send.send_nowait(message)
        except trio.WouldBlock:
            return consumer.send, message
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # The consumer stopped listening; the broker requeues it.
        return None

    def _returned(
        self, method: commands.Basic.Return, properties: commands.Basic.Properties
    ) -> None:
        counters = self._conn._counters
        counters.returns_received += 1
        returned = Returned(
            reply_code=method.reply_code or 0,
            reply_text=method.reply_text,
            exchange=method.exchange,
            routing_key=method.routing_key or "",
        )
        if self._pending is None or not self._pending.returned(properties.message_id, returned):
            counters.unmatched_returns += 1


def _arguments(arguments: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if arguments is None else dict(arguments)
