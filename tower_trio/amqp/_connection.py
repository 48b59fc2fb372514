"""The AMQP connection: its tasks, its write buffer and its lifetime.

A connection runs three tasks in a nursery of its own, shielded from the
caller's cancellation so that the close handshakes still work when the
caller's block is cancelled; the connection stops them itself:

* the reader reads large chunks, cuts them into frames and dispatches each
  frame to its channel at once (acks resolve confirmations right there);
* the writer sends everything written since its last send in one
  ``send_all``, which is what makes pipelined publishing fast;
* the heartbeat task sleeps until the next deadline: send a heartbeat, or
  declare the broker gone after two intervals of silence.

Failures do not escape the tasks as exceptions. A task that finds the
connection broken records the error, fails everything waiting on the
connection (confirmations, RPCs, consumers) and cancels both the tasks and
the body of ``open_connection``; the recorded error is then raised out of
the ``async with`` as a plain exception, not as an exception group.

One concept, kept whole although past 400 lines: a connection's lifetime.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from pamqp import commands, heartbeat

from ._channel import CLOSE_TIMEOUT, Channel
from ._errors import (
    AMQPConfigError,
    AMQPError,
    BrokerUnreachableError,
    ConnectionClosedError,
    ConnectionLostError,
)
from ._frames import (
    FRAME_OVERHEAD,
    HEARTBEAT,
    UNLIMITED_FRAME_MAX,
    FrameError,
    FrameReader,
    marshal_method,
)
from ._handshake import RECEIVE_SIZE, Tuned, handshake, open_stream
from ._stats import ConnectionStatistics, Counters
from ._url import FRAME_MIN_SIZE, URL

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Mapping

    from pamqp import base

    from ._frames import Frame
    from ._properties import Message

_MAX_CHANNELS: Final = 65535


@attrs.define(eq=False, repr=False)
class Connection:
    """An open AMQP connection; get one from :func:`open_connection`."""

    _url: URL
    _stream: trio.abc.Stream
    _reader: FrameReader
    _tuned: Tuned
    _chunk_size: int = attrs.field(init=False)
    _channels: dict[int, Channel] = attrs.Factory(dict)
    _next_channel: int = 1
    _out: bytearray = attrs.Factory(bytearray)
    _writer_waiting: bool = False
    _writer_lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    _drain_lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    _blocked_reason: str | None = None
    _unblocked: trio.Event = attrs.Factory(trio.Event)
    # Set once new work must be refused: the connection is closing or dead.
    _refusal: AMQPError | None = None
    # The error to raise out of open_connection, if the connection failed.
    _failure: AMQPError | None = None
    _dead: bool = False
    _closing: bool = False
    _close_ok: trio.Event = attrs.Factory(trio.Event)
    _server_close: ConnectionClosedError | None = None
    _last_send: float = 0.0
    _last_recv: float = 0.0
    _reader_paused: bool = False
    _counters: Counters = attrs.Factory(Counters)
    # The scope of the block using the connection, and that of the tasks.
    _body_scope: trio.CancelScope | None = None
    _task_scope: trio.CancelScope | None = None

    def __attrs_post_init__(self) -> None:
        self._chunk_size = (self._tuned.frame_max or UNLIMITED_FRAME_MAX) - FRAME_OVERHEAD
        self._unblocked.set()

    def __repr__(self) -> str:
        state = "closed" if self._refusal is not None else "open"
        return f"<Connection {self._url.redacted()} {state}>"

    # -- public surface -------------------------------------------------------

    @property
    def url(self) -> URL:
        """The URL this connection was opened with."""
        return self._url

    @property
    def frame_max(self) -> int:
        """The negotiated largest frame in bytes (0: no limit)."""
        return self._tuned.frame_max

    @property
    def channel_max(self) -> int:
        """The negotiated highest channel number (0: no limit)."""
        return self._tuned.channel_max

    @property
    def heartbeat(self) -> int:
        """The negotiated heartbeat timeout in seconds (0: no heartbeats)."""
        return self._tuned.heartbeat

    @property
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself in Connection.Start."""
        return self._tuned.server_properties

    @property
    def blocked(self) -> bool:
        """Whether the broker asked publishers to stop (Connection.Blocked)."""
        return self._blocked_reason is not None

    @property
    def blocked_reason(self) -> str | None:
        """The broker's reason for blocking, while blocked."""
        return self._blocked_reason

    async def wait_unblocked(self) -> None:
        """Return once the connection is not blocked by the broker.

        Raises the connection's error if it closes meanwhile.
        """
        if self._blocked_reason is None:
            await trio.lowlevel.checkpoint()
        while self._blocked_reason is not None and self._refusal is None:
            await self._unblocked.wait()
        if self._refusal is not None:
            raise self._refusal._fresh()

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the traffic and state of this connection."""
        counters = self._counters
        return ConnectionStatistics(
            bytes_sent=counters.bytes_sent,
            bytes_received=counters.bytes_received,
            frames_sent=counters.frames_sent,
            frames_received=counters.frames_received,
            messages_published=counters.messages_published,
            acks_received=counters.acks_received,
            multiple_acks_received=counters.multiple_acks_received,
            nacks_received=counters.nacks_received,
            returns_received=counters.returns_received,
            unmatched_returns=counters.unmatched_returns,
            unflushed_bytes=len(self._out),
            blocked=self._blocked_reason is not None,
            channels_open=sum(not channel.closed for channel in self._channels.values()),
        )

    @asynccontextmanager
    async def open_channel(
        self, *, confirm: bool = False, window: int = 256
    ) -> AsyncIterator[Channel]:
        """Open a channel; in confirm mode with at most ``window`` unconfirmed messages.

        On exit the channel is closed with Channel.Close unless the broker
        closed it already; confirmations still pending then fail with
        :class:`ChannelClosedError`, so wait for the ones you care about first.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if self._refusal is not None:
            raise self._refusal._fresh()
        channel = Channel(self, self._allocate_channel(), window)
        self._channels[channel.channel_id] = channel
        try:
            await channel._open(confirm)
            yield channel
        finally:
            with trio.CancelScope(shield=True):
                await channel._close()

    # -- used by channels -----------------------------------------------------

    @property
    def _unflushed(self) -> int:
        return len(self._out)

    def _wake_writer(self) -> None:
        if self._writer_waiting:
            self._writer_waiting = False
            self._writer_lot.unpark()

    def _write_message(
        self, method: bytes, frames: list[bytes | memoryview], frame_count: int
    ) -> None:
        # One message's frames go into the buffer back to back, with no
        # checkpoint in between, so no other frame can get between them.
        out = self._out
        out += method
        for part in frames:
            out += part
        counters = self._counters
        counters.frames_sent += frame_count + 1
        counters.messages_published += 1
        self._wake_writer()

    def _send_method(self, channel: int, method: base.Frame) -> None:
        self._out += marshal_method(channel, method)
        self._counters.frames_sent += 1
        self._wake_writer()

    def _release_channel(self, number: int) -> None:
        self._channels.pop(number, None)

    def _allocate_channel(self) -> int:
        limit = self._tuned.channel_max or _MAX_CHANNELS
        if len(self._channels) >= limit:
            raise AMQPError(
                f"all {limit} channels of this connection are in use; close "
                "channels you no longer need, or open another connection"
            )
        number = self._next_channel
        while number in self._channels:
            number = number % limit + 1
        self._next_channel = number % limit + 1
        return number

    # -- lifetime -------------------------------------------------------------

    async def _serve(
        self, body_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run the connection's tasks until :meth:`_stop`."""
        self._body_scope = body_scope
        # Shielded: when the caller's scope is cancelled, the reader and the
        # writer must still carry the close handshakes of the channels and
        # the connection. They end only when the connection stops them.
        with trio.CancelScope(shield=True) as self._task_scope:
            async with trio.open_nursery() as nursery:
                now = trio.current_time()
                self._last_send = self._last_recv = now
                nursery.start_soon(self._serve_reader)
                nursery.start_soon(self._serve_writer)
                nursery.start_soon(self._serve_heartbeat)
                task_status.started()

    def _stop(self) -> None:
        assert self._task_scope is not None
        assert self._body_scope is not None
        self._task_scope.cancel()
        self._body_scope.cancel()

    def _mark_dead(self, error: AMQPError) -> None:
        """Fail everything that waits on the connection; refuse new work."""
        if self._dead:
            return
        self._dead = True
        if self._refusal is None:
            self._refusal = error
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            channel._set_closed(error)
        self._unblocked.set()
        self._close_ok.set()
        self._drain_lot.unpark_all()

    def _fail(self, error: AMQPError) -> None:
        """The connection is unusable: record why and stop its tasks."""
        if self._failure is None and not self._closing:
            self._failure = error
        self._mark_dead(error)
        self._stop()

    async def _close(self) -> None:
        """Close with Connection.Close / CloseOk, bounded in time."""
        if self._dead:
            return
        self._closing = True
        closed = ConnectionClosedError(200, "Normal shutdown", by_client=True)
        self._refusal = closed
        with trio.move_on_after(CLOSE_TIMEOUT):
            self._send_method(
                0,
                commands.Connection.Close(
                    reply_code=200, reply_text="Normal shutdown", class_id=0, method_id=0
                ),
            )
            await self._close_ok.wait()
        self._mark_dead(closed)

    # -- tasks ----------------------------------------------------------------

    async def _serve_reader(self) -> None:
        try:
            await self._dispatch(self._tuned.leftover)
            stream = self._stream
            counters = self._counters
            while True:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
                    self._fail(_lost(f"receiving failed: {_reason(err)}", err))
                    return
                if not data:
                    self._eof()
                    return
                self._last_recv = trio.current_time()
                counters.bytes_received += len(data)
                frames = self._reader.feed(data)
                counters.frames_received += len(frames)
                await self._dispatch(frames)
        except FrameError as err:
            self._fail(_lost(f"the broker broke the protocol: {err}", err))
        except Exception as err:
            self._fail(_lost(f"internal error in the AMQP client: {err!r}", err))
            raise

    def _eof(self) -> None:
        if self._server_close is not None:
            self._fail(self._server_close)
        elif self._closing:
            self._fail(ConnectionClosedError(200, "Normal shutdown", by_client=True))
        else:
            self._fail(ConnectionLostError("the broker closed the socket without Connection.Close"))

    async def _dispatch(self, frames: list[tuple[int, Frame]]) -> None:
        channels = self._channels
        for number, frame in frames:
            if number == 0:
                self._connection_frame(frame)
                continue
            channel = channels.get(number)
            if channel is None:
                continue  # Closed and released; late frames are dropped.
            delivery = channel._handle_frame(frame)
            if delivery is not None:
                await self._hand_over(*delivery)

    async def _hand_over(self, send: trio.MemorySendChannel[Message], message: Message) -> None:
        # The consumer's buffer is full: stop reading until it has room.
        # Nothing is read meanwhile, so that silence must not count as a
        # dead broker.
        self._reader_paused = True
        try:
            await send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # The consumer went away; the broker requeues the message.
        finally:
            self._reader_paused = False
            self._last_recv = trio.current_time()

    def _connection_frame(self, frame: Frame) -> None:
        if isinstance(frame, heartbeat.Heartbeat):
            return
        if isinstance(frame, commands.Connection.Blocked):
            self._blocked_reason = frame.reason or ""
            if self._unblocked.is_set():
                self._unblocked = trio.Event()
        elif isinstance(frame, commands.Connection.Unblocked):
            self._blocked_reason = None
            self._unblocked.set()
        elif isinstance(frame, commands.Connection.CloseOk):
            self._close_ok.set()
        elif isinstance(frame, commands.Connection.Close):
            self._send_method(0, commands.Connection.CloseOk())
            if self._closing:
                # Both sides closed at once: our close is complete.
                self._close_ok.set()
                return
            error = ConnectionClosedError(frame.reply_code or 0, frame.reply_text)
            self._server_close = error
            self._failure = error
            # Wake every waiter now; the writer stops the connection once
            # the CloseOk is on the wire.
            self._mark_dead(error)
        else:
            raise FrameError(f"unexpected {type(frame).__name__} on channel 0")

    async def _serve_writer(self) -> None:
        try:
            await self._write_until_stopped()
        except Exception as err:
            self._fail(_lost(f"internal error in the AMQP client: {err!r}", err))
            raise

    async def _write_until_stopped(self) -> None:
        stream = self._stream
        counters = self._counters
        while True:
            if not self._out:
                if self._server_close is not None:
                    self._fail(self._server_close)
                    return
                self._writer_waiting = True
                await self._writer_lot.park()
                continue
            data, self._out = self._out, bytearray()
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
                self._fail(_lost(f"sending failed: {_reason(err)}", err))
                return
            counters.bytes_sent += len(data)
            self._last_send = trio.current_time()
            if self._drain_lot:
                self._drain_lot.unpark_all()

    async def _serve_heartbeat(self) -> None:
        interval = self._tuned.heartbeat
        if not interval:
            return
        send_every = interval / 2
        silence_limit = interval * 2
        while True:
            now = trio.current_time()
            if self._reader_paused:
                self._last_recv = now
            elif now - self._last_recv >= silence_limit:
                self._fail(
                    ConnectionLostError(
                        f"nothing came from the broker for {silence_limit:g} s "
                        f"(heartbeat {interval} s); the network or the broker is down"
                    )
                )
                return
            if now - self._last_send >= send_every:
                self._out += HEARTBEAT
                self._counters.frames_sent += 1
                self._last_send = now
                self._wake_writer()
            await trio.sleep_until(
                min(self._last_send + send_every, self._last_recv + silence_limit)
            )

    async def _teardown(self) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._stream.aclose()


def _lost(reason: str, cause: BaseException) -> ConnectionLostError:
    error = ConnectionLostError(reason)
    error.__cause__ = cause
    return error


def _reason(err: BaseException) -> str:
    cause = err.__cause__
    return str(cause) if cause is not None and str(cause) else str(err) or type(err).__name__


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _sole_error(group: BaseExceptionGroup[Any], failure: AMQPError | None) -> BaseException | None:
    """The one exception a nursery's group stands for, if there is one.

    When the connection failed, the Cancelled exceptions and the copies of
    its error that tasks raised are all the same story: the failure.
    """
    leaves = _leaves(group)
    if failure is not None:
        leaves = [
            leaf
            for leaf in leaves
            if not isinstance(leaf, trio.Cancelled)
            and not (isinstance(leaf, AMQPError) and (leaf._origin or leaf) is failure)
        ]
        if not leaves:
            return failure
    return leaves[0] if len(leaves) == 1 else None


async def _establish(
    url: URL,
    connect_timeout: float,
    *,
    ssl_context: ssl.SSLContext | None,
    heartbeat: int | None,
    frame_max: int | None,
    client_properties: Mapping[str, Any] | None,
) -> tuple[trio.abc.Stream, FrameReader, Tuned]:
    reader = FrameReader()
    try:
        with trio.fail_after(connect_timeout):
            stream = await open_stream(url, ssl_context)
            try:
                tuned = await handshake(
                    stream,
                    reader,
                    url,
                    heartbeat=heartbeat,
                    frame_max=frame_max,
                    channel_max=url.channel_max,
                    extra_properties=client_properties,
                )
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError as err:
        steps = (
            "TCP connect, TLS and AMQP handshakes" if url.tls else "TCP connect and AMQP handshake"
        )
        raise BrokerUnreachableError(
            url.host, url.port, f"no connection within {connect_timeout:g} s ({steps})"
        ) from err
    return stream, reader, tuned


@asynccontextmanager
async def open_connection(
    url: str | URL,
    *,
    ssl_context: ssl.SSLContext | None = None,
    heartbeat: int | None = None,
    frame_max: int | None = None,
    client_properties: Mapping[str, Any] | None = None,
    connect_timeout: float | None = None,
) -> AsyncIterator[Connection]:
    """Connect to the broker at ``url`` and keep the connection for the block.

    ``amqps://`` URLs connect over TLS with ``ssl_context`` (see
    :func:`create_ssl_context`), or, without one, trusting the system's CAs;
    the TLS handshake counts against the connect timeout. Other arguments
    override the URL's query options. ``heartbeat`` is the wished
    timeout in seconds (0: none; default: the broker's proposal, or 60 s).
    ``frame_max`` is the wished largest frame (0 or at least 4096; default:
    the broker's). ``client_properties`` are merged into ours.

    If the connection fails while the block runs, the block is cancelled and
    the failure (:class:`ConnectionLostError`, :class:`ConnectionClosedError`)
    is raised out of the ``async with`` as a plain exception; reconnect then.
    When the block ends, the connection is closed with Connection.Close.
    """
    parsed = url if isinstance(url, URL) else URL.parse(url)
    if ssl_context is not None and not parsed.tls:
        # Ignoring it would send the password in clear text to a caller who
        # believes the connection is encrypted.
        raise AMQPConfigError(
            f"an SSL context was given, but {parsed.redacted()} is not an amqps:// URL; "
            "use amqps:// to connect over TLS"
        )
    if heartbeat is None:
        heartbeat = parsed.heartbeat
    elif not 0 <= heartbeat <= 65535:
        raise AMQPConfigError(f"heartbeat must be 0 to 65535 seconds, not {heartbeat}")
    if frame_max is None:
        frame_max = parsed.frame_max
    elif frame_max != 0 and not FRAME_MIN_SIZE <= frame_max < 2**32:
        raise AMQPConfigError(
            f"frame_max must be 0 (the broker's limit) or at least {FRAME_MIN_SIZE}, "
            f"not {frame_max}"
        )
    if connect_timeout is None:
        connect_timeout = parsed.connect_timeout
    elif not connect_timeout > 0:
        raise AMQPConfigError(
            f"connect_timeout must be a positive number of seconds, not {connect_timeout}"
        )
    stream, reader, tuned = await _establish(
        parsed,
        connect_timeout,
        ssl_context=ssl_context,
        heartbeat=heartbeat,
        frame_max=frame_max,
        client_properties=client_properties,
    )
    connection = Connection(parsed, stream, reader, tuned)
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(connection._serve, nursery.cancel_scope)
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True):
                    await connection._close()
                connection._stop()
    except BaseExceptionGroup as group:
        error = _sole_error(group, connection._failure)
        if error is None:
            raise
    finally:
        with trio.CancelScope(shield=True):
            await connection._teardown()
    # Raised here, outside the except clause, so that the group is not
    # attached as the context of an error that stands for all of it.
    if error is not None:
        raise error
    if connection._failure is not None:
        raise connection._failure
