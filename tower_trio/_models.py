"""Protocol triggers: the one message tower-trio exists to deliver.

A trigger is validated whenever it is built, from Python or from the wire,
and every problem is reported at once with the wire name of its field, so
that an HTTP client or a plugin author can fix a trigger in one go.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import attrs

from ._errors import TowerError
from ._vocabulary import (
    API_VERSION,
    MAX_API_VERSION_LENGTH,
    MAX_KEY_LENGTH,
    MAX_PROTOCOL_LENGTH,
    PROTOCOL,
)

__all__ = [
    "FieldError",
    "InvalidTriggerError",
    "JSONObject",
    "Metadata",
    "Plate",
    "Trigger",
]

JSONObject: TypeAlias = dict[str, Any]

MAX_JSON_DEPTH = 32
MAX_JSON_KEYS = 20_000  # across a whole spec: room for a 1536-well plate with 13 fields a well
MAX_STRING_LENGTH = 1024 * 1024  # characters, for keys and values alike

_API_VERSION = re.compile(API_VERSION)
_PROTOCOL = re.compile(PROTOCOL)


@attrs.frozen
class FieldError:
    """One problem with one field, named as on the wire (``plate.rows``, ``spec[3]``)."""

    field: str
    message: str


class InvalidTriggerError(TowerError, ValueError):
    """A trigger broke one or more rules; ``errors`` lists every one of them."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__(
            "invalid trigger: " + "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        )


@attrs.frozen
class Plate:
    """The shape of a well plate; a plate trigger carries one spec per well."""

    rows: int
    columns: int

    def __attrs_post_init__(self) -> None:
        if errors := check_plate(self.rows, self.columns):
            raise InvalidTriggerError(errors)

    @property
    def wells(self) -> int:
        return self.rows * self.columns


@attrs.frozen
class Metadata:
    """Where a trigger came from (set by the tower) and the caller's own notes.

    ``spec`` is an object, or for a plate trigger a list of one object per
    well, in the same well order as the trigger's ``spec``.
    """

    source: str = ""
    spec: JSONObject | list[JSONObject] = attrs.field(factory=dict)


def _new_uuid() -> str:
    return uuid.uuid4().hex


def _utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class Trigger:
    """An instruction for a device service: run ``protocol`` with ``spec``.

    >>> Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"volume": 100})
    ... # doctest: +ELLIPSIS
    Trigger(api_version='OT-2/v1alpha1', protocol='PlateTransfer', ...)

    ``uuid`` and ``created_at`` are assigned here; ``metadata.source`` is set
    by the tower when the trigger enters it (``"http"`` or a plugin's name).
    ``created_at`` is not part of the published body (ULAS's format has no
    such field); it travels as the AMQP ``timestamp``.
    """

    api_version: str
    protocol: str
    spec: JSONObject | list[JSONObject]
    plate: Plate | None = None
    metadata: Metadata = attrs.field(factory=Metadata)
    uuid: str = attrs.field(factory=_new_uuid)
    created_at: datetime = attrs.field(factory=_utc_now)
    key: str | None = attrs.field(default=None, eq=False, kw_only=True)
    """A plugin's idempotency key (e.g. ``riffyn:<runId>``): a second trigger with
    the same key, from the same plugin, within the retention period, is dropped.
    Not part of the published message."""
    term: int | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)
    """The leadership term of the plugin run that sent it, stamped by the tower
    (whatever a plugin sets is replaced): a store shared by several towers
    refuses a trigger whose term is no longer its plugin's. Not published."""

    def __attrs_post_init__(self) -> None:
        if errors := check_trigger(self):
            raise InvalidTriggerError(errors)

    @property
    def routing_key(self) -> str:
        """The AMQP routing key: the apiVersion, exactly."""
        return self.api_version

    def with_source(self, source: str, *, term: int | None = None) -> Trigger:
        """This trigger as it enters the tower through ``source``, sent under ``term``."""
        if self.metadata.source == source and self.term == term:
            return self
        return attrs.evolve(self, metadata=attrs.evolve(self.metadata, source=source), term=term)


def check_plate(rows: object, columns: object, prefix: str = "plate.") -> list[FieldError]:
    errors = []
    for name, value in (("rows", rows), ("columns", columns)):
        if type(value) is not int or value < 1:
            errors.append(FieldError(prefix + name, "must be a positive integer"))
    return errors


def check_api_version(value: object) -> str | None:
    """Why ``value`` is not a valid apiVersion, or None if it is one."""
    if not isinstance(value, str):
        return "must be a string like 'OT-2/v1alpha1'"
    if len(value) > MAX_API_VERSION_LENGTH or not _API_VERSION.fullmatch(value):
        return (
            "must be '<api>/<version>[/<device>]' like 'OT-2/v1alpha1' or "
            "'TecanSpark/v1alpha1/Spark2' (api: letters, digits, '-'; version: 'v', "
            "a positive integer and an optional lowercase suffix; device: letters, "
            "digits, '-', '_')"
        )
    return None


def check_protocol(value: object) -> str | None:
    """Why ``value`` is not a valid protocol name, or None if it is one."""
    if not isinstance(value, str):
        return "must be a string naming the protocol, like 'PlateTransfer'"
    if len(value) > MAX_PROTOCOL_LENGTH:
        return f"must be at most {MAX_PROTOCOL_LENGTH} characters"
    if not _PROTOCOL.fullmatch(value):
        return "must start with a letter and contain only letters, digits and '_'"
    return None


