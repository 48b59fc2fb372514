"""The local PostgreSQL in tests: a schema of its own for each test, dropped afterwards.

``TOWER_TEST_POSTGRES_URL`` names the database (default: the local server's
``test`` database, trust authentication). A test works in a schema with a
unique name, created by the journal it opens and dropped with everything in
it when the test ends, whether it passed or not.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg import sql

from tower_trio._journal_url import PostgresURL, parse_journal_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import LiteralString

__all__ = ["POSTGRES_URL", "admin", "open_schema", "schema_url"]

POSTGRES_URL = os.environ.get(
    "TOWER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def schema_url(schema: str, **parameters: str) -> str:
    """``POSTGRES_URL`` in ``schema``, with more URL parameters."""
    query = "&".join(f"{name}={value}" for name, value in {"schema": schema, **parameters}.items())
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}{query}"


def admin(statement: sql.Composed | LiteralString, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (blocking); the rows it returned."""
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10) as db:
        cursor = db.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


@asynccontextmanager
async def open_schema(prefix: str = "tower_test") -> AsyncIterator[PostgresURL]:
    """A URL in a schema no one else uses, dropped (with its tables) on the way out."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = parse_journal_url(schema_url(name))
    assert isinstance(url, PostgresURL)
    try:
        yield url
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(30):
            await trio.to_thread.run_sync(
                admin, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )
