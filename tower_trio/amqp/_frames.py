"""Turning bytes into frames and frames into bytes.

Method frames and properties are pamqp's. The 7-byte frame envelope of
content frames is written here directly, because publishing builds one
header and at least one body frame per message and that path must be cheap.
"""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from pamqp import base, body, commands, constants, exceptions, frame, header, heartbeat

Frame: TypeAlias = base.Frame | body.ContentBody | header.ContentHeader | heartbeat.Heartbeat

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
HEARTBEAT: Final = heartbeat.Heartbeat.marshal()
# Header and end byte around every frame's payload.
FRAME_OVERHEAD: Final = constants.FRAME_HEADER_SIZE + 1
# The chunk size used when both peers said "no limit" for frame_max.
UNLIMITED_FRAME_MAX: Final = constants.FRAME_MAX_SIZE

_ENVELOPE = struct.Struct(">BHI")
_CONTENT_HEADER = struct.Struct(">BHIHHQ")
_FRAME_END = constants.FRAME_END_CHAR
_METHOD = constants.FRAME_METHOD
_HEADER = constants.FRAME_HEADER
_BODY = constants.FRAME_BODY
_HEARTBEAT = constants.FRAME_HEARTBEAT
_KNOWN_TYPES = frozenset((_METHOD, _HEADER, _BODY, _HEARTBEAT))
_BASIC_CLASS = commands.Basic.frame_id


class FrameError(Exception):
    """The peer sent bytes that are not a valid AMQP 0-9-1 frame."""


class FrameReader:
    """Accumulates received bytes and cuts them into frames.

    A receive may end in the middle of a frame or hold many frames; both are
    handled by keeping the unconsumed tail for the next :meth:`feed`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        # 0 until the connection is tuned: the handshake frames have no limit.
        self.frame_max = 0

    def feed(self, data: bytes | bytearray) -> list[tuple[int, Frame]]:
        """Add ``data``; return every complete ``(channel, frame)`` now available."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, Frame]] = []
        size = len(buffer)
        position = 0
        unpack = _ENVELOPE.unpack_from
        while size - position >= FRAME_OVERHEAD:
            kind, channel, length = unpack(buffer, position)
            if kind not in _KNOWN_TYPES:
                if buffer.startswith(b"AMQP", position):
                    raise FrameError(
                        "the broker answered with protocol header "
                        f"{bytes(buffer[position : position + 8])!r}: it does not "
                        "speak AMQP 0-9-1"
                    )
                raise FrameError(f"received a frame of unknown type {kind}")
            end = position + FRAME_OVERHEAD + length
            if self.frame_max and end - position > self.frame_max:
                raise FrameError(
                    f"received a frame of {end - position} bytes, more than the "
                    f"negotiated frame_max of {self.frame_max}"
                )
            if end > size:
                break
            if buffer[end - 1] != constants.FRAME_END:
                raise FrameError("a frame does not end with the frame-end byte 0xCE")
            if kind == _BODY:
                value: Frame = body.ContentBody(bytes(buffer[position + 7 : end - 1]))
            elif kind == _HEARTBEAT:
                value = heartbeat.Heartbeat()
            else:
                try:
                    _, _, decoded = frame.unmarshal(bytes(buffer[position:end]))
                except exceptions.UnmarshalingException as err:
                    raise FrameError(f"cannot decode a frame: {err}") from err
                if isinstance(decoded, header.ProtocolHeader):
                    raise FrameError("a protocol header came in the middle of the stream")
                value = decoded
            frames.append((channel, value))
            position = end
        if position:
            del buffer[:position]
        return frames


def marshal_method(channel: int, method: base.Frame) -> bytes:
    """The bytes of one method frame."""
    return frame.marshal(method, channel)


def marshal_content(
    channel: int, properties: bytes, content: bytes, chunk_size: int
) -> list[bytes | memoryview]:
    """The header frame and body frames of a message, split at ``chunk_size``.

    ``properties`` is the already-encoded property list of the header frame.
    """
    body_size = len(content)
    parts: list[bytes | memoryview] = [
        _CONTENT_HEADER.pack(_HEADER, channel, 12 + len(properties), _BASIC_CLASS, 0, body_size),
        properties,
        _FRAME_END,
    ]
    if body_size <= chunk_size:
        if body_size:
            parts += (_ENVELOPE.pack(_BODY, channel, body_size), content, _FRAME_END)
        return parts
    view = memoryview(content)
    for start in range(0, body_size, chunk_size):
        piece = view[start : start + chunk_size]
        parts += (_ENVELOPE.pack(_BODY, channel, len(piece)), piece, _FRAME_END)
    return parts


def body_frame_count(body_size: int, chunk_size: int) -> int:
    """How many body frames a body of ``body_size`` bytes takes."""
    return -(-body_size // chunk_size)
