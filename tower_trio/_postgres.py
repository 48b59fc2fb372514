"""The journal in PostgreSQL: the same delivery records as SQLite, in a database server.

Chosen with a ``postgresql://`` ``TOWER_JOURNAL_URL``. psycopg is a blocking
driver, so ``PostgresJournal`` is kept like the SQLite journal: every write
uses one writer connection under the journal's writer lock, lookups use a
second connection beside it, and ``PostgresStorage`` runs each call in a
worker thread (``ThreadedStorage``). A connection that breaks (a restarted
server, a terminated backend) fails the call that finds it broken with
``JournalError`` and is opened again by the next call.

The schema (``_postgres_schema``) is created or brought up to date when the
journal opens. Appends take the row lock of ``journal_state`` first, so
seqs are handed out in commit order even if several towers write, and that
row keeps the highest seq ever stored, which pruning never lowers.

Several towers may share the journal: each row's ``owner`` is the tower
that stored it, ``pending`` hands out only this tower's, and
``PostgresMembership`` keeps this tower alive in ``instances`` (heartbeats on
a third connection) and takes over the pending rows of dead ones
(docs/replicas.md).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg.types.json import Jsonb

from ._config import default_instance
from ._errors import FencedError, JournalError
from ._postgres_schema import connect, migrate
from ._storage import (
    PRUNE_BATCH,
    Accepted,
    Duplicate,
    JournalRecord,
    Outgoing,
    PageQuery,
    Refused,
    Settlement,
    entry_values,
    new_outgoing,
    new_record,
    settlement_updates,
)
from ._threaded import ThreadedStorage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from ._journal_url import PostgresURL
    from ._storage import Entry

__all__ = [
    "DEFAULT_TTL",
    "UNCAPPED_ROOM",
    "PostgresJournal",
    "PostgresMembership",
    "PostgresStorage",
    "open_postgres_storage",
]

UNCAPPED_ROOM = 2**50
"""``room()`` without ``TOWER_JOURNAL_MAX_BYTES`` (1 PiB): PostgreSQL does not
tell a client how much disk it has left."""

_RECORD_COLUMNS = (
    "seq, uuid, api_version, protocol, source, body, status, created_at, "
    "published_at, attempts, last_error, retries, retried_at"
)
# A batch is one statement, not a pipeline of one per row: a pipeline cut
# off half-sent leaves its session "active", waiting for the rest, with the
# batch's locks held (the lease row under FOR SHARE), where no server
# timeout reaches it; between statements, idle_in_transaction_session_timeout
# does (see connect).
_INSERT = """
INSERT INTO triggers (uuid, api_version, protocol, source, body, created_at,
                      idem_key, fingerprint, owner)
SELECT uuid, api_version, protocol, source, body, created_at, idem_key, fingerprint, %s
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bytea[],
            %s::double precision[], %s::text[], %s::text[])
     WITH ORDINALITY AS batch (uuid, api_version, protocol, source, body, created_at,
                               idem_key, fingerprint, position)
ORDER BY position
RETURNING uuid, seq
"""
_SETTLE = """
UPDATE triggers
SET status = answer.status, attempts = answer.attempts, last_error = answer.last_error,
    published_at = COALESCE(answer.published_at, triggers.published_at),
    settled_at = answer.settled_at
FROM unnest(%s::text[], %s::integer[], %s::text[], %s::double precision[],
            %s::double precision[], %s::bigint[], %s::bigint[])
     AS answer (status, attempts, last_error, published_at, settled_at, first, last)
