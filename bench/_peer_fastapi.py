"""The HTTP peer: FastAPI + uvicorn + aio-pika doing the tower's job.

It accepts ``POST /triggers`` with the tower's validation rules, assigns
the uuid and createdAt, publishes the trigger persistent to a durable topic
exchange (routing key: the apiVersion) on a publisher-confirms channel,
waits for the broker's confirm and answers 202 with the trigger JSON.

It is written the way such a service usually is (a pydantic model as the
handler's parameter, the connection opened in the lifespan, one uvicorn
worker, uvloop and httptools when installed), and kept as lean as the
tower's handler where that costs nothing: the JSON is encoded once and
serves as both the message body and the response body.

Run on its own: ``python -m bench._peer_fastapi --port 8001 --amqp-url ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import aio_pika
import aio_pika.exceptions
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from aio_pika.abc import AbstractExchange

__all__ = ["create_app", "main", "uvicorn_stack"]

API_VERSION_PATTERN = r"^[A-Za-z0-9-]+/v[1-9][0-9]*[a-z0-9]*(/[A-Za-z0-9_-]+)?$"
PROTOCOL_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
PUBLISH_TIMEOUT = 10.0
APP_ID = "tower-trio-bench-peer"

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class MetadataIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = ""
    """Accepted, as the tower accepts it, and replaced by ``http``."""
    spec: dict[str, Any] = Field(default_factory=dict)


class TriggerIn(BaseModel):
    """A submitted trigger; the same rules as the tower's, for plain (non-plate) triggers."""

    model_config = ConfigDict(extra="forbid")

    api_version: Annotated[
        str, Field(alias="apiVersion", max_length=255, pattern=API_VERSION_PATTERN)
    ]
    protocol: Annotated[str, Field(max_length=128, pattern=PROTOCOL_PATTERN)]
    spec: Annotated[dict[str, Any], Field(min_length=1)]
    metadata: MetadataIn = Field(default_factory=MetadataIn)


class _Broker:
    """The exchange the lifespan opened; None until connected."""

    exchange: AbstractExchange | None = None


def _error(status: int, error: str, detail: str) -> Response:
    body = _encoder.encode({"error": error, "details": [detail]}).encode()
    return Response(body, status_code=status, media_type="application/json")


def create_app(amqp_url: str, exchange_name: str) -> FastAPI:
    broker = _Broker()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            broker.exchange = await channel.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            try:
                yield
            finally:
                broker.exchange = None

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/triggers", status_code=202)
    async def post_trigger(trigger: TriggerIn) -> Response:
        exchange = broker.exchange
        if exchange is None:
            return _error(503, "broker not connected", "retry later")
        trigger_id = uuid.uuid4().hex
        created_at = datetime.now(UTC)
        body = _encoder.encode(
            {
                "apiVersion": trigger.api_version,
                "protocol": trigger.protocol,
                "spec": trigger.spec,
                "metadata": {"source": "http", "spec": trigger.metadata.spec},
                "uuid": trigger_id,
                "createdAt": created_at.isoformat().replace("+00:00", "Z"),
            }
        ).encode()
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=trigger_id,
            type=trigger.protocol,
            app_id=APP_ID,
            timestamp=created_at,
            headers={"protocol": trigger.protocol, "source": "http"},
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await exchange.publish(message, routing_key=trigger.api_version)
        except TimeoutError:
            return _error(503, "broker did not confirm in time", "retry later")
        except aio_pika.exceptions.DeliveryError as err:
            return _error(503, "broker refused the trigger", str(err))
        return Response(
            b'{"status":"published",' + body[1:],
            status_code=202,
            media_type="application/json",
            headers={"Location": f"/triggers/{trigger_id}"},
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        if broker.exchange is None:
            return _error(503, "not ready", "broker not connected")
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def uvicorn_stack(*, plain: bool = False) -> str:
    """The event loop and HTTP parser uvicorn will use (``auto`` unless ``plain``)."""
    if plain:
        return "asyncio + h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._peer_fastapi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument(
        "--plain", action="store_true", help="asyncio + h11 even if uvloop and httptools are there"
    )
    args = parser.parse_args(argv)
    # The tower runs without an access log, so the peer does too.
    uvicorn.run(
        create_app(args.amqp_url, args.exchange),
        host=args.host,
        port=args.port,
        loop="asyncio" if args.plain else "auto",
        http="h11" if args.plain else "auto",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
