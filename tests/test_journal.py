"""The journal on its own: what a commit, a settlement, pruning and a lookup leave on disk.

Plain SQLite in a temporary folder, no broker and no event loop: each test
takes milliseconds, so these are the first line against a broken journal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from tower_trio import JournalError, Trigger
from tower_trio._journal import Journal, SQLiteStorage, open_journal
from tower_trio._models import Metadata, Plate
from tower_trio._serialization import dump_trigger
from tower_trio._storage import (
    Accepted,
    Duplicate,
    Outgoing,
    PageQuery,
    Settlement,
    request_fingerprint,
)
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from pathlib import Path


def trigger(n: int = 0, blob: str | None = None, **fields: Any) -> Trigger:
    spec: dict[str, Any] = {"n": n} if blob is None else {"n": n, "blob": blob}
    return Trigger(
        **{"api_version": "OT-2/v1alpha1", "protocol": "PlateTransfer", "spec": spec, **fields}
    )


def entry(
    t: Trigger, key: str | None = None, fingerprint: str | None = None
) -> tuple[Trigger, bytes, str | None, str | None]:
    return (t, dump_trigger(t), key, fingerprint)


def stored(results: list[Accepted | Duplicate]) -> list[Outgoing]:
    """The triggers of an append that was accepted whole, in order."""
    outgoings = []
    for result in results:
        assert isinstance(result, Accepted)
        outgoings.append(result.outgoing)
    return outgoings


def accepted(results: list[Accepted | Duplicate]) -> list[int]:
    """The seqs of an append that was accepted whole, in order."""
    return [outgoing.seq for outgoing in stored(results)]


def status(journal: Journal, uuid: str) -> tuple[str, int, str | None]:
    record = journal.get(uuid)
    assert record is not None
    return record.status, record.attempts, record.last_error


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return open_journal(tmp_path)


class TestRequestFingerprint:
    def test_the_digest_is_part_of_the_file_format(self) -> None:
        """A fingerprint is the SHA-256 of the canonical JSON of what was asked, as stored on disk.

        Journals outlive releases: a client retrying after an upgrade must
        still match the fingerprint the previous release stored.
        """
        asked = trigger(
            spec=[{"v": 1}, {"v": 2}],
            plate=Plate(1, 2),
            metadata=Metadata(source="lims", spec=[{"w": "a"}, {"w": "b"}]),
        )
        canonical = (
            b'{"apiVersion":"OT-2/v1alpha1","metadata":[{"w":"a"},{"w":"b"}],'
            b'"plate":[1,2],"protocol":"PlateTransfer","spec":[{"v":1},{"v":2}]}'
        )
        assert request_fingerprint(asked) == hashlib.sha256(canonical).hexdigest()

    def test_a_request_without_a_plate_has_a_null_plate(self) -> None:
        """A trigger without a plate is fingerprinted with plate null."""
        canonical = (
            b'{"apiVersion":"OT-2/v1alpha1","metadata":{},"plate":null,'
            b'"protocol":"PlateTransfer","spec":{"n":0}}'
        )
        assert request_fingerprint(trigger()) == hashlib.sha256(canonical).hexdigest()

    def test_key_order_does_not_make_a_different_request(self) -> None:
        """The same spec written with its keys in another order is the same request."""
        first = trigger(spec={"a": 1, "b": {"c": 2, "d": 3}})
        second = trigger(spec={"b": {"d": 3, "c": 2}, "a": 1})
        assert request_fingerprint(first) == request_fingerprint(second)

    @pytest.mark.parametrize(
        "changed",
        [
            {"api_version": "ChiBio/v1alpha1"},
            {"protocol": "Dilute"},
            {"spec": {"n": 1}},
            {"metadata": Metadata(spec={"note": "x"})},
            {"spec": [{"n": 0}], "plate": Plate(1, 1)},
        ],
        ids=["apiVersion", "protocol", "spec", "metadata", "plate"],
    )
    def test_every_asked_field_counts(self, changed: dict[str, Any]) -> None:
        """Requests that differ in any field a client asks for have different fingerprints."""
        assert request_fingerprint(trigger(**changed)) != request_fingerprint(trigger())

    def test_a_plate_s_shape_counts(self) -> None:
        """One row of two wells and two rows of one well are different requests."""
        wells = [{"n": 0}, {"n": 1}]
        wide = trigger(spec=wells, plate=Plate(1, 2))
        tall = trigger(spec=wells, plate=Plate(2, 1))
        assert request_fingerprint(wide) != request_fingerprint(tall)


_VERSION_1 = """
CREATE TABLE triggers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE,
    api_version TEXT NOT NULL, protocol TEXT NOT NULL, source TEXT NOT NULL,
    body BLOB NOT NULL, status TEXT NOT NULL DEFAULT 'pending', created_at REAL NOT NULL,
    published_at REAL, settled_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, idem_key TEXT UNIQUE, fingerprint TEXT
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
"""
"""The schema of the first release, as its files hold it."""


class TestOpening:
    def test_missing_folders_are_created(self, tmp_path: Path) -> None:
        """A data dir whose parents do not exist yet is created with them."""
        data_dir = tmp_path / "var" / "lib" / "tower"
        open_journal(data_dir).close()
        assert (data_dir / "journal.sqlite3").is_file()

    def test_the_file_records_its_schema_version(self, tmp_path: Path) -> None:
        """The journal file says which schema it holds, so a later release can migrate it."""
        open_journal(tmp_path).close()
        open_journal(tmp_path).close()
        with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
            rows = db.execute("SELECT key, value FROM meta").fetchall()
        assert rows == [("schema_version", "2")]

    def test_a_version_1_journal_is_migrated_keeping_its_triggers(self, tmp_path: Path) -> None:
        """A journal from before retries gains their columns; what it held is still there."""
        path = tmp_path / "journal.sqlite3"
        with sqlite3.connect(path) as db:
            db.executescript(_VERSION_1)
            db.execute(
                "INSERT INTO triggers (uuid, api_version, protocol, source, body, status, "
                "created_at, attempts, last_error) VALUES ('a', 'OT-2/v1', 'P', 'http', '{}', "
                "'unroutable', 5.0, 1, '312 NO_ROUTE')"
            )
        db.close()
        journal = open_journal(tmp_path)
        try:
            record = journal.get("a")
            assert record is not None
            assert (record.status, record.retries, record.retried_at) == ("unroutable", 0, None)
            result = journal.retry("a")
            assert result is not None
            assert result[0].retries == 1
        finally:
            journal.close()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT value FROM meta").fetchall() == [("2",)]
        db.close()

    def test_the_old_pending_index_is_dropped_and_pending_reads_still_search_an_index(
        self, tmp_path: Path
    ) -> None:
        """A journal from a release with ``triggers_pending`` loses it; no pending read scans."""
        open_journal(tmp_path).close()
        path = tmp_path / "journal.sqlite3"
        with sqlite3.connect(path) as db:
            db.execute("CREATE INDEX triggers_pending ON triggers (seq) WHERE status = 'pending'")
        db.close()
        open_journal(tmp_path).close()
        with sqlite3.connect(path) as db:
            indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            plans = [
                " ".join(str(step[-1]) for step in db.execute("EXPLAIN QUERY PLAN " + query))
                for query in (
                    "SELECT seq, body FROM triggers WHERE status = 'pending' "
                    "AND seq > 0 AND seq <= 9 ORDER BY seq LIMIT 5",
                    "SELECT count(*) FROM triggers WHERE status = 'pending'",
                )
            ]
        db.close()
        assert "triggers_pending" not in indexes
        assert all("USING" in plan and "INDEX triggers_status" in plan for plan in plans), plans

    def test_a_journal_from_a_newer_release_is_refused(self, tmp_path: Path) -> None:
        """A schema this release does not know is not touched; the error says what to do."""
        open_journal(tmp_path).close()
        with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.close()
        with pytest.raises(JournalError, match=r"newer tower-trio .* version 99"):
            open_journal(tmp_path)

    def test_a_closed_journal_refuses_work(self, journal: Journal) -> None:
        """After close, neither the writer nor the lookups touch the file."""
        journal.close()
        with pytest.raises(sqlite3.ProgrammingError):
            journal.pending_count()
        with pytest.raises(sqlite3.ProgrammingError):
            journal.get("0" * 32)


class TestConnections:
    def test_lookups_cannot_write(self, journal: Journal) -> None:
        """The lookup connection is read-only: a reader can never change what the writer owns."""
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            journal._reader.execute("DELETE FROM triggers")

    def test_a_batch_of_new_triggers_is_one_transaction_tried_once(self, journal: Journal) -> None:
        """Group commit: distinct triggers, keyed or not, go in with one BEGIN and no rollback."""
        journal.append([entry(trigger(0), "k1")])
        statements: list[str] = []
        journal._writer.set_trace_callback(statements.append)
        results = journal.append(
            [entry(trigger(1)), entry(trigger(2)), entry(trigger(3), "k3"), entry(trigger(4), "k4")]
        )
        assert len(accepted(results)) == 4
        # A key stored before is found by looking it up, not by a failed insert.
        again = journal.append(
            [entry(trigger(5)), entry(trigger(0), "k1"), entry(trigger(6), "k6")]
        )
        journal._writer.set_trace_callback(None)
        assert [type(result) for result in again] == [Accepted, Duplicate, Accepted]
        assert statements.count("BEGIN IMMEDIATE") == 2
        assert not [s for s in statements if s.startswith("ROLLBACK")]

    @pytest.mark.parametrize("side", ["write", "read"])
    async def test_one_call_at_a_time_in_arrival_order(self, journal: Journal, side: str) -> None:
        """A second write (or lookup) waits until the first has returned, then runs."""
        storage = SQLiteStorage(journal)
        call = storage._write if side == "write" else storage._read
        first_running, release, second_ran = threading.Event(), threading.Event(), threading.Event()
        order: list[str] = []

        def first() -> None:
            order.append("first")
            first_running.set()
            release.wait(10)
            order.append("first done")

        def second() -> None:
            order.append("second")
            second_ran.set()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, first)
                await trio.to_thread.run_sync(first_running.wait, 10)
                nursery.start_soon(call, second)
                await trio.testing.wait_all_tasks_blocked()
                # A bounded look for a call that must not happen, not a wait for readiness.
                assert not await trio.to_thread.run_sync(second_ran.wait, 0.2)
                release.set()
        assert order == ["first", "first done", "second"]


class TestAppend:
    def test_accepted_triggers_come_back_as_the_publisher_needs_them(
        self, journal: Journal
    ) -> None:
        """Each accepted trigger carries its seq, routing key, body and creation time."""
        sent = trigger(7, metadata=Metadata(source="lims"))
        (result,) = journal.append([entry(sent)])
        assert isinstance(result, Accepted)
        outgoing = result.outgoing
        assert outgoing.seq == journal.last_seq()
        assert outgoing.uuid == sent.uuid
        assert outgoing.routing_key == "OT-2/v1alpha1"
        assert outgoing.protocol == "PlateTransfer"
        assert outgoing.source == "lims"
        assert outgoing.body == dump_trigger(sent)
        assert outgoing.created_at == sent.created_at.timestamp()
        assert outgoing.attempts == 0
        (read_back,) = journal.pending(0, outgoing.seq, 10)
        assert read_back == outgoing

    def test_a_batch_gets_consecutive_seqs_after_the_last(self, journal: Journal) -> None:
        """A batch's triggers get consecutive seqs, in the order they were sent."""
        first = accepted(journal.append([entry(trigger(n)) for n in range(3)]))
        second = accepted(journal.append([entry(trigger(n)) for n in range(3, 7)]))
        assert first + second == list(range(first[0], first[0] + 7))
        assert [o.seq for o in journal.pending(0, second[-1], 10)] == first + second

    def test_duplicates_keep_their_place_in_a_mixed_batch(self, journal: Journal) -> None:
        """In a batch of new and stored keys, each answer matches its own trigger."""
        known = accepted(
            journal.append([entry(trigger(0), "k0", "fp0"), entry(trigger(9), "k9", "fp9")])
        )
        batch = [
            entry(trigger(1), "k1", "fp1"),
            entry(trigger(2), "k0", "fp0"),
            entry(trigger(3)),
            entry(trigger(4), "k9", "other"),
            entry(trigger(5), "k5", "fp5"),
        ]
        results = journal.append(batch)
        kinds = [type(result).__name__ for result in results]
        assert kinds == ["Accepted", "Duplicate", "Accepted", "Duplicate", "Accepted"]
        fresh = [r.outgoing for r in results if isinstance(r, Accepted)]
        assert [o.uuid for o in fresh] == [batch[0][0].uuid, batch[2][0].uuid, batch[4][0].uuid]
        assert [o.seq for o in fresh] == [known[-1] + n for n in (1, 2, 3)]
        assert journal.pending(known[-1], known[-1] + 3, 10) == fresh
        repeats = [r for r in results if isinstance(r, Duplicate)]
        assert [r.record.seq for r in repeats] == known
        assert [r.same_request for r in repeats] == [True, False]

    def test_a_batch_of_known_keys_stores_nothing(self, journal: Journal) -> None:
        """A batch made only of retries adds no row and answers each with its first trigger."""
        known = accepted(journal.append([entry(trigger(n), f"k{n}", "fp") for n in range(2)]))
        results = journal.append([entry(trigger(n), f"k{n}", "fp") for n in range(2)])
        assert [r.record.seq for r in results if isinstance(r, Duplicate)] == known
        assert journal.last_seq() == known[-1]

    def test_a_duplicate_shows_the_first_trigger_s_delivery_record(self, journal: Journal) -> None:
        """A retry's answer is the first trigger's record as it stands, settled or not."""
        first = trigger(1)
        (result,) = journal.append([entry(first, "k", "fp")])
        assert isinstance(result, Accepted)
        journal.settle([Settlement(result.outgoing.seq, "published", 1, None, 50.0)])
        (again,) = journal.append([entry(trigger(1), "k", "fp")])
        assert isinstance(again, Duplicate)
        assert again.same_request
        record = again.record
        assert (record.seq, record.uuid, record.body) == (
            result.outgoing.seq,
            first.uuid,
            dump_trigger(first),
        )
        assert (record.status, record.attempts, record.published_at) == ("published", 1, 50.0)

    def test_a_key_repeated_in_a_batch_with_a_repeated_uuid(self, journal: Journal) -> None:
        """Row by row, a repeated uuid and a repeated key are each told apart from new ones."""
        stored = trigger(0)
        journal.append([entry(stored)])
        fresh, keyed = trigger(1), trigger(2)
        results = journal.append(
            [
                entry(fresh),
                entry(stored),
                entry(keyed, "k", "fp"),
                entry(trigger(3), "k", "other"),
                entry(trigger(2), "k", "fp"),
            ]
        )
        assert [type(result).__name__ for result in results] == [
            "Accepted",
            "Duplicate",
            "Accepted",
            "Duplicate",
            "Duplicate",
        ]
        first, again, with_key, conflict, retry = results
        assert isinstance(first, Accepted)
        assert isinstance(with_key, Accepted)
        assert isinstance(again, Duplicate)
        assert isinstance(conflict, Duplicate)
        assert isinstance(retry, Duplicate)
        assert again.record.uuid == stored.uuid
        assert again.same_request
        assert (conflict.record.uuid, retry.record.uuid) == (keyed.uuid, keyed.uuid)
        assert (conflict.same_request, retry.same_request) == (False, True)
        assert with_key.outgoing.seq == first.outgoing.seq + 1
        for result, sent in ((first, fresh), (with_key, keyed)):
            (row,) = journal.pending(result.outgoing.seq - 1, result.outgoing.seq, 1)
            assert row == result.outgoing
            assert row.uuid == sent.uuid
        assert journal.pending_count() == 3
        # Stored row by row, the keyed trigger kept its fingerprint: a later retry matches.
        (later,) = journal.append([entry(trigger(2), "k", "fp")])
        assert isinstance(later, Duplicate)
        assert later.same_request

    def test_a_batch_that_does_not_fit_stores_nothing(self, tmp_path: Path) -> None:
        """A batch the full journal refuses leaves no part of it behind, and smaller ones fit."""
        journal = open_journal(tmp_path, max_bytes=128 * 1024)
        big = [entry(trigger(n, blob="x" * 30_000)) for n in range(8)]
        with pytest.raises(JournalError, match=r"cannot write to the journal .*full"):
            journal.append(big)
        assert journal.pending_count() == 0
        assert journal.last_seq() == 0
        assert len(accepted(journal.append([entry(trigger(1))]))) == 1

    def test_a_keyed_batch_that_does_not_fit_stores_nothing(self, tmp_path: Path) -> None:
        """Row by row (a key repeated in the batch), a refused batch still leaves nothing."""
        journal = open_journal(tmp_path, max_bytes=128 * 1024)
        big = [entry(trigger(n, blob="x" * 30_000), "k", "fp") for n in range(2)]
        big += [entry(trigger(n, blob="x" * 30_000)) for n in range(2, 8)]
        with pytest.raises(JournalError, match="cannot write to the journal"):
            journal.append(big)
        assert journal.pending_count() == 0
        (result,) = journal.append([entry(trigger(1), "k", "fp")])
        assert isinstance(result, Accepted)


