"""The HTTP API: a Quart-Trio app that turns requests into submissions.

Handlers stay lean on purpose (Hypercorn's pure-Python HTTP stack is the
ceiling here): the body is read once as bytes, decoded once, and responses
are built from the bytes that are also the published message.

One concept, kept whole although past 400 lines: the API's routes, each
handler short.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ._auth import SESSION_COOKIE, Guard, Sessions, same_secret
from ._channel import Intake, Submission
from ._config import Settings
from ._console import Console, ConsoleSources, cross_site, is_public
from ._errors import JournalError
from ._exchange import (
    Answer,
    AsgiIncoming,
    BodyRefused,
    ClientGone,
    Incoming,
    QuartIncoming,
    send_answer,
)
from ._logging import get_logger
from ._models import FieldError, InvalidTriggerError
from ._openapi import openapi_document
from ._schemas import ProtocolSchemas
from ._serialization import (
    dumps,
    format_datetime,
    format_optional_timestamp,
    format_timestamp,
    trigger_from_wire,
)
from ._storage import JournalRecord, PageQuery, request_fingerprint
from ._vocabulary import DEFAULT_LIST_LIMIT, MAX_KEY_LENGTH, MAX_LIST_LIMIT, DeliveryStatus

__all__ = ["Readiness", "create_app"]

_log = get_logger(__name__)

Readiness = Callable[[], Sequence[str]]
"""Why the tower is not ready; empty when it is."""
Retry = Callable[[str], Awaitable[tuple[JournalRecord, bool] | None]]
"""Sends a failed or unroutable trigger again (``Publisher.retry``)."""


class TriggerLookup(Protocol):
    """What ``GET /triggers`` reads: the publisher's settlements over storage."""

    def current(self, record: JournalRecord) -> JournalRecord:
        """``record`` with the broker's answer that storage has not recorded yet."""
        ...

    async def get(self, uuid: str) -> JournalRecord | None: ...

    async def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]: ...


