"""The plumbing of the fake HTTP APIs that tests in ``tests/`` and ``plugins/*/`` serve.

A fake API is an ASGI app served on a local port with
``tower_trio.testing.serve_fake_api``. What every such fake repeats lives
here: completing the server's lifespan messages, and sending an answer
whole. A fake subclasses ``AsgiFake`` and says only what its API answers.

This module imports nothing from pytest, so that a plugin's tests run the
same when its folder is tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "JSON_CONTENT",
    "AsgiFake",
    "Receive",
    "Scope",
    "Send",
    "complete_lifespan",
    "send_json",
    "send_response",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_CONTENT = (b"content-type", b"application/json")


async def complete_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge the server's start-up and shut-down, so that it serves, then stops cleanly."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


async def send_response(
    send: Send, status: int, body: bytes = b"", headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """One whole answer: the status line and headers, then the body in one piece."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, value: object) -> None:
    """``value`` as a JSON answer."""
    await send_response(send, status, json.dumps(value).encode(), [JSON_CONTENT])


class AsgiFake:
    """An ASGI app that answers each request with ``respond``; the lifespan is handled here."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        await self.respond(scope, receive, send)

    async def respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