class FullAtCommit(sqlite3.Connection):
    """A connection whose next COMMIT fails as on a full disk, set by ``fail_next_commit``.

    SQLite rolls the transaction back itself after some failed commits and
    leaves it open after others; ``rolled_back`` says which this one does.
    """

    fail_next_commit = False
    rolled_back = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and FullAtCommit.fail_next_commit:
            FullAtCommit.fail_next_commit = False
            if FullAtCommit.rolled_back:
                super().execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


class TestFailedCommit:
    @pytest.fixture
    def journal(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Journal:
        real_connect = sqlite3.connect
        monkeypatch.setattr(
            sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=FullAtCommit)
        )
        monkeypatch.setattr(FullAtCommit, "fail_next_commit", False)
        return open_journal(tmp_path)

    @pytest.mark.parametrize("rolled_back", [True, False], ids=["rolled-back", "left-open"])
    def test_a_failed_commit_stores_nothing_and_the_next_one_works(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch, rolled_back: bool
    ) -> None:
        """A batch whose commit fails is refused whole, and the journal takes the next batch."""
        monkeypatch.setattr(FullAtCommit, "rolled_back", rolled_back)
        FullAtCommit.fail_next_commit = True
        with pytest.raises(JournalError, match=r"cannot write to the journal .*: database or"):
            journal.append([entry(trigger(n)) for n in range(3)])
        assert journal.pending_count() == 0
        assert len(accepted(journal.append([entry(trigger(9))]))) == 1
        assert journal.pending_count() == 1


