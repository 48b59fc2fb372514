"""``TOWER_JOURNAL_URL``: which store keeps the journal, read without opening it.

Unset, the journal is the SQLite file ``journal.sqlite3`` in
``TOWER_DATA_DIR``. A file path (or ``sqlite://`` and a path) names another
SQLite file; a ``postgresql://`` or ``postgres://`` URL names a PostgreSQL
database, with the tower's own ``schema`` parameter for a schema of its own.
The URL's password is kept apart from what is shown: ``PostgresURL`` prints
as the URL without it, and no message here quotes the value.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import attrs

from ._errors import ConfigError

__all__ = ["POSTGRES_EXTRA", "PostgresURL", "parse_journal_url"]

VARIABLE = "TOWER_JOURNAL_URL"
POSTGRES_EXTRA = "pip install tower-trio[postgres]"
"""How to install the PostgreSQL driver, for every message that needs it."""

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
_SCHEMA_PARAMETER = "schema"
# Lower case only: PostgreSQL folds unquoted names to lower case, so the
# schema an operator types in psql is the one the tower uses.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_EXAMPLE = "postgresql://user:password@host:5432/database"
_ENCODE = "percent-encode an @, /, ? or # in the user name or password (%40, %2F, %3F, %23)"
_QUOTED = re.compile(r"([\"'])(.*?)\1")


@attrs.frozen
class PostgresURL:
    """A PostgreSQL database to keep the journal in; prints without its password."""

    conninfo: str = attrs.field(repr=False)
    """The URL for libpq: as given, less the tower's own ``schema`` parameter."""
    schema: str | None
    """The schema the tables live in, created if missing; None: the user's search_path."""
    shown: str
    """The URL without its password, for logs and the start-up summary."""
    password: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        return self.shown


def parse_journal_url(raw: str) -> Path | PostgresURL | None:
    """The SQLite file or PostgreSQL database ``raw`` names; None when it is empty."""
    text = raw.strip()
    if not text:
        return None
    scheme, separator, rest = text.partition("://")
    if not separator:
        return Path(text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest:
            raise ValueError("a sqlite:// URL needs the path of the file after it")
        return Path(rest)
    if scheme not in _POSTGRES_SCHEMES:
        # The value is not quoted: a URL of another kind may hold a password too.
        raise ConfigError(
            f"{VARIABLE} has the scheme {scheme!r}; use {_EXAMPLE} (or postgres://) for "
            "PostgreSQL, or the path of a SQLite file"
        )
    return _postgres(text)


def _postgres(text: str) -> PostgresURL:
    # Where a password holds a character that ends the host part, the rest of
    # it lands in the port or the path; it must not be shown from there.
    try:
        split = urlsplit(text)
        if "," not in split.netloc:
            _ = split.port  # a port that is not a number raises here
    except ValueError:
        raise _invalid(f"the port is not a number; {_ENCODE}") from None
    # libpq ends the user name and password at the first @, Python at the last.
    if split.netloc.count("@") > 1 or "@" in text[len(split.scheme) + 3 + len(split.netloc) :]:
        raise _invalid(f"it has an @ that does not end the user name and password; {_ENCODE}")
    password = None if split.password is None else unquote(split.password)
    query = parse_qsl(split.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == _SCHEMA_PARAMETER]
    if len(schemas) > 1:
        raise _invalid("it gives the schema parameter more than once")
    schema = schemas[0] if schemas else None
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise _invalid(
            f"schema={schema!r} is not a schema name: lower-case letters, digits and _, "
            "63 at most, not starting with a digit"
        )
    passed = [(name, value) for name, value in query if name != _SCHEMA_PARAMETER]
    password = password or next((v for n, v in passed if n == "password"), None)
    conninfo = urlunsplit(split._replace(query=urlencode(passed, quote_via=quote)))
    _check_with_libpq(conninfo, {name for name, _ in query})
    netloc = split.netloc.rpartition("@")[2]
    if split.username is not None:
        netloc = f"{split.username}@{netloc}"
    shown_query = [(n, v) for n, v in query if n != "password"]
    shown = urlunsplit(split._replace(netloc=netloc, query=urlencode(shown_query, quote_via=quote)))
    return PostgresURL(conninfo, schema, shown, password)


def _check_with_libpq(conninfo: str, parameters: set[str]) -> None:
    """Let libpq parse the URL now, so that a bad one stops the start, not the first write.

    Its message quotes what it could not read; only the names of URL
    parameters are kept, anything else quoted might be part of a password.
    """
    try:
        # Imported here: psycopg is an optional dependency.
        import psycopg  # noqa: PLC0415
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            f"{VARIABLE} names a PostgreSQL database, but its driver (psycopg) is not "
            f"installed; {POSTGRES_EXTRA}"
        ) from None
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as err:
        reason = _QUOTED.sub(
            lambda quoted: quoted[0] if quoted[2] in parameters else "(not shown)",
            " ".join(str(err).split()),
        )
        raise _invalid(reason) from None


def _invalid(reason: str) -> ConfigError:
    return ConfigError(
        f"{VARIABLE} is not a valid PostgreSQL URL (its value is not shown, as it may hold "
        f"a password): {reason}; it must look like {_EXAMPLE}"
    )
