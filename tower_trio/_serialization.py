"""The wire format: one private cattrs converter, camelCase JSON on the wire.

Structuring happens only at the edges (HTTP bodies, AMQP bodies, plugin
configuration from the environment). Incoming triggers are checked by hand
rather than by cattrs' coercions, because cattrs would quietly turn ``"3"``
into ``3`` and stop at the first bad field; a lab engineer should see every
problem of a trigger at once, each under its wire name.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from ._models import (
    FieldError,
    InvalidTriggerError,
    JSONObject,
    Metadata,
    Plate,
    Trigger,
    check_plate,
)

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "dump_trigger",
    "dumps",
    "format_datetime",
    "format_optional_timestamp",
    "format_timestamp",
    "load_trigger",
    "parse_datetime",
    "structure_env_value",
    "trigger_from_wire",
    "trigger_to_wire",
]

_SUBMITTED_FIELDS = frozenset({"apiVersion", "protocol", "spec", "plate", "metadata"})
_ASSIGNED_FIELDS = frozenset({"uuid", "createdAt"})
_METADATA_FIELDS = frozenset({"source", "spec"})
_PLATE_FIELDS = frozenset({"rows", "columns"})
_REQUIRED = ("apiVersion", "protocol", "spec")


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as every timestamp on the wire."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_second_formatted: tuple[int, str] = (-1, "")


def format_timestamp(seconds: float) -> str:
    """``format_datetime`` of a Unix time, without building a ``datetime``.

    The live feed formats two or three of these per trigger while ingest
    runs. The microseconds are rounded as ``datetime.fromtimestamp`` rounds
    them (the fraction alone, half to even), so both ways spell a time alike.
    """
    global _second_formatted  # noqa: PLW0603 - a one-entry cache; the loop formats in order
    if seconds < 0:
        return format_datetime(datetime.fromtimestamp(seconds, UTC))
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second = int(whole)
    if _second_formatted[0] != second:
        _second_formatted = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    prefix = _second_formatted[1]
    return f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"


def format_optional_timestamp(seconds: float | None) -> str | None:
    """``format_timestamp``, or None for a time that has not come (not published yet)."""
    return None if seconds is None else format_timestamp(seconds)


def parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("needs a timezone, like '2026-01-31T12:00:00Z'")
    return parsed


# The two converters are built once, at import: mutmut cannot switch a mutant
# of their builders on before that, so it leaves them alone. The tests of the
# wire format and of structure_env_value pin what they build.


def _as_is(value: Any) -> Any:
    return value


def _make_converter() -> cattrs.Converter:  # pragma: no mutate block
    converter = make_converter()
    # A trigger's specs were checked to be plain JSON when it was made
    # (json_problem): encoded as they are, not copied key by key first.
    converter.register_unstructure_hook(
        Metadata,
        make_dict_unstructure_fn(Metadata, converter, spec=override(unstruct_hook=_as_is)),
    )
    converter.register_unstructure_hook(
        Trigger,
        make_dict_unstructure_fn(
            Trigger,
            converter,
            api_version=override(rename="apiVersion"),
            spec=override(unstruct_hook=_as_is),
            # ULAS's format has no creation time, and a strict consumer (the
            # Tecan relay: "missing member = error") fails on any extra member.
            # The time travels in the AMQP timestamp and the HTTP answers.
            created_at=override(omit=True),
            plate=override(omit_if_default=True),
            key=override(omit=True),
            term=override(omit=True),
        ),
    )
    return converter


_converter = _make_converter()
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _env_bool(raw: str, _: type) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


def _env_number(raw: str, kind: type) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(f"must be {'an integer' if kind is int else 'a number'}") from None


_COLLECTIONS = (list, tuple, set, frozenset)


def _collection_kind(kind: Any) -> type | None:
    """The collection type of a ``list[int]``, ``set[str]``, bare ``list`` ... annotation."""
    origin = kind if kind in _COLLECTIONS else getattr(kind, "__origin__", None)
    return origin if origin in _COLLECTIONS else None


def _env_collection(raw: str, kind: Any) -> Any:
    # A bare list, tuple or set holds strings.
    (item,) = getattr(kind, "__args__", (str,))[:1] or (str,)
    items = [
        _env_converter.structure(part.strip(), item) for part in raw.split(",") if part.strip()
    ]
    collection = _collection_kind(kind)
    # The converter calls this hook for collection kinds only: never None here.
    return collection(items)  # type: ignore[misc]


def _make_env_converter() -> cattrs.Converter:  # pragma: no mutate block
    # Environment variables are strings: "false" must not become True, and a
    # list or a set is written "a,b,c". Everything else is cattrs' usual structuring.
    converter = _converter.copy()
    converter.register_structure_hook(bool, _env_bool)
    converter.register_structure_hook(int, _env_number)
    converter.register_structure_hook(float, _env_number)
    converter.register_structure_hook_func(
        lambda kind: _collection_kind(kind) is not None, _env_collection
    )
    return converter


_env_converter = _make_env_converter()


def structure_env_value(raw: str, kind: Any) -> Any:
    """An environment variable's text as a value of the declared type."""
    return _env_converter.structure(raw, kind)