class TestSettle:
    def test_a_gap_between_equal_answers_stays_pending(self, journal: Journal) -> None:
        """Answers for seqs 1 and 3 do not settle seq 2, which the broker has not answered."""
        rows = stored(journal.append([entry(trigger(n)) for n in range(3)]))
        journal.settle(
            Settlement(row.seq, "published", 1, None, 10.0) for row in (rows[0], rows[2])
        )
        assert [status(journal, row.uuid)[0] for row in rows] == [
            "published",
            "pending",
            "published",
        ]

    def test_neighbours_differing_only_in_attempts_or_error_keep_their_own(
        self, journal: Journal
    ) -> None:
        """Consecutive answers with the same status but other attempts or errors are not merged."""
        rows = stored(journal.append([entry(trigger(n)) for n in range(4)]))
        answers = [
            ("unroutable", 1, "312 NO_ROUTE"),
            ("unroutable", 2, "312 NO_ROUTE"),
            ("unroutable", 2, "313 NO_CONSUMERS"),
            ("unroutable", 2, "313 NO_CONSUMERS"),
        ]
        journal.settle(
            Settlement(row.seq, *answer, 10.0) for row, answer in zip(rows, answers, strict=True)
        )
        assert [status(journal, row.uuid) for row in rows] == answers

    def test_a_run_is_published_at_its_latest_answer(self, journal: Journal) -> None:
        """Triggers confirmed together get the time of the run's latest confirm."""
        rows = stored(journal.append([entry(trigger(n)) for n in range(3)]))
        journal.settle(
            Settlement(row.seq, "published", 1, None, at)
            for row, at in zip(rows, (12.0, 15.0, 11.0), strict=True)
        )
        records = [journal.get(row.uuid) for row in rows]
        assert [r.published_at for r in records if r] == [15.0, 15.0, 15.0]

    def test_only_a_publish_has_a_publication_time(self, journal: Journal) -> None:
        """Unroutable, failed and retried triggers have no publication time."""
        rows = stored(journal.append([entry(trigger(n)) for n in range(3)]))
        journal.settle(
            [
                Settlement(rows[0].seq, "unroutable", 1, "312 NO_ROUTE", 10.0),
                Settlement(rows[1].seq, "failed", 3, "nacked", 11.0),
                Settlement(rows[2].seq, "pending", 1, "nacked", 12.0),
            ]
        )
        records = [journal.get(row.uuid) for row in rows]
        assert [r.published_at for r in records if r] == [None, None, None]

    def test_a_retry_keeps_the_trigger_pending_with_its_attempts(self, journal: Journal) -> None:
        """A nacked trigger waiting for its retry is pending and republished with its count."""
        (seq,) = accepted(journal.append([entry(trigger())]))
        journal.settle([Settlement(seq, "pending", 2, "nacked by the broker", 10.0)])
        assert journal.pending_count() == 1
        (again,) = journal.pending(0, seq, 10)
        assert again.attempts == 2

    def test_a_refused_settlement_names_the_journal(self, tmp_path: Path) -> None:
        """Answers the full journal cannot record raise JournalError and change nothing."""
        journal = open_journal(tmp_path, max_bytes=64 * 1024)
        rows = stored(journal.append([entry(trigger(n)) for n in range(3)]))
        huge_error = "e" * 200_000
        with pytest.raises(JournalError, match=r"cannot write to the journal .*full"):
            journal.settle(Settlement(row.seq, "failed", 1, huge_error, 10.0) for row in rows)
        assert journal.pending_count() == 3
        journal.settle([Settlement(rows[0].seq, "published", 1, None, 11.0)])
        assert status(journal, rows[0].uuid) == ("published", 1, None)


