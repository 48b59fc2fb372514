"""Typed configuration from environment variables, for every attrs class that has some.

One loader builds the tower's ``Settings`` (``TOWER_*``), each plugin's
``Config`` (``PLUGIN_<NAME>_*``) and the test harness's configs, so that a
value is parsed, and a bad one reported, the same way wherever it is given.
A field is read from the variable named by its ``variable`` metadata, or
else the prefix and the field's name in upper case. Its ``parse`` metadata
(a function of the text) parses it, or else the field's type does, as the
environment converter structures it. A value that is not a string (the
harness takes Python values too) is used as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._errors import ConfigError
from ._serialization import structure_env_value

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._errors import TowerError

__all__ = ["environ_variable", "from_environ"]

_T = TypeVar("_T")


def environ_variable(prefix: str, field: attrs.Attribute[Any]) -> str:
    """The variable ``field`` is read from."""
    variable: str = field.metadata.get("variable") or prefix + field.name.upper()
    return variable


def from_environ(
    cls: type[_T],
    prefix: str,
    environ: Mapping[str, object],
    *,
    owner: str,
    error: type[TowerError] = ConfigError,
    missing: type[TowerError] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> _T:
    """An instance of the attrs class ``cls`` from the variables in ``environ``.

    ``owner`` ("the tower", "the folder plugin") is who needs the values, in
    messages. A bad value raises ``error`` naming the variable, the value and
    why; a required variable that is not set raises ``missing`` (default:
    ``error``). ``defaults`` replace the class's own for unset variables.
    """
    values: dict[str, Any] = {}
    # Any attrs class; a type variable cannot say so to the checker.
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        variable = environ_variable(prefix, field)
        raw = environ.get(variable)
        if raw is None:
            if defaults is not None and field.name in defaults:
                values[field.name] = defaults[field.name]
            elif field.default is attrs.NOTHING:
                raise (missing or error)(f"{variable} is not set; {owner} needs it ({field.name})")
            continue
        try:
            values[field.name] = _parse(field, raw)
        except (ValueError, TypeError) as err:
            reason = str(err)
            if reason.startswith("invalid literal"):
                # int()'s own words quote the value a second time.
                reason = "is not a number"
            raise error(f"{variable}={raw!r} is invalid: {reason}") from err
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise error(f"{owner}'s configuration is invalid: {err}") from err


def _parse(field: attrs.Attribute[Any], raw: object) -> Any:
    parse = field.metadata.get("parse")
    if not isinstance(raw, str):
        return raw
    if parse is not None:
        return parse(raw)
    return structure_env_value(raw, field.type)
