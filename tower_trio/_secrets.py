"""Which configuration values are secret: the one rule every display of a value asks.

A secret is declared where its field is defined: ``secret()`` (for plugin
authors, ``tower_trio.plugin.secret()``) marks an attrs field, and
``is_secret`` reads the mark. Only a field that carries no mark at all, as in
a third-party plugin's ``Config`` written before marks existed, or a log
line's field, which is only a name, falls back to guessing from the name.
Logging, ``GET /plugins``, ``tower-trio config`` and the start-up secret list
all decide through ``is_secret``, so they cannot disagree.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["REDACTED", "SECRET", "is_secret", "secret"]

REDACTED = "***"
SECRET = "tower_trio.secret"
"""The attrs metadata key of the mark: True for a secret, False for a declared non-secret."""

# Words that make a name a secret. "key" alone is not one: routing keys and
# idempotency keys are what an operator greps for, and a key file is a path;
# but a name that ends in one (license_key, signing_key) is taken for a secret,
# as every unmarked plugin setting named so was before marks existed.
_SECRET_PARTS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "tokens",
        "credential",
        "credentials",
        "apikey",
        "authorization",
    }
)
_PUBLIC_KEYS = frozenset({"routing", "idempotency"})
"""Words before "key" that name a key which is not a secret."""


def secret(**field_options: Any) -> Any:
    """A ``Config`` field that holds a secret: ``api_key: str = secret()``.

    Its value is shown as ``***`` in ``GET /plugins`` and ``tower-trio
    config``, and replaced by ``***`` wherever it appears in a log line or
    in the plugin's error messages. Takes ``attrs.field``'s keyword
    arguments (``default=""``, ``validator=...``); the field is left out of
    the class's repr unless ``repr=True`` is given.
    """
    metadata = {**field_options.pop("metadata", {}), SECRET: True}
    field_options.setdefault("repr", False)
    return attrs.field(metadata=metadata, **field_options)


def is_secret(field: attrs.Attribute[Any] | str) -> bool:
    """Whether ``field`` holds a secret: its mark if it has one, else what its name says."""
    if isinstance(field, str):
        return _looks_secret(field)
    marked = field.metadata.get(SECRET)
    if marked is not None:
        return bool(marked)
    return _looks_secret(field.name)


def _looks_secret(name: str) -> bool:
    """The fallback guess for an unmarked name (password, token, API key …)."""
    parts = [part for part in re.split(r"[^a-z0-9]+", name.lower()) if part]
    if any(part in _SECRET_PARTS for part in parts):
        return True
    return len(parts) > 1 and parts[-1] == "key" and parts[-2] not in _PUBLIC_KEYS
