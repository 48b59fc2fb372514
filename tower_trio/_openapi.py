"""The HTTP API's contract: an OpenAPI 3.1 document, served at ``/openapi.json``.

It is built here, in code, so that it ships with the package and uses the
same limits as the handlers; ``docs/openapi.json`` is a copy that the tests
keep equal to it (``python -m tower_trio._openapi > docs/openapi.json``).
The fuzz tests generate requests from it, so it describes what the tower
really accepts, not a friendlier approximation.

One concept, kept whole although past 400 lines: the document itself.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ._runtime import PluginState
from ._vocabulary import (
    API_VERSION,
    DEFAULT_LIST_LIMIT,
    MAX_API_VERSION_LENGTH,
    MAX_KEY_LENGTH,
    MAX_LIST_LIMIT,
    MAX_PROTOCOL_LENGTH,
    PROTOCOL,
    DeliveryStatus,
)

__all__ = ["openapi_document"]

_API_VERSION = f"^{API_VERSION}$"
_PROTOCOL = f"^{PROTOCOL}$"
_STATUSES = [status.value for status in DeliveryStatus]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(_ref("Error"))}
    if headers:
        response["headers"] = headers
    return response


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


_LOCATION = _header("Where to follow the trigger: `/triggers/{uuid}`.")
_RETRY_AFTER = _header(
    "Seconds to wait before retrying.", {"type": "string", "pattern": "^[0-9]+$"}
)
_CHALLENGE = _header('`Bearer realm="tower-trio"`.')

_UNAUTHORIZED = _error(
    "No bearer token, or not `Bearer <token>`.", **{"WWW-Authenticate": _CHALLENGE}
)
_FORBIDDEN = _error(
    "The bearer token is not one of the configured tokens; or, from a browser, a request "
    "another site's page sent, or a console request without its CSRF token."
)
_TOO_MANY = _error("Over `TOWER_RATE_LIMIT`.", **{"Retry-After": _RETRY_AFTER})
_UNREADABLE = _error(
    "`journal unavailable`: the journal could not be read (a PostgreSQL journal out of reach).",
    **{"Retry-After": _RETRY_AFTER},
)
_GUARDED = {"401": _UNAUTHORIZED, "403": _FORBIDDEN, "429": _TOO_MANY}
_PROBE_GUARDED = {"401": _UNAUTHORIZED, "403": _FORBIDDEN}


def _schemas() -> dict[str, Any]:
    json_object = {"type": "object"}
    wells = {"type": "array", "items": json_object}
    plate = {
        "type": "object",
        "description": "The plate's shape; `spec` then holds rows x columns well objects.",
        "required": ["rows", "columns"],
        "properties": {
            "rows": {"type": "integer", "minimum": 1},
            "columns": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
    }
    trigger_fields = {
        "apiVersion": {
            "type": "string",
            "pattern": _API_VERSION,
            "maxLength": MAX_API_VERSION_LENGTH,
            "description": "`<api>/<version>[/<device>]`; the AMQP routing key.",
            "examples": ["OT-2/v1alpha1"],
        },
        "protocol": {
            "type": "string",
            "pattern": _PROTOCOL,
            "maxLength": MAX_PROTOCOL_LENGTH,
            "examples": ["PlateTransfer"],
        },
        "spec": {
            "description": (
                "Protocol parameters: an object (`{}` for a protocol without any), or with "
                "`plate` a list of exactly rows x columns well objects (a well may be `{}`)."
            ),
            "oneOf": [json_object, wells],
        },
        # The tower reads null as "not given", for plate and metadata alike.
        "plate": {"oneOf": [plate, {"type": "null"}]},
    }
    metadata_fields = {
        "source": {"type": "string"},
        "spec": {
            "description": (
                "The sender's own notes: an object, or with `plate` a list of exactly "
                "rows x columns well objects, in the order of `spec`."
            ),
            "oneOf": [json_object, wells],
        },
    }
    metadata = {
        "type": ["object", "null"],
        "properties": metadata_fields,
        "additionalProperties": False,
    }
    # Exactly the fields of ULAS's format: strict consumers fail on any other.
    published_required = ["apiVersion", "protocol", "spec", "metadata", "uuid"]
    published_fields = {
        **trigger_fields,
        "plate": plate,
        "metadata": {
            "type": "object",
            "required": ["source", "spec"],
            "properties": metadata_fields,
            "additionalProperties": False,
        },
        "uuid": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    }
    published = {
        "type": "object",
        "description": "A trigger as published on RabbitMQ: the fields of ULAS's format only.",
        "required": published_required,
        "properties": published_fields,
        "additionalProperties": False,
    }
    created_at = {
        "type": "string",
        "format": "date-time",
        "description": "When the tower accepted the trigger; not in the published body.",
    }
    answered = {
        "type": "object",
        "required": [*published_required, "createdAt"],
        "properties": {**published_fields, "createdAt": created_at},
    }
    status = {"type": "string", "enum": _STATUSES}
    return {
        "Error": {
            "type": "object",
            "description": "Every error answer has this shape.",
            "required": ["error", "details"],
            "properties": {
                "error": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, _ref("FieldError")]},
                },
            },
            "additionalProperties": False,
        },
        "FieldError": {
            "type": "object",
            "required": ["field", "message"],
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            "additionalProperties": False,
        },
        "TriggerSubmission": {
            "type": "object",
            "description": (
                "A trigger as a client sends it. `spec` is an object without `plate`, or a "
                "list of exactly rows x columns well objects with it; a protocol schema in "
                "`TOWER_SCHEMAS_DIR` may constrain it further (422)."
            ),
            "required": ["apiVersion", "protocol", "spec"],
            "properties": {**trigger_fields, "metadata": metadata},
            "additionalProperties": False,
            "examples": [
                {
                    "apiVersion": "OT-2/v1alpha1",
                    "protocol": "PlateTransfer",
                    "spec": {"volume": 100},
                }
            ],
        },
        "Trigger": published,
        "TriggerStatus": {
            "description": "The trigger as published, with `createdAt` and where it is on its way.",
            "allOf": [
                answered,
                {"type": "object", "required": ["status"], "properties": {"status": status}},
            ],
        },
        "TriggerRecord": {
            "description": "The trigger as published, with `createdAt` and its delivery record.",
            "allOf": [
                answered,
                {
                    "type": "object",
                    "required": [
                        "status",
                        "publishedAt",
                        "attempts",
                        "lastError",
                        "retries",
                        "retriedAt",
                    ],
                    "properties": {
                        "status": status,
                        "publishedAt": {"type": ["string", "null"], "format": "date-time"},
                        "attempts": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Publishes since it was stored or last retried.",
                        },
                        "lastError": {"type": ["string", "null"]},
                        "retries": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Times it was sent again with `POST .../retry`.",
                        },
                        "retriedAt": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
            ],
        },
    }


def _paths() -> dict[str, Any]:
    record = _ref("TriggerRecord")
    return {
        "/triggers": {
            "post": {
                "operationId": "postTrigger",
                "summary": "Send a trigger",
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "description": "`published`: answer once the broker confirmed it.",
                        "schema": {"type": "string", "enum": [DeliveryStatus.PUBLISHED.value]},
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "A retry with the same key and body publishes nothing.",
                        "schema": {
                            "type": "string",
                            "pattern": f"^[\\x20-\\x7e]{{1,{MAX_KEY_LENGTH}}}$",
                        },
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": _json_content(_ref("TriggerSubmission")),
                },
                "responses": {
                    "202": {
                        "description": "On disk (with `wait=published`: confirmed by the broker).",
                        "headers": {"Location": _LOCATION},
                        "content": _json_content(_ref("TriggerStatus")),
                    },
                    "200": {
                        "description": "Same `Idempotency-Key` and body as an earlier request.",
                        "headers": {"Location": _LOCATION},
                        "content": _json_content(record),
                    },
                    "400": _error("Malformed JSON, a bad query parameter or Idempotency-Key."),
                    "408": _error("The body did not arrive within `TOWER_HTTP_READ_TIMEOUT`."),
                    "409": _error("The Idempotency-Key was used with another body."),
                    "413": _error("The body is larger than `TOWER_MAX_BODY_BYTES`."),
                    "415": _error("The content type is not `application/json` (or `*+json`)."),
                    "422": _error("Not a valid trigger, or it breaks its protocol's schema."),
                    "503": _error(
                        "Not stored: journal unavailable or slow, shutting down, or refused "
                        "by the broker.",
                        **{"Retry-After": _RETRY_AFTER},
                    ),
                    "504": {
                        "description": "Stored, but not confirmed within `TOWER_PUBLISH_TIMEOUT`.",
                        "headers": {"Location": _LOCATION},
                        "content": _json_content(_ref("TriggerStatus")),
                    },
                    **_GUARDED,
                },
            },
            "get": {
                "operationId": "listTriggers",
                "summary": "List triggers, newest first",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": _STATUSES},
                    },
                    {"name": "apiVersion", "in": "query", "schema": {"type": "string"}},
                    {"name": "protocol", "in": "query", "schema": {"type": "string"}},
                    {"name": "source", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "key",
                        "in": "query",
                        "description": "The `Idempotency-Key` a trigger was sent with.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIST_LIMIT,
                            "default": DEFAULT_LIST_LIMIT,
                        },
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "A cursor: the `next` of the previous page.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of triggers.",
                        "content": _json_content(
                            {
                                "type": "object",
                                "required": ["items", "next"],
                                "properties": {
                                    "items": {"type": "array", "items": record},
                                    "next": {"type": ["string", "null"]},
                                },
                            }
                        ),
                    },
                    "400": _error("An unknown or invalid query parameter."),
                    "503": _UNREADABLE,
                    **_GUARDED,
                },
            },
        },
        "/triggers/{uuid}": {
            "get": {
                "operationId": "getTrigger",
                "summary": "One trigger and its delivery record",
                "parameters": [
                    {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The trigger.", "content": _json_content(record)},
                    "404": _error("No such trigger (or pruned after `TOWER_RETENTION`)."),
                    "503": _UNREADABLE,
                    **_GUARDED,
                },
            }
        },
        "/triggers/{uuid}/retry": {
            "post": {
                "operationId": "retryTrigger",
                "summary": "Send a failed or unroutable trigger again",
                "description": (
                    "Makes the trigger pending again, with the same uuid and `message_id`; "
                    "its `attempts` start again from 0 and `retries` counts the retry. "
                    "Idempotent: a trigger already pending is not queued twice. Logged as "
                    "`trigger.retried`."
                ),
                "parameters": [
                    {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "202": {
                        "description": "Queued again.",
                        "headers": {"Location": _LOCATION},
                        "content": _json_content(record),
                    },
                    "200": {
                        "description": "Already pending: nothing more is queued.",
                        "headers": {"Location": _LOCATION},
                        "content": _json_content(record),
                    },
                    "404": _error("No such trigger (or pruned after `TOWER_RETENTION`)."),
                    "409": _error("Published: sending it again would run it twice."),
                    "503": _error(
                        "Not queued: journal unavailable, or shutting down.",
                        **{"Retry-After": _RETRY_AFTER},
                    ),
                    **_GUARDED,
                },
            }
        },
        "/plugins": {
            "get": {
                "operationId": "listPlugins",
                "summary": "Each watcher plugin's state, secrets masked",
                "responses": {
                    "200": {
                        "description": "The plugins.",
                        "content": _json_content(
                            {
                                "type": "object",
                                "required": ["plugins"],
                                "properties": {"plugins": {"type": "array", "items": _PLUGIN}},
                            }
                        ),
                    },
                    **_GUARDED,
                },
            }
        },
        "/protocols": {
            "get": {
                "operationId": "listProtocols",
                "summary": "The protocols with a schema in `TOWER_SCHEMAS_DIR`",
                "responses": {
                    "200": {
                        "description": "The protocols and their JSON Schemas.",
                        "content": _json_content(
                            {
                                "type": "object",
                                "required": ["strict", "protocols"],
                                "properties": {
                                    "strict": {"type": "boolean"},
                                    "protocols": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["apiVersion", "protocol", "schema"],
                                            "properties": {
                                                "apiVersion": {"type": "string"},
                                                "protocol": {"type": "string"},
                                                "schema": {"type": ["object", "boolean"]},
                                            },
                                        },
                                    },
                                },
                            }
                        ),
                    },
                    **_GUARDED,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": _json_content({"type": "object"}),
                    },
                    **_GUARDED,
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "security": [{"probeToken": []}, {}],
                "responses": {
                    "200": {
                        "description": "The process runs.",
                        "content": _json_content(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            }
                        ),
                    },
                    **_PROBE_GUARDED,
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness",
                "security": [{"probeToken": []}, {}],
                "responses": {
                    "200": {
                        "description": "Broker connected and every plugin started.",
                        "content": _json_content(
                            {
                                "type": "object",
                                "required": ["status", "instance"],
                                "properties": {
                                    "status": {"const": "ready"},
                                    "instance": {
                                        "type": "string",
                                        "description": "This tower's name (TOWER_INSTANCE).",
                                    },
                                },
                            }
                        ),
                    },
                    "503": _error(
                        "Not ready; `details` says why.", **{"Retry-After": _RETRY_AFTER}
                    ),
                    **_PROBE_GUARDED,
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [{"metricsToken": []}, {}],
                "responses": {
                    "200": {
                        "description": "The text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _UNAUTHORIZED,
                },
            }
        },
    }


_PLUGIN = {
    "type": "object",
    "required": ["name", "state", "leader"],
    "properties": {
        "name": {"type": "string"},
        "state": {"type": "string", "enum": [state.value for state in PluginState]},
        "leader": {
            "description": "The tower holding the plugin's lease, and its term; null when "
            "none does. A tower alone on its journal leads every plugin in term 1.",
            "type": ["object", "null"],
            "required": ["instance", "term"],
            "properties": {
                "instance": {"type": "string"},
                "term": {"type": "integer", "minimum": 1},
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route the tower serves."""
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tower-trio",
            "summary": "Protocol triggers for lab automation, published to RabbitMQ.",
            "description": (
                'Every error answer is `{"error": ..., "details": [...]}`. Unknown paths get '
                "404 and other methods 405, in the same shape. Bearer tokens are needed only "
                "when the tower is configured with them (`TOWER_API_TOKENS`, "
                "`TOWER_PROBE_TOKEN`, `TOWER_METRICS_TOKEN`)."
            ),
            "version": "1",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "http://127.0.0.1:8000"}],
        "security": [{"apiToken": []}, {}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiToken": {**bearer, "description": "A token from `TOWER_API_TOKENS`."},
                "probeToken": {**bearer, "description": "`TOWER_PROBE_TOKEN`."},
                "metricsToken": {**bearer, "description": "`TOWER_METRICS_TOKEN`."},
            },
        },
    }


if __name__ == "__main__":
    json.dump(openapi_document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
