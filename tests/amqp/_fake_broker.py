"""A scripted AMQP broker on a local socket, for what RabbitMQ won't do on demand.

It answers the handshake and the routine channel methods by itself, records
what the client sends, and lets a test inject any frame (Basic.Nack,
Channel.Close, Connection.Blocked, ...) at the moment it chooses. It decodes
with pamqp directly rather than with the client's frame reader, so that it
checks the client instead of agreeing with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio
from pamqp import body, commands, exceptions, frame, header, heartbeat

if TYPE_CHECKING:
    from collections.abc import Callable

    from pamqp import base


@attrs.frozen
class Published:
    """One message the client published."""

    channel: int
    method: commands.Basic.Publish
    properties: commands.Basic.Properties
    body: bytes


@attrs.define(eq=False)
class FakePeer:
    """The broker's side of one client connection."""

    _stream: trio.SocketStream
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)
    _changed: trio.Event = attrs.Factory(trio.Event)
    client_properties: dict[str, Any] = attrs.Factory(dict)
    tune_ok: commands.Connection.TuneOk | None = None
    vhost: str | None = None
    received: list[tuple[int, object]] = attrs.Factory(list)
    published: list[Published] = attrs.Factory(list)
    heartbeats: int = 0
    # When false, Channel.Close and Connection.Close get no automatic answer.
    answer_close: bool = True
    # Cleared to stop reading from the socket, so that the client's writes
    # back up; set again to go on.
    reading: trio.Event = attrs.Factory(trio.Event)
    _content: dict[int, list[Any]] = attrs.Factory(dict)

    async def send(self, channel: int, value: base.Frame | heartbeat.Heartbeat) -> None:
        """Send one frame to the client."""
        async with self._send_lock:
            await self._stream.send_all(frame.marshal(value, channel))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are, frame or not."""
        async with self._send_lock:
            await self._stream.send_all(data)

    async def send_message(
        self,
        channel: int,
        method: base.Frame,
        properties: commands.Basic.Properties,
        payload: bytes,
    ) -> None:
        """Send a method with content (Basic.Return, Basic.Deliver) as one write."""
        data = (
            frame.marshal(method, channel)
            + frame.marshal(header.ContentHeader(0, len(payload), properties), channel)
            + frame.marshal(body.ContentBody(payload), channel)
        )
        async with self._send_lock:
            await self._stream.send_all(data)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds; it is checked after every frame."""
        while not condition():
            await self._changed.wait()

    async def wait_published(self, count: int) -> list[Published]:
        """Wait until the client has published ``count`` messages."""
        await self.wait_for(lambda: len(self.published) >= count)
        return self.published

    def got(self, kind: type[object]) -> list[object]:
        """Every received frame of type ``kind``."""
        return [value for _, value in self.received if isinstance(value, kind)]

    async def close_socket(self) -> None:
        """Drop the connection without a close handshake."""
        await self._stream.aclose()

    def _note(self, channel: int, value: object) -> None:
        self.received.append((channel, value))
        self._changed.set()
        self._changed = trio.Event()

    async def _on_frame(self, channel: int, value: object) -> None:
        if isinstance(value, heartbeat.Heartbeat):
            self.heartbeats += 1
        elif isinstance(value, commands.Basic.Publish):
            self._content[channel] = [value, None, []]
        elif isinstance(value, header.ContentHeader):
            self._content[channel][1] = value
            if value.body_size == 0:
                self._finish_content(channel)
        elif isinstance(value, body.ContentBody):
            _, head, parts = self._content[channel]
            parts.append(value.value)
            if sum(map(len, parts)) >= head.body_size:
                self._finish_content(channel)
        elif isinstance(value, commands.Channel.Open):
            await self.send(channel, commands.Channel.OpenOk())
        elif isinstance(value, commands.Confirm.Select):
            await self.send(channel, commands.Confirm.SelectOk())
        elif isinstance(value, commands.Channel.Close) and self.answer_close:
            await self.send(channel, commands.Channel.CloseOk())
        elif isinstance(value, commands.Connection.Close) and self.answer_close:
            await self.send(0, commands.Connection.CloseOk())
        self._note(channel, value)

    def _finish_content(self, channel: int) -> None:
        method, head, parts = self._content.pop(channel)
        self.published.append(Published(channel, method, head.properties, b"".join(parts)))


