"""The HTTP API: a Quart-Trio app that turns requests into submissions.

Handlers stay lean on purpose (Hypercorn's pure-Python HTTP stack is the
ceiling here): the body is read once as bytes, decoded once, and the
response is built from the bytes that are also the published message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ._channel import DeliveryStatus, Submission
from ._logging import get_logger
from ._models import FieldError, InvalidTriggerError
from ._serialization import dumps, trigger_from_wire

if TYPE_CHECKING:
    from ._config import Settings

__all__ = ["Readiness", "create_app"]

_log = get_logger(__name__)

Readiness = Callable[[], Sequence[str]]
"""Returns why the tower is not ready; empty when it is."""

_JSON_TYPES = frozenset({"application/json"})


def _error(status: int, error: str, details: Sequence[Any] = (), **headers: str) -> Response:
    body = dumps({"error": error, "details": list(details)})
    return Response(body, status=status, content_type="application/json", headers=headers)


def _field_details(errors: Sequence[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in errors]


def create_app(
    settings: Settings,
    send_channel: trio.MemorySendChannel[Submission],
    readiness: Readiness,
) -> QuartTrio:
    """The API app; it sends every accepted trigger on ``send_channel``."""
    app = QuartTrio("tower_trio")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    publish_timeout = settings.publish_timeout
    retry_after = str(max(1, round(publish_timeout)))

    @app.post("/triggers")
    async def post_trigger() -> Response:
        content_type = request.mimetype
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            return _error(
                415,
                "unsupported media type",
                [f"send the trigger as application/json, not {content_type or 'no content type'}"],
            )
        body = await request.get_data(cache=False)
        try:
            wire = json.loads(body)
        except (ValueError, RecursionError) as err:
            return _error(
                400,
                "malformed JSON",
                [str(err) if isinstance(err, ValueError) else "too deeply nested"],
            )
        try:
            trigger = trigger_from_wire(wire, source="http")
        except InvalidTriggerError as err:
            return _error(422, "invalid trigger", _field_details(err.errors))
        submission = Submission.of(trigger, awaited=True)
        with trio.move_on_after(publish_timeout):
            await send_channel.send(submission)
            await submission.wait_settled()
        if not submission.settled:
            submission.withdrawn = True
            _log.warning("trigger.publish_timeout", uuid=trigger.uuid, timeout=publish_timeout)
            return _error(
                503,
                "broker did not confirm in time",
                [f"the broker did not confirm within {publish_timeout:g} s; retry later"],
                **{"Retry-After": retry_after},
            )
        if submission.status is DeliveryStatus.FAILED:
            return _error(
                503,
                "broker refused the trigger",
                [submission.last_error or "refused"],
                **{"Retry-After": retry_after},
            )
        # The published body is reused: the status goes in front of its fields.
        response_body = b'{"status":"%s",%s' % (
            submission.status.value.encode(),
            submission.body[1:],
        )
        return Response(
            response_body,
            status=202,
            content_type="application/json",
            headers={"Location": f"/triggers/{trigger.uuid}"},
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', content_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        reasons = list(readiness())
        if reasons:
            return _error(503, "not ready", reasons)
        return Response(b'{"status":"ready"}', content_type="application/json")

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            return _error(
                413,
                "request body too large",
                [f"the body may be {settings.max_body_bytes} bytes at most (TOWER_MAX_BODY_BYTES)"],
            )
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return _error(status, (error.name or "error").lower(), [error.description or ""], **headers)

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        # A bug of ours: the operator gets the traceback, the client never does.
        _log.exception("http.unexpected_error", path=request.path)
        return _error(500, "internal error", ["the tower hit an unexpected error; see its log"])

    return app
