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
    _content: dict[int, list[Any]] = attrs.Factory(dict)

    async def send(self, channel: int, value: base.Frame | heartbeat.Heartbeat) -> None:
        """Send one frame to the client."""
        async with self._send_lock:
            await self._stream.send_all(frame.marshal(value, channel))

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


async def _read_frames(stream: trio.SocketStream, buffer: bytearray) -> list[tuple[int, object]]:
    while True:
        frames: list[tuple[int, object]] = []
        while True:
            try:
                consumed, channel, value = frame.unmarshal(bytes(buffer))
            except exceptions.UnmarshalingException:
                break
            del buffer[:consumed]
            frames.append((channel, value))
        if frames:
            return frames
        data = await stream.receive_some(65536)
        if not data:
            return []
        buffer += data


async def _expect(stream: trio.SocketStream, buffer: bytearray, kind: type[Any]) -> Any:
    frames = await _read_frames(stream, buffer)
    assert len(frames) == 1, frames
    _, value = frames[0]
    assert isinstance(value, kind), value
    return value


async def _serve_peer(
    broker: FakeBroker, stream: trio.SocketStream, peers: trio.MemorySendChannel[FakePeer]
) -> None:
    buffer = bytearray()
    async with stream:
        while len(buffer) < 8:
            data = await stream.receive_some(8)
            if not data:
                return
            buffer += data
        assert bytes(buffer[:8]) == b"AMQP\x00\x00\x09\x01", bytes(buffer[:8])
        del buffer[:8]
        peer = FakePeer(stream)
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
        start_ok = await _expect(stream, buffer, commands.Connection.StartOk)
        peer.client_properties = start_ok.client_properties
        await peer.send(
            0,
            commands.Connection.Tune(
                channel_max=broker.channel_max,
                frame_max=broker.frame_max,
                heartbeat=broker.heartbeat,
            ),
        )
        peer.tune_ok = await _expect(stream, buffer, commands.Connection.TuneOk)
        open_ = await _expect(stream, buffer, commands.Connection.Open)
        peer.vhost = open_.virtual_host
        await peer.send(0, commands.Connection.OpenOk())
        await peers.send(peer)
        try:
            while True:
                frames = await _read_frames(stream, buffer)
                if not frames:
                    break
                for channel, value in frames:
                    await peer._on_frame(channel, value)
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
