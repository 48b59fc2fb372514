"""Protocol schemas: what each device accepts, checked before a trigger can reach it.

An operator drops JSON Schemas into ``TOWER_SCHEMAS_DIR`` as
``<api>/<version>/<Protocol>.json``. A trigger whose apiVersion (without
its device suffix) and protocol have a schema must match it: its ``spec``,
or each well's spec for a plate. The schemas are read and checked once, at
start-up; a broken one stops the tower with its file named, rather than
letting every trigger for that protocol through (or none).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import referencing
import referencing.exceptions
import referencing.jsonschema
import trio

from ._errors import ConfigError
from ._logging import get_logger
from ._models import FieldError, Trigger
from ._serialization import dumps
from ._vocabulary import API_NAME, API_VERSION_NUMBER, PROTOCOL

if TYPE_CHECKING:
    from ._config import Settings

__all__ = ["ProtocolSchema", "ProtocolSchemas", "load_schemas", "read_schemas"]

_log = get_logger(__name__)

MAX_REPORTED_ERRORS = 50
MAX_MESSAGE_LENGTH = 300
_API = re.compile(API_NAME)
_VERSION = re.compile(API_VERSION_NUMBER)
_PROTOCOL = re.compile(PROTOCOL)
_LAYOUT = "<api>/<version>/<Protocol>.json, like OT-2/v1alpha1/PlateTransfer.json"


def base_api_version(api_version: str) -> str:
    """``OT-2/v1alpha1`` from ``OT-2/v1alpha1`` or ``OT-2/v1alpha1/robot-3``."""
    return "/".join(api_version.split("/")[:2])


@attrs.frozen
class ProtocolSchema:
    """One protocol's schema, compiled once."""

    api_version: str
    protocol: str
    schema: Any
    path: Path
    validator: jsonschema.protocols.Validator = attrs.field(eq=False, repr=False)

    def errors(self, instance: Any, prefix: str) -> Iterable[FieldError]:
        for error in self.validator.iter_errors(instance):
            yield FieldError(prefix + _pointer(error.absolute_path), _shorten(error.message))


@attrs.frozen
class ProtocolSchemas:
    """The schemas known to the tower; ``check`` says what a trigger breaks."""

    by_key: Mapping[tuple[str, str], ProtocolSchema] = attrs.field(factory=dict)
    strict: bool = False
    listing: bytes = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        protocols = [
            {"apiVersion": s.api_version, "protocol": s.protocol, "schema": s.schema}
            for _, s in sorted(self.by_key.items())
        ]
        object.__setattr__(self, "listing", dumps({"strict": self.strict, "protocols": protocols}))

    def __len__(self) -> int:
        return len(self.by_key)

    def check(self, trigger: Trigger) -> list[FieldError]:
        """Every way ``trigger`` breaks its protocol's schema (or strictness); empty if none."""
        if not self.by_key and not self.strict:
            return []
        api_version = base_api_version(trigger.api_version)
        schema = self.by_key.get((api_version, trigger.protocol))
        if schema is None:
            if not self.strict:
                return []
            return [
                FieldError(
                    "protocol",
                    f"has no schema for {api_version}, and TOWER_SCHEMAS_STRICT=true accepts "
                    "only the protocols listed by GET /protocols",
                )
            ]
        if trigger.plate is None:
            found: Iterable[FieldError] = schema.errors(trigger.spec, "spec")
        else:
            spec = trigger.spec
            assert isinstance(spec, list)
            found = (
                error
                for index, well in enumerate(spec)
                for error in schema.errors(well, f"spec[{index}]")
            )
        try:
            return _bounded(found)
        except referencing.exceptions.Unresolvable as err:
            # Refs are checked at start-up; this is a bug of ours, not the caller's.
            _log.error("schema.unresolvable", schema=str(schema.path), error=str(err))
            return [FieldError("spec", f"cannot be checked against {schema.path.name}: {err}")]


def _bounded(errors: Iterable[FieldError]) -> list[FieldError]:
    # A 1536-well plate can break a schema 1536 times; the first few say enough.
    reported: list[FieldError] = []
    more = 0
    for error in errors:
        if len(reported) < MAX_REPORTED_ERRORS:
            reported.append(error)
        else:
            more += 1
    if more:
        reported.append(FieldError("spec", f"and {more} more schema errors not shown"))
    return reported


def _pointer(path: Iterable[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _shorten(message: str) -> str:
    # jsonschema quotes the offending value, which may be megabytes long.
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 1] + "…"


async def read_schemas(settings: Settings) -> ProtocolSchemas:
    """The schemas of ``TOWER_SCHEMAS_DIR``, read in a worker thread."""
    return await trio.to_thread.run_sync(
        partial(load_schemas, settings.schemas_dir, strict=settings.schemas_strict)
    )


def load_schemas(directory: Path | None, *, strict: bool = False) -> ProtocolSchemas:
    """Read and check every schema under ``directory``; blocking, so call it in a thread.

    Raises ``ConfigError`` naming the file for anything that is not a valid,
    self-contained JSON Schema at its expected place.
    """
    if directory is None:
        if strict:
            raise ConfigError(
                "TOWER_SCHEMAS_STRICT=true needs TOWER_SCHEMAS_DIR: without schemas "
                "every trigger would be refused"
            )
        return ProtocolSchemas(strict=strict)
    if not directory.is_dir():
        raise ConfigError(f"TOWER_SCHEMAS_DIR={directory} is not a directory")
    schemas = {}
    for path in sorted(directory.rglob("*.json")):
        schema = _load_one(directory, path)
        schemas[(schema.api_version, schema.protocol)] = schema
    _log.info("schemas.loaded", directory=str(directory), count=len(schemas), strict=strict)
    return ProtocolSchemas(schemas, strict=strict)


def _load_one(directory: Path, path: Path) -> ProtocolSchema:
    parts = path.relative_to(directory).parts
    if not (
        len(parts) == 3
        and _API.fullmatch(parts[0])
        and _VERSION.fullmatch(parts[1])
        and _PROTOCOL.fullmatch(path.stem)
    ):
        raise ConfigError(f"schema {path} is not where a schema goes: use {_LAYOUT}")
    try:
        schema = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"schema {path} cannot be read as JSON: {err}") from None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        where = _pointer(err.absolute_path) or "the top level"
        raise ConfigError(
            f"schema {path} is not a valid JSON Schema: {_shorten(err.message)} (at {where})"
        ) from None
    _check_refs(path, schema)
    return ProtocolSchema(
        api_version=f"{parts[0]}/{parts[1]}",
        protocol=path.stem,
        schema=schema,
        path=path,
        validator=cls(schema),
    )


def _check_refs(path: Path, schema: object) -> None:
    """Every ``$ref`` must point inside the file: the tower never fetches schemas."""
    if not isinstance(schema, Mapping):
        return
    resource = referencing.Resource.from_contents(
        schema, default_specification=referencing.jsonschema.DRAFT202012
    )
    resolver = referencing.Registry().with_resource("", resource).resolver(base_uri="")
    stack: list[object] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            ref = item.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith("#"):
                    raise ConfigError(
                        f"schema {path} refers to {ref!r}; schemas must be self-contained "
                        "(put shared parts under $defs and use '#/$defs/...')"
                    )
                try:
                    resolver.lookup(ref)
                except referencing.exceptions.Unresolvable:
                    raise ConfigError(
                        f"schema {path} refers to {ref!r}, which does not exist in the file"
                    ) from None
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