def _check_wells(field: str, wells: Sequence[object], plate: Plate | None) -> list[FieldError]:
    """What is wrong with ``wells``, one object per well (an empty one is a valid well)."""
    errors = [
        FieldError(f"{field}[{i}]", "must be a JSON object")
        for i, well in enumerate(wells)
        if not isinstance(well, Mapping)
    ]
    if not errors and (problem := json_problem(wells)):
        errors.append(FieldError(field + problem[0], problem[1]))
    if plate is not None and len(wells) != plate.wells:
        errors.append(
            FieldError(
                field,
                f"must hold exactly {plate.wells} wells for a {plate.rows}x{plate.columns} "
                f"plate (one per well, column-first from A1), got {len(wells)}",
            )
        )
    return errors


def check_spec(spec: object, plate: Plate | None) -> list[FieldError]:
    if isinstance(spec, list):
        errors = _check_wells("spec", spec, plate)
        if plate is None:
            errors.append(FieldError("plate", "is required when spec is a list of wells"))
        return errors
    if plate is not None:
        # A plate consumer (the OT-2 builder, the Tecan relay) indexes spec by
        # well; an object there would fail it, so the tower refuses it first.
        return [FieldError("spec", "must be a list of well objects when plate is given")]
    if not isinstance(spec, Mapping):
        return [FieldError("spec", "must be a JSON object of protocol parameters")]
    # An empty object is valid: a protocol without parameters (Home, Calibrate).
    if problem := json_problem(spec):
        return [FieldError("spec" + problem[0], problem[1])]
    return []


def check_metadata(metadata: object, plate: Plate | None = None) -> list[FieldError]:
    if not isinstance(metadata, Metadata):
        return [FieldError("metadata", "must be a Metadata object")]
    errors: list[FieldError] = []
    if not isinstance(metadata.source, str):
        errors.append(FieldError("metadata.source", "must be a string"))
    if isinstance(metadata.spec, list):
        if plate is None:
            errors.append(
                FieldError(
                    "metadata.spec",
                    "may be a list (one object per well) only for a plate trigger; "
                    "give an object, or add plate",
                )
            )
        else:
            errors.extend(_check_wells("metadata.spec", metadata.spec, plate))
    elif not isinstance(metadata.spec, Mapping):
        errors.append(
            FieldError(
                "metadata.spec",
                "must be a JSON object, or for a plate trigger a list of one object per well",
            )
        )
    elif problem := json_problem(metadata.spec):
        errors.append(FieldError("metadata.spec" + problem[0], problem[1]))
    return errors


def check_trigger(trigger: Trigger) -> list[FieldError]:
    """Every rule a trigger breaks; empty when it is valid."""
    errors = []
    if problem := check_api_version(trigger.api_version):
        errors.append(FieldError("apiVersion", problem))
    if problem := check_protocol(trigger.protocol):
        errors.append(FieldError("protocol", problem))
    if trigger.plate is not None and not isinstance(trigger.plate, Plate):
        errors.append(FieldError("plate", "must be a Plate with rows and columns"))
        errors.extend(check_metadata(trigger.metadata))
    else:
        errors.extend(check_spec(trigger.spec, trigger.plate))
        errors.extend(check_metadata(trigger.metadata, trigger.plate))
    if not (isinstance(trigger.uuid, str) and len(trigger.uuid) == 32 and _is_hex(trigger.uuid)):
        errors.append(FieldError("uuid", "must be 32 lowercase hex characters"))
    if not isinstance(trigger.created_at, datetime) or trigger.created_at.utcoffset() is None:
        errors.append(FieldError("createdAt", "must be a timezone-aware datetime"))
    if trigger.key is not None and not (
        isinstance(trigger.key, str) and 0 < len(trigger.key) <= MAX_KEY_LENGTH
    ):
        errors.append(
            FieldError("key", f"must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
        )
    return errors


def json_problem(value: object) -> tuple[str, str] | None:
    """Where and why ``value`` is not plain JSON, or None if it is.

    Checked without recursion, so that a deeply nested spec is refused with a
    reason instead of exhausting the stack; and strictly, so that what is
    accepted is exactly what will be published and read back.
    """
    # Each item carries where it is as a chain of (parent, key) links: the
    # path is spelled out only for the item that has a problem.
    stack: list[tuple[object, int, _Where]] = [(value, 0, None)]
    keys = 0
    while stack:
        item, depth, where = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return _path(where), f"is nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, str):
            if len(item) > MAX_STRING_LENGTH:
                return _path(where), f"is a string longer than {MAX_STRING_LENGTH} characters"
            if not _encodable(item):
                return _path(where), "holds text that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return _path(where), "holds NaN or Infinity, which JSON cannot carry"
        elif item is None or isinstance(item, bool | int):
            continue
        elif isinstance(item, dict):
            keys += len(item)
            if keys > MAX_JSON_KEYS:
                return _path(where), f"has more than {MAX_JSON_KEYS} keys in all"
            for key, child in item.items():
                if not isinstance(key, str):
                    return _path(where), f"has a key that is not a string: {key!r}"
                if len(key) > MAX_STRING_LENGTH:
                    return _path(where), f"has a key longer than {MAX_STRING_LENGTH} characters"
                if not _encodable(key):
                    return _path(where), "has a key that is not valid Unicode"
                stack.append((child, depth + 1, (where, key)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, (where, i)) for i, child in enumerate(item))
        else:
            return _path(where), f"holds a {type(item).__name__}, which is not a JSON value"
    return None


_Where: TypeAlias = "tuple[_Where, str | int] | None"


def _path(where: _Where) -> str:
    """``.key`` and ``[index]`` from the outermost to ``where``."""
    parts = []
    while where is not None:
        where, key = where
        parts.append(f".{key}" if isinstance(key, str) else f"[{key}]")
    return "".join(reversed(parts))


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_hex(value: str) -> bool:
    return not value.strip("0123456789abcdef")