@attrs.define(eq=False)
class FakeBroker:
    """A listening fake broker; ``await accept()`` gives each connection's peer."""

    port: int
    heartbeat: int
    frame_max: int
    channel_max: int
    _peers: trio.MemoryReceiveChannel[FakePeer]

    @property
    def url(self) -> str:
        """An AMQP URL pointing at this fake broker."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def accept(self) -> FakePeer:
        """The next client connection, once its handshake is done."""
        return await self._peers.receive()


@attrs.define(eq=False)
class _Frames:
    """Frames decoded from the client's byte stream, one at a time."""

    _stream: trio.SocketStream
    _buffer: bytearray = attrs.Factory(bytearray)
    _ready: list[tuple[int, object]] = attrs.Factory(list)

    async def protocol_header(self) -> bytes:
        while len(self._buffer) < 8:
            data = await self._stream.receive_some(8)
            if not data:
                return b""
            self._buffer += data
        header_bytes = bytes(self._buffer[:8])
        del self._buffer[:8]
        return header_bytes

    async def next(self) -> tuple[int, object] | None:
        """The next frame, or None at the end of the stream."""
        while not self._ready:
            while True:
                try:
                    consumed, channel, value = frame.unmarshal(bytes(self._buffer))
                except exceptions.UnmarshalingException:
                    break
                del self._buffer[:consumed]
                self._ready.append((channel, value))
            if self._ready:
                break
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data
        return self._ready.pop(0)

    async def expect(self, kind: type[Any]) -> Any:
        item = await self.next()
        assert item is not None
        assert isinstance(item[1], kind), item
        return item[1]


async def _serve_peer(
    broker: FakeBroker, stream: trio.SocketStream, peers: trio.MemorySendChannel[FakePeer]
) -> None:
    frames = _Frames(stream)
    async with stream:
        header_bytes = await frames.protocol_header()
        if not header_bytes:
            return
        assert header_bytes == b"AMQP\x00\x00\x09\x01", header_bytes
        peer = FakePeer(stream)
        peer.reading.set()
        await peer.send(
            0,
            commands.Connection.Start(
                server_properties={
                    "product": "fake-broker",
                    "capabilities": {"publisher_confirms": True, "connection.blocked": True},
                },
                mechanisms="PLAIN AMQPLAIN",
            ),
        )
        start_ok = await frames.expect(commands.Connection.StartOk)
        peer.client_properties = start_ok.client_properties
        await peer.send(
            0,
            commands.Connection.Tune(
                channel_max=broker.channel_max,
                frame_max=broker.frame_max,
                heartbeat=broker.heartbeat,
            ),
        )
        peer.tune_ok = await frames.expect(commands.Connection.TuneOk)
        open_ = await frames.expect(commands.Connection.Open)
        peer.vhost = open_.virtual_host
        await peer.send(0, commands.Connection.OpenOk())
        await peers.send(peer)
        try:
            while True:
                await peer.reading.wait()
                item = await frames.next()
                if item is None:
                    break
                await peer._on_frame(*item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # The test dropped the socket on purpose, or the client left.
        peer._note(0, EOFError())


async def serve_fake_broker(
    *,
    heartbeat: int = 0,
    frame_max: int = 131072,
    channel_max: int = 2047,
    task_status: trio.TaskStatus[FakeBroker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on a free local port and serve every client until cancelled."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    send, receive = trio.open_memory_channel[FakePeer](16)
    broker = FakeBroker(port, heartbeat, frame_max, channel_max, receive)
    async with trio.open_nursery() as nursery, listeners[0], send:
        task_status.started(broker)
        while True:
            stream = await listeners[0].accept()
            nursery.start_soon(_serve_peer, broker, stream, send)
