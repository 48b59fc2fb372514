"""The ceiling: a bare ASGI app on Hypercorn's trio worker, nothing else.

It reads the body, decodes the JSON once and answers 202 with a small JSON
body: no validation, no journal, no broker. Whatever tower-trio does on top
of Hypercorn can only be slower than this, so it shows how much of the gap
to a uvicorn-based peer is the HTTP server's own.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, cast

import hypercorn.config
import hypercorn.trio
import trio

if TYPE_CHECKING:
    from hypercorn.typing import Framework

_ACCEPTED = b'{"status":"accepted"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, answer = 200, b'{"status":"ok"}'
    if scope["path"] == "/triggers":
        json.loads(body)
        status, answer = 202, _ACCEPTED
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = hypercorn.config.Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    trio.run(hypercorn.trio.serve, cast("Framework", app), config)


if __name__ == "__main__":
    main()
