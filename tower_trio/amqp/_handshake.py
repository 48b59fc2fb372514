"""Opening a connection: transport, protocol header, Start/Tune/Open."""

from __future__ import annotations

import platform
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from pamqp import commands, heartbeat

from ._errors import (
    AccessRefusedError,
    AMQPError,
    AuthenticationError,
    BrokerUnreachableError,
    ConnectionClosedError,
    VhostNotFoundError,
)
from ._frames import PROTOCOL_HEADER, Frame, FrameError, FrameReader, marshal_method
from ._tls import looks_like_tls, open_tls_stream, ssl_error_in, tls_error, tls_port_error

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

    from pamqp import base

    from ._url import URL

DEFAULT_HEARTBEAT: Final = 60
RECEIVE_SIZE: Final = 256 << 10
_REPLY_TIMEOUT: Final = 1.0

CAPABILITIES: Final[Mapping[str, bool]] = {
    "authentication_failure_close": True,
    "basic.nack": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "exchange_exchange_bindings": True,
    "per_consumer_qos": True,
    "publisher_confirms": True,
}


@attrs.frozen
class Tuned:
    """What the handshake agreed on."""

    frame_max: int
    channel_max: int
    heartbeat: int
    server_properties: dict[str, Any]
    # Frames the broker sent right after Connection.OpenOk, in the same read.
    leftover: list[tuple[int, Frame]]


