"""``POST /triggers`` answers the same whichever way it comes in.

The tower serves it straight from ASGI (``_TowerApp.__call__``); Quart's
own route (``asgi_app``, what Quart's test client and any middleware
calling Quart see) runs the same handler through ``QuartIncoming``. Each
request below goes both ways, and the answers must be equal but for what
is new each time (uuid, creation time). Every other HTTP test in the suite
goes through the real server, so through the ASGI way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from tests._helpers import VALID, accept_all
from tower_trio._auth import parse_tokens
from tower_trio._channel import Submission
from tower_trio._config import Settings
from tower_trio._http import create_app
from tower_trio._journal import SQLiteStorage, open_journal
from tower_trio._settlements import Settlements

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from quart_trio import QuartTrio

TOKEN = "paths-token-0123456789"
BODY = json.dumps(VALID).encode()
JSON = [(b"content-type", b"application/json")]


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


async def exchange(
    way: Callable[..., Any], target: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> Reply:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"tower.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []
    done = trio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    with trio.fail_after(10):
        await way(scope, receive, send)
    start = sent[0]
    names = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return Reply(start["status"], names, json.loads(payload))


def comparable(reply: Reply) -> tuple[Any, ...]:
    body = dict(reply.body)
    for new_each_time in ("uuid", "createdAt"):
        body.pop(new_each_time, None)
    kept = {"location": "location" in reply.headers, "connection": reply.headers.get("connection")}
    for name in ("www-authenticate", "retry-after", "allow"):
        kept[name] = reply.headers.get(name)
    return reply.status, body, kept


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[Callable[..., QuartTrio]]:
    journal = open_journal(tmp_path)
    send_channel, receive_channel = trio.open_memory_channel[Submission](100)
    received: list[Submission] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_all, receive_channel, received)

        def make(**settings: Any) -> QuartTrio:
            return create_app(
                attrs.evolve(Settings(), max_body_bytes=4096, **settings),
                send_channel,
                Settlements(SQLiteStorage(journal)),
                list,
            )

        try:
            yield make
        finally:
            nursery.cancel_scope.cancel()
            journal.close()


REQUESTS = {
    "valid": ("/triggers", JSON, BODY),
    "valid, +json": ("/triggers", [(b"content-type", b"application/x+json; charset=utf-8")], BODY),
    "malformed JSON": ("/triggers", JSON, b"{"),
    "invalid trigger": ("/triggers", JSON, b'{"apiVersion": "x", "protocol": 1}'),
    "not JSON": ("/triggers", [(b"content-type", b"text/plain")], BODY),
    "no content type": ("/triggers", [], BODY),
    "bad key": ("/triggers", [*JSON, (b"idempotency-key", b"\x01")], BODY),
    "unknown parameter": ("/triggers?nope=1", JSON, BODY),
    "bad wait": ("/triggers?wait=later", JSON, BODY),
    "too large": ("/triggers", [*JSON, (b"transfer-encoding", b"chunked")], b" " * 5000),
    "too large, announced": ("/triggers", [*JSON, (b"content-length", b"5000")], b""),
    "from another site": ("/triggers", [*JSON, (b"origin", b"http://evil.example")], BODY),
    "cross-site fetch": ("/triggers", [*JSON, (b"sec-fetch-site", b"cross-site")], BODY),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
async def test_both_ways_answer_alike(name: str, apps: Callable[..., QuartTrio]) -> None:
    app = apps()
    target, headers, body = REQUESTS[name]
    lean = await exchange(app, target, headers, body)
    quart = await exchange(app.asgi_app, target, headers, body)
    assert comparable(lean) == comparable(quart)
    assert lean.status < 500


ATTEMPTS = {
    "none": (None, 401),
    "wrong": (b"Bearer wrong-token-0123456789", 403),
    "not bearer": (b"Basic x", 401),
    "right": (f"Bearer {TOKEN}".encode(), 202),
}


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
async def test_both_ways_check_tokens_alike(attempt: str, apps: Callable[..., QuartTrio]) -> None:
    app = apps(api_tokens=parse_tokens(TOKEN))
    authorization, status = ATTEMPTS[attempt]
    headers = JSON if authorization is None else [*JSON, (b"authorization", authorization)]
    lean = await exchange(app, "/triggers", headers, BODY)
    quart = await exchange(app.asgi_app, "/triggers", headers, BODY)
    assert comparable(lean) == comparable(quart)
    assert lean.status == status
