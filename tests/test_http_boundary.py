"""The HTTP connection boundary: HTTP/2 and WebSocket probes, the guard, timeouts, the cap.

The HTTP/2 cases drive raw frames at a real ``tower-trio run`` process, since
what they guard against is the process dying; the others run the tower (or
the bare server) in-process, with real sockets.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import resource
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import httpx
import hypercorn.config
import pytest
import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer

from tests._fakes import complete_lifespan, send_response
from tests._helpers import run_tower, tower_settings
from tests._towers import Towers, tower_environ
from tower_trio._config import Settings
from tower_trio._errors import ConfigError
from tower_trio._server import (
    HTTP11Connection,
    check_file_limit,
    guard_connection,
    serve_asgi,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests._towers import TowerProcess

TOKEN = "http-boundary-test-token-0123456789"
WEBSOCKET_UPGRADE = (
    b"GET /triggers HTTP/1.1\r\nHost: tower\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: tower\r\n\r\n"


async def _connect(url: str) -> trio.SocketStream:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return await trio.open_tcp_stream(host, int(port))


def _data_frame(stream_id: int, payload: bytes) -> bytes:
    """An HTTP/2 DATA frame without flags: length, type 0, flags 0, stream id, payload."""
    return len(payload).to_bytes(3, "big") + b"\x00\x00" + stream_id.to_bytes(4, "big") + payload


async def _read_to_end(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes (a reset counts as the end)."""
    received = b""
    try:
        while chunk := await stream.receive_some():
            received += chunk
    except trio.BrokenResourceError:
        pass
    return received


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """An HTTP/1.1 answer's head, and whatever arrived after it."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some()
        assert chunk, f"the server closed the connection after {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


async def _read_answer(stream: trio.SocketStream) -> bytes:
    """One HTTP/1.1 answer, leaving the connection open."""
    head, rest = await _read_head(stream)
    body, _ = await _read_body(stream, head, rest)
    return head + b"\r\n\r\n" + body


async def _read_body(stream: trio.SocketStream, head: bytes, rest: bytes) -> tuple[bytes, bytes]:
    """The body announced by ``head``'s Content-Length, and whatever arrived after it."""
    length = sum(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = await stream.receive_some()
        assert chunk, f"the server closed the connection mid-body: {head + rest!r}"
        rest += chunk
    return rest[:length], rest[length:]


async def _healthz(url: str) -> int | str:
    """The status of ``GET /healthz``, or why there was none."""
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            try:
                return (await client.get(f"{url}/healthz")).status_code
            except httpx.TransportError as err:
                return f"no answer: {err!r}"


async def _early_answer_then_data(
    stream: trio.SocketStream,
    client: h2.connection.H2Connection,
    headers: list[tuple[str, str]],
    received: bytes = b"",
) -> bytes:
    """Over HTTP/2: a POST whose body never comes, then one DATA frame once it is answered.

    Returns what the server sent from then on. Against Hypercorn's h2
    protocol the DATA frame, for a stream it has already answered, raised
    ``KeyError`` out of the connection's task and ended the tower.
    """
    stream_id = client.get_next_available_stream_id()
    client.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":path", "/triggers"),
            (":scheme", "http"),
            (":authority", "tower"),
            ("content-length", "100"),
            *headers,
        ],
    )
    await stream.send_all(client.data_to_send())
    answer = b""
    with trio.fail_after(10):
        answered = False
        chunk = received
        while not answered:
            if chunk:
                events = client.receive_data(chunk)
                await stream.send_all(client.data_to_send())
                answered = any(
                    isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                    and event.stream_id == stream_id
                    for event in events
                )
            if not answered:
                chunk = await stream.receive_some()
                answer += chunk
                if not chunk or answer.startswith(b"HTTP/1.1"):
                    break
    # A broken connection means the server has already closed it: the best outcome.
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(_data_frame(stream_id, b'{"apiVersion"'))
    with trio.fail_after(10):
        return answer + await _read_to_end(stream)


@pytest.fixture
async def towers(
    nursery: trio.Nursery, tmp_path: Path, amqp_url: str, unique: str
) -> AsyncIterator[Towers]:
    """Starts ``tower-trio run`` on a fresh data dir and exchange; kills what runs at the end."""
    towers = Towers(
        nursery,
        tower_environ(
            TOWER_AMQP_URL=amqp_url,
            TOWER_EXCHANGE=f"test.http.{unique}",
            TOWER_DATA_DIR=str(tmp_path / "data"),
            TOWER_PLUGINS_DIR=str(tmp_path / "no-plugins"),
        ),
    )
    try:
        yield towers
    finally:
        with trio.CancelScope(shield=True):
            await towers.kill_all()
        # Shown by pytest only when the test failed.
        print(towers.logs)


async def _check_still_serving(tower: TowerProcess) -> None:
    assert await _healthz(tower.url) == 200, f"the tower stopped serving:\n{tower.log[-3000:]}"
    assert tower.process.returncode is None
    assert "Traceback" not in tower.log
    with trio.fail_after(30):
        assert await tower.terminate() == 0


class TestHTTP2AtARealTower:
    @pytest.mark.parametrize(
        ("tokens", "headers"),
        [
            pytest.param(TOKEN, [("content-type", "application/json")], id="401-with-tokens"),
            pytest.param(None, [("content-type", "text/plain")], id="415-without-tokens"),
        ],
    )
    async def test_early_answer_then_data_frame(
        self, towers: Towers, tokens: str | None, headers: list[tuple[str, str]]
    ) -> None:
        """An h2 client sending DATA after an early answer gets HTTP/1.1 400; the tower lives on."""
        if tokens is not None:
            towers.environ["TOWER_API_TOKENS"] = tokens
        tower = await towers.start()
        stream = await _connect(tower.url)
        async with stream:
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            answer = await _early_answer_then_data(stream, client, headers)
        await _check_still_serving(tower)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "HTTP/2 is not served"

    async def test_h2c_upgrade_is_answered_in_http11(self, towers: Towers) -> None:
        """``Upgrade: h2c`` is ignored (HTTP/1.1 200, never 101); HTTP/2 after it gets 400."""
        tower = await towers.start()
        stream = await _connect(tower.url)
        async with stream:
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            h2_settings = client.initiate_upgrade_connection()
            assert h2_settings is not None  # A client's upgrade always carries its settings.
            await stream.send_all(
                b"GET /healthz HTTP/1.1\r\nHost: tower\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: " + h2_settings + b"\r\n\r\n"
            )
            with trio.fail_after(10):
                head, rest = await _read_head(stream)
                if not head.startswith(b"HTTP/1.1 101 "):
                    _, rest = await _read_body(stream, head, rest)
            # What a client sends once it believes the upgrade happened.
            after = await _early_answer_then_data(
                stream, client, [("content-type", "text/plain")], rest
            )
        await _check_still_serving(tower)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert not after or after.startswith(b"HTTP/1.1 400 "), after[:200]


class _FailsFirst(HTTP11Connection):
    """Raises inside its connection's task group on the first connection, as Hypercorn's h2 did."""

    failed = False

    async def _read_data(self) -> None:
        if not _FailsFirst.failed:
            _FailsFirst.failed = True
            raise KeyError(1)
        await super()._read_data()


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await complete_lifespan(receive, send)
        return
    await send_response(send, 200, b"hello", [(b"content-length", b"5")])


def _bare_config(**values: Any) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 1.0
    for name, value in values.items():
        setattr(config, name, value)
    return config


async def _ask_patient_server(
    nursery: trio.Nursery, app: Any, shutdown: trio.Event
) -> trio.SocketStream:
    """A connection to ``app`` served with long timeouts, a GET sent on it."""
    config = _bare_config(keep_alive_timeout=60.0, graceful_timeout=60.0)
    urls = await nursery.start(
        lambda task_status: serve_asgi(
            app, config, max_connections=10, shutdown=shutdown, task_status=task_status
        )
    )
    stream = await _connect(urls[0])
    await stream.send_all(HEALTHZ)
    return stream


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.msg == event]


