"""The ceiling of the tower's own client: a bare trio + pamqp publishing loop.

One trio task, one TCP socket, no client library. A minimal AMQP handshake
(PLAIN login, the broker's frame size, heartbeats off), one channel in
confirm mode, and then the loop: write as many messages as the window has
room for in one ``send_all``, read whatever the broker sent, count its
Basic.Ack frames (pamqp decodes them), and again, until the last message
is acked. Each message is the tower's: the same body, routing key and
properties (persistent, JSON, the trigger's uuid as message id, protocol
and source in the headers), published mandatory, with the tower's window.

Its frames (Basic.Publish, the content header, the body) are marshalled by
pamqp *before* the clock starts, so the clock sees nothing but writing
bytes and counting acks. Marshalling inside the clock would not make a
ceiling: pamqp's generic encoding of the properties costs more CPU per
message than the tower's whole AMQP client, which renders them from a
template.

What it does not do, and a real publisher must: a journal (nothing is on
disk before it is sent), per-message outcomes (it fails at the first frame
that is not an ack: a return, a nack, a close), a reader that runs while
the writer waits, heartbeats, flow control when the broker blocks
publishers, reconnecting, and any error handling beyond failing loudly.
No trio publisher of these messages with these confirms does less while
the clock runs.
"""

from __future__ import annotations

from collections import deque
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from pamqp import body as pamqp_body
from pamqp import commands, constants, frame, header

from ._common import BenchError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from pamqp import base

    from tower_trio._storage import Outgoing

__all__ = ["BareConnection", "open_bare_connection"]

_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_CHANNEL = 1
_RECEIVE_SIZE = 256 << 10
_APP_ID = "tower-trio"
_PERSISTENT = 2

_F = TypeVar("_F")


class BareConnection:
    """A socket that has done the AMQP handshake and opened one confirm-mode channel."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._frames: deque[Any] = deque()
        self._frame_max = constants.FRAME_MAX_SIZE

    async def _read(self) -> None:
        """Read once from the socket; queue every whole frame it completes."""
        data = await self._stream.receive_some(_RECEIVE_SIZE)
        if not data:
            raise BenchError("the broker closed the bare loop's socket")
        buffer = self._buffer
        buffer += data
        while len(buffer) >= constants.FRAME_HEADER_SIZE + 1:
            end = constants.FRAME_HEADER_SIZE + int.from_bytes(buffer[3:7], "big") + 1
            if len(buffer) < end:
                break
            _, _, value = frame.unmarshal(bytes(buffer[:end]))
            del buffer[:end]
            self._frames.append(value)

    async def _expect(self, kind: type[_F]) -> _F:
        while not self._frames:
            await self._read()
        value = self._frames.popleft()
        if not isinstance(value, kind):
            raise BenchError(f"the bare loop expected {kind.__name__}, got {value!r}")
        return value

    async def _send(self, channel: int, method: base.Frame) -> None:
        await self._stream.send_all(frame.marshal(method, channel))

    async def _open(self, username: str, password: str, vhost: str) -> None:
        await self._stream.send_all(_PROTOCOL_HEADER)
        await self._expect(commands.Connection.Start)
        await self._send(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": {"publisher_confirms": True}},
                mechanism="PLAIN",
                response=f"\0{username}\0{password}",
            ),
        )
        tune = await self._expect(commands.Connection.Tune)
        if tune.frame_max:
            self._frame_max = tune.frame_max
        await self._send(
            0,
            commands.Connection.TuneOk(
                channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0
            ),
        )
        await self._send(0, commands.Connection.Open(virtual_host=vhost))
        await self._expect(commands.Connection.OpenOk)
        await self._send(_CHANNEL, commands.Channel.Open())
        await self._expect(commands.Channel.OpenOk)
        await self._send(_CHANNEL, commands.Confirm.Select())
        await self._expect(commands.Confirm.SelectOk)

    def encode(self, exchange: str, messages: Sequence[Outgoing]) -> list[bytes]:
        """Each message's frames (publish, header, body), marshalled by pamqp."""
        chunk = self._frame_max - constants.FRAME_HEADER_SIZE - 1
        encoded = []
        for item in messages:
            properties = commands.Basic.Properties(
                content_type="application/json",
                delivery_mode=_PERSISTENT,
                message_id=item.uuid,
                message_type=item.protocol,
                app_id=_APP_ID,
                timestamp=datetime.fromtimestamp(int(item.created_at), UTC),
                headers={"protocol": item.protocol, "source": item.source},
            )
            publish = commands.Basic.Publish(
                exchange=exchange, routing_key=item.routing_key, mandatory=True
            )
            frames = [
                frame.marshal(publish, _CHANNEL),
                frame.marshal(header.ContentHeader(0, len(item.body), properties), _CHANNEL),
            ]
            frames.extend(
                frame.marshal(pamqp_body.ContentBody(item.body[start : start + chunk]), _CHANNEL)
                for start in range(0, len(item.body), chunk)
            )
            encoded.append(b"".join(frames))
        return encoded

    async def publish_all(self, encoded: Sequence[bytes], window: int) -> None:
        """Write every message with at most ``window`` unacked; return at the last ack."""
        acked = sent = 0
        total = len(encoded)
        frames = self._frames
        while acked < total:
            room = min(total, acked + window)
            if sent < room:
                await self._stream.send_all(b"".join(encoded[sent:room]))
                sent = room
            await self._read()
            while frames:
                value = frames.popleft()
                if not isinstance(value, commands.Basic.Ack):
                    raise BenchError(f"the bare loop expected Basic.Ack, got {value!r}")
                acked = value.delivery_tag if value.multiple else acked + 1

    async def _close(self) -> None:
        await self._send(
            _CHANNEL,
            commands.Channel.Close(reply_code=200, reply_text="done", class_id=0, method_id=0),
        )
        await self._expect(commands.Channel.CloseOk)
        await self._send(
            0, commands.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0)
        )
        await self._expect(commands.Connection.CloseOk)


@asynccontextmanager
async def open_bare_connection(
    host: str, port: int, username: str, password: str, vhost: str
) -> AsyncIterator[BareConnection]:
    """Connect, log in and open a confirm-mode channel; close it all on the way out."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        connection = BareConnection(stream)
        await connection._open(username, password, vhost)
        yield connection
        await connection._close()
