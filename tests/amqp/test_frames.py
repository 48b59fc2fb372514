"""Cutting received bytes into frames, and building content frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pamqp import body, commands, frame, header, heartbeat

from tower_trio.amqp._frames import Frame, FrameError, FrameReader, marshal_content

if TYPE_CHECKING:
    from collections.abc import Sequence


def _stream() -> bytes:
    properties = commands.Basic.Properties(message_id="m-1", delivery_mode=2)
    return b"".join(
        [
            frame.marshal(commands.Basic.Ack(delivery_tag=7, multiple=True), 1),
            frame.marshal(heartbeat.Heartbeat(), 0),
            frame.marshal(commands.Basic.Deliver("ctag", 3, False, "ex", "rk"), 2),
            frame.marshal(header.ContentHeader(0, 5, properties), 2),
            frame.marshal(body.ContentBody(b"hello"), 2),
        ]
    )


def _check(frames: Sequence[tuple[int, object]]) -> None:
    assert [channel for channel, _ in frames] == [1, 0, 2, 2, 2]
    ack, beat, deliver, head, content = (value for _, value in frames)
    assert isinstance(ack, commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (7, True)
    assert isinstance(beat, heartbeat.Heartbeat)
    assert isinstance(deliver, commands.Basic.Deliver)
    assert deliver.routing_key == "rk"
    assert isinstance(head, header.ContentHeader)
    assert head.properties.message_id == "m-1"
    assert isinstance(content, body.ContentBody)
    assert content.value == b"hello"


class TestFrameReader:
    """FrameReader.feed."""

    def test_many_frames_in_one_chunk(self) -> None:
        """Every frame of a chunk is returned, in order."""
        _check(FrameReader().feed(_stream()))

    def test_one_byte_at_a_time(self) -> None:
        """Frames split across any number of reads come out whole."""
        reader = FrameReader()
        frames: list[tuple[int, Frame]] = []
        for byte in _stream():
            frames += reader.feed(bytes([byte]))
        _check(frames)

    @pytest.mark.parametrize("cut", [3, 7, 8, 20, 40])
    def test_split_anywhere(self, cut: int) -> None:
        """A chunk boundary in the middle of a frame keeps the tail for later."""
        data = _stream()
        reader = FrameReader()
        _check(reader.feed(data[:cut]) + reader.feed(data[cut:]))

    def test_bad_frame_end(self) -> None:
        """A frame without its 0xCE end byte is a protocol error."""
        data = bytearray(frame.marshal(commands.Basic.Ack(delivery_tag=1), 1))
        data[-1] = 0
        with pytest.raises(FrameError, match="frame-end"):
            FrameReader().feed(bytes(data))

    def test_frame_over_limit(self) -> None:
        """A frame larger than the negotiated frame_max is refused."""
        reader = FrameReader()
        reader.frame_max = 4096
        with pytest.raises(FrameError, match="more than the negotiated frame_max"):
            reader.feed(frame.marshal(body.ContentBody(b"x" * 5000), 1))

    def test_protocol_header_answer(self) -> None:
        """A broker answering with its own protocol header is reported as such."""
        with pytest.raises(FrameError, match="does not speak AMQP 0-9-1"):
            FrameReader().feed(b"AMQP\x00\x00\x08\x00")


class TestMarshalContent:
    """marshal_content."""

    def _decode(self, parts: list[bytes | memoryview]) -> list[tuple[int, Frame]]:
        return FrameReader().feed(b"".join(parts))

    def test_body_is_split_at_chunk_size(self) -> None:
        """A body larger than a frame is split into frames of the chunk size."""
        properties = commands.Basic.Properties(content_type="text/plain").marshal()
        content = bytes(range(256)) * 40
        frames = self._decode(marshal_content(5, properties, content, 4088))
        head = frames[0][1]
        assert isinstance(head, header.ContentHeader)
        assert head.body_size == len(content)
        assert head.properties.content_type == "text/plain"
        bodies = [value for _, value in frames[1:]]
        assert [len(value) for value in bodies if isinstance(value, body.ContentBody)] == [
            4088,
            4088,
            2064,
        ]
        assert b"".join(v.value for v in bodies if isinstance(v, body.ContentBody)) == content
        assert {channel for channel, _ in frames} == {5}

    def test_empty_body_has_no_body_frame(self) -> None:
        """An empty body is sent as a header frame alone."""
        frames = self._decode(marshal_content(1, b"\x00\x00", b"", 4088))
        assert len(frames) == 1
        assert isinstance(frames[0][1], header.ContentHeader)