class TestPending:
    def test_the_window_excludes_after_and_includes_up_to(self, journal: Journal) -> None:
        """Pending rows past ``after`` up to ``up_to`` itself, oldest first, ``limit`` at most."""
        seqs = accepted(journal.append([entry(trigger(n)) for n in range(6)]))
        journal.settle([Settlement(seqs[2], "published", 1, None, 10.0)])
        window = journal.pending(seqs[0], seqs[4], 10)
        assert [o.seq for o in window] == [seqs[1], seqs[3], seqs[4]]
        assert [o.seq for o in journal.pending(seqs[0], seqs[5], 2)] == [seqs[1], seqs[3]]

    def test_counts_and_last_seq(self, journal: Journal) -> None:
        """An empty journal has nothing pending and last seq 0; settled rows leave the count."""
        assert (journal.pending_count(), journal.last_seq()) == (0, 0)
        seqs = accepted(journal.append([entry(trigger(n)) for n in range(3)]))
        journal.settle([Settlement(seqs[0], "unroutable", 1, "312 NO_ROUTE", 10.0)])
        assert (journal.pending_count(), journal.last_seq()) == (2, seqs[-1])


class TestPrune:
    def test_pruning_in_small_batches_deletes_every_old_row(self, tmp_path: Path) -> None:
        """Old settled rows beyond one batch are all deleted, and the count says how many."""
        clock = Clock()
        journal = open_journal(tmp_path, clock=clock)
        seqs = accepted(journal.append([entry(trigger(n)) for n in range(7)]))
        journal.settle(Settlement(seq, "published", 1, None, clock.now) for seq in seqs[:5])
        clock.now += 100
        assert journal.prune(retention=50, batch=2) == 5
        assert journal.pending_count() == 2
        assert journal.prune(retention=50, batch=2) == 0

    def test_a_row_just_inside_the_retention_is_kept(self, tmp_path: Path) -> None:
        """A row settled less than the retention period ago stays for lookups."""
        journal, clock, outgoing = one_answered(tmp_path, "failed")
        clock.now += 49.5
        assert journal.prune(retention=50) == 0
        assert journal.get(outgoing.uuid) is not None

    def test_a_retried_trigger_is_never_pruned(self, tmp_path: Path) -> None:
        """A trigger waiting for its retry is pending, however old its last answer."""
        journal, clock, _ = one_answered(tmp_path, "pending")
        clock.now += 10**6
        assert journal.prune(retention=50) == 0
        assert journal.pending_count() == 1

    async def test_new_triggers_are_stored_between_two_batches_of_a_prune(
        self, tmp_path: Path
    ) -> None:
        """A long prune holds the writer one batch at a time: ingest never waits for all of it."""
        clock = Clock()
        journal = open_journal(tmp_path, clock=clock)
        storage = SQLiteStorage(journal, prune_batch=10)
        try:
            seqs = accepted(journal.append([entry(trigger(n)) for n in range(400)]))
            journal.settle(Settlement(seq, "published", 1, None, clock.now) for seq in seqs)
            clock.now += 100
            finished: list[str] = []

            async def prune() -> None:
                assert await storage.prune(retention=50) == 400
                finished.append("prune")

            async def append() -> None:
                await storage.append([entry(trigger(1000))])
                finished.append("append")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(prune)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(append)
            assert finished == ["append", "prune"]
            assert journal.pending_count() == 1
        finally:
            storage.close()


