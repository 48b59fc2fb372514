"""The journal: every trigger on disk before it is published.

One SQLite database in WAL mode under ``TOWER_DATA_DIR``. Every write goes
through one writer connection, and every use of that connection holds the
journal's writer lock, whoever calls (the publisher's batches and broker
answers, plugins saving their state): two writers can never interleave
their transactions. HTTP lookups read through a second connection, which
WAL lets run beside the writer. Every method of ``Journal`` blocks;
``SQLiteStorage`` is the tower's ``Storage`` on it (``ThreadedStorage``:
each call in a worker thread, writes one at a time in the order they were
called).

A trigger's row is its delivery record: ``pending`` until the broker
confirms it, then ``published``, ``unroutable`` or ``failed``. Rows that
are settled are pruned after the retention period; pending rows never are.

One concept, kept whole although past 400 lines: the SQLite journal (its
schema and transactions) and the ``Storage`` it backs.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import trio

from ._errors import JournalError
from ._storage import (
    PRUNE_BATCH,
    Accepted,
    Duplicate,
    JournalRecord,
    Outgoing,
    PageQuery,
    Settlement,
    entry_values,
    new_outgoing,
    settlement_updates,
)
from ._threaded import ThreadedStorage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from ._storage import Entry

__all__ = ["PRUNE_BATCH", "Journal", "SQLiteStorage", "open_journal", "open_storage"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

SCHEMA_VERSION = 2
# triggers_pending, a partial index on seq for pending rows, came before
# triggers_status, which serves the same reads (status, then seq); it cost
# an index insert and delete per trigger, a fifth of the journal's CPU.
# Dropping it on every open keeps the schema version: a release that still
# has it makes it again, and either works with or without it.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid         TEXT NOT NULL UNIQUE,
    api_version  TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    source       TEXT NOT NULL,
    body         BLOB NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    created_at   REAL NOT NULL,
    published_at REAL,
    settled_at   REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    idem_key     TEXT UNIQUE,
    fingerprint  TEXT,
    retries      INTEGER NOT NULL DEFAULT 0,
    retried_at   REAL
);
CREATE INDEX IF NOT EXISTS triggers_status ON triggers (status, seq);
DROP INDEX IF EXISTS triggers_pending;
CREATE INDEX IF NOT EXISTS triggers_settled ON triggers (settled_at) WHERE status != 'pending';
CREATE TABLE IF NOT EXISTS plugin_state (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (plugin, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

_MIGRATIONS = {
    # Version 1 had no retries: the columns are added with what a trigger
    # never retried has.
    1: (
        "ALTER TABLE triggers ADD COLUMN retries INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE triggers ADD COLUMN retried_at REAL",
    ),
}

FILE_NAME = "journal.sqlite3"


_RECORD_COLUMNS = (
    "seq, uuid, api_version, protocol, source, body, status, created_at, "
    "published_at, attempts, last_error, retries, retried_at"
)


def _writes(
    method: Callable[Concatenate[Journal, _P], _T],
) -> Callable[Concatenate[Journal, _P], _T]:
    """Run a method that uses the writer connection under the writer lock."""

    @functools.wraps(method)
    def locked(journal: Journal, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with journal._writer_lock:
            return method(journal, *args, **kwargs)

    return locked


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}{'?mode=ro' if readonly else ''}"
    connection = sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10
    )
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


class Journal:
    """The SQLite journal. Blocking; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.clock = clock
        self._writer_lock = threading.Lock()
        self._max_bytes = max_bytes
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = _connect(path, readonly=False)
            (mode,) = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                # Without WAL, lookups would block the writer and a crash could
                # lose what a 202 promised; some file systems cannot do WAL.
                raise JournalError(
                    f"cannot open the journal {path} in WAL mode (SQLite chose {mode!r}); "
                    "put TOWER_DATA_DIR on a local file system"
                )
            # FULL: a 202 promises the trigger survives a power cut, not just a crash.
            self._writer.execute("PRAGMA synchronous = FULL")
            try:
                self._migrate()
            except JournalError:
                self._writer.close()
                raise
            if max_bytes is not None:
                (page_size,) = self._writer.execute("PRAGMA page_size").fetchone()
                self._writer.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
            self._reader = _connect(path, readonly=True)
        except JournalError:
            raise
        except (OSError, sqlite3.Error) as err:
            raise JournalError(
                f"cannot open the journal {path}: {err}; TOWER_DATA_DIR must be a "
                "writable directory"
            ) from err

    def _migrate(self) -> None:
        db = self._writer
        with self._transaction():
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            version = SCHEMA_VERSION
            if exists:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = int(row[0]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal {self.path} was written by a newer tower-trio (schema "
                    f"version {version}, this one knows {SCHEMA_VERSION}); run that version, "
                    "or point TOWER_DATA_DIR (or TOWER_JOURNAL_URL) elsewhere"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    @property
    def location(self) -> str:
        return str(self.path)

    @_writes
    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    # -- the publisher's side (writer connection) ------------------------------

    @_writes
    def append(self, entries: Sequence[Entry]) -> list[Accepted | Duplicate]:
        """Store a batch of (trigger, body, idempotency key, fingerprint) in one transaction.

        A trigger whose key, or uuid, is already stored comes back as a
        Duplicate of the first; the rest are Accepted.
        """
        try:
            try:
                with self._transaction():
                    return self._insert_batch(entries)
            except (_RepeatedKey, sqlite3.IntegrityError):
                # A uuid or key repeated within the batch or already stored: go
                # row by row, in one transaction still, to tell each one apart.
                with self._transaction():
                    return [self._insert_checked(entry) for entry in entries]
        except sqlite3.Error as err:
            raise JournalError(f"cannot write to the journal {self.path}: {err}") from err

    def _insert_batch(self, entries: Sequence[Entry]) -> list[Accepted | Duplicate]:
        db = self._writer
        results: list[Accepted | Duplicate | None] = []
        rows: list[tuple[Any, ...]] = []
        fresh: list[int] = []
        keys: set[str] = set()
        for trigger, body, key, fingerprint in entries:
            if key is not None:
                if key in keys:
                    raise _RepeatedKey
                keys.add(key)
                if duplicate := self._first_with(key, fingerprint):
                    results.append(duplicate)
                    continue
            fresh.append(len(results))
            results.append(None)
            rows.append(entry_values(trigger, body, key, fingerprint))
        # One executemany instead of a statement per trigger (a repeated uuid
        # fails it with an IntegrityError). With AUTOINCREMENT and the write
        # lock held (BEGIN IMMEDIATE), the rows get consecutive seqs ending at
        # the last one.
        db.executemany(_INSERT, rows)
        (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
        first = last - len(fresh) + 1
        for offset, (index, row) in enumerate(zip(fresh, rows, strict=True)):
            results[index] = _accepted(first + offset, row)
        return [result for result in results if result is not None]

    def _insert_checked(self, entry: Entry) -> Accepted | Duplicate:
        trigger, body, key, fingerprint = entry
        stored = self._writer.execute(
            f"SELECT {_RECORD_COLUMNS} FROM triggers WHERE uuid = ?", (trigger.uuid,)
        ).fetchone()
        if stored is not None:
            # The very same trigger sent again (a plugin re-sending an object):
            # the first one stands, nothing new is stored.
            return Duplicate(JournalRecord(*stored), same_request=True)
        if key is not None and (duplicate := self._first_with(key, fingerprint)):
            return duplicate
        row = entry_values(trigger, body, key, fingerprint)
        cursor = self._writer.execute(_INSERT, row)
        assert cursor.lastrowid is not None  # set by every INSERT
        return _accepted(cursor.lastrowid, row)

    def _first_with(self, key: str, fingerprint: str | None) -> Duplicate | None:
        row = self._writer.execute(
            f"SELECT {_RECORD_COLUMNS}, fingerprint FROM triggers WHERE idem_key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return Duplicate(JournalRecord(*row[:-1]), same_request=row[-1] == fingerprint)

    @_writes
    def settle(self, settlements: Iterable[Settlement]) -> None:
        """Record the broker's answers (and retries) for a batch of triggers.

        Each run of consecutive answers alike becomes one ranged UPDATE; a
        run's time is its latest answer's.
        """
        rows = settlement_updates(settlements)
        try:
            with self._transaction():
                self._writer.executemany(
                    "UPDATE triggers SET status = ?, attempts = ?, last_error = ?, "
                    "published_at = COALESCE(?, published_at), settled_at = ? "
                    "WHERE seq BETWEEN ? AND ?",
                    rows,
                )
        except sqlite3.Error as err:
            raise JournalError(f"cannot write to the journal {self.path}: {err}") from err

    @_writes
    def retry(self, uuid: str) -> tuple[JournalRecord, Outgoing | None] | None:
        """Make a failed or unroutable trigger pending again; None if there is no such trigger.

        Returns the trigger's record after the call, and what to publish
        when it changed (None when it was not failed or unroutable, so a
        repeated call queues nothing twice). The attempts start again from
        zero; ``retries`` and ``retried_at`` keep the history.
        """
        try:
            with self._transaction():
                cursor = self._writer.execute(
                    "UPDATE triggers SET status = 'pending', attempts = 0, settled_at = NULL, "
                    "last_error = NULL, retries = retries + 1, retried_at = ? "
                    "WHERE uuid = ? AND status IN ('failed', 'unroutable')",
                    (self.clock(), uuid),
                )
                row = self._writer.execute(
                    f"SELECT {_RECORD_COLUMNS} FROM triggers WHERE uuid = ?", (uuid,)
                ).fetchone()
        except sqlite3.Error as err:
            raise JournalError(f"cannot write to the journal {self.path}: {err}") from err
        if row is None:
            return None
        record = JournalRecord(*row)
        if not cursor.rowcount:
            return record, None
        return record, record.outgoing()

    @_writes
    def pending(self, after_seq: int, up_to_seq: int, limit: int) -> list[Outgoing]:
        """Unconfirmed triggers with ``after_seq < seq <= up_to_seq``, oldest first.

        Called through ``write``: serialised with the recording of broker
        answers, it never sees a row as pending whose answer is being written.
        """
        rows = self._writer.execute(
            "SELECT seq, uuid, api_version, protocol, source, body, created_at, attempts "
            "FROM triggers WHERE status = 'pending' AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after_seq, up_to_seq, limit),
        ).fetchall()
        return [Outgoing(*row) for row in rows]

    @_writes
    def pending_count(self) -> int:
        (count,) = self._writer.execute(
            "SELECT count(*) FROM triggers WHERE status = 'pending'"
        ).fetchone()
        return int(count)

    @_writes
    def last_seq(self) -> int:
        # AUTOINCREMENT keeps the highest seq ever used in sqlite_sequence, where
        # pruning every row does not lower it (max(seq) would).
        (seq,) = self._writer.execute(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'triggers'"
        ).fetchone()
        return int(seq)

    def prune(self, retention: float, batch: int = PRUNE_BATCH) -> int:
        """Delete settled triggers older than ``retention`` seconds; returns how many."""
        cutoff = self.clock() - retention
        deleted = 0
        while (count := self.prune_batch(cutoff, batch)) == batch:
            deleted += count
        return deleted + count

    @_writes
    def prune_batch(self, cutoff: float, batch: int = PRUNE_BATCH) -> int:
        """Delete at most ``batch`` triggers settled before ``cutoff``, in one transaction."""
        with self._transaction():
            cursor = self._writer.execute(
                "DELETE FROM triggers WHERE seq IN (SELECT seq FROM triggers "
                "WHERE status != 'pending' AND settled_at < ? LIMIT ?)",
                (cutoff, batch),
            )
        return int(cursor.rowcount)

    # -- plugin state (writer connection) -------------------------------------

    @_writes
    def load_plugin_state(self, plugin: str) -> dict[str, Any]:
        rows = self._writer.execute(
            "SELECT key, value FROM plugin_state WHERE plugin = ?", (plugin,)
        ).fetchall()
        return {key: json.loads(value) for key, value in rows}

    @_writes
    def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        # One tower per SQLite journal: it leads every plugin, so any term is current.
        try:
            with self._transaction():
                if value is None:
                    self._writer.execute(
                        "DELETE FROM plugin_state WHERE plugin = ? AND key = ?", (plugin, key)
                    )
                else:
                    self._writer.execute(
                        "INSERT INTO plugin_state (plugin, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                        (plugin, key, json.dumps(value)),
                    )
        except sqlite3.Error as err:
            raise JournalError(f"cannot write to the journal {self.path}: {err}") from err

    # -- lookups (reader connection) -------------------------------------------

    def get(self, uuid: str) -> JournalRecord | None:
        row = self._reader.execute(
            f"SELECT {_RECORD_COLUMNS} FROM triggers WHERE uuid = ?", (uuid,)
        ).fetchone()
        return None if row is None else JournalRecord(*row)

    def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]:
        """Newest first, as ``query`` asks; also says whether more records may follow.

        A page of large triggers is never read into memory whole: it ends
        before its bodies would exceed ``query.max_bytes``.
        """
        clauses: list[str] = []
        values: list[str | int] = []
        for column, value in query.equal_to():
            clauses.append(f"{column} = ?")
            values.append(value)
        if query.before is not None:
            clauses.append("seq < ?")
            values.append(query.before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = self._reader.execute(
            f"SELECT {_RECORD_COLUMNS} FROM triggers {where} ORDER BY seq DESC LIMIT ?",
            (*values, query.limit),
        )
        records: list[JournalRecord] = []
        total = 0
        try:
            for row in cursor:
                record = JournalRecord(*row)
                total += len(record.body)
                if records and query.max_bytes is not None and total > query.max_bytes:
                    return records, True
                records.append(record)
        finally:
            cursor.close()
        return records, len(records) == query.limit

    @_writes
    def room(self) -> int:
        """Bytes the journal can still grow by: the tighter of its cap and the disk."""
        try:
            stat = os.statvfs(self.path.parent)
            room = stat.f_bavail * stat.f_frsize
            if self._max_bytes is not None:
                db = self._writer
                (page_size,) = db.execute("PRAGMA page_size").fetchone()
                (pages,) = db.execute("PRAGMA page_count").fetchone()
                (free,) = db.execute("PRAGMA freelist_count").fetchone()
                (most,) = db.execute("PRAGMA max_page_count").fetchone()
                room = min(room, (most - pages + free) * page_size)
        except (OSError, sqlite3.Error) as err:
            raise JournalError(
                f"cannot read the free space of the journal {self.path}: {err}"
            ) from err
        return int(room)

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._writer)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise
        else:
            _rollback(self._db)


class _RepeatedKey(Exception):
    """Raised inside ``append`` only, to store a batch row by row."""


_INSERT = (
    "INSERT INTO triggers (uuid, api_version, protocol, source, body, created_at, "
    "idem_key, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _accepted(seq: int, row: tuple[Any, ...]) -> Accepted:
    return Accepted(new_outgoing(seq, row))


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite has already rolled back after some errors (a full disk at COMMIT).
    if db.in_transaction:
        db.execute("ROLLBACK")


def open_journal(
    data_dir: Path,
    *,
    max_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
    file_name: str = FILE_NAME,
) -> Journal:
    """The journal ``file_name`` in ``data_dir``, created if missing. Blocking."""
    return Journal(data_dir / file_name, max_bytes=max_bytes, clock=clock)


class SQLiteStorage(ThreadedStorage[Journal]):
    """The tower's ``Storage`` on the SQLite journal (the default, for one tower)."""


async def open_storage(
    data_dir: Path,
    *,
    max_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
    file_name: str = FILE_NAME,
) -> SQLiteStorage:
    """The journal ``file_name`` in ``data_dir`` (created if missing) as the tower's storage."""
    journal = await trio.to_thread.run_sync(
        functools.partial(
            open_journal, data_dir, max_bytes=max_bytes, clock=clock, file_name=file_name
        )
    )
    return SQLiteStorage(journal)
