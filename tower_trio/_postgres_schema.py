"""The PostgreSQL journal's tables, and the migrations that bring a database up to date.

``schema_version`` holds one row per migration applied. ``migrate`` runs at
every start, inside one transaction that first takes a transaction-level
advisory lock: towers starting at once against one database migrate one
after the other, and the later ones find nothing left to do. A database
written by a newer tower-trio is refused rather than guessed at.

A later migration adds what several towers sharing the database need
(leases, a term column on the rows each leader writes) as a new entry at
the end of ``_MIGRATIONS``; entries are never edited once released.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ._errors import JournalError

if TYPE_CHECKING:
    from ._journal_url import PostgresURL

__all__ = ["SCHEMA_VERSION", "connect", "migrate"]

_MIGRATION_LOCK = 0x746F776572
"""The advisory lock key of migrations, one per database ("tower" in ASCII)."""
CONNECT_TIMEOUT = 10
"""Seconds to wait for a connection, unless the URL says (``connect_timeout``)."""

_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# Times are seconds since the epoch (double precision), as the SQLite journal
# and the Storage interface keep them: a stored time reads back exactly.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the journal as SQLite's schema version 2 has it.
    (
        """
        CREATE TABLE triggers (
            seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            uuid         text NOT NULL UNIQUE,
            api_version  text NOT NULL,
            protocol     text NOT NULL,
            source       text NOT NULL,
            body         bytea NOT NULL,
            status       text NOT NULL DEFAULT 'pending',
            created_at   double precision NOT NULL,
            published_at double precision,
            settled_at   double precision,
            attempts     integer NOT NULL DEFAULT 0,
            last_error   text,
            idem_key     text UNIQUE,
            fingerprint  text,
            retries      integer NOT NULL DEFAULT 0,
            retried_at   double precision
        )
        """,
        "CREATE INDEX triggers_pending ON triggers (seq) WHERE status = 'pending'",
        "CREATE INDEX triggers_settled ON triggers (settled_at) WHERE status <> 'pending'",
        # What GET /triggers filters by, newest first.
        "CREATE INDEX triggers_status ON triggers (status, seq DESC)",
        "CREATE INDEX triggers_api_version ON triggers (api_version, seq DESC)",
        "CREATE INDEX triggers_protocol ON triggers (protocol, seq DESC)",
        "CREATE INDEX triggers_source ON triggers (source, seq DESC)",
        """
        CREATE TABLE plugin_state (
            plugin text NOT NULL,
            key    text NOT NULL,
            value  jsonb NOT NULL,
            PRIMARY KEY (plugin, key)
        )
        """,
        # One row: the highest seq ever stored, which pruning never lowers, and
        # whose row lock orders the appends of every tower.
        """
        CREATE TABLE journal_state (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            last_seq bigint NOT NULL
        )
        """,
        "INSERT INTO journal_state (last_seq) VALUES (0)",
    ),
    # 2: several towers on one journal. Each trigger is published by its
    # owner, the tower that stored it (NULL: stored before this migration,
    # taken over by the first live tower); each tower keeps its row in
    # instances alive, and a tower whose row expired loses its pending
    # triggers to the others (docs/replicas.md).
    (
        "ALTER TABLE triggers ADD COLUMN owner text",
        "DROP INDEX triggers_pending",
        "CREATE INDEX triggers_pending ON triggers (owner, seq) WHERE status = 'pending'",
        """
        CREATE TABLE instances (
            name       text PRIMARY KEY,
            expires_at timestamptz NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now()
        )
        """,
    ),
    # 3: one lease per plugin, for towers sharing the journal (tower_trio._postgres_leases).
    # A row is never deleted, so a plugin's term only grows; expires_at is set by
    # the database's clock, the only one every tower reads alike.
    (
        """
        CREATE TABLE leases (
            plugin     text PRIMARY KEY,
            holder     text NOT NULL,
            term       bigint NOT NULL CHECK (term > 0),
            expires_at timestamptz NOT NULL
        )
        """,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


_IDLE_SETTING = "idle_in_transaction_session_timeout"


def connect(
    url: PostgresURL, *, idle_in_transaction: float | None = None
) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (transactions are explicit), in the URL's schema.

    With ``idle_in_transaction`` (seconds), the server ends the session when
    it has sat that long inside a transaction: the tower sends a
    transaction's statements back to back, so that happens only when the
    tower was cut off in the middle of one. Until then the transaction's
    row locks stay, and another tower's takeover of a lease or of triggers
    would wait for them as long as TCP takes to notice (hours). A URL that
    sets ``idle_in_transaction_session_timeout`` itself keeps its own.
    """
    options: dict[str, Any] = {}
    given = conninfo_to_dict(url.conninfo)
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in given:
        options["application_name"] = "tower-trio"
    db = psycopg.connect(url.conninfo, autocommit=True, **options)
    try:
        if url.schema is not None:
            db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(url.schema)))
        if idle_in_transaction is not None and _IDLE_SETTING not in str(given.get("options", "")):
            milliseconds = f"{max(1, round(idle_in_transaction * 1000))}ms"
            db.execute("SELECT set_config(%s, %s, false)", (_IDLE_SETTING, milliseconds))
    except BaseException:
        db.close()
        raise
    return db


def migrate(db: psycopg.Connection[Any], url: PostgresURL) -> None:
    """Create the schema and its tables, or bring them up to this version's."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        if url.schema is not None:
            db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(url.schema)))
        db.execute(_VERSIONS)
        row = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {url.shown} was written by a newer tower-trio (schema version "
                f"{version}, this one knows {SCHEMA_VERSION}); run that version, or point "
                "TOWER_JOURNAL_URL elsewhere"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (step + 1,))