def one_answered(tmp_path: Path, status: str) -> tuple[Journal, Clock, Outgoing]:
    """A journal on a clock of its own, holding one trigger the broker nacked just now."""
    clock = Clock()
    journal = open_journal(tmp_path, clock=clock)
    (outgoing,) = stored(journal.append([entry(trigger())]))
    journal.settle([Settlement(outgoing.seq, status, 1, "nacked", clock.now)])
    return journal, clock, outgoing


class TestPluginState:
    def test_state_survives_reopening(self, tmp_path: Path) -> None:
        """Saved plugin state is on disk: a restarted tower reads it back as it was."""
        journal = open_journal(tmp_path)
        journal.save_plugin_state("riffyn", "cursor", {"at": "2026-01-01", "ids": [1, 2]})
        journal.save_plugin_state("riffyn", "cursor", {"at": "2026-01-02", "ids": [3]})
        journal.save_plugin_state("riffyn", "done", True)
        journal.close()
        again = open_journal(tmp_path)
        assert again.load_plugin_state("riffyn") == {
            "cursor": {"at": "2026-01-02", "ids": [3]},
            "done": True,
        }
        assert again.load_plugin_state("folder") == {}

    def test_deleting_a_key_leaves_the_other_plugins_alone(self, journal: Journal) -> None:
        """None deletes one plugin's key; the same key of another plugin stays."""
        journal.save_plugin_state("a", "seen", 1)
        journal.save_plugin_state("b", "seen", 2)
        journal.save_plugin_state("a", "seen", None)
        journal.save_plugin_state("a", "never-set", None)
        assert journal.load_plugin_state("a") == {}
        assert journal.load_plugin_state("b") == {"seen": 2}

    def test_any_term_is_current_on_a_journal_of_one_tower(self, journal: Journal) -> None:
        """SQLite has one tower, leading every plugin: state and triggers of any term are taken."""
        journal.save_plugin_state("a", "seen", 7, term=7)
        journal.save_plugin_state("a", "seen", 1, term=1)
        assert journal.load_plugin_state("a") == {"seen": 1}
        (outgoing,) = stored(journal.append([entry(trigger().with_source("a", term=3))]))
        assert journal.get(outgoing.uuid) is not None

    def test_a_full_journal_refuses_state_with_a_journal_error(self, tmp_path: Path) -> None:
        """State that does not fit raises JournalError; the previous value stays."""
        journal = open_journal(tmp_path, max_bytes=64 * 1024)
        journal.save_plugin_state("lims", "cursor", 1)
        with pytest.raises(JournalError, match=r"cannot write to the journal .*full"):
            journal.save_plugin_state("lims", "cursor", "x" * 200_000)
        assert journal.load_plugin_state("lims") == {"cursor": 1}


