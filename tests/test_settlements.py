"""The settlements on their own: answers that storage refuses are kept and retried,
and lookups see answers not yet written.

A small in-memory store that refuses ``settle`` stands in for a full disk,
so that trio's virtual clock can time the retries (a worker thread would
let the clock jump while the real journal writes); another holds a read
open, so that a write commits while it runs, which the real journal does
only by chance.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from tower_trio import JournalError
from tower_trio._settlements import Settlements
from tower_trio._storage import JournalRecord, Outgoing, Settlement
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Iterable


@attrs.define
class FullDisk:
    """Refuses the first ``refusals`` writes of answers, noting when each was tried."""

    refusals: int
    tries: list[float] = attrs.Factory(list)
    written: list[Settlement] = attrs.Factory(list)
    done: trio.Event = attrs.Factory(trio.Event)

    async def settle(self, settlements: Iterable[Settlement]) -> None:
        self.tries.append(trio.current_time())
        if len(self.tries) <= self.refusals:
            raise JournalError("cannot write to the journal: database or disk is full")
        self.written.extend(settlements)
        self.done.set()


OUTGOING = Outgoing(1, "a" * 32, "OT-2/v1alpha1", "PlateTransfer", "http", b"{}", 0.0, 0)


class TestRetries:
    @pytest.mark.parametrize("refusals", [8, 30])
    async def test_refused_answers_are_retried_from_half_a_second_up_to_ten(
        self, autojump_clock: trio.testing.MockClock, refusals: int
    ) -> None:
        """Each retry waits twice the last, from 0.5 s to 10 s at most, less up to 20% jitter."""
        disk = FullDisk(refusals)
        settlements = Settlements(disk)  # type: ignore[arg-type]
        settlements.record(OUTGOING, DeliveryStatus.PUBLISHED, 1, None)
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(settlements.serve)
                await disk.done.wait()
                nursery.cancel_scope.cancel()
        assert [s.status for s in disk.written] == [DeliveryStatus.PUBLISHED]
        waits = [later - earlier for earlier, later in itertools.pairwise(disk.tries)]
        assert len(waits) == refusals
        for failures, wait in enumerate(waits):
            longest = min(10.0, 0.5 * 2**failures)
            assert 0.8 * longest - 1e-9 <= wait <= longest + 1e-9, (failures, wait)


@attrs.define
class HeldRead:
    """A store whose one record is read as pending, the read held until ``release``."""

    record: JournalRecord
    reading: trio.Event = attrs.Factory(trio.Event)
    release: trio.Event = attrs.Factory(trio.Event)

    async def get(self, uuid: str) -> JournalRecord | None:
        # What the read saw: the row before the answer's write committed.
        seen = self.record
        self.reading.set()
        await self.release.wait()
        return seen

    async def settle(self, settlements: Iterable[Settlement]) -> None:
        (settlement,) = settlements
        self.record = attrs.evolve(self.record, status=settlement.status)


class TestLookups:
    async def test_an_answer_written_during_a_read_is_not_lost_from_sight(self) -> None:
        """A lookup that read storage before the answer's write committed still shows it."""
        store = HeldRead(_PENDING_RECORD)
        settlements = Settlements(store)  # type: ignore[arg-type]
        settlements.record(OUTGOING, DeliveryStatus.FAILED, 1, "nacked")
        looked_up: list[JournalRecord | None] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def look_up() -> None:
                    looked_up.append(await settlements.get(OUTGOING.uuid))

                nursery.start_soon(look_up)
                await store.reading.wait()
                await settlements.flush()
                store.release.set()
        (record,) = looked_up
        assert record is not None
        assert record.status is DeliveryStatus.FAILED


_PENDING_RECORD = JournalRecord(
    seq=OUTGOING.seq,
    uuid=OUTGOING.uuid,
    api_version=OUTGOING.routing_key,
    protocol=OUTGOING.protocol,
    source=OUTGOING.source,
    body=OUTGOING.body,
    status=DeliveryStatus.PENDING,
    created_at=0.0,
    published_at=None,
    attempts=0,
    last_error=None,
)
