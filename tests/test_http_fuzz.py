"""Fuzzing the HTTP parser boundary with raw bytes, below what schemathesis can send.

Hypothesis generates raw HTTP/1.1 byte sequences (mutated request lines,
headers, chunked bodies, pipelining, garbage) and HTTP/2-ish ones (a
prior-knowledge preface followed by random frames, h2c upgrades), sends each
over a real socket to one real tower running in this process, and checks
after every example that the tower still answers ``GET /healthz`` with 200.

The tower runs in the test's trio loop; Hypothesis drives the examples from
a worker thread and hands each one to the loop, so a crash of the tower
fails the test at once instead of hanging it. Every socket operation has a
deadline, and the examples are few and derandomized, so a run takes seconds
and is the same on every machine.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests._helpers import run_tower, tower_settings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from tests._helpers import Tower

EXAMPLES = 150
SOCKET_TIMEOUT = 5.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: the examples share one tower, so once an example has
    # broken it every later one fails too; the first failure is the culprit.
    phases=[Phase.explicit, Phase.generate],
    # The examples run in a worker thread, each a round trip to the tower.
    suppress_health_check=[HealthCheck.too_slow],
)

_token = st.binary(min_size=0, max_size=12)
methods = (
    st.sampled_from(
        [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PRI", b"CONNECT", b"TRACE"]
    )
    | _token
)
targets = st.sampled_from(
    [
        b"/triggers",
        b"/triggers?wait=published",
        b"/triggers?limit=5&status=pending",
        b"/triggers/0123456789abcdef0123456789abcdef",
        b"/healthz",
        b"/readyz",
        b"/metrics",
        b"/plugins",
        b"/protocols",
        b"/openapi.json",
        b"*",
        b"http://tower/triggers",
        b"/%00%ff",
        b"//..//triggers",
    ]
) | st.binary(max_size=40)
versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/9.9", b"http/1.1"]
) | st.binary(max_size=10)
header_names = st.sampled_from(
    [
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Content-Type",
        b"Connection",
        b"Upgrade",
        b"Expect",
        b"Authorization",
        b"Idempotency-Key",
        b"HTTP2-Settings",
        b"Sec-WebSocket-Key",
        b"Sec-WebSocket-Version",
    ]
) | st.binary(max_size=20)
header_values = st.sampled_from(
    [
        b"tower",
        b"chunked",
        b"gzip, chunked",
        b"100-continue",
        b"close",
        b"Upgrade, HTTP2-Settings",
        b"h2c",
        b"websocket",
        b"application/json",
        b"0",
        b"7",
        b"-1",
        b"99999999999999999999",
        b"Bearer x",
        b"13",
        b"dGhlIHNhbXBsZSBub25jZQ==",
        b"AAMAAABkAAQAAP__",
    ]
) | st.binary(max_size=30)
headers = st.lists(
    st.tuples(header_names, header_values).map(lambda nv: nv[0] + b": " + nv[1] + b"\r\n"),
    max_size=6,
).map(b"".join)
json_bodies = st.sampled_from(
    [
        b'{"apiVersion": "OT-2/v1alpha1", "protocol": "PlateTransfer", "spec": {"volume": 100}}',
        b'{"apiVersion": "OT-2/v1alpha1"',
        b"[" * 200,
        b"{}",
        b"null",
    ]
)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    """A chunked body whose chunk sizes are right, wrong or not hex at all, maybe unterminated."""
    body = b""
    for chunk in draw(st.lists(st.binary(max_size=20), max_size=4)):
        size = draw(
            st.sampled_from([b"%x" % len(chunk), b"%x" % (len(chunk) + 3), b"zz", b"-1"])
            | st.binary(max_size=4)
        )
        body += size + b"\r\n" + chunk + b"\r\n"
    if draw(st.booleans()):
        body += b"0\r\n\r\n"
    return body


bodies = st.just(b"") | json_bodies | chunked_bodies() | st.binary(max_size=60)


WEBSOCKET_UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


_visible = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
valid_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"Content-Type", b"Authorization", b"Idempotency-Key", b"Accept", b"Expect"]
        )
        | st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z"),
        header_values.filter(lambda value: b"\r" not in value and b"\n" not in value)
        | _visible.map(str.encode),
    )
    .filter(lambda nv: nv[0].lower() not in {b"content-length", b"transfer-encoding", b"host"})
    .map(lambda nv: nv[0] + b": " + nv[1].strip() + b"\r\n"),
    max_size=4,
).map(b"".join)


@st.composite
def wellformed_requests(draw: st.DrawFn) -> bytes:
    """A request the parser accepts, so that its headers and body reach the tower's routes."""
    method = draw(st.sampled_from([b"POST", b"GET", b"PUT", b"OPTIONS", b"HEAD", b"DELETE"]))
    request = (
        method
        + b" "
        + draw(targets.filter(lambda target: target.startswith(b"/")))
        + b" HTTP/1.1\r\nHost: tower\r\n"
        + draw(st.sampled_from([b"Content-Type: application/json\r\n", WEBSOCKET_UPGRADE, b""]))
        + draw(valid_headers)
    )
    if method not in {b"POST", b"PUT"}:
        return request + b"\r\n"
    body = draw(json_bodies | st.binary(max_size=60))
    return request + b"Content-Length: %d\r\n\r\n" % len(body) + body