class _HeldState(Journal):
    """A journal whose state writes wait, in their worker thread, until released."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = threading.Event()
        self.release = threading.Event()

    def save_plugin_state(
        self, plugin: str, key: str, value: Any, *, term: int | None = None
    ) -> None:
        self.writing.set()
        self.release.wait(10)
        super().save_plugin_state(plugin, key, value, term=term)


class TestPluginStateFromTrio:
    async def test_a_stopped_plugin_leaves_its_state_write_and_the_next_waits_for_it(
        self, tmp_path: Path
    ) -> None:
        """A plugin stops at once even while its state write waits for the store.

        The write still ends in its thread, and the next call comes after it.
        """
        journal = _HeldState(tmp_path / "journal.sqlite3")
        storage = SQLiteStorage(journal)
        try:
            async with trio.open_nursery() as nursery:
                plugin = trio.CancelScope()

                async def save_then_stop() -> None:
                    with plugin:
                        await storage.save_plugin_state("p", "slot", 1)

                nursery.start_soon(save_then_stop)
                await trio.to_thread.run_sync(journal.writing.wait, 10)
                with trio.fail_after(2):
                    plugin.cancel()
                    await trio.testing.wait_all_tasks_blocked()
                assert plugin.cancelled_caught
                assert not journal.release.is_set()
                loaded: list[dict[str, Any]] = []

                async def load() -> None:
                    loaded.append(await storage.load_plugin_state("p"))

                nursery.start_soon(load)
                await trio.testing.wait_all_tasks_blocked()
                assert loaded == []
                journal.release.set()
            assert loaded == [{"slot": 1}]
        finally:
            journal.close()


class TestPage:
    @pytest.fixture
    def seqs(self, journal: Journal) -> list[int]:
        """Five triggers: even n by PlateTransfer, odd by Dilute, the first one published."""
        results = journal.append(
            [
                entry(trigger(n, protocol="PlateTransfer" if n % 2 == 0 else "Dilute"))
                for n in range(5)
            ]
        )
        seqs = accepted(results)
        journal.settle([Settlement(seqs[0], "published", 1, None, 10.0)])
        return seqs

    def test_filters_combine(self, journal: Journal, seqs: list[int]) -> None:
        """Several filters all apply at once."""
        records, more = journal.page(
            PageQuery(status=DeliveryStatus.PENDING, protocol="PlateTransfer", limit=50)
        )
        assert [r.seq for r in records] == [seqs[4], seqs[2]]
        assert not more
        assert journal.page(PageQuery(source="lims", limit=50)) == ([], False)

    def test_before_is_exclusive(self, journal: Journal, seqs: list[int]) -> None:
        """The page before a seq starts with the one below it."""
        records, _ = journal.page(PageQuery(before=seqs[3], limit=2))
        assert [r.seq for r in records] == [seqs[2], seqs[1]]

    def test_a_full_page_says_more_may_follow(self, journal: Journal, seqs: list[int]) -> None:
        """A page holding ``limit`` records says more may follow; a shorter one says not."""
        assert journal.page(PageQuery(limit=5))[1]
        assert not journal.page(PageQuery(limit=6))[1]
        assert len(journal.page(PageQuery(limit=5))[0]) == 5

    def test_bodies_that_fit_exactly_share_a_page(self, journal: Journal, seqs: list[int]) -> None:
        """A page ends only when its bodies would exceed the byte bound, not when they meet it."""
        records, _ = journal.page(PageQuery(limit=50))
        sizes = [len(r.body) for r in records]
        exact, more = journal.page(PageQuery(max_bytes=sizes[0] + sizes[1], limit=50))
        assert [r.seq for r in exact] == [seqs[4], seqs[3]]
        assert more
        below, _ = journal.page(PageQuery(max_bytes=sizes[0] + sizes[1] - 1, limit=50))
        assert [r.seq for r in below] == [seqs[4]]

    def test_one_record_larger_than_the_bound_is_still_a_page(
        self, journal: Journal, seqs: list[int]
    ) -> None:
        """A single record larger than the byte bound comes alone, so paging moves on."""
        records, more = journal.page(PageQuery(max_bytes=1, limit=50))
        assert [r.seq for r in records] == [seqs[4]]
        assert more

    def test_a_record_reads_back_as_stored(self, journal: Journal, seqs: list[int]) -> None:
        """A looked-up record has every field the journal stored, settled or not."""
        published = journal.page(PageQuery(status=DeliveryStatus.PUBLISHED, limit=50))[0][0]
        assert published.seq == seqs[0]
        assert (published.api_version, published.protocol, published.source) == (
            "OT-2/v1alpha1",
            "PlateTransfer",
            "",
        )
        assert (published.status, published.attempts, published.published_at) == (
            "published",
            1,
            10.0,
        )
        assert journal.get(published.uuid) == published
        assert journal.get("0" * 32) is None


class TestRoom:
    def test_a_capped_journal_counts_its_free_pages(self, tmp_path: Path) -> None:
        """Room stays under the cap, shrinks as triggers are stored and grows as they are pruned."""
        clock = Clock()
        cap = 512 * 1024
        journal = open_journal(tmp_path, max_bytes=cap, clock=clock)
        empty = journal.room()
        assert cap - 64 * 1024 < empty <= cap
        seqs = accepted(journal.append([entry(trigger(n, blob="x" * 40_000)) for n in range(3)]))
        full = journal.room()
        assert full <= empty - 3 * 40_000
        journal.settle(Settlement(seq, "published", 1, None, clock.now) for seq in seqs)
        clock.now += 100
        assert journal.prune(retention=50) == 3
        assert journal.room() >= full + 3 * 40_000

    def test_an_uncapped_journal_has_the_disk_s_room(
        self, journal: Journal, tmp_path: Path
    ) -> None:
        """Without a cap, the room is the free space of the data dir's file system."""
        stat = os.statvfs(tmp_path)
        disk = stat.f_bavail * stat.f_frsize
        assert abs(journal.room() - disk) < 64 * 1024 * 1024

    def test_a_vanished_data_dir_is_a_journal_error(self, tmp_path: Path) -> None:
        """A data dir deleted under the running tower is reported, naming the journal."""
        journal = open_journal(tmp_path / "data")
        shutil.rmtree(tmp_path / "data")
        with pytest.raises(JournalError, match="cannot read the free space of the journal"):
            journal.room()


class TestSizeOnDisk:
    def test_the_journal_s_files_and_nothing_else(self, tmp_path: Path) -> None:
        """The size on disk counts the database, its WAL and shared memory, not their neighbours."""
        journal = open_journal(tmp_path)
        journal.append([entry(trigger(n)) for n in range(10)])
        (tmp_path / "notes.txt").write_bytes(b"x" * 100_000)
        (tmp_path / "journal.sqlite3.d").mkdir()
        files = ["journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"]
        assert journal.size_bytes() == sum((tmp_path / name).stat().st_size for name in files)