def client_properties(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Our client properties, with ``extra`` merged in (capabilities too).

    The client names only itself; the application says who it is (product,
    version, connection name) through ``extra``.
    """
    properties: dict[str, Any] = {
        "product": "trio AMQP client",
        "platform": f"Python {platform.python_version()}",
        "information": "trio-native AMQP 0-9-1 client on pamqp",
        "capabilities": dict(CAPABILITIES),
    }
    if extra:
        extra = dict(extra)
        capabilities = extra.pop("capabilities", None)
        properties.update(extra)
        if capabilities:
            properties["capabilities"] = {**CAPABILITIES, **capabilities}
    return properties


def negotiate_limit(ours: int | None, theirs: int) -> int:
    """Negotiate frame_max or channel_max, where 0 means "no limit"."""
    if not ours:
        return theirs
    if not theirs:
        return ours
    return min(ours, theirs)


async def open_stream(url: URL, ssl_context: ssl.SSLContext | None = None) -> trio.abc.Stream:
    """Open the byte stream to the broker: TCP, and TLS over it for ``amqps://``.

    Every transport decision lives here. ``ssl_context`` is used for
    ``amqps://``; without one, the system's CAs are trusted.
    """
    try:
        tcp = await trio.open_tcp_stream(url.host, url.port)
    except OSError as err:
        raise BrokerUnreachableError(url.host, url.port, _describe_os_error(err)) from err
    if not url.tls:
        return tcp
    return await open_tls_stream(tcp, url, ssl_context)


def _describe_os_error(err: OSError) -> str:
    # open_tcp_stream reports "all attempts failed" and keeps each attempt's
    # error as the cause; the first one says more.
    cause: BaseException | None = err
    while isinstance(cause, BaseExceptionGroup | OSError):
        if isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]
        elif isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        elif cause.strerror and cause is not err:
            return cause.strerror.lower()
        elif cause.__cause__ is None:
            break
        else:
            cause = cause.__cause__
    return str(err)


class _Handshake:
    def __init__(self, stream: trio.abc.Stream, reader: FrameReader, url: URL) -> None:
        self._stream = stream
        self._reader = reader
        self._url = url
        self._frames: deque[tuple[int, Frame]] = deque()
        self._stage = "waiting for Connection.Start"
        # Until the first bytes come, a broken TLS connection is a TLS failure.
        self._nothing_received = True

    def _failed(self, what: str) -> BrokerUnreachableError:
        # Until the handshake is done there is no connection to lose: every
        # failure means no AMQP connection could be made.
        return BrokerUnreachableError(self._url.host, self._url.port, f"{what} while {self._stage}")

    def _broken(self, what: str, err: BaseException) -> AMQPError:
        # A broker that refuses the client certificate of a TLS 1.3 client
        # says so only after the client's side of the TLS handshake is done:
        # here, before the first AMQP frame.
        if self._url.tls and (self._nothing_received or ssl_error_in(err) is not None):
            return tls_error(self._url, err, handshake_done=True)
        return self._failed(f"{what} ({err})")

    async def send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            raise self._broken("sending failed", err) from err

    async def expect(self, reply: type[base.Frame]) -> Any:
        while True:
            while not self._frames:
                try:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
                    raise self._broken("receiving failed", err) from err
                if not data:
                    if self._url.tls and self._nothing_received:
                        raise tls_error(self._url, None, handshake_done=True)
                    raise self._failed("the server closed the socket")
                if self._nothing_received and not self._url.tls and looks_like_tls(data):
                    raise tls_port_error(self._url)
                self._nothing_received = False
                try:
                    self._frames.extend(self._reader.feed(data))
                except FrameError as err:
                    raise self._failed(f"the server does not speak AMQP 0-9-1 ({err})") from err
            _channel, frame = self._frames.popleft()
            if isinstance(frame, heartbeat.Heartbeat):
                continue
            if isinstance(frame, reply):
                return frame
            if isinstance(frame, commands.Connection.Close):
                await self._answer_close()
                raise self._refused(frame.reply_code or 0, frame.reply_text)
            raise self._failed(f"the broker sent {type(frame).__name__}")

    async def _answer_close(self) -> None:
        # Best effort: the broker closes the socket soon anyway.
        with trio.move_on_after(_REPLY_TIMEOUT), suppress(AMQPError):
            await self.send(marshal_method(0, commands.Connection.CloseOk()))

    def _refused(self, reply_code: int, reply_text: str) -> AMQPError:
        url = self._url
        if self._stage == "logging in" and reply_code == 403:
            return AuthenticationError(reply_code, reply_text, username=url.username)
        if self._stage == "opening the vhost" and reply_code in (403, 530):
            error = VhostNotFoundError if "not found" in reply_text else AccessRefusedError
            return error(reply_code, reply_text, vhost=url.vhost, username=url.username)
        return ConnectionClosedError(reply_code, reply_text)

    async def run(
        self,
        *,
        heartbeat: int | None,
        frame_max: int | None,
        channel_max: int | None,
        properties: dict[str, Any],
    ) -> Tuned:
        await self.send(PROTOCOL_HEADER)
        start = await self.expect(commands.Connection.Start)
        mechanisms = str(start.mechanisms).split()
        if "PLAIN" not in mechanisms:
            raise AuthenticationError(
                0,
                f"the broker offers {', '.join(mechanisms)} but not PLAIN",
                username=self._url.username,
            )
        self._stage = "logging in"
        await self.send(
            marshal_method(
                0,
                commands.Connection.StartOk(
                    client_properties=properties,
                    mechanism="PLAIN",
                    response=f"\0{self._url.username}\0{self._url.password}",
                ),
            )
        )
        tune = await self.expect(commands.Connection.Tune)
        agreed_frame_max = negotiate_limit(frame_max, tune.frame_max)
        agreed_channel_max = negotiate_limit(channel_max, tune.channel_max)
        if heartbeat is None:
            heartbeat = tune.heartbeat or DEFAULT_HEARTBEAT
        await self.send(
            marshal_method(
                0,
                commands.Connection.TuneOk(
                    channel_max=agreed_channel_max,
                    frame_max=agreed_frame_max,
                    heartbeat=heartbeat,
                ),
            )
        )
        self._reader.frame_max = agreed_frame_max
        self._stage = "opening the vhost"
        await self.send(marshal_method(0, commands.Connection.Open(virtual_host=self._url.vhost)))
        await self.expect(commands.Connection.OpenOk)
        return Tuned(
            frame_max=agreed_frame_max,
            channel_max=agreed_channel_max,
            heartbeat=heartbeat,
            server_properties=dict(start.server_properties),
            leftover=list(self._frames),
        )


async def handshake(
    stream: trio.abc.Stream,
    reader: FrameReader,
    url: URL,
    *,
    heartbeat: int | None,
    frame_max: int | None,
    channel_max: int | None,
    extra_properties: Mapping[str, Any] | None,
) -> Tuned:
    """Run the AMQP opening handshake on a fresh stream.

    ``heartbeat`` is our wish (0 turns heartbeats off); without one we take
    the broker's proposal, or :data:`DEFAULT_HEARTBEAT` if it proposes none.
    """
    return await _Handshake(stream, reader, url).run(
        heartbeat=heartbeat,
        frame_max=frame_max,
        channel_max=channel_max,
        properties=client_properties(extra_properties),
    )
