"""One HTTP exchange, framework-free: the request as handlers read it, the answer they give.

``POST /triggers`` is the route that must be fast, so it is served straight
from ASGI (``AsgiIncoming``), without Quart's per-request machinery (a
nursery, contexts, a request and a response object); every other route is
a Quart route (``QuartIncoming``). The handlers are written once, against
``Incoming`` and ``Answer``, so both ways in give the same answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import attrs
import trio
from quart import Response, request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "Answer",
    "AsgiIncoming",
    "BodyRefused",
    "ClientGone",
    "Incoming",
    "QuartIncoming",
    "send_answer",
]

_JSON = b"application/json"


@attrs.frozen
class Answer:
    """An HTTP answer with a JSON body."""

    status: int
    body: bytes
    headers: dict[str, str] = attrs.field(factory=dict)

    def to_response(self) -> Response:
        return Response(
            self.body, status=self.status, content_type="application/json", headers=self.headers
        )


class BodyRefused(Exception):
    """The body was too large or too slow; ``answer`` says so."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


class ClientGone(Exception):
    """The client went away before its body arrived: nobody is left to answer."""


class Incoming(Protocol):
    """What a handler reads of a request."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def args(self) -> Mapping[str, str]: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def mimetype(self) -> str:
        """The content type without parameters, in lower case ("" if none)."""
        ...

    @property
    def remote_addr(self) -> str: ...
    def header(self, name: str) -> str | None:
        """A header's value; ``name`` in lower case."""
        ...

    def cookie(self, name: str) -> str | None: ...
    async def body(self) -> bytes:
        """The whole body; raises ``BodyRefused`` (413, 408) or ``ClientGone``."""
        ...


class QuartIncoming:
    """``Incoming`` over Quart's request of the running route."""

    @property
    def method(self) -> str:
        return request.method

    @property
    def path(self) -> str:
        return request.path

    @property
    def args(self) -> Mapping[str, str]:
        return request.args

    @property
    def content_length(self) -> int | None:
        return request.content_length

    @property
    def mimetype(self) -> str:
        return request.mimetype

    @property
    def remote_addr(self) -> str:
        return request.remote_addr or ""

    def header(self, name: str) -> str | None:
        return request.headers.get(name)

    def cookie(self, name: str) -> str | None:
        return request.cookies.get(name)

    async def body(self) -> bytes:
        # Quart answers a body too large or too slow itself (413, 408).
        data = await request.get_data(cache=False, as_text=False)
        assert isinstance(data, bytes)  # as_text=False
        return data


class AsgiIncoming:
    """``Incoming`` over an ASGI scope and its ``receive``.

    ``max_bytes`` and ``timeout`` bound the body as Quart's
    ``MAX_CONTENT_LENGTH`` and ``BODY_TIMEOUT`` do for the other routes;
    ``refused(status)`` makes the answer to a body that breaks them.
    """

    def __init__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        *,
        max_bytes: int,
        timeout: float,
        refused: Callable[[int], Answer],
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._refused = refused
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            # The first of a repeated header, as Quart's headers.get gives it.
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self._headers = headers
        self._args: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return str(self._scope["method"])

    @property
    def path(self) -> str:
        return str(self._scope["path"])

    @property
    def args(self) -> Mapping[str, str]:
        if self._args is None:
            self._args = {}
            query = self._scope["query_string"].decode("latin-1")
            for name, value in parse_qsl(query, keep_blank_values=True, encoding="utf-8"):
                self._args.setdefault(name, value)
        return self._args

    @property
    def content_length(self) -> int | None:
        value = self._headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def mimetype(self) -> str:
        return self._headers.get("content-type", "").partition(";")[0].strip().lower()

    @property
    def remote_addr(self) -> str:
        client = self._scope.get("client")
        return str(client[0]) if client else ""

    def header(self, name: str) -> str | None:
        return self._headers.get(name)

    def cookie(self, name: str) -> str | None:
        for pair in self._headers.get("cookie", "").split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name:
                return value.strip('"')
        return None

    async def body(self) -> bytes:
        length = self.content_length
        if length is not None and length > self._max_bytes:
            raise BodyRefused(self._refused(413))
        chunks = []
        size = 0
        with trio.move_on_after(self._timeout):
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self._max_bytes:
                    raise BodyRefused(self._refused(413))
                chunks.append(chunk)
                if not message.get("more_body"):
                    return b"".join(chunks)
        raise BodyRefused(self._refused(408))


async def send_answer(send: Callable[[dict[str, Any]], Awaitable[None]], answer: Answer) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", b"%d" % len(answer.body))]
    headers.extend(
        (name.lower().encode(), value.encode()) for name, value in answer.headers.items()
    )
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