WHERE triggers.seq BETWEEN answer.first AND answer.last
"""
_OUTGOING_COLUMNS = "seq, uuid, api_version, protocol, source, body, created_at, attempts"
_REGISTER = (
    "INSERT INTO instances (name, expires_at) VALUES (%(me)s, now() + %(ttl)s * interval '1 s') "
    "ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at, started_at = now()"
)
# An instance's row is deleted by the first tower that finds it expired, in
# the transaction that takes its triggers over. A renewal waiting for that
# row's lock then finds it gone, so the instance learns it lapsed: a
# renewal and a takeover never both succeed.
_RENEW = (
    "UPDATE instances SET expires_at = now() + %(ttl)s * interval '1 s' "
    "WHERE name = %(me)s AND expires_at > now()"
)
_EXPIRE = "DELETE FROM instances WHERE expires_at <= now() RETURNING name"
_TAKE_OVER = f"""
WITH taken AS (
    SELECT seq, owner FROM triggers
    WHERE status = 'pending' AND owner IS DISTINCT FROM %(me)s
      -- The live names as one value, not a join: a row another tower took
      -- meanwhile is checked again with its new owner, which is live.
      AND (owner IS NULL OR owner <> ALL (ARRAY(
          SELECT name FROM instances WHERE expires_at > now()
      )))
    ORDER BY seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE triggers SET owner = %(me)s FROM taken WHERE triggers.seq = taken.seq
RETURNING {", ".join(f"triggers.{c}" for c in _OUTGOING_COLUMNS.split(", "))}, taken.owner
"""
DEFAULT_TTL = 10.0
"""Seconds an instance stays alive after a heartbeat (``TOWER_REPLICA_TTL``'s default)."""
# Newest first, with the running total of the bodies: the first row that
# would take the page past max_bytes comes back without its body, which
# ends the page, and none after it, so a page of large triggers never
# crosses the wire whole. The first row always keeps its body.
_PAGE = """
SELECT seq, uuid, api_version, protocol, source,
       CASE WHEN n = 1 OR running <= %(max_bytes)s THEN body END,
       status, created_at, published_at, attempts, last_error, retries, retried_at
FROM (
    SELECT {columns},
           row_number() OVER newest AS n,
           sum(octet_length(body)) OVER newest AS running
    FROM triggers {where}
    WINDOW newest AS (ORDER BY seq DESC)
    ORDER BY seq DESC
    LIMIT %(limit)s
) page
WHERE n <= 2 OR running - octet_length(body) <= %(max_bytes)s
ORDER BY seq DESC
"""
_NO_BYTE_BOUND = 2**62
# Inside the transaction that writes for a plugin: its lease is still held by
# this tower, in the term the write was made under. FOR SHARE keeps a
# successor from taking the lease until the write has committed, and a row
# changed while this waited for that lock is judged as changed.
# clock_timestamp(), not now(): the transaction may have waited for the
# journal's row lock since it began.
_FENCE = (
    "SELECT 1 FROM leases WHERE plugin = %(plugin)s AND term = %(term)s "
    "AND holder = %(holder)s "
    "AND expires_at > clock_timestamp() FOR SHARE"
)


class _Session:
    """One connection of the journal's, opened again by the call after it broke."""

    def __init__(self, url: PostgresURL, idle_in_transaction: float | None) -> None:
        self.url = url
        self.idle_in_transaction = idle_in_transaction
        self.lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._db is None or self._db.closed:
            self._db = connect(self.url, idle_in_transaction=self.idle_in_transaction)
        return self._db

    def forget_if_broken(self) -> None:
        if self._db is not None and (self._db.closed or self._db.broken):
            self._db.close()
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class PostgresJournal:
    """The journal in PostgreSQL. Blocking; see the module docstring."""

    def __init__(
        self,
        url: PostgresURL,
        *,
        instance: str,
        ttl: float = DEFAULT_TTL,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        idle_in_transaction: float | None = None,
    ) -> None:
        self.url = url
        self.instance = instance
        self.clock = clock
        self._max_bytes = max_bytes
        self._writer = _Session(url, idle_in_transaction)
        self._reader = _Session(url, idle_in_transaction)
        # Heartbeats have a connection of their own: they must not wait
        # behind a batch commit, nor pass for a sign of life while one hangs.
        self._beats = _Session(url, idle_in_transaction)
        try:
            with self._using(self._writer, "open") as db:
                migrate(db, url)
                # A member before its first trigger is stored, so that no one
                # takes over what it stores before its heartbeats begin.
                db.execute(_REGISTER, {"me": instance, "ttl": ttl})
        except BaseException:
            self.close()
            raise

    @property
    def location(self) -> str:
        return self.url.shown

    @contextmanager
    def _using(self, session: _Session, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """``session``'s connection, alone; a driver error becomes a ``JournalError``."""
        with session.lock:
            try:
                yield session.connection()
            except psycopg.Error as err:
                session.forget_if_broken()
                advice = ""
                if isinstance(err, psycopg.OperationalError):
                    advice = "; check that PostgreSQL is up and that TOWER_JOURNAL_URL names it"
                # libpq's messages span lines; a journal error is one line of a log.
                reason = " ".join(str(err).split()) or type(err).__name__
                raise JournalError(
                    f"cannot {doing} the journal {self.location}: {reason}{advice}"
                ) from err

    def close(self) -> None:
        with self._writer.lock, self._reader.lock, self._beats.lock:
            self._beats.close()
            self._reader.close()
            self._writer.close()

    # -- the publisher's side (writer connection) ------------------------------

    def append(self, entries: Sequence[Entry]) -> list[Accepted | Duplicate | Refused]:
        """Store a batch in one transaction; a known uuid or key is a Duplicate of the first.

        A plugin's trigger of a term that is over is refused alone: the rest
        of the batch (other plugins', HTTP's) is stored.
        """
        with self._using(self._writer, "write to") as db, db.transaction():
            db.execute("SELECT last_seq FROM journal_state FOR UPDATE")
            stale = {
                (plugin, term): reason
                for plugin, term in sorted(
                    {(t.metadata.source, t.term) for t, _, _, _ in entries if t.term is not None}
                )
                if (reason := self._stale(db, plugin, term, "trigger")) is not None
            }
            refused = {
                index: Refused(reason)
                for index, (trigger, _, _, _) in enumerate(entries)
                if trigger.term is not None
                and (reason := stale.get((trigger.metadata.source, trigger.term))) is not None
            }
            stored = self._insert(db, [e for i, e in enumerate(entries) if i not in refused])
        kept = iter(stored)
        return [refused[i] if i in refused else next(kept) for i in range(len(entries))]

    def _insert(
        self, db: psycopg.Connection[Any], entries: Sequence[Entry]
    ) -> list[Accepted | Duplicate]:
        """Store ``entries`` in the open transaction: new rows, or duplicates of stored ones."""
        if not entries:
            return []
        found = db.execute(
            f"SELECT {_RECORD_COLUMNS}, idem_key, fingerprint FROM triggers "
            "WHERE uuid = ANY(%s::text[]) OR idem_key = ANY(%s::text[])",
            (
                [trigger.uuid for trigger, _, _, _ in entries],
                [key for _, _, key, _ in entries if key is not None],
            ),
        ).fetchall()
        plan, fresh = _plan(entries, found)
        seqs: list[int] = []
        if fresh:
            rows = [entry_values(*entry) for entry in fresh]
            columns = [list(column) for column in zip(*rows, strict=True)]
            stored = dict(db.execute(_INSERT, [self.instance, *columns]).fetchall())
            # By uuid: RETURNING's order is not promised (the uuids are unique here).
            seqs = [stored[row[0]] for row in rows]
            db.execute("UPDATE journal_state SET last_seq = greatest(last_seq, %s)", (max(seqs),))
        results: list[Accepted | Duplicate] = []
        for step in plan:
            if isinstance(step, Duplicate):
                results.append(step)
            elif isinstance(step, int):
                results.append(Accepted(new_outgoing(seqs[step], entry_values(*fresh[step]))))
            else:
                first, same_request = step
                results.append(
                    Duplicate(new_record(seqs[first], entry_values(*fresh[first])), same_request)
                )
        return results

    def settle(self, settlements: Iterable[Settlement]) -> None:
        """Record the broker's answers (and retries); each run of alike answers is one UPDATE."""
        rows = settlement_updates(settlements)
        if not rows:
            return
        with self._using(self._writer, "write to") as db, db.transaction():
            db.execute(_SETTLE, [list(column) for column in zip(*rows, strict=True)])

    def retry(self, uuid: str) -> tuple[JournalRecord, Outgoing | None] | None:
        """Make a failed or unroutable trigger pending again; see ``Storage.retry``."""
        with self._using(self._writer, "write to") as db, db.transaction():
            # Published again by the tower that was asked to, whoever stored it.
            changed = db.execute(
                "UPDATE triggers SET status = 'pending', attempts = 0, settled_at = NULL, "
                "last_error = NULL, retries = retries + 1, retried_at = %s, owner = %s "
                "WHERE uuid = %s AND status IN ('failed', 'unroutable')",
                (self.clock(), self.instance, uuid),
            ).rowcount
            row = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM triggers WHERE uuid = %s", (uuid,)
            ).fetchone()
        if row is None:
            return None
        record = JournalRecord(*row)
        return record, (record.outgoing() if changed else None)

    def pending(self, after_seq: int, up_to_seq: int, limit: int) -> list[Outgoing]:
        with self._using(self._writer, "read") as db:
            rows = db.execute(
                f"SELECT {_OUTGOING_COLUMNS} FROM triggers WHERE status = 'pending' "
                "AND owner = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                (self.instance, after_seq, up_to_seq, limit),
            ).fetchall()
        return [Outgoing(*row) for row in rows]

    def pending_count(self) -> int:
        with self._using(self._writer, "read") as db:
            row = db.execute(
                "SELECT count(*) FROM triggers WHERE status = 'pending' AND owner = %s",
                (self.instance,),
            ).fetchone()
        return int(row[0]) if row else 0

    # -- membership (heartbeats on their own connection) ------------------------

    def heartbeat(self, ttl: float) -> bool:
        """Renew this instance for ``ttl`` s; False if it had lapsed (and is registered again)."""
        values = {"me": self.instance, "ttl": ttl}
        with self._using(self._beats, "renew the heartbeat in") as db:
            if db.execute(_RENEW, values).rowcount:
                return True
            db.execute(_REGISTER, values)
            return False

    def take_over(self, limit: int) -> list[tuple[Outgoing, str | None]]:
        """Own up to ``limit`` pending triggers of dead instances; each with its last owner."""
        with self._using(self._writer, "take over triggers in") as db, db.transaction():
            # Deleted first, under their row locks: see _RENEW.
            db.execute(_EXPIRE)
            rows = db.execute(_TAKE_OVER, {"me": self.instance, "limit": limit}).fetchall()
        rows.sort(key=lambda row: row[0])
        return [(Outgoing(*row[:-1]), row[-1]) for row in rows]

    def leave(self) -> None:
        """Delete this instance's heartbeat, so that others take its triggers over at once."""
        with self._using(self._beats, "leave") as db:
            db.execute("DELETE FROM instances WHERE name = %s", (self.instance,))

    def last_seq(self) -> int:
        with self._using(self._writer, "read") as db:
            row = db.execute("SELECT last_seq FROM journal_state").fetchone()
        return int(row[0]) if row else 0

    def prune_batch(self, cutoff: float, batch: int = PRUNE_BATCH) -> int:
        """Delete at most ``batch`` triggers settled before ``cutoff``, in one transaction."""
        with self._using(self._writer, "prune") as db, db.transaction():
            return db.execute(
                "DELETE FROM triggers WHERE seq IN (SELECT seq FROM triggers "
                "WHERE status <> 'pending' AND settled_at < %s LIMIT %s)",
                (cutoff, batch),
            ).rowcount

    def room(self) -> int:
        """Bytes left under ``TOWER_JOURNAL_MAX_BYTES``: the cap less the tables' size."""
        if self._max_bytes is None:
            return UNCAPPED_ROOM
        with self._using(self._writer, "measure") as db:
            row = db.execute(
                "SELECT pg_total_relation_size('triggers') + pg_total_relation_size('plugin_state')"
            ).fetchone()
        used = int(row[0]) if row else 0
        return max(0, self._max_bytes - used)

    # -- plugin state (writer connection) -------------------------------------

    def load_plugin_state(self, plugin: str) -> dict[str, Any]:
        with self._using(self._writer, "read") as db:
            rows = db.execute(
                "SELECT key, value FROM plugin_state WHERE plugin = %s", (plugin,)
            ).fetchall()
        return dict(rows)

    def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        with self._using(self._writer, "write to") as db, db.transaction():
            if term is not None:
                self._fence(db, plugin, term, f"state[{key!r}]")
            if value is None:
                db.execute("DELETE FROM plugin_state WHERE plugin = %s AND key = %s", (plugin, key))
            else:
                db.execute(
                    "INSERT INTO plugin_state (plugin, key, value) VALUES (%s, %s, %s) "
                    "ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                    (plugin, key, Jsonb(value)),
                )

    def _fence(self, db: psycopg.Connection[Any], plugin: str, term: int, what: str) -> None:
        """Raise ``FencedError`` unless ``term`` is the plugin's live term (held by us)."""
        if (reason := self._stale(db, plugin, term, what)) is not None:
            raise FencedError(reason)

    def _stale(self, db: psycopg.Connection[Any], plugin: str, term: int, what: str) -> str | None:
        """Why ``term`` is not the plugin's live term held by this tower, or None if it is."""
        held = db.execute(
            _FENCE, {"plugin": plugin, "term": term, "holder": self.instance}
        ).fetchone()
        if held is not None:
            return None
        return (
            f"refused the {what} of plugin {plugin!r} from leadership term {term}: "
            f"{self.instance} no longer holds that term of its lease "
            "(it expired, or another tower took it over); the plugin stops here and "
            "runs again only once this tower wins its lease back"
        )

    # -- lookups (reader connection) -------------------------------------------

    def get(self, uuid: str) -> JournalRecord | None:
        with self._using(self._reader, "read") as db:
            row = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM triggers WHERE uuid = %s", (uuid,)
            ).fetchone()
        return None if row is None else JournalRecord(*row)

    def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]:
        """Newest first, as ``query`` asks; also says whether more records may follow."""
        clauses: list[str] = []
        values: dict[str, Any] = {
            "limit": query.limit,
            "max_bytes": _NO_BYTE_BOUND if query.max_bytes is None else query.max_bytes,
        }
        for column, value in query.equal_to():
            clauses.append(f"{column} = %({column})s")
            values[column] = value
        if query.before is not None:
            clauses.append("seq < %(before)s")
            values["before"] = query.before
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._using(self._reader, "read") as db:
            rows = db.execute(_PAGE.format(columns=_RECORD_COLUMNS, where=where), values).fetchall()
        records = [JournalRecord(*row) for row in rows if row[5] is not None]
        return records, len(records) < len(rows) or len(records) == query.limit


