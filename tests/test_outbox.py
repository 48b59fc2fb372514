"""The outbox on its own: what it hands the publisher, and in what order.

A real SQLite journal in a temporary folder and a memory channel; no broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from tower_trio import Trigger
from tower_trio._channel import Intake, Submission
from tower_trio._config import Settings
from tower_trio._journal import SQLiteStorage, open_storage
from tower_trio._outbox import BATCH, Outbox
from tower_trio._storage import Outgoing, Settlement
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def trigger(n: int) -> Trigger:
    return Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"n": n})


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    opened = await open_storage(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


async def stored_outbox(
    storage: SQLiteStorage, count: int, *, cache_max_bytes: int | None = None
) -> tuple[Outbox, list[str]]:
    """An outbox that has stored ``count`` triggers from a channel now closed."""
    settings = Settings()
    if cache_max_bytes is not None:
        settings = attrs.evolve(settings, cache_max_bytes=cache_max_bytes)
    outbox = Outbox(settings, storage)
    await outbox.load()
    send, receive = trio.open_memory_channel[Submission](count)
    submissions = [Submission.of(trigger(n)) for n in range(count)]
    with trio.fail_after(10):
        async with send:
            for submission in submissions:
                send.send_nowait(submission)
        await outbox.serve_ingest(receive)
    assert {s.intake for s in submissions} == {Intake.ACCEPTED}
    return outbox, [s.trigger.uuid for s in submissions]


class TestNextBatch:
    async def test_recent_triggers_are_handed_out_together_in_order(
        self, storage: SQLiteStorage
    ) -> None:
        """Triggers stored a moment ago come from memory, all in one batch, oldest first."""
        outbox, uuids = await stored_outbox(storage, 3)
        assert outbox.cached_bytes > 0
        batch = await outbox.next_batch(0)
        assert batch is not None
        rows, cursor = batch
        assert [row.uuid for row in rows] == uuids
        assert cursor == rows[-1].seq
        assert outbox.cached_bytes == 0
        assert await outbox.next_batch(cursor) is None

    async def test_a_batch_holds_at_most_its_limit_from_memory_too(
        self, storage: SQLiteStorage
    ) -> None:
        """More recent triggers than a batch holds go out in two batches, none lost."""
        outbox, uuids = await stored_outbox(storage, BATCH + 1)
        first = await outbox.next_batch(0)
        assert first is not None
        assert len(first[0]) == BATCH
        second = await outbox.next_batch(first[1])
        assert second is not None
        assert [row.uuid for row in first[0] + second[0]] == uuids

    async def test_triggers_not_kept_in_memory_are_read_back(self, storage: SQLiteStorage) -> None:
        """With no room in memory, the same triggers come from storage, in the same order."""
        outbox, uuids = await stored_outbox(storage, 3, cache_max_bytes=0)
        assert outbox.cached_bytes == 0
        batch = await outbox.next_batch(0)
        assert batch is not None
        assert [row.uuid for row in batch[0]] == uuids
        assert await outbox.next_batch(batch[1]) is None


class TestIngest:
    async def test_a_busy_channel_is_stored_in_batches_of_at_most_the_limit(
        self, storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Whatever waits in the channel goes into one transaction, up to the batch limit."""
        sizes: list[int] = []
        append = storage.append

        async def counted(entries: Any) -> Any:
            sizes.append(len(entries))
            return await append(entries)

        monkeypatch.setattr(storage, "append", counted)
        outbox, uuids = await stored_outbox(storage, BATCH + 10)
        assert sizes == [BATCH, 10]
        assert outbox.pending == len(uuids)


async def settle_and_retry(
    storage: SQLiteStorage, outbox: Outbox, outgoing: Outgoing, status: DeliveryStatus
) -> None:
    """The broker settles ``outgoing`` as ``status``; then an operator retries it."""
    await storage.settle([Settlement(outgoing.seq, status, 1, "x", 1.0)])
    outbox.settled(outgoing)
    result = await storage.retry(outgoing.uuid)
    assert result is not None
    record, again = result
    assert again is not None
    outbox.retried(again, record.retries, 2.0)


class TestRetried:
    async def test_a_retry_behind_the_cursor_goes_out_once_without_moving_it(
        self, storage: SQLiteStorage
    ) -> None:
        """A trigger retried after it was handed out comes next, and the cursor stays."""
        outbox, uuids = await stored_outbox(storage, 3)
        batch = await outbox.next_batch(0)
        assert batch is not None
        rows, cursor = batch
        await settle_and_retry(storage, outbox, rows[1], DeliveryStatus.UNROUTABLE)
        assert outbox.pending == 3
        again = await outbox.next_batch(cursor)
        assert again is not None
        assert ([row.uuid for row in again[0]], again[1]) == ([uuids[1]], cursor)
        assert await outbox.next_batch(cursor) is None

    async def test_a_retry_ahead_of_the_cursor_is_left_to_storage(
        self, storage: SQLiteStorage
    ) -> None:
        """After a reconnect (cursor back at 0), storage hands out the retried trigger, once."""
        outbox, uuids = await stored_outbox(storage, 2)
        batch = await outbox.next_batch(0)
        assert batch is not None
        rows, _ = batch
        await settle_and_retry(storage, outbox, rows[0], DeliveryStatus.FAILED)
        handed: list[str] = []
        cursor = 0
        while (batch := await outbox.next_batch(cursor)) is not None:
            handed.extend(row.uuid for row in batch[0])
            cursor = batch[1]
        assert handed == uuids