def trigger_to_wire(trigger: Trigger) -> JSONObject:
    """The trigger as published: a JSON-ready dict, camelCase keys, only ULAS's fields.

    ``uuid``, ``apiVersion``, ``protocol``, ``plate`` (plate triggers only),
    ``spec`` and ``metadata`` (``source`` and ``spec``); no ``createdAt``.
    The specs in it are the trigger's own objects, not copies.
    """
    wire: JSONObject = _converter.unstructure(trigger, Trigger)
    return wire


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return _encoder.encode(value).encode()


def dump_trigger(trigger: Trigger) -> bytes:
    """The trigger's JSON body, as published."""
    return dumps(trigger_to_wire(trigger))


def trigger_from_wire(
    wire: object,
    *,
    source: str | None = None,
    submitted: bool = True,
    created_at: datetime | None = None,
) -> Trigger:
    """Build a trigger from decoded JSON, reporting every problem at once.

    ``submitted`` triggers come from a client, who must not choose the
    ``uuid`` or ``createdAt``; otherwise (a trigger read back from the
    broker) ``uuid`` is required, and the creation time, which the body does
    not carry, is ``created_at`` (the time of reading if not given).
    ``source`` overrides ``metadata.source``.
    """
    if not isinstance(wire, Mapping):
        raise InvalidTriggerError([FieldError("$", "must be a JSON object")])
    allowed = _SUBMITTED_FIELDS if submitted else _SUBMITTED_FIELDS | {"uuid"}
    errors = [
        FieldError(key, "is assigned by the tower; leave it out")
        if key in _ASSIGNED_FIELDS
        else FieldError(str(key), "is not a trigger field")
        for key in wire
        if key not in allowed
    ]
    required = _REQUIRED if submitted else (*_REQUIRED, "uuid")
    errors.extend(FieldError(key, "is required") for key in required if key not in wire)
    plate = _plate_from_wire(wire.get("plate"), errors)
    metadata = _metadata_from_wire(wire.get("metadata"), source, errors)
    assigned: dict[str, Any] = {}
    if not submitted:
        assigned["uuid"] = wire.get("uuid")
        if created_at is not None:
            assigned["created_at"] = created_at
    try:
        trigger = Trigger(
            api_version=wire.get("apiVersion"),  # type: ignore[arg-type]
            protocol=wire.get("protocol"),  # type: ignore[arg-type]
            spec=wire.get("spec"),  # type: ignore[arg-type]
            plate=plate,
            metadata=metadata,
            **assigned,
        )
    except InvalidTriggerError as err:
        reported = {e.field for e in errors}
        if any(field.startswith("plate") for field in reported):
            # The plate was given but broken; "plate is required" or "a list
            # only for a plate trigger" would mislead.
            reported.update(("plate", "metadata.spec"))
        errors.extend(e for e in err.errors if e.field not in reported)
    if errors:
        raise InvalidTriggerError(errors)
    return trigger


def load_trigger(body: bytes | str, *, created_at: datetime | None = None) -> Trigger:
    """A trigger from a published message body (``uuid`` included).

    The body has no creation time: pass ``created_at`` (e.g. the message's
    AMQP ``timestamp``), or the trigger gets the time of reading.
    """
    try:
        wire = json.loads(body)
    except ValueError as err:
        raise InvalidTriggerError([FieldError("$", f"is not valid JSON: {err}")]) from err
    return trigger_from_wire(wire, submitted=False, created_at=created_at)


def _plate_from_wire(value: object, errors: list[FieldError]) -> Plate | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.append(FieldError("plate", 'must be an object like {"rows": 8, "columns": 12}'))
        return None
    errors.extend(
        FieldError(f"plate.{key}", "is not a plate field")
        for key in value
        if key not in _PLATE_FIELDS
    )
    rows, columns = value.get("rows"), value.get("columns")
    if problems := check_plate(rows, columns):
        errors.extend(problems)
        return None
    return Plate(rows=rows, columns=columns)  # type: ignore[arg-type]


def _metadata_from_wire(value: object, source: str | None, errors: list[FieldError]) -> Metadata:
    if value is None:
        return Metadata(source=source or "")
    if not isinstance(value, Mapping):
        errors.append(FieldError("metadata", 'must be an object like {"spec": {...}}'))
        return Metadata(source=source or "")
    errors.extend(
        FieldError(f"metadata.{key}", "is not a metadata field")
        for key in value
        if key not in _METADATA_FIELDS
    )
    spec = value.get("spec", {})
    if isinstance(spec, list):
        # One object per well; the trigger checks it against the plate.
        spec = list(spec)
    elif isinstance(spec, Mapping):
        spec = dict(spec)
    else:
        errors.append(
            FieldError(
                "metadata.spec",
                "must be a JSON object, or for a plate trigger a list of one object per well",
            )
        )
        spec = {}
    wire_source = value.get("source", "")
    if source is None and not isinstance(wire_source, str):
        errors.append(FieldError("metadata.source", "must be a string"))
        wire_source = ""
    return Metadata(source=wire_source if source is None else source, spec=spec)
