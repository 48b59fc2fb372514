"""The broker's answers on their way to storage, and lookups that see them first.

The publisher learns that a trigger was published (or returned, or nacked)
long before the answer is written: answers are written in batches, one
transaction for hundreds. Until then they wait here, and ``get`` and
``page`` (what the HTTP API reads) lay them over what storage says, so a
lookup never shows as pending a trigger a client was already told is
published.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs
import trio

from ._backoff import Backoff
from ._errors import JournalError
from ._feed import Change, Feed
from ._logging import get_logger
from ._storage import JournalRecord, Settlement
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._storage import Outgoing, PageQuery, Storage

__all__ = ["Settlements"]

_log = get_logger(__name__)


class Settlements:
    """Answers not yet in storage, by seq; a later answer for a trigger replaces an earlier."""

    def __init__(
        self, storage: Storage, feed: Feed | None = None
    ) -> None:  # pragma: no mutate block
        self._storage = storage
        self._feed = Feed() if feed is None else feed
        self._waiting: dict[int, Settlement] = {}
        self._recording: dict[int, Settlement] = {}
        """The batch being written now: still unrecorded until its commit returns."""
        self._arrived = trio.Event()
        self._flush_lock = trio.Lock()

    def record(
        self, outgoing: Outgoing, status: DeliveryStatus, attempts: int, error: str | None
    ) -> None:
        """Keep an answer (or a retry, which stays ``pending``) to be written."""
        at = time.time()
        self._waiting[outgoing.seq] = Settlement(outgoing.seq, status, attempts, error, at)
        self._arrived.set()
        if self._feed.watched:
            self._feed.report(Change(outgoing, status, attempts, error, at))

    def __len__(self) -> int:
        """Answers and retries waiting to be written."""
        return len(self._waiting)

    def unrecorded(self) -> int:
        """Triggers the broker settled whose record is not in storage yet."""
        answers = self._waiting | self._recording
        return sum(1 for settlement in answers.values() if settlement.status.settled)

    async def settled_but_unrecorded(self) -> set[int]:
        """Seqs the broker settled whose record could not be written yet.

        Storage still says they are pending; they must not go out again.
        Flushing first (under the lock the recorder also takes) makes every
        other trigger's status in storage current before it is read.
        """
        try:
            await self.flush()
        except JournalError as err:
            _log.error("journal.write_failed", error=err, settlements=len(self._waiting))
        return {s.seq for s in self._waiting.values() if s.status.settled}

    async def flush(self) -> None:
        """Write every waiting answer now, in one transaction."""
        async with self._flush_lock:
            self._recording, self._waiting = self._waiting, {}
            if not self._recording:
                return
            try:
                await self._storage.settle(list(self._recording.values()))
            except BaseException:
                self._waiting = self._recording | self._waiting
                raise
            finally:
                self._recording = {}

    async def serve(self) -> None:
        """Write answers as they come, batching whatever arrives during a write."""
        backoff = Backoff(initial=0.5, cap=10.0)
        while True:
            if not self._waiting:
                self._arrived = trio.Event()
                await self._arrived.wait()
                continue
            try:
                await self.flush()
            except JournalError as err:
                # The triggers are out; only their records wait. Retrying keeps
                # a full disk from turning into duplicates after a restart.
                _log.error("journal.write_failed", error=err, settlements=len(self._waiting))
                await trio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    # -- lookups: storage, brought up to date ------------------------------------

    def current(
        self, record: JournalRecord, known: Sequence[Mapping[int, Settlement]] = ()
    ) -> JournalRecord:
        """``record`` with the broker's answer that storage has not recorded yet.

        ``known`` are the answers that were waiting when ``record`` was read:
        a write that committed during the read took them out of this
        object's sight, but the read may have missed it.
        """
        settlement = None
        for answers in (self._waiting, self._recording, *known):
            if (settlement := answers.get(record.seq)) is not None:
                break
        if settlement is None:
            return record
        return attrs.evolve(
            record,
            status=settlement.status,
            attempts=settlement.attempts,
            last_error=settlement.last_error,
            published_at=settlement.at if settlement.status is DeliveryStatus.PUBLISHED else None,
        )

    async def get(self, uuid: str) -> JournalRecord | None:
        """The trigger's record as the tower knows it now."""
        # flush() replaces these dicts rather than emptying them: kept, they
        # still hold what it writes while storage is read.
        known = (self._waiting, self._recording)
        record = await self._storage.get(uuid)
        return None if record is None else self.current(record, known)

    async def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]:
        """``Storage.page``, each record brought up to date.

        The status filter applies to what storage says: a trigger answered a
        moment ago is listed under ``pending`` until its answer is written,
        shown with its answer.
        """
        known = (self._waiting, self._recording)
        records, more = await self._storage.page(query)
        return [self.current(record, known) for record in records], more