@st.composite
def http11_requests(draw: st.DrawFn) -> bytes:
    """One to three pipelined requests, each assembled from parts, then mutated in place."""
    data = b""
    for _ in range(draw(st.integers(1, 3))):
        data += (
            draw(methods)
            + draw(st.sampled_from([b" ", b"  ", b"\t", b""]))
            + draw(targets)
            + b" "
            + draw(versions)
            + draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
            + draw(headers)
            + b"\r\n"
            + draw(bodies)
        )
    for position, byte in draw(
        st.lists(st.tuples(st.integers(0, len(data)), st.integers(0, 255)), max_size=3)
    ):
        data = data[:position] + bytes([byte]) + data[position + 1 :]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def h2_frames(draw: st.DrawFn) -> bytes:
    """A frame header (length right or not, any type, flags, stream) and a random payload."""
    payload = draw(st.binary(max_size=40))
    length = draw(st.sampled_from([len(payload)]) | st.integers(0, 2**24 - 1))
    frame_type = draw(st.integers(0, 9) | st.integers(0, 255))
    flags = draw(st.integers(0, 255))
    stream_id = draw(st.sampled_from([0, 1, 3]) | st.integers(0, 2**32 - 1))
    return (
        length.to_bytes(3, "big")
        + bytes([frame_type, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


h2_request_headers = st.tuples(
    st.sampled_from(["POST", "GET", "PUT", "OPTIONS"]),
    st.sampled_from(["/triggers", "/healthz", "/triggers?wait=published", "/nothing"]),
    st.lists(
        st.tuples(
            st.sampled_from(["content-type", "content-length", "authorization", "idempotency-key"]),
            st.sampled_from(["application/json", "text/plain", "100", "0", "Bearer x", "k"]),
        ),
        max_size=3,
    ),
).map(
    lambda parts: [
        (":method", parts[0]),
        (":path", parts[1]),
        (":scheme", "http"),
        (":authority", "tower"),
        *parts[2],
    ]
)


@attrs.frozen
class H2Conversation:
    """What an HTTP/2 client sends: an opening, then (after the answer, if any) more frames."""

    opening: bytes
    request: list[tuple[str, str]] | None
    """Headers of a request on stream 1, sent after the opening; its answer is awaited."""
    end_stream: bool
    frames: bytes


@st.composite
def h2_conversations(draw: st.DrawFn) -> H2Conversation:
    """A preface (bare, with SETTINGS, or after an h2c upgrade), a request, then random frames.

    Frames sent after an early answer reach streams the server has closed,
    where Hypercorn's h2 protocol once raised out of the connection.
    """
    opening = draw(
        st.sampled_from(
            [
                b"",
                PREFACE,
                b"GET /healthz HTTP/1.1\r\nHost: tower\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            ]
        )
    )
    request = draw(st.none() | h2_request_headers) if opening != PREFACE else None
    data_on_stream_1 = st.binary(max_size=20).map(
        lambda payload: (
            len(payload).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big") + payload
        )
    )
    frames = draw(st.lists(data_on_stream_1 | h2_frames(), max_size=6))
    return H2Conversation(opening, request, draw(st.booleans()), b"".join(frames))


async def _converse(url: str, conversation: H2Conversation) -> bytes:
    """Play ``conversation``, waiting for the answer to its request before the frames."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    with trio.fail_after(SOCKET_TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    async with stream:
        try:
            with trio.fail_after(SOCKET_TIMEOUT):
                await stream.send_all(conversation.opening)
                if conversation.request is not None:
                    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                    client.initiate_connection()
                    client.send_headers(1, conversation.request, end_stream=conversation.end_stream)
                    await stream.send_all(client.data_to_send())
                    received = await _wait_for_answer(stream, client)
                await stream.send_all(conversation.frames)
                await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # The tower closed first: it has already made up its mind.
        return received + await _read_to_end(stream)


async def _wait_for_answer(stream: trio.SocketStream, client: h2.connection.H2Connection) -> bytes:
    """What the tower sends until it has answered stream 1, closed, or spoken HTTP/1.1."""
    received = b""
    while True:
        chunk = await stream.receive_some()
        received += chunk
        if not chunk or not received.startswith(b"\x00"):
            # Not HTTP/2 frames (a frame the server sends first is at most 16 KiB long).
            return received
        try:
            events = client.receive_data(chunk)
        except h2.exceptions.ProtocolError:
            return received
        await stream.send_all(client.data_to_send())
        if any(
            isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
            and event.stream_id == 1
            for event in events
        ):
            return received


async def _exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection, half-close it, and read until the tower closes."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    with trio.fail_after(SOCKET_TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        try:
            with trio.fail_after(SOCKET_TIMEOUT):
                await stream.send_all(data)
                await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # The tower closed first: it has already made up its mind.
        return await _read_to_end(stream)


async def _read_to_end(stream: trio.SocketStream) -> bytes:
    received = b""
    try:
        with trio.fail_after(SOCKET_TIMEOUT):
            while chunk := await stream.receive_some():
                received += chunk
    except trio.BrokenResourceError:
        pass  # A reset: the tower closed with our bytes unread.
    return received


class _Errors(logging.Handler):
    """Collects what the tower logs as an error or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


async def _check_example(tower: Tower, errors: _Errors, example: bytes | H2Conversation) -> None:
    url = tower.running.http_urls[0]
    if isinstance(example, H2Conversation):
        answer = await _converse(url, example)
    else:
        answer = await _exchange(url, example)
    statuses = [int(status) for status in _STATUS_LINE.findall(answer)]
    assert 500 not in statuses, f"{example!r} got a 500: {answer[:500]!r}"
    with trio.fail_after(SOCKET_TIMEOUT):
        health = await tower.client.get("/healthz")
    assert health.status_code == 200, f"after {example!r}: /healthz {health.status_code}"
    logged = [f"{record.getMessage()} {record.__dict__.get('fields')}" for record in errors.records]
    errors.records.clear()
    assert not logged, f"{example!r} made the tower log an error: {logged}"


async def _fuzz(
    tower: Tower,
    strategy: st.SearchStrategy[bytes | H2Conversation],
    known: Sequence[bytes | H2Conversation],
) -> None:
    """Check ``known`` (the probes that once broke the tower), then ``EXAMPLES`` generated ones."""

    @FUZZ_SETTINGS
    @given(strategy)
    def examples(example: bytes | H2Conversation) -> None:
        trio.from_thread.run(_check_example, tower, errors, example)

    for case in known:
        examples = example(case)(examples)
    errors = _Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        await trio.to_thread.run_sync(examples)
    finally:
        root.removeHandler(errors)


KNOWN_HTTP11 = [
    b"GET /triggers HTTP/1.1\r\nHost: tower\r\n" + WEBSOCKET_UPGRADE + b"\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: tower\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    PREFACE,
]
KNOWN_H2 = [
    # An early answer (415), then DATA for the answered stream: Hypercorn's KeyError.
    H2Conversation(
        b"",
        [
            (":method", "POST"),
            (":path", "/triggers"),
            (":scheme", "http"),
            (":authority", "tower"),
            ("content-type", "text/plain"),
            ("content-length", "100"),
        ],
        end_stream=False,
        frames=b"\x00\x00\x02\x00\x00\x00\x00\x00\x01{}",
    ),
]


class TestRawBytes:
    async def test_http11_byte_sequences(self, amqp_url: str, unique: str, tmp_path: Path) -> None:
        """Mutated HTTP/1.1 requests never get a 500, and the tower answers /healthz after each."""
        settings = tower_settings(amqp_url, f"test.fuzz.{unique}", tmp_path)
        async with run_tower(settings) as tower:
            # Well-formed requests twice over: their headers and bodies reach the routes.
            requests = st.one_of(
                wellformed_requests(),
                wellformed_requests(),
                http11_requests(),
                st.binary(max_size=300),
            )
            await _fuzz(tower, requests, KNOWN_HTTP11)

    async def test_h2_byte_sequences(self, amqp_url: str, unique: str, tmp_path: Path) -> None:
        """HTTP/2 openings, requests and random frames after the answer never end the tower."""
        settings = tower_settings(amqp_url, f"test.fuzz.{unique}", tmp_path)
        async with run_tower(settings) as tower:
            await _fuzz(tower, h2_conversations(), KNOWN_H2)