_Step = Duplicate | int | tuple[int, bool]
"""What ``append`` does with one entry: answer a stored Duplicate, insert it
(its index among the fresh entries), or answer it as a copy of a fresh entry
(that index, and whether it is the same request)."""


def _plan(
    entries: Sequence[Entry], found: list[tuple[Any, ...]]
) -> tuple[list[_Step], list[Entry]]:
    """Sort a batch into duplicates of stored rows, fresh entries, and copies of those.

    A uuid is looked for first, then the idempotency key; either matches a
    stored row or an earlier entry of the same batch, as in SQLite.
    """
    stored_uuid = {row[1]: row for row in found}
    stored_key = {row[-2]: row for row in found if row[-2] is not None}
    batch_uuid: dict[str, int] = {}
    batch_key: dict[str, int] = {}
    plan: list[_Step] = []
    fresh: list[Entry] = []
    for entry in entries:
        trigger, _, key, fingerprint = entry
        if (row := stored_uuid.get(trigger.uuid)) is not None:
            plan.append(Duplicate(JournalRecord(*row[:-2]), same_request=True))
        elif (first := batch_uuid.get(trigger.uuid)) is not None:
            plan.append((first, True))
        elif key is not None and (row := stored_key.get(key)) is not None:
            plan.append(Duplicate(JournalRecord(*row[:-2]), same_request=row[-1] == fingerprint))
        elif key is not None and (first := batch_key.get(key)) is not None:
            plan.append((first, fresh[first][3] == fingerprint))
        else:
            batch_uuid[trigger.uuid] = len(fresh)
            if key is not None:
                batch_key[key] = len(fresh)
            plan.append(len(fresh))
            fresh.append(entry)
    return plan, fresh