class TestConnectionGuard:
    async def test_failing_connection_is_logged_once_and_server_serves_on(
        self, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An error raised in one connection's task is one warning; the next client is served."""
        shutdown = trio.Event()
        _FailsFirst.failed = False
        with caplog.at_level(logging.DEBUG):
            urls = await nursery.start(
                lambda task_status: serve_asgi(
                    _hello,
                    _bare_config(),
                    max_connections=10,
                    shutdown=shutdown,
                    connection_class=_FailsFirst,
                    task_status=task_status,
                )
            )
            first = await _connect(urls[0])
            async with first:
                await first.send_all(HEALTHZ)
                with trio.fail_after(5):
                    assert await _read_to_end(first) == b""
            second = await _connect(urls[0])
            async with second:
                await second.send_all(HEALTHZ)
                with trio.fail_after(5):
                    assert (await _read_answer(second)).endswith(b"hello")
            shutdown.set()
        failures = _records(caplog, "http.connection_failed")
        assert len(failures) == 1
        fields = failures[0].__dict__["fields"]
        assert fields["error"] == "KeyError"
        assert fields["client"].startswith("127.0.0.1:")
        assert not [record for record in caplog.records if record.exc_info]

    async def test_cancellation_passes_through(self, caplog: pytest.LogCaptureFixture) -> None:
        """Cancelling a connection is not a failure: nothing is logged and the cancel propagates."""
        async with _stream_pair() as stream:
            with trio.CancelScope() as scope:
                scope.cancel()
                await guard_connection(trio.sleep_forever, stream)
        assert scope.cancelled_caught
        assert not _records(caplog, "http.connection_failed")

    async def test_keyboard_interrupt_passes_through(self) -> None:
        """A BaseException that is not an Exception is never contained."""

        async def interrupted() -> None:
            raise KeyboardInterrupt

        async with _stream_pair() as stream:
            with pytest.raises(KeyboardInterrupt):
                await guard_connection(interrupted, stream)


@contextlib.asynccontextmanager
async def _stream_pair() -> AsyncIterator[trio.SocketStream]:
    """A connected server-side socket stream; its client and listener are closed afterwards."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        client = await trio.testing.open_stream_to_socket_listener(listener)
        async with client:
            server = await listener.accept()
            async with server:
                yield server


class TestWebSockets:
    @pytest.mark.parametrize(
        ("tokens", "authorization"),
        [
            pytest.param(None, b"", id="no-tokens"),
            pytest.param(TOKEN, b"", id="tokens-none-sent"),
            pytest.param(TOKEN, f"Authorization: Bearer {TOKEN}\r\n".encode(), id="token-sent"),
        ],
    )
    async def test_upgrade_request_gets_404_without_a_traceback(
        self,
        amqp_url: str,
        unique: str,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        *,
        tokens: str | None,
        authorization: bytes,
    ) -> None:
        """A WebSocket upgrade gets 404 "WebSockets are not served", one log line, no traceback."""
        overrides: dict[str, Any] = {}
        if tokens is not None:
            overrides["api_tokens"] = Settings.from_environ({"TOWER_API_TOKENS": tokens}).api_tokens
        settings = tower_settings(amqp_url, f"test.http.{unique}", tmp_path, **overrides)
        with caplog.at_level(logging.DEBUG):
            async with run_tower(settings) as tower:
                stream = await _connect(tower.running.http_urls[0])
                async with stream:
                    await stream.send_all(WEBSOCKET_UPGRADE + authorization + b"\r\n")
                    with trio.fail_after(10):
                        answer = await _read_to_end(stream)
                assert (await tower.client.get("/healthz")).status_code == 200
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404 ")
        assert json.loads(body) == {
            "error": "not found",
            "details": ["WebSockets are not served; send plain HTTP requests to this API"],
        }
        assert len(_records(caplog, "http.websocket_refused")) == 1
        assert not [record for record in caplog.records if record.exc_info]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class TestIdleConnections:
    async def test_idle_after_an_answer_closes_after_keep_alive_timeout(
        self, amqp_url: str, unique: str, tmp_path: Path
    ) -> None:
        """After an answer, a silent connection is closed after the keep-alive timeout."""
        settings = tower_settings(
            amqp_url,
            f"test.http.{unique}",
            tmp_path,
            http_keep_alive_timeout=0.5,
            http_read_timeout=30.0,
        )
        async with run_tower(settings) as tower:
            stream = await _connect(tower.running.http_urls[0])
            async with stream:
                await stream.send_all(HEALTHZ)
                with trio.fail_after(5):
                    assert (await _read_answer(stream)).startswith(b"HTTP/1.1 200 ")
                # Far below the read timeout: the keep-alive timeout is what applies.
                with trio.fail_after(5):
                    assert await _read_to_end(stream) == b""

    async def test_idle_connection_closes_when_the_server_stops(
        self, nursery: trio.Nursery
    ) -> None:
        """Stopping closes an idle keep-alive connection at once, not after its timeout."""
        shutdown = trio.Event()
        stream = await _ask_patient_server(nursery, _hello, shutdown)
        async with stream:
            with trio.fail_after(5):
                assert (await _read_answer(stream)).endswith(b"hello")
            # Idle, with its keep-alive timer armed (a stop noticed while the
            # answer is being finished closes it there, which is not the case).
            await trio.testing.wait_all_tasks_blocked()
            shutdown.set()
            with trio.fail_after(5):
                assert await _read_to_end(stream) == b""

    async def test_busy_connection_answers_then_closes_when_the_server_stops(
        self, nursery: trio.Nursery
    ) -> None:
        """A request served as the server stops gets its answer, then the connection closes."""
        shutdown = trio.Event()
        inside, release = trio.Event(), trio.Event()

        async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await complete_lifespan(receive, send)
                return
            inside.set()
            await release.wait()
            await send_response(send, 200, b"hello", [(b"content-length", b"5")])

        stream = await _ask_patient_server(nursery, slow, shutdown)
        async with stream:
            with trio.fail_after(5):
                await inside.wait()
            shutdown.set()
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            with trio.fail_after(5):
                assert (await _read_to_end(stream)).endswith(b"hello")

    async def test_early_answer_closes_without_the_clients_help(
        self, amqp_url: str, unique: str, tmp_path: Path
    ) -> None:
        """An answer sent before the body (Connection: close) closes the connection at once."""
        settings = tower_settings(amqp_url, f"test.http.{unique}", tmp_path, http_read_timeout=30.0)
        async with run_tower(settings) as tower:
            stream = await _connect(tower.running.http_urls[0])
            async with stream:
                await stream.send_all(
                    b"PUT /triggers HTTP/1.1\r\nHost: tower\r\nContent-Length: 100\r\n\r\n"
                )
                with trio.fail_after(5):
                    answer = await _read_to_end(stream)
        assert answer.startswith(b"HTTP/1.1 405 ")


async def _connect_to_hello(
    nursery: trio.Nursery, shutdown: trio.Event, *, read_timeout: float
) -> trio.SocketStream:
    """A connection to a bare server whose keep-alive timeout is far beyond ``read_timeout``."""
    config = _bare_config(keep_alive_timeout=60.0, read_timeout=read_timeout)
    urls = await nursery.start(
        lambda task_status: serve_asgi(
            _hello, config, max_connections=10, shutdown=shutdown, task_status=task_status
        )
    )
    return await _connect(urls[0])


class TestReadTimeout:
    async def test_a_connection_silent_mid_head_closes_after_the_read_timeout(
        self, nursery: trio.Nursery
    ) -> None:
        """With a long keep-alive, the read timeout still closes a client that went silent."""
        shutdown = trio.Event()
        stream = await _connect_to_hello(nursery, shutdown, read_timeout=0.3)
        async with stream:
            await stream.send_all(HEALTHZ)
            with trio.fail_after(5):
                assert (await _read_answer(stream)).endswith(b"hello")
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: tow")
            with trio.fail_after(5):
                assert await _read_to_end(stream) == b""
        shutdown.set()

    async def test_reads_that_keep_coming_keep_the_connection(self, nursery: trio.Nursery) -> None:
        """The read timeout bounds each silence, not the connection's life."""
        shutdown = trio.Event()
        stream = await _connect_to_hello(nursery, shutdown, read_timeout=0.5)
        async with stream:
            for _ in range(8):
                await stream.send_all(HEALTHZ)
                with trio.fail_after(5):
                    assert (await _read_answer(stream)).endswith(b"hello")
                await trio.sleep(0.2)
        shutdown.set()


class TestWrites:
    async def test_an_answer_of_known_length_is_one_write(
        self, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Head and body go out together; an empty end is not written."""
        writes: list[bytes] = []
        send_all = trio.SocketStream.send_all

        async def counted(self: trio.SocketStream, data: Any) -> None:
            writes.append(bytes(data))
            await send_all(self, data)

        monkeypatch.setattr(trio.SocketStream, "send_all", counted)
        shutdown = trio.Event()
        stream = await _ask_patient_server(nursery, _hello, shutdown)
        async with stream:
            with trio.fail_after(5):
                answer = await _read_answer(stream)
        shutdown.set()
        client_writes = [HEALTHZ]
        server_writes = [w for w in writes if w not in client_writes]
        assert server_writes == [answer]
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b"hello")

    async def test_a_streamed_answer_sends_its_head_at_once(self, nursery: trio.Nursery) -> None:
        """An answer of unknown length (the console's live feed) is not held back."""
        shutdown, release = trio.Event(), trio.Event()

        async def stream_later(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await complete_lifespan(receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await release.wait()
            await send({"type": "http.response.body", "body": b"late"})

        stream = await _ask_patient_server(nursery, stream_later, shutdown)
        async with stream:
            with trio.fail_after(5):
                head = await stream.receive_some(65536)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"transfer-encoding: chunked" in head.lower()
            release.set()
        shutdown.set()


class TestProtocolErrorDuringAnAnswer:
    async def test_close_while_answering_logs_no_error(
        self, amqp_url: str, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Garbage after an HTTP/1.0 request, while its answer is written, logs no traceback.

        Hypercorn half-closes such a connection without its send lock; the
        answer still being written hit BusyResourceError in about a third of
        the tries, logged as an error with a traceback.
        """
        settings = tower_settings(amqp_url, f"test.http.{unique}", tmp_path)
        with caplog.at_level(logging.DEBUG):
            async with run_tower(settings) as tower:
                for _ in range(50):
                    stream = await _connect(tower.running.http_urls[0])
                    async with stream:
                        await stream.send_all(
                            b"GET /metrics HTTP/1.0\r\nHost: tower\r\n\r\nX\r\n\r\n"
                        )
                        await stream.send_eof()
                        with trio.fail_after(5):
                            await _read_to_end(stream)
                assert (await tower.client.get("/healthz")).status_code == 200
        assert not [record for record in caplog.records if record.exc_info]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class TestConnectionCap:
    async def test_connections_past_the_cap_wait_for_a_free_slot(
        self, amqp_url: str, unique: str, tmp_path: Path
    ) -> None:
        """With a cap of 2 and 2 open connections, a third is served only once one closes."""
        settings = tower_settings(
            amqp_url,
            f"test.http.{unique}",
            tmp_path,
            http_max_connections=2,
            http_keep_alive_timeout=60.0,
        )
        async with run_tower(settings) as tower:
            url = tower.running.http_urls[0]
            held = [await _connect(url), await _connect(url)]
            for stream in held:
                await stream.send_all(HEALTHZ)
                with trio.fail_after(5):
                    assert (await _read_answer(stream)).startswith(b"HTTP/1.1 200 ")
            waiting = await _connect(url)
            async with waiting:
                await waiting.send_all(HEALTHZ)
                with trio.move_on_after(0.5):
                    early = await waiting.receive_some()
                    pytest.fail(f"a third connection was served past the cap: {early!r}")
                await held.pop().aclose()
                with trio.fail_after(5):
                    assert (await _read_answer(waiting)).startswith(b"HTTP/1.1 200 ")
            await held.pop().aclose()

    def test_cap_near_the_open_files_limit_is_warned(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A cap that leaves too few file descriptors for the rest is a warning naming the fix."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            pytest.skip("no open-files limit in this environment")
        with caplog.at_level(logging.DEBUG):
            check_file_limit(soft - 10)
            check_file_limit(max(1, soft - 200))
        (warning,) = _records(caplog, "http.connection_cap_above_file_limit")
        assert warning.__dict__["fields"]["max_connections"] == soft - 10
        assert "TOWER_HTTP_MAX_CONNECTIONS" in warning.__dict__["fields"]["fix"]

    def test_setting_defaults_to_1000_and_rejects_zero(self) -> None:
        """TOWER_HTTP_MAX_CONNECTIONS is 1000 unless set, and must be a positive integer."""
        assert Settings.from_environ({}).http_max_connections == 1000
        with pytest.raises(ConfigError, match=r"TOWER_HTTP_MAX_CONNECTIONS='0' is invalid"):
            Settings.from_environ({"TOWER_HTTP_MAX_CONNECTIONS": "0"})


class TestHypercornSeams:
    def test_installed_hypercorn_is_the_one_the_boundary_was_built_on(self) -> None:
        """The version and the internals HTTP11Connection relies on are what it was written for.

        If this fails, Hypercorn has changed under the tower: re-check
        tower_trio/_server.py against the new TCPServer and H11Protocol, then
        widen the pin in pyproject.toml.
        """
        assert version("hypercorn").startswith("0.18."), version("hypercorn")
        assert list(inspect.signature(TCPServer.__init__).parameters) == [
            "self",
            "app",
            "config",
            "context",
            "state",
            "stream",
        ]
        run = inspect.getsource(TCPServer.run)
        assert "self.protocol = ProtocolWrapper(" in run
        assert "await self._read_data()" in run
        assert "self.idle_task" in inspect.getsource(TCPServer.__init__)
        assert inspect.iscoroutinefunction(TCPServer._initiate_server_close)
        # The keep-alive timer is moved on these two events alone.
        assert "Updated(idle=True)" in inspect.getsource(H11Protocol._maybe_recycle)
        assert "Updated(idle=False)" in inspect.getsource(H11Protocol._handle_events)
        assert "self.send_lock" in inspect.getsource(TCPServer.protocol_send)
        assert "self.stream.send_eof()" in inspect.getsource(TCPServer._close)
        for method in (TCPServer.protocol_send, TCPServer._read_data):
            assert inspect.iscoroutinefunction(method)
        check = inspect.getsource(H11Protocol._check_protocol)
        assert "H2ProtocolAssumedError" in check
        assert "H2CProtocolRequiredError" in check
        assert "await self._check_protocol(event)" in inspect.getsource(H11Protocol._handle_events)
        assert inspect.iscoroutinefunction(H11Protocol._send_h11_event)
        # HTTP11Connection reads in a loop of its own and _HTTP11Only writes
        # whole answers: Hypercorn's versions must still be what they replace.
        read = inspect.getsource(TCPServer._read_data)
        assert "receive_some(MAX_RECV)" in read
        assert "await self.protocol.handle(RawData(bytes(data)))" in read
        assert "self.config.read_timeout" in read
        send = "".join(inspect.getsource(H11Protocol.stream_send).split())
        for event in ("h11.Response(", "h11.Data(", "h11.EndOfMessage()"):
            assert f"awaitself._send_h11_event({event}" in send
        assert "self.connection.send(event)" in inspect.getsource(H11Protocol._send_h11_event)

    async def test_prior_knowledge_preface_gets_400_in_process(self, nursery: trio.Nursery) -> None:
        """The bare server refuses an HTTP/2 preface with a 400 and closes the connection."""
        shutdown = trio.Event()
        urls = await nursery.start(
            lambda task_status: serve_asgi(
                _hello,
                _bare_config(),
                max_connections=10,
                shutdown=shutdown,
                task_status=task_status,
            )
        )
        stream = await _connect(urls[0])
        async with stream:
            await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            with trio.fail_after(5):
                answer = await _read_to_end(stream)
        shutdown.set()
        assert answer.startswith(b"HTTP/1.1 400 ")
