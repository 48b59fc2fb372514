"""The HTTP connection boundary: how Hypercorn serves the API, one guarded task per connection.

Hypercorn parses HTTP; this module decides what it runs and what may escape:

- **A boundary per connection.** Any error other than cancellation that one
  connection's task raises is logged once (``http.connection_failed``) and
  ends that connection only. Hypercorn's own ``serve`` runs its connection
  tasks in the nursery that holds the server, so one protocol bug (its h2
  code raises ``KeyError`` for DATA on a stream it has answered) ended the
  tower; hence the tower's own accept loop around Hypercorn's connection class.
- **HTTP/1.1 only.** The tower is served over plain TCP, where HTTP/2 would
  be h2c: prior knowledge (``PRI * HTTP/2.0``) or ``Upgrade: h2c``. No client
  of the tower needs it, and it is where Hypercorn's connection errors come
  from. A prior-knowledge preface gets a 400 and the connection is closed;
  an ``Upgrade: h2c`` header is ignored and the request is answered in HTTP/1.1.
- **No WebSockets.** An upgrade request gets 404 with the tower's JSON error
  body, before it reaches the application.
- **A cap on connections.** At most ``TOWER_HTTP_MAX_CONNECTIONS`` are served
  at once; further clients wait in the listen backlog until one closes.
- **Connections close when they should.** Hypercorn's keep-alive timer and
  connection closes were lost when the task that answered was cancelled
  (Quart-Trio does that once an exchange is over), its keep-alive timer
  outlived a connection the client had closed, and a response still being
  written when Hypercorn closed the connection raised ``BusyResourceError``;
  ``HTTP11Connection`` repairs each where it happens.
- **One timer per connection.** Hypercorn starts a timer task each time a
  connection falls idle and gives every read a deadline of its own;
  ``_ConnectionTimer`` is one task that requests and reads only tell the
  time, which saves a tenth of the tower's CPU under load.
- **An answer in one write.** Hypercorn writes a response's head, body and
  end separately; ``_HTTP11Only`` writes a response of known length whole.

The Hypercorn internals used (``TCPServer`` with its ``protocol``,
``_read_data``, ``protocol_send``, ``idle_task`` and ``_initiate_server_close``;
``H11Protocol._check_protocol`` and ``_send_h11_event``; ``Lifespan``;
``WorkerContext``) are pinned by the version range in ``pyproject.toml`` and
checked by ``tests/test_http_boundary.py::TestHypercornSeams``.

One concept, kept whole although past 400 lines: the connection boundary,
one step of a connection's life per function.
"""

from __future__ import annotations

import logging
import math
import resource
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import h11
import hypercorn.config
import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from hypercorn.utils import wrap_app

from ._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from hypercorn.events import Event
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.typing import AppWrapper, H11SendableEvent

    from ._channel import Submission
    from ._config import Settings
    from ._metrics import ASGIApp

__all__ = [
    "HTTP11Connection",
    "check_file_limit",
    "guard_connection",
    "hypercorn_config",
    "refuse_websockets",
    "serve_asgi",
    "serve_http",
]

_log = get_logger(__name__)

_HTTP2_REFUSED = (
    b'{"error":"HTTP/2 is not served","details":["this server speaks HTTP/1.1 only; '
    b'send HTTP/1.1 requests (no prior-knowledge HTTP/2, no h2c)"]}'
)
_WEBSOCKETS_REFUSED = (
    b'{"error":"not found","details":["WebSockets are not served; '
    b'send plain HTTP requests to this API"]}'
)
_BOOKKEEPING_TIMEOUT = 5.0
"""Bound on the shielded keep-alive bookkeeping, which normally takes no time at all."""
_SPARE_FILES = 64
"""File descriptors the tower needs besides its HTTP connections (journal, broker, plugins)."""


async def serve_http(
    settings: Settings,
    make_app: Callable[[trio.MemorySendChannel[Submission]], ASGIApp],
    send_channel: trio.MemorySendChannel[Submission],
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until ``shutdown``; its clone closes once the last request is done."""
    if settings.api_tokens is None:
        _log.warning(
            "http.auth_off",
            reason="TOWER_API_TOKENS is not set: anyone who can reach the API may send triggers",
            http_host=settings.http_host,
        )
    check_file_limit(settings.http_max_connections)
    with send_channel:
        await serve_asgi(
            refuse_websockets(make_app(send_channel)),
            hypercorn_config(settings),
            max_connections=settings.http_max_connections,
            shutdown=shutdown,
            task_status=task_status,
        )


def hypercorn_config(settings: Settings) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.graceful_timeout = settings.shutdown_grace
    # Slow-loris: the idle timer runs until a request's head is complete, and
    # the read timeout closes connections that go silent mid-request.
    config.keep_alive_timeout = settings.http_keep_alive_timeout
    config.read_timeout = settings.http_read_timeout  # type: ignore[assignment]  # a float works
    # Only consulted for TLS, which the tower does not terminate; said anyway,
    # so that the config never offers what HTTP11Connection refuses.
    config.alpn_protocols = ["http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("tower_trio.http.server")
    return config


def check_file_limit(max_connections: int) -> None:
    """Warn if the open-files limit leaves too little room beside the connection cap."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + _SPARE_FILES > soft:
        _log.warning(
            "http.connection_cap_above_file_limit",
            max_connections=max_connections,
            open_files_limit=soft,
            fix="lower TOWER_HTTP_MAX_CONNECTIONS or raise the limit (ulimit -n, LimitNOFILE=)",
        )


async def serve_asgi(
    app: ASGIApp,
    config: hypercorn.config.Config,
    *,
    max_connections: int,
    shutdown: trio.Event,
    connection_class: type[HTTP11Connection] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown``; reports the URLs once listening.

    Runs the ASGI lifespan around the server as Hypercorn's ``serve`` does.
    On ``shutdown`` it stops accepting, closes idle connections and gives
    the others ``config.graceful_timeout`` to finish. ``connection_class``
    serves each connection (tests pass one that fails on purpose).
    """
    wrapped = wrap_app(cast("Any", app), config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, state)
    serve_one = partial(connection_class or HTTP11Connection, wrapped, config, context, state)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            slots = trio.Semaphore(max_connections)
            listeners = [
                _CappedListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), slots)
                for sock in _listening_sockets(config)
            ]
            urls = [_url(listener.socket) for listener in listeners]
            accepting = trio.CancelScope()
            await connections.start(
                _accept_in_scope,
                accepting,
                partial(_serve_connection, serve_one, slots),
                listeners,
                connections,
            )
            task_status.started(urls)
            await shutdown.wait()
            accepting.cancel()
            # Idle connections see this and close; busy ones close after their answer.
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _listening_sockets(config: hypercorn.config.Config) -> list[socket.socket]:
    # Hypercorn's own binding, so that every TOWER_HTTP_HOST spelling it took still works.
    sockets = config.create_sockets().insecure_sockets
    for sock in sockets:
        sock.listen(config.backlog)
    return sockets


def _url(sock: trio.socket.SocketType) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _accept_in_scope(
    scope: trio.CancelScope,
    handler: Callable[[trio.SocketStream], Any],
    listeners: list[_CappedListener],
    handler_nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[Sequence[_CappedListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await trio.serve_listeners(
            handler, listeners, handler_nursery=handler_nursery, task_status=task_status
        )


class _CappedListener(trio.abc.Listener[trio.SocketStream]):
    """Accepts only while a connection slot is free; the connection's task gives it back.

    Past the cap the tower does not call ``accept``: new clients wait in the
    kernel's listen backlog, costing the tower nothing, and are served in
    order as slots free up (idle connections free theirs after the
    keep-alive timeout).
    """

    def __init__(self, listener: trio.SocketListener, slots: trio.Semaphore) -> None:
        self._listener = listener
        self._slots = slots

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._listener.socket

    async def accept(self) -> trio.SocketStream:
        await self._slots.acquire()
        try:
            return await self._listener.accept()
        except BaseException:
            self._slots.release()
            raise

    async def aclose(self) -> None:
        await self._listener.aclose()


async def _serve_connection(
    serve_one: Callable[[trio.SocketStream], HTTP11Connection],
    slots: trio.Semaphore,
    stream: trio.SocketStream,
) -> None:
    """The boundary: whatever one connection raises ends that connection, never the server."""
    try:
        await guard_connection(serve_one(stream).run, stream)
    finally:
        slots.release()


async def guard_connection(run: Callable[[], Any], stream: trio.SocketStream) -> None:
    """Run one connection's task; log any error it raises once and close its socket.

    Cancellation and other ``BaseException`` (KeyboardInterrupt) pass through
    untouched: only ``Exception`` is contained.
    """
    # Asked now: once the connection has failed, its socket may be closed.
    client = _peer(stream)
    try:
        await run()
    except* Exception as group:
        _log.warning(
            "http.connection_failed",
            client=client,
            error=",".join(sorted({type(error).__name__ for error in _leaves(group)})),
        )
        await trio.aclose_forcefully(stream)


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    leaves: list[Exception] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        else:
            leaves.append(error)
    return leaves


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except (OSError, ValueError):
        # The socket is already gone; the log line still says what failed.
        return "unknown"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class HTTP11Connection(TCPServer):
    """Hypercorn's connection, speaking HTTP/1.1 only and keeping its keep-alive promise.

    Hypercorn builds its protocol inside ``run``, choosing HTTP/2 when a
    request asks for it; the setter below swaps in ``_HTTP11Only`` as it is
    assigned, which never changes protocol.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: hypercorn.config.Config,
        context: WorkerContext,
        state: dict[str, Any],
        stream: trio.SocketStream,
    ) -> None:
        # Hypercorn's annotation names its TLS stream; a plain socket stream is
        # what it gets without TLS (it tells them apart by do_handshake).
        super().__init__(app, config, context, state, cast("Any", stream))
        self._reading = trio.CancelScope()
        self._keep_alive = _ConnectionTimer(
            keep_alive=config.keep_alive_timeout,
            read=config.read_timeout or math.inf,
            context=context,
            close_idle=self._close_idle,
            stop_reading=self._reading.cancel,
        )
        self.idle_task = self._keep_alive

    @property  # type: ignore[override]  # a property in place of Hypercorn's attribute
    def protocol(self) -> _HTTP11Only:
        return self._http11

    @protocol.setter
    def protocol(self, wrapper: ProtocolWrapper) -> None:
        self._http11 = _HTTP11Only(
            wrapper.app,
            wrapper.config,
            wrapper.context,
            wrapper.task_group,
            wrapper.state,
            wrapper.ssl,
            wrapper.client,
            wrapper.server,
            wrapper.send,
        )

    async def _read_data(self) -> None:
        # Hypercorn bounds each read with a deadline of its own: a cancel scope
        # and a context manager per read, every request. The connection's timer
        # watches the reads instead and cancels ``_reading`` when one overstays.
        timer = self._keep_alive
        with self._reading:
            while True:
                timer.read_started()
                try:
                    data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                finally:
                    timer.read_ended()
                await self.protocol.handle(RawData(bytes(data)))
                if not data:
                    break
        await self.protocol.handle(Closed())
        # The client has gone or the connection is closed: the timer guards
        # nothing any more, yet it would hold this task, and with it the
        # connection's slot under TOWER_HTTP_MAX_CONNECTIONS, until it fires.
        await self.idle_task.stop()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._write(event.data)
            return
        if isinstance(event, Updated):
            # Only moves the keep-alive deadline: no checkpoint, nothing to shield.
            if event.idle:
                self._keep_alive.arm()
            else:
                self._keep_alive.disarm()
            return
        # Quart-Trio cancels the task that sent the last byte of a response as
        # soon as the exchange is over, and Hypercorn closes the connection
        # from that same task; unshielded, the close was lost and the
        # connection stayed open until the read timeout.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _BOOKKEEPING_TIMEOUT
            await super().protocol_send(event)

    async def _write(self, data: bytes) -> None:
        # Hypercorn's write, less one scheduler round: an uncontended
        # ``Lock.acquire`` yields before returning, and the send yields anyway.
        lock = self.send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            # Shielded: the answering task may be cancelled as its last bytes go.
            with trio.CancelScope(shield=True):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            # Busy: Hypercorn half-closes a connection (after a client's
            # protocol error) without taking the send lock, so an answer still
            # being written finds the socket busy. It is closing anyway.
            await self.protocol.handle(Closed())
        finally:
            lock.release()

    async def _close_idle(self) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _BOOKKEEPING_TIMEOUT
            await self._initiate_server_close()


class _ConnectionTimer(TrioSingleTask):
    """Closes a connection idle for the keep-alive timeout, or silent mid-read for the read timeout.

    Hypercorn starts a timer task each time a connection falls idle and
    cancels it when the next request arrives (two task starts and two lock
    rounds per request, a tenth of the tower's CPU under load), and gives
    every read a deadline of its own. This is one task per connection,
    started with it; requests and reads only note the time, and the task
    checks when it wakes (at most once per timeout while the connection is
    busy). It also closes idle connections when the server stops. It keeps
    Hypercorn's ``restart``/``stop`` for the two calls Hypercorn makes itself
    (the connection's start, and ours at its end).
    """

    def __init__(
        self,
        *,
        keep_alive: float,
        read: float,
        context: WorkerContext,
        close_idle: Callable[[], Awaitable[None]],
        stop_reading: Callable[[], None],
    ) -> None:
        super().__init__()
        self._keep_alive = keep_alive
        self._read = read
        self._context = context
        self._close_idle = close_idle
        self._stop_reading = stop_reading
        self._stopping = trio.CancelScope()
        self._idle = False
        self._idle_since = 0.0
        self._reading_since = math.inf
        self._running = False
        self._stopped = False

    def arm(self) -> None:
        """The connection fell idle: it closes after the timeout, or when the server stops."""
        self._idle = True
        self._idle_since = trio.current_time()

    def disarm(self) -> None:
        """A request arrived: the connection is busy until its answer is sent."""
        self._idle = False

    def read_started(self) -> None:
        self._reading_since = trio.current_time()

    def read_ended(self) -> None:
        self._reading_since = math.inf

    async def restart(self, task_group: Any, action: Any) -> None:
        if not self._running:
            self._running = True
            task_group.spawn(self._watch)
        self.arm()

    async def stop(self) -> None:
        """The connection is over: the timer ends without closing anything."""
        self._stopped = True
        self._stopping.cancel()

    async def _watch(self) -> None:
        with self._stopping:
            while True:
                now = trio.current_time()
                if self._reading_since + self._read <= now:
                    # The read loop ends and closes the connection, then stops this task.
                    self._stop_reading()
                    await trio.sleep_forever()
                idle_until = (self._idle_since if self._idle else now) + self._keep_alive
                if self._idle and idle_until <= now:
                    break
                with trio.move_on_at(min(idle_until, self._reading_since + self._read)):
                    await self._context.terminated.wait()
                    if self._idle:
                        break
                    # The server stops while a request is served: Hypercorn
                    # closes the connection once the answer is out.
                    await trio.sleep_forever()
        if not self._stopped:
            await self._close_idle()


class _HTTP2Refused(Exception):
    """Unwinds Hypercorn's event loop once the refusal of HTTP/2 has been sent."""


class _HTTP11Only(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol without its switches to HTTP/2, writing answers whole.

    Hypercorn writes a response's head, its body and its (empty) end as
    three writes, each taking the connection's send lock and yielding to
    the scheduler twice. A response whose length is known has its body in
    hand, so its head waits for the body and both go out in one write, and
    an end with nothing to write is not written. A response of unknown
    length (the console's live feed) has its head written at once.
    """

    _held = b""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        try:
            data = self.connection.send(event) or b""
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if self._held:
            data, self._held = self._held + data, b""
        if isinstance(event, h11.Response) and _has_length(event):
            self._held = data
        elif data:
            await self.send(RawData(data=data))

    async def handle(self, event: Event) -> None:
        try:
            await super().handle(event)
        except _HTTP2Refused:
            await self.send(Closed())

    async def _check_protocol(self, event: h11.Request) -> None:
        # Hypercorn would switch to HTTP/2 here, on a prior-knowledge preface
        # or an h2c upgrade. An Upgrade header may be ignored (RFC 9110 7.8):
        # the request is then simply answered in HTTP/1.1.
        if event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            await self._send_h11_event(
                h11.Response(
                    status_code=400,
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_HTTP2_REFUSED)).encode()),
                        (b"connection", b"close"),
                        *self.config.response_headers("h11"),
                    ],
                )
            )
            await self._send_h11_event(h11.Data(data=_HTTP2_REFUSED))
            await self._send_h11_event(h11.EndOfMessage())
            raise _HTTP2Refused


def refuse_websockets(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app: WebSocket upgrade requests get 404 and never reach it.

    The API has no WebSocket route; Quart answered such requests with a 500
    and two tracebacks. The refusal uses ASGI's WebSocket denial response.
    """

    async def app_without_websockets(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        client = scope.get("client")
        _log.info(
            "http.websocket_refused",
            path=scope.get("path", ""),
            client=client[0] if client else None,
        )
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_WEBSOCKETS_REFUSED)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": _WEBSOCKETS_REFUSED})

    return app_without_websockets


def _has_length(response: h11.Response) -> bool:
    return any(name == b"content-length" for name, _ in response.headers)