_JSON_TYPES = frozenset({"application/json"})
_STATUSES = frozenset(status.value for status in DeliveryStatus)
_LIST_FILTERS = {
    "status": "status",
    "apiVersion": "api_version",
    "protocol": "protocol",
    "source": "source",
}
_LIST_PARAMETERS = frozenset({*_LIST_FILTERS, "key", "limit", "before"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_POST_PARAMETERS = frozenset({"wait"})


def _json(body: bytes, status: int = 200, **headers: str) -> Answer:
    return Answer(status, body, headers)


def _error(status: int, error: str, details: Sequence[Any] = (), **headers: str) -> Answer:
    return Answer(status, dumps({"error": error, "details": list(details)}), headers)


def _closing(answer: Answer, incoming: Incoming) -> Answer:
    """``answer``, closing the connection if the request's body was not read.

    Hypercorn's HTTP/1.1 keep-alive can stall the next request on a
    connection whose request body the app never read; an early answer (auth,
    bad parameters, 405) closes the connection instead of keeping it.
    """
    if incoming.content_length or incoming.header("transfer-encoding") is not None:
        answer.headers["Connection"] = "close"
    return answer


def _field_details(errors: Sequence[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in errors]


def _bad_parameter(name: str, message: str) -> Answer:
    return _error(400, "invalid query parameter", [{"field": name, "message": message}])


def _record_json(record: JournalRecord) -> bytes:
    """The trigger as published, its delivery record in front and ``createdAt`` last."""
    delivery = {
        "status": record.status,
        "publishedAt": format_optional_timestamp(record.published_at),
        "attempts": record.attempts,
        "lastError": record.last_error,
        "retries": record.retries,
        "retriedAt": format_optional_timestamp(record.retried_at),
    }
    created_at = format_timestamp(record.created_at)
    return dumps(delivery)[:-1] + b"," + _with_created_at(record.body, created_at)[1:]


def _with_created_at(body: bytes, created_at: str) -> bytes:
    # The published body has no creation time (ULAS's format has none); the
    # HTTP answers carry it after the published fields.
    return body[:-1] + b',"createdAt":"%s"}' % created_at.encode()


def _unknown_parameters(args: Mapping[str, str], allowed: frozenset[str]) -> Answer | None:
    for name in args:
        if name not in allowed:
            return _bad_parameter(
                name, f"is not a parameter here; known: {', '.join(sorted(allowed))}"
            )
    return None


@attrs.define
class _Api:
    settings: Settings
    send_channel: trio.MemorySendChannel[Submission]
    lookup: TriggerLookup
    readiness: Readiness
    draining: Callable[[], bool]
    plugins_view: Callable[[], list[dict[str, Any]]]
    schemas: ProtocolSchemas
    guard: Guard
    retry: Retry | None = None
    sessions: Sessions = attrs.field(factory=Sessions)
    openapi: bytes = attrs.field(factory=lambda: dumps(openapi_document()))
    _waiting_bytes: int = 0
    """Bytes of bodies held by requests waiting for the broker (``?wait=published``)."""

    @property
    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.settings.publish_timeout)))}

    def _shutting_down(self, incoming: Incoming) -> Answer:
        return _closing(
            _error(
                503,
                "shutting down",
                ["the tower is draining; retry later or on another instance"],
                **self._retry_after,
            ),
            incoming,
        )

    async def serve_post_trigger(
        self, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:  # pragma: no mutate block
        """``POST /triggers`` straight from ASGI: the same answers as a route, for less."""
        incoming = AsgiIncoming(
            scope,
            receive,
            max_bytes=self.settings.max_body_bytes,
            timeout=self.settings.http_read_timeout,
            refused=self._body_refused,
        )
        try:
            answer = await self.admit(incoming) if self.guard.active else None
            if answer is None:
                answer = await self.post_trigger(incoming)
        except BodyRefused as refused:
            answer = refused.answer
        except ClientGone:
            return
        except Exception:
            answer = self._unexpected(incoming)
        await send_answer(send, answer)

    def _body_refused(self, status: int) -> Answer:
        # As Quart answers the other routes (see http_error), the connection closed.
        if status == 413:
            answer = self._too_large()
        else:
            answer = _error(
                408,
                "request timeout",
                [
                    f"the body did not arrive within {self.settings.http_read_timeout:g} s "
                    "(TOWER_HTTP_READ_TIMEOUT)"
                ],
            )
        answer.headers["Connection"] = "close"
        return answer

    def _too_large(self) -> Answer:
        limit = self.settings.max_body_bytes
        return _error(
            413,
            "request body too large",
            [f"the body may be {limit} bytes at most (TOWER_MAX_BODY_BYTES)"],
        )

    async def post_trigger(self, incoming: Incoming) -> Answer:
        if (refusal := _cross_site_refusal(incoming)) is not None:
            return refusal
        if self.draining():
            return self._shutting_down(incoming)
        if problem := _unknown_parameters(incoming.args, _POST_PARAMETERS):
            return _closing(problem, incoming)
        wait = incoming.args.get("wait")
        if wait not in (None, DeliveryStatus.PUBLISHED):
            return _closing(_bad_parameter("wait", "must be 'published' (or left out)"), incoming)
        key = incoming.header("idempotency-key")
        if key is not None and not (
            0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()
        ):
            return _closing(
                _error(
                    400,
                    "invalid Idempotency-Key",
                    [f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"],
                ),
                incoming,
            )
        content_type = incoming.mimetype
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            sent = content_type or "no content type"
            return _closing(
                _error(
                    415,
                    "unsupported media type",
                    [f"send the trigger as application/json, not {sent}"],
                ),
                incoming,
            )
        if not wait:
            return await self._accept(incoming, key, wait_published=False)
        # Reserved before the body is read, so a refused request costs nothing.
        held = incoming.content_length or self.settings.max_body_bytes
        if self._waiting_bytes + held > self.settings.wait_max_bytes:
            return _closing(
                _error(
                    503,
                    "too many requests are waiting for the broker",
                    [
                        "the trigger was not stored: requests with ?wait=published may hold "
                        f"{self.settings.wait_max_bytes} bytes together "
                        "(TOWER_WAIT_MAX_BYTES); retry later, or send without ?wait=published"
                    ],
                    **self._retry_after,
                ),
                incoming,
            )
        self._waiting_bytes += held
        try:
            return await self._accept(incoming, key, wait_published=True)
        finally:
            self._waiting_bytes -= held

    async def _accept(self, incoming: Incoming, key: str | None, *, wait_published: bool) -> Answer:
        submission = await self._submission(incoming, key, wait_published=wait_published)
        if isinstance(submission, Answer):
            return submission
        return await self._submit(submission, key)

    async def _submission(
        self, incoming: Incoming, key: str | None, *, wait_published: bool
    ) -> Submission | Answer:
        """The request's trigger, or the answer that refuses it.

        The request's bytes and decoded JSON go out of scope when this
        returns: a request that waits holds only its published body.
        """
        body = await incoming.body()
        try:
            wire = json.loads(body)
        except ValueError as err:
            return _error(400, "malformed JSON", [str(err)])
        except RecursionError:
            return _error(400, "malformed JSON", ["nested too deeply"])
        try:
            trigger = trigger_from_wire(wire, source="http")
        except InvalidTriggerError as err:
            return _error(422, "invalid trigger", _field_details(err.errors))
        if errors := self.schemas.check(trigger):
            return _error(422, "invalid trigger", _field_details(errors))
        return Submission.of(
            trigger,
            key=None if key is None else f"http:{key}",
            fingerprint=None if key is None else request_fingerprint(trigger),
            wait_published=wait_published,
        )

    async def _submit(self, submission: Submission, key: str | None) -> Answer:
        timeout = self.settings.publish_timeout
        with trio.move_on_after(timeout):
            try:
                # The request waits for the commit anyway: no need to yield
                # here as well while the journal's queue has room.
                self.send_channel.send_nowait(submission)
            except trio.WouldBlock:
                await self.send_channel.send(submission)
            await submission.wait_committed()
            if submission.intake is Intake.ACCEPTED and submission.wants_settlement:
                await submission.wait_settled()
        if submission.intake is Intake.WAITING and not submission.withdraw():
            # The journal is writing it now: only the commit's outcome can tell
            # the client the truth, so wait for it (a second, equal bound).
            with trio.move_on_after(timeout):
                await submission.wait_committed()
        return self._answer(submission, key)

    def _answer(self, submission: Submission, key: str | None) -> Answer:
        timeout = self.settings.publish_timeout
        location = f"/triggers/{submission.trigger.uuid}"
        if submission.withdrawn:
            _log.warning("trigger.journal_timeout", uuid=submission.trigger.uuid, timeout=timeout)
            return _error(
                503,
                "journal did not answer in time",
                [
                    f"the trigger was not stored within {timeout:g} s (TOWER_PUBLISH_TIMEOUT) "
                    "and will not be published; retry"
                ],
                **self._retry_after,
            )
        if submission.intake is Intake.WAITING:
            # Taken by the journal, whose commit has not ended: neither "stored"
            # nor "not stored" would be sure.
            _log.warning(
                "trigger.journal_outcome_unknown", uuid=submission.trigger.uuid, timeout=timeout
            )
            return _error(
                504,
                "journal outcome unknown",
                [
                    f"the journal was still writing the trigger after {2 * timeout:g} s "
                    f"(TOWER_PUBLISH_TIMEOUT); look it up at {location}, or retry with the "
                    "same Idempotency-Key: a stored trigger is not stored twice"
                ],
                Location=location,
                **self._retry_after,
            )
        if submission.intake is Intake.REJECTED:
            return _error(
                503,
                "journal unavailable",
                ["the trigger could not be stored, so nothing was published; retry later"],
                **self._retry_after,
            )
        if submission.intake is Intake.DUPLICATE:
            record = submission.duplicate
            assert record is not None  # set with every DUPLICATE
            if not submission.same_request:
                return _error(
                    409,
                    "idempotency key reused",
                    [
                        f"Idempotency-Key {key!r} was used for trigger {record.uuid} "
                        "with a different body; use a new key"
                    ],
                )
            return _json(
                _record_json(self.lookup.current(record)),
                200,
                Location=f"/triggers/{record.uuid}",
            )
        if submission.wants_settlement and not submission.settled:
            # On disk and on its way; the client can follow it at Location.
            return _json(_status_json(DeliveryStatus.PENDING, submission), 504, Location=location)
        if submission.status is DeliveryStatus.FAILED:
            return _error(
                503,
                "broker refused the trigger",
                [
                    f"stored as failed after {self.settings.max_attempts} refusals "
                    f"(TOWER_MAX_ATTEMPTS) and not published: {submission.error or 'refused'}"
                ],
                Location=location,
                **self._retry_after,
            )
        return _json(_status_json(submission.status.value, submission), 202, Location=location)

    async def get_trigger(self, uuid: str) -> Answer:
        record = await self.lookup.get(uuid) if len(uuid) == 32 else None
        if record is None:
            return _error(
                404,
                "no such trigger",
                [f"no trigger {uuid} in the journal; settled ones go after TOWER_RETENTION"],
            )
        return _json(_record_json(record))

    async def list_triggers(self) -> Answer:
        args = request.args
        if problem := _unknown_parameters(args, _LIST_PARAMETERS):
            return problem
        filters: dict[str, Any] = {
            column: args[name] for name, column in _LIST_FILTERS.items() if name in args
        }
        if "status" in filters:
            if filters["status"] not in _STATUSES:
                return _bad_parameter("status", f"must be one of {', '.join(sorted(_STATUSES))}")
            filters["status"] = DeliveryStatus(filters["status"])
        raw_limit = args.get("limit", str(DEFAULT_LIST_LIMIT))
        # Digits only: int() would also take " 5", "+5" and "1_0".
        digits = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3
        limit = int(raw_limit) if digits else 0
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return _bad_parameter("limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}")
        before = args.get("before")
        if before is not None and not (before.isascii() and before.isdigit() and len(before) < 19):
            return _bad_parameter("before", "must be a cursor returned as 'next' by this endpoint")
        cursor = None if before is None else int(before)
        key = args.get("key")
        if key is not None:
            if not 0 < len(key) <= MAX_KEY_LENGTH:
                return _bad_parameter(
                    "key", f"must be an Idempotency-Key of 1 to {MAX_KEY_LENGTH} characters"
                )
            # Keys are stored namespaced by source; the API's are the http ones.
            filters["key"] = f"http:{key}"
        records, more = await self.lookup.page(
            PageQuery(**filters, before=cursor, limit=limit, max_bytes=self.settings.list_max_bytes)
        )
        next_cursor = str(records[-1].seq) if more else None
        items = b",".join(_record_json(record) for record in records)
        return _json(b'{"items":[' + items + b'],"next":' + dumps(next_cursor) + b"}")

    async def retry_trigger(self, incoming: Incoming, uuid: str) -> Answer:
        if (refusal := _cross_site_refusal(incoming)) is not None:
            return refusal
        if self.draining():
            return self._shutting_down(incoming)
        assert self.retry is not None  # the route exists only with it
        try:
            result = await self.retry(uuid) if len(uuid) == 32 else None
        except JournalError as err:
            return _error(
                503,
                "journal unavailable",
                [f"the retry could not be stored, so nothing was sent: {err}; retry later"],
                **self._retry_after,
            )
        if result is None:
            return _error(
                404,
                "no such trigger",
                [f"no trigger {uuid} in the journal; settled ones go after TOWER_RETENTION"],
            )
        record, queued = result
        location = f"/triggers/{uuid}"
        if queued:
            # The audit trail: who asked, and the count kept in the delivery record.
            _log.info(
                "trigger.retried",
                uuid=uuid,
                api_version=record.api_version,
                protocol=record.protocol,
                retries=record.retries,
                client=incoming.remote_addr,
            )
            return _json(_record_json(record), 202, Location=location)
        if record.status is DeliveryStatus.PENDING:
            # Queued already (by an earlier retry, or never settled): nothing twice.
            return _json(_record_json(record), 200, Location=location)
        return _error(
            409,
            "not retryable",
            [
                f"trigger {uuid} was {record.status.value}; only failed and unroutable "
                "triggers are sent again (a published one would run twice)"
            ],
            Location=location,
        )

    async def protocols(self) -> Answer:
        return _json(self.schemas.listing)

    async def openapi_json(self) -> Answer:
        return _json(self.openapi)

    async def admit(self, incoming: Incoming) -> Answer | None:
        """Runs before every route when tokens or a rate limit are configured."""
        path = incoming.path
        if is_public(path):
            return None
        authorization = incoming.header("authorization")
        cookie = incoming.cookie(SESSION_COOKIE) if authorization is None else None
        if cookie and (session := self.sessions.get(cookie)) is not None:
            # A signed-in console. Its cookie goes with every request the
            # browser sends here, whoever's page asks: changes need the CSRF
            # token only the console's own page holds.
            if incoming.method not in _SAFE_METHODS and not same_secret(
                incoming.header("x-csrf-token") or "", session.csrf
            ):
                _log.info("http.denied", status=403, path=path, client=incoming.remote_addr)
                return _closing(
                    _error(
                        403,
                        "forbidden",
                        ["the X-CSRF-Token header is missing or wrong; reload the console"],
                    ),
                    incoming,
                )
            denial = self.guard.spend_as(session.token)
        else:
            denial = self.guard.check(path, authorization, incoming.remote_addr)
        if denial is None:
            return None
        # Never the presented token: only what was refused, where, and for whom.
        _log.info("http.denied", status=denial.status, path=path, client=incoming.remote_addr)
        return _closing(
            _error(denial.status, denial.error, [denial.detail], **denial.headers), incoming
        )

    async def authorize(self) -> Response | None:
        answer = await self.admit(QuartIncoming())
        return None if answer is None else answer.to_response()

    async def plugins(self) -> Answer:
        return _json(dumps({"plugins": self.plugins_view()}))

    async def healthz(self) -> Answer:
        return _json(b'{"status":"ok"}')

    async def readyz(self) -> Answer:
        reasons = list(self.readiness())
        if reasons:
            return _error(503, "not ready", reasons, **self._retry_after)
        return _json(dumps({"status": "ready", "instance": self.settings.instance}))

    async def http_error(self, error: HTTPException) -> Response:
        incoming = QuartIncoming()
        status = error.code or 500
        if status == 413:
            return _closing(self._too_large(), incoming).to_response()
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        answer = _error(
            status, (error.name or "error").lower(), [error.description or ""], **headers
        )
        return _closing(answer, incoming).to_response()

    async def journal_unavailable(self, error: JournalError) -> Response:
        # A lookup or listing while storage cannot answer (PostgreSQL away):
        # the client's to retry, not a bug to log with a traceback.
        _log.warning("journal.read_failed", path=request.path, error=str(error))
        return _error(
            503,
            "journal unavailable",
            [f"the journal could not be read: {error}; retry later"],
            **self._retry_after,
        ).to_response()

    async def unexpected_error(self, error: Exception) -> Response:
        return self._unexpected(QuartIncoming()).to_response()

    def _unexpected(self, incoming: Incoming) -> Answer:
        # A bug of ours: the operator gets the traceback, the client never does.
        _log.exception("http.unexpected_error", path=incoming.path)
        return _closing(
            _error(500, "internal error", ["the tower hit an unexpected error; see its log"]),
            incoming,
        )


def create_app(
    settings: Settings,
    send_channel: trio.MemorySendChannel[Submission],
    lookup: TriggerLookup,
    readiness: Readiness,
    *,
    draining: Callable[[], bool] = lambda: False,
    plugins_view: Callable[[], list[dict[str, Any]]] = list,
    schemas: ProtocolSchemas | None = None,
    guard: Guard | None = None,
    retry: Retry | None = None,
    console: ConsoleSources | None = None,
) -> QuartTrio:
    """The API app; it sends every valid trigger on ``send_channel``.

    ``lookup`` answers ``GET /triggers``: the publisher's settlements, which
    see the broker's answers before storage does.
    ``schemas`` are the protocol schemas triggers must match; ``guard`` (by
    default from ``settings``) checks tokens and the rate limit. ``retry``
    adds ``POST /triggers/<uuid>/retry``; ``console``, the console.
    """
    api = _Api(
        settings,
        send_channel,
        lookup,
        readiness,
        draining,
        plugins_view,
        ProtocolSchemas() if schemas is None else schemas,
        Guard.from_settings(settings) if guard is None else guard,
        retry,
    )
    # No static folder: every route the tower serves is one of ours, and documented.
    app = _TowerApp("tower_trio", static_folder=None, template_folder="console/templates")
    app.api = api
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = settings.http_read_timeout
    if api.guard.active:
        # Registered only when needed: an open tower pays nothing per request.
        app.before_request(api.authorize)
    app.add_url_rule(
        "/triggers",
        "post_trigger",
        _route(lambda: api.post_trigger(QuartIncoming())),
        methods=["POST"],
    )
    app.add_url_rule("/triggers", view_func=_route(api.list_triggers), methods=["GET"])
    app.add_url_rule("/triggers/<uuid>", view_func=_route(api.get_trigger), methods=["GET"])
    if retry is not None:
        app.add_url_rule(
            "/triggers/<uuid>/retry",
            "retry_trigger",
            _route(lambda uuid: api.retry_trigger(QuartIncoming(), uuid)),
            methods=["POST"],
        )
    if console is not None:
        Console(console, lookup, api.guard, api.sessions, draining).install(app)
    app.add_url_rule("/plugins", view_func=_route(api.plugins), methods=["GET"])
    app.add_url_rule("/healthz", view_func=_route(api.healthz), methods=["GET"])
    app.add_url_rule("/readyz", view_func=_route(api.readyz), methods=["GET"])
    app.add_url_rule("/protocols", view_func=_route(api.protocols), methods=["GET"])
    app.add_url_rule("/openapi.json", view_func=_route(api.openapi_json), methods=["GET"])
    app.register_error_handler(HTTPException, api.http_error)
    app.register_error_handler(JournalError, api.journal_unavailable)
    app.register_error_handler(Exception, api.unexpected_error)
    return app


def _route(handler: Callable[..., Awaitable[Answer]]) -> Callable[..., Awaitable[Response]]:
    """A Quart view function answering what ``handler`` answers."""

    async def view(**arguments: str) -> Response:
        return (await handler(**arguments)).to_response()

    view.__name__ = getattr(handler, "__name__", "view")
    return view


class _TowerApp(QuartTrio):
    """The API app; ``POST /triggers`` skips Quart's per-request machinery (see _exchange)."""

    api: _Api

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/triggers":
            await self.api.serve_post_trigger(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _cross_site_refusal(incoming: Incoming) -> Answer | None:
    reason = cross_site(
        incoming.header("sec-fetch-site"), incoming.header("origin"), incoming.header("host")
    )
    if reason is None:
        return None
    _log.info("http.denied", status=403, path=incoming.path, client=incoming.remote_addr)
    return _closing(
        _error(
            403,
            "cross-site request refused",
            [f"{reason}; send it from the console or from a client that is not a browser"],
        ),
        incoming,
    )


def _status_json(status: str, submission: Submission) -> bytes:
    # The published body is reused: the status goes in front of its fields.
    body = _with_created_at(submission.body, format_datetime(submission.trigger.created_at))
    return b'{"status":"%s",%s' % (status.encode(), body[1:])
