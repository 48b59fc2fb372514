"""The console: a web page over the API for the people at the bench.

The page (``console/templates``, ``console/static``: plain modules, no build
step, nothing fetched from elsewhere) reads the same API as any client,
plus what only a browser needs: a live feed of what happens to triggers
(Server-Sent Events from the publisher's ``Feed``), the tower's state for
the sources panel, and the AMQP properties of a trigger.

With API tokens configured, a browser signs in once with a token and gets
a session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over
TLS); its state-changing requests must carry the session's CSRF token.
The cookie is checked with the tokens, in ``_http``, before any route.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from json.encoder import encode_basestring as _string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import attrs
import trio
from quart import Response, render_template, request
from werkzeug.datastructures import Headers

from ._auth import SESSION_COOKIE, Guard, Session, Sessions
from ._feed import Feed
from ._logging import get_logger
from ._message import message_properties
from ._serialization import dumps, format_datetime, format_timestamp
from ._version import __version__
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from quart_trio import QuartTrio

    from ._feed import Change, Subscription
    from ._storage import JournalRecord

__all__ = ["Console", "ConsoleSources", "cross_site", "is_public"]

_log = get_logger(__name__)

FOLDER = Path(__file__).parent / "console"
MAX_STREAMS = 32
"""Live feeds open at once; one more is answered 503."""
STATUS_EVERY = 1.0
"""Seconds between two ``status`` events of a live feed (also its keep-alive)."""
GATHER = 0.2
"""Seconds a live feed gathers changes after sending some: under load, one
write carries hundreds of events instead of one each (at the cost of that
much delay, well within what a person watching notices)."""

_PUBLIC = frozenset({"/", "/console", "/console/session"})
_STATIC = "/console/static/"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, Chromium sends "Origin: null" on the sign-in
    # form's same-origin POST, which cross_site() must refuse.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def is_public(path: str) -> bool:
    """Whether ``path`` is served without a token: the page, its files and the sign-in."""
    return path in _PUBLIC or path.startswith(_STATIC)


class _Lookup(Protocol):
    async def get(self, uuid: str) -> JournalRecord | None: ...


@attrs.frozen
class ConsoleSources:
    """What the console reads of the running tower."""

    feed: Feed
    status: Callable[[], dict[str, Any]]
    """The sources panel: broker, journal and plugins (see docs/console.md)."""
    exchange: str


@attrs.frozen
class _File:
    body: bytes
    content_type: str
    etag: str


def _load_static(folder: Path) -> dict[str, _File]:
    # Read once at start-up: a few small files, served from memory, and no
    # request path ever reaches the file system.
    files = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.is_file() and not path.name.startswith("."):
            body = path.read_bytes()
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            files[path.name] = _File(body, kind, hashlib.sha256(body).hexdigest()[:32])
    return files


def _sse(event: str, data: bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), data)


_ROW = (
    '{"seq":%d,"uuid":%s,"apiVersion":%s,"protocol":%s,"source":%s,"status":"%s",'
    '"createdAt":"%s","attempts":%d,"lastError":%s,"publishedAt":%s%s}'
)


def _row(change: Change) -> bytes:
    """The change as a row of the listing (``GET /triggers``) spells it, in JSON.

    Spelled from a template rather than a dict through the encoder: the feed
    formats a row or two per trigger while ingest runs, and this is a third
    of the cost.
    """
    outgoing = change.outgoing
    published = change.status is DeliveryStatus.PUBLISHED
    return (
        _ROW
        % (
            outgoing.seq,
            _string(outgoing.uuid),
            _string(outgoing.routing_key),
            _string(outgoing.protocol),
            _string(outgoing.source),
            change.status.value,
            format_timestamp(outgoing.created_at),
            change.attempts,
            "null" if change.last_error is None else _string(change.last_error),
            f'"{format_timestamp(change.at)}"' if published else "null",
            "" if change.retries is None else f',"retries":{change.retries:d}',
        )
    ).encode()


@attrs.define
class Console:
    """The console's routes; ``install`` adds them to the API app."""

    sources: ConsoleSources
    lookup: _Lookup
    guard: Guard
    sessions: Sessions
    draining: Callable[[], bool]
    _files: dict[str, _File] = attrs.field(factory=lambda: _load_static(FOLDER / "static"))

    def install(self, app: QuartTrio) -> None:
        app.add_url_rule("/", view_func=self.home, methods=["GET"])
        app.add_url_rule("/console", view_func=self.page, methods=["GET"])
        app.add_url_rule("/console/session", view_func=self.sign_in, methods=["POST"])
        app.add_url_rule("/console/logout", view_func=self.sign_out, methods=["POST"])
        app.add_url_rule("/console/events", view_func=self.events, methods=["GET"])
        app.add_url_rule("/console/api/status", view_func=self.status, methods=["GET"])
        app.add_url_rule("/console/api/triggers/<uuid>/amqp", view_func=self.amqp, methods=["GET"])
        app.add_url_rule("/console/static/<name>", view_func=self.static, methods=["GET"])

    # -- the page and its files --------------------------------------------------

    async def home(self) -> Response:
        return _redirect("/console", 302)

    def _session(self) -> tuple[str, Session] | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        session = self.sessions.get(cookie)
        return None if session is None else (cookie, session)

    async def page(self, login_error: str | None = None, status: int = 200) -> Response:
        signed_in = self._session()
        login_required = self.guard.api is not None and signed_in is None
        html = await render_template(
            "console.html",
            login_required=login_required,
            login_error=login_error,
            csrf_token="" if signed_in is None else signed_in[1].csrf,
            version=__version__,
            static=_STATIC,
        )
        headers = Headers(_SECURITY_HEADERS)
        headers["Cache-Control"] = "no-store"
        return Response(html, status=status, headers=headers, content_type="text/html")

    async def static(self, name: str) -> Response:
        file = self._files.get(name)
        if file is None:
            return _json({"error": "not found", "details": [f"no console file {name}"]}, 404)
        if request.headers.get("If-None-Match") == file.etag:
            return Response(b"", status=304, headers={"ETag": file.etag})
        return Response(
            file.body,
            content_type=file.content_type,
            headers={
                "ETag": file.etag,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )

    # -- sessions ------------------------------------------------------------------

    async def sign_in(self) -> Response:
        if self.guard.api is None:
            return _redirect("/console", 303)
        if (reason := _cross_site_of_request()) is not None:
            return await self.page(login_error=f"Refused: {reason}.", status=403)
        form = await request.form
        client = request.remote_addr or ""
        token, denial = self.guard.sign_in(form.get("token", "").strip(), client)
        if denial is not None:
            _log.info("console.sign_in_refused", status=denial.status, client=client)
            reason = {
                401: "Enter one of the tower's API tokens (TOWER_API_TOKENS).",
                403: "That token is not one of the tower's API tokens.",
            }.get(denial.status, denial.detail)
            refusal = await self.page(login_error=reason, status=denial.status)
            if "Retry-After" in denial.headers:
                refusal.headers["Retry-After"] = denial.headers["Retry-After"]
            return refusal
        cookie, _ = self.sessions.open(token)
        _log.info("console.signed_in", client=client, sessions=len(self.sessions))
        response = _redirect("/console", 303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(self.sessions.lifetime),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=_over_tls(),
        )
        return response

    async def sign_out(self) -> Response:
        if (reason := _cross_site_of_request()) is not None:
            return _json({"error": "cross-site request refused", "details": [reason]}, 403)
        if (signed_in := self._session()) is not None:
            self.sessions.close(signed_in[0])
            _log.info("console.signed_out", client=request.remote_addr)
        response = Response(b"", status=204)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=_over_tls()
        )
        return response

    # -- what the page reads ------------------------------------------------------------

    async def status(self) -> Response:
        return _json(self.sources.status())

    async def amqp(self, uuid: str) -> Response:
        record = await self.lookup.get(uuid) if len(uuid) == 32 else None
        if record is None:
            return _json({"error": "no such trigger", "details": [f"no trigger {uuid}"]}, 404)
        properties = attrs.asdict(message_properties(record.outgoing()))
        properties["timestamp"] = format_datetime(properties["timestamp"])
        return _json(
            {
                "exchange": self.sources.exchange,
                "routingKey": record.api_version,
                "properties": {k: v for k, v in properties.items() if v is not None},
            }
        )

    async def events(self) -> Response:
        feed = self.sources.feed
        if len(feed) >= MAX_STREAMS:
            return _json(
                {
                    "error": "too many live feeds",
                    "details": [f"at most {MAX_STREAMS} consoles may stream at once; retry later"],
                },
                503,
                {"Retry-After": "5"},
            )
        response = Response(
            self._stream(feed),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        # A feed lasts as long as the page is open (Quart's default is 60 s).
        response.timeout = None
        return response

    async def _stream(self, feed: Feed) -> AsyncIterator[bytes]:
        with feed.subscribe() as subscription:
            # Every event is written before the next is read (the server waits
            # for the socket): a slow reader falls behind in its own bounded
            # buffer and is told to reload (resync), never buffered here.
            yield _sse("status", dumps(self.sources.status()))
            next_status = trio.current_time() + STATUS_EVERY
            while not self.draining():
                changes, lost = await _take_until(subscription, next_status)
                if lost:
                    yield _sse("resync", b"{}")
                if changes:
                    yield b"".join(_sse("trigger", _row(c)) for c in changes)
                    await trio.sleep(GATHER)
                if trio.current_time() >= next_status:
                    yield _sse("status", dumps(self.sources.status()))
                    next_status = trio.current_time() + STATUS_EVERY


async def _take_until(subscription: Subscription, deadline: float) -> tuple[list[Change], bool]:
    # Apart from the generator: an async generator must not yield inside a cancel scope.
    with trio.move_on_at(deadline):
        return await subscription.take()
    return [], False


def cross_site(site: str | None, origin: str | None, host: str | None) -> str | None:
    """Why a request with these headers looks sent by another site's page, or None.

    Browsers say where a request comes from (``Sec-Fetch-Site``, ``Origin``);
    other clients send neither and are not affected. Without it, a page on
    any site could make a browser on the lab's network POST here.
    """
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request from a browser"
    if origin is not None and urlsplit(origin).netloc != host:
        return f"a request from the page of another origin ({origin[:100]})"
    return None


def _cross_site_of_request() -> str | None:
    headers = request.headers
    return cross_site(headers.get("Sec-Fetch-Site"), headers.get("Origin"), request.host)


def _over_tls() -> bool:
    # Behind a TLS-terminating proxy the tower sees plain HTTP; the proxy's
    # header can only make the cookie stricter, never looser.
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"


def _redirect(location: str, status: int) -> Response:
    return Response(b"", status=status, headers={"Location": location})


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(value), status=status, content_type="application/json", headers=headers)
