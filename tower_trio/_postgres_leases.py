"""Plugin leases in PostgreSQL: the ``leases`` table of the journal's schema.

Each statement judges expiry by the database's clock (``now()``), never by a
tower's, so towers whose clocks disagree still agree on who leads. Lease
calls use connections of their own, not the journal's writer: a renewal
must not wait behind a large batch of triggers. Every call has a deadline;
one that does not answer in time (a cut network holds a query for minutes)
is abandoned with its connection, and the next call opens another.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import psycopg
import trio

from ._errors import JournalError
from ._leases import Leader
from ._postgres_schema import connect

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._journal_url import PostgresURL

__all__ = ["PostgresLeases"]

# Free or expired: a new term, for us. Ours and live: the same term, later
# expiry. Someone else's and live: untouched (no row comes back).
_CAMPAIGN = """
INSERT INTO leases AS held (plugin, holder, term, expires_at)
VALUES (%(plugin)s, %(holder)s, 1, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (plugin) DO UPDATE
SET term = CASE WHEN held.holder = excluded.holder AND held.expires_at > now()
                THEN held.term ELSE held.term + 1 END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
WHERE held.holder = excluded.holder OR held.expires_at <= now()
RETURNING holder, term
"""
_HOLDER = "SELECT holder, term FROM leases WHERE plugin = %s AND expires_at > now()"
# Expired at once, never deleted: the next holder's term is one more.
_RELEASE = (
    "UPDATE leases SET expires_at = now() "
    "WHERE plugin = %s AND holder = %s AND term = %s AND expires_at > now()"
)


class PostgresLeases:
    """``Leases`` in the journal's database; see the module docstring."""

    shared = True

    def __init__(self, url: PostgresURL, instance: str, *, timeout: float) -> None:
        self.url = url
        self.instance = instance
        self.timeout = timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    async def campaign(self, plugin: str, ttl: float) -> Leader | None:
        def campaign(db: psycopg.Connection[Any]) -> Leader | None:
            row = db.execute(
                _CAMPAIGN, {"plugin": plugin, "holder": self.instance, "ttl": ttl}
            ).fetchone()
            if row is None:
                row = db.execute(_HOLDER, (plugin,)).fetchone()
            return None if row is None else Leader(row[0], int(row[1]))

        leader: Leader | None = await self._call(
            f"campaign for the lease of plugin {plugin!r}", campaign
        )
        return leader

    async def release(self, plugin: str, term: int) -> None:
        def release(db: psycopg.Connection[Any]) -> None:
            db.execute(_RELEASE, (plugin, self.instance, term))

        await self._call(f"release the lease of plugin {plugin!r}", release)

    async def _call(self, doing: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with trio.move_on_after(self.timeout) as waited:
            return await trio.to_thread.run_sync(self._run, doing, work, abandon_on_cancel=True)
        # Its thread goes on until the driver gives up, then closes its connection.
        assert waited.cancelled_caught
        raise JournalError(
            f"cannot {doing} in the journal {self.url.shown}: no answer within "
            f"{self.timeout:g}s; check the network to PostgreSQL"
        )

    def _run(self, doing: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            db = self._idle.pop() if self._idle else None
        try:
            if db is None:
                db = connect(self.url)
            result = work(db)
        except psycopg.Error as err:
            if db is not None:
                db.close()
            reason = " ".join(str(err).split()) or type(err).__name__
            raise JournalError(
                f"cannot {doing} in the journal {self.url.shown}: {reason}; "
                "check that PostgreSQL is up and that TOWER_JOURNAL_URL names it"
            ) from err
        with self._lock:
            if self._closed:
                db.close()
            else:
                self._idle.append(db)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()