class PostgresMembership:
    """``Membership`` on the PostgreSQL journal: heartbeats beside the writer, takeovers by it."""

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._beats = trio.CapacityLimiter(1)

    @property
    def instance(self) -> str:
        return self._storage.journal.instance

    async def heartbeat(self, ttl: float) -> bool:
        return await trio.to_thread.run_sync(
            self._storage.journal.heartbeat, ttl, limiter=self._beats
        )

    async def take_over(self, limit: int) -> list[tuple[Outgoing, str | None]]:
        # A write like any other: it takes its turn with appends and answers.
        return await self._storage.run_write(self._storage.journal.take_over, limit)

    async def leave(self) -> None:
        await trio.to_thread.run_sync(self._storage.journal.leave, limiter=self._beats)


class PostgresStorage(ThreadedStorage[PostgresJournal]):
    """The tower's ``Storage`` on the PostgreSQL journal, shared by several towers."""

    def __init__(self, journal: PostgresJournal) -> None:
        super().__init__(journal)
        self._membership = PostgresMembership(self)

    @property
    def membership(self) -> PostgresMembership:
        return self._membership


async def open_postgres_storage(
    url: PostgresURL,
    *,
    instance: str | None = None,
    ttl: float = DEFAULT_TTL,
    max_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
    idle_in_transaction: float | None = None,
) -> PostgresStorage:
    """The journal in the database ``url`` names, its schema brought up to date.

    ``instance`` names this tower among those sharing the journal
    (``TOWER_INSTANCE``; by default the host name and process id), alive for
    ``ttl`` seconds from now, until its heartbeats begin. A session cut off
    inside a transaction is ended by the server after ``idle_in_transaction``
    seconds (see ``connect``).
    """
    name = default_instance() if instance is None else instance
    journal = await trio.to_thread.run_sync(
        lambda: PostgresJournal(
            url,
            instance=name,
            ttl=ttl,
            max_bytes=max_bytes,
            clock=clock,
            idle_in_transaction=idle_in_transaction,
        )
    )
    return PostgresStorage(journal)
