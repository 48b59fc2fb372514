"""The outbox: triggers from the channel into storage, and out again in order.

``serve_ingest`` takes everything waiting in the memory channel (up to
512) and stores it in one transaction (group commit), then tells each
source its trigger is stored. It runs whether or not the broker is there,
so the tower keeps accepting while RabbitMQ is away. ``next_batch`` hands
the publisher the stored triggers still to publish, in seq order: recently
stored ones from a memory copy bounded by ``TOWER_CACHE_MAX_BYTES``, the
rest (after a restart, a reconnect, or a long outage) read back from
storage. The outbox also keeps storage tidy (pruning settled triggers after
``TOWER_RETENTION``) and watches its room, so that ``/readyz`` says when
the next trigger may not fit.

With a journal several towers share, storage hands out only this tower's
triggers, whose seqs have gaps (the others' triggers); each trigger in the
memory copy remembers the seq of the one this tower stored before it, so a
gap costs no read. Triggers taken over from a dead tower come in like
retried ones, and ``forget`` drops the memory copy when this tower must
start again from the journal (``tower_trio._replicas``).
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING

import trio

from ._errors import JournalError
from ._feed import Change, Feed
from ._logging import get_logger
from ._storage import Accepted, Refused
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from ._channel import Submission
    from ._config import Settings
    from ._storage import Outgoing, Storage

__all__ = ["Outbox"]

_log = get_logger(__name__)

BATCH = 512
_PRUNE_EVERY = 3600.0
_ROOM_EVERY = 5.0


class Outbox:
    """What is stored and not yet settled; see the module docstring."""

    def __init__(
        self, settings: Settings, storage: Storage, feed: Feed | None = None
    ) -> None:  # pragma: no mutate block
        self._settings = settings
        self._storage = storage
        self._feed = Feed() if feed is None else feed
        self.pending = 0
        """Stored triggers whose delivery is not settled."""
        self.duplicates = 0
        self.problem: str | None = None
        """Why storage cannot take another trigger now, if it cannot."""
        self.room: int | None = None
        """Bytes storage could still grow by at the last check (None before the first)."""
        self._last_stored = 0
        self._done = False
        self._recent: collections.deque[tuple[int, Outgoing]] = collections.deque()
        """Recently stored triggers, each after the seq this tower stored before it."""
        self._recent_bytes = 0
        self._retried: list[Outgoing] = []
        self._ahead: list[int] = []
        """Seqs of triggers handed back past the cursor: read from storage when it gets there."""
        self._generation = 0
        self._waiters: dict[int, Submission] = {}
        self._work = trio.Event()  # something new to publish, or the ingest ended
        self._room_check = trio.Event()

    @property
    def cached_bytes(self) -> int:
        """Bytes of bodies kept in memory to publish without reading storage."""
        return self._recent_bytes

    @property
    def drained(self) -> bool:
        """Whether every source is done and nothing is left to settle."""
        return self._done and not self.pending

    async def load(self) -> None:  # pragma: no mutate block
        """Learn what storage holds from before: where new triggers start, and the backlog."""
        self._last_stored = await self._storage.last_seq()
        self.pending = await self._storage.pending_count()
        if self.pending:
            _log.info("journal.backlog", pending=self.pending, path=self._storage.location)

    # -- channel → storage ------------------------------------------------------

    async def serve_ingest(self, receive_channel: trio.MemoryReceiveChannel[Submission]) -> None:
        """Store every submission until every source has closed its end of the channel."""
        with receive_channel:
            while True:
                try:
                    batch = [await receive_channel.receive()]
                except trio.EndOfChannel:
                    break
                while len(batch) < BATCH:
                    try:
                        batch.append(receive_channel.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._store(batch)
        self._done = True
        self._work.set()

    async def _store(self, batch: list[Submission]) -> None:
        # A source that gave up waiting before this point was told "not
        # stored"; from here on it waits for the outcome instead.
        batch = [s for s in batch if s.take()]
        entries = [(s.trigger, s.body, s.key, s.fingerprint) for s in batch]
        generation = self._generation
        try:
            results = await self._storage.append(entries)
        except JournalError as err:
            _log.error("journal.write_failed", error=err, triggers=len(batch))
            self.problem = f"the last write failed: {err}"
            self._room_check.set()
            for submission in batch:
                submission.rejected(str(err))
            return
        for submission, result in zip(batch, results, strict=True):
            if isinstance(result, Accepted):
                self._accepted(submission, result.outgoing, cache=generation == self._generation)
            elif isinstance(result, Refused):
                # A stale leader's trigger: refused alone, the rest of the batch stored.
                _log.warning("trigger.refused", uuid=submission.trigger.uuid, reason=result.reason)
                submission.rejected(result.reason)
            else:
                self.duplicates += 1
                _log.info(
                    "trigger.duplicate",
                    key=submission.key,
                    first_uuid=result.record.uuid,
                    same_request=result.same_request,
                )
                submission.duplicate_of(result.record, same_request=result.same_request)
        self._work.set()

    def _accepted(self, submission: Submission, outgoing: Outgoing, *, cache: bool) -> None:
        before, self._last_stored = self._last_stored, outgoing.seq
        self.pending += 1
        if submission.wants_settlement:
            self._waiters[outgoing.seq] = submission
        size = len(outgoing.body)
        # Stored before a fresh start (forget), it may be another tower's by now.
        if cache and self._recent_bytes + size <= self._settings.cache_max_bytes:
            self._recent.append((before, outgoing))
            self._recent_bytes += size
        submission.accepted()
        if self._feed.watched:
            self._feed.report(
                Change(outgoing, DeliveryStatus.PENDING, 0, None, outgoing.created_at)
            )

    def retried(self, outgoing: Outgoing, retries: int, at: float) -> None:
        """Publish again a trigger storage has just made pending again (``Storage.retry``)."""
        self.pending += 1
        self._retried.append(outgoing)
        self._work.set()
        if self._feed.watched:
            self._feed.report(Change(outgoing, DeliveryStatus.PENDING, 0, None, at, retries))

    def taken_over(self, taken: list[Outgoing]) -> None:
        """Publish triggers this tower has just taken over from a dead one."""
        self.pending += len(taken)
        self._retried.extend(taken)
        # Storage is read up to the last stored seq: theirs may be beyond ours.
        self._last_stored = max(self._last_stored, *(outgoing.seq for outgoing in taken))
        self._work.set()

    def forget(self) -> None:
        """Drop what is held in memory about pending triggers; storage has the truth.

        For a fresh start: the publisher reconnects and reads back from
        storage whatever is still this tower's, and ``recount`` makes
        ``pending`` this tower's again.
        """
        self._generation += 1
        self._recent.clear()
        self._recent_bytes = 0
        self._retried = []
        self._ahead = []
        self._work.set()

    async def recount(self) -> None:
        """Count again the pending triggers that are this tower's (after ``forget``)."""
        self.pending = await self._storage.pending_count()

    def settled(self, outgoing: Outgoing) -> Submission | None:
        """Count a trigger as settled; returns the source waiting for that, if one is."""
        self.pending -= 1
        return self._waiters.pop(outgoing.seq, None)

    # -- storage → publisher -------------------------------------------------------

    async def next_batch(self, cursor: int) -> tuple[list[Outgoing], int] | None:
        """The next stored triggers after seq ``cursor`` still to publish, and the new cursor.

        Waits for new triggers; None once the sources are done and every
        stored trigger up to the last has been handed out.
        """
        while True:
            if self._retried:
                # Storage made them pending before they were added here: those
                # past the cursor are read back with the rest when it gets there.
                retried = [outgoing for outgoing in self._retried if outgoing.seq <= cursor]
                self._ahead.extend(o.seq for o in self._retried if o.seq > cursor)
                self._retried = []
                if retried:
                    return retried, cursor
                continue
            self._ahead = [seq for seq in self._ahead if seq > cursor]
            barrier = min(self._ahead, default=math.inf)
            # Triggers join the cache in seq order, each above every one stored
            # before it, and storage is read only up to the one before the
            # cache's head: the cursor never passes that head. A cached trigger
            # goes out straight after the cursor only if the trigger stored
            # before it is behind the cursor too, and no trigger handed back
            # lies between them.
            recent = self._recent
            if recent and recent[0][0] <= cursor and recent[0][1].seq < barrier:
                rows: list[Outgoing] = []
                last = cursor
                while (
                    recent
                    and recent[0][0] <= last
                    and recent[0][1].seq < barrier
                    and len(rows) < BATCH
                ):
                    rows.append(recent.popleft()[1])
                    self._recent_bytes -= len(rows[-1].body)
                    last = rows[-1].seq
                return rows, last
            if cursor < self._last_stored:
                # Not kept in memory (after a restart, a reconnect, or while the
                # broker was away): read them back from storage.
                up_to = recent[0][1].seq - 1 if recent else self._last_stored
                rows = await self._storage.pending(cursor, up_to, BATCH)
                return rows, (up_to if len(rows) < BATCH else rows[-1].seq)
            if self._done:
                return None
            await self.wait_for_work()

    async def wait_for_work(self) -> None:
        """Wait until a trigger is stored or the sources are done."""
        self._work = trio.Event()
        await self._work.wait()

    # -- upkeep ------------------------------------------------------------------------

    async def serve_pruning(self) -> None:  # pragma: no mutate block
        """Delete settled triggers older than ``TOWER_RETENTION``, hourly at most."""
        retention = self._settings.retention
        while True:
            try:
                deleted = await self._storage.prune(retention)
            except JournalError as err:
                _log.error("journal.prune_failed", error=err)
            else:
                if deleted:
                    _log.info("journal.pruned", deleted=deleted)
            await trio.sleep(min(_PRUNE_EVERY, retention / 10))

    async def serve_room_checks(self) -> None:  # pragma: no mutate block
        """Keep ``problem`` current: is there room for one more trigger of the largest size?"""
        # Below that, the next write may fail, and a load balancer should look elsewhere.
        needed = 2 * self._settings.max_body_bytes
        while True:
            try:
                room = await self._storage.room()
            except (OSError, JournalError) as err:
                self.problem = f"cannot check its free space: {err}"
            else:
                self.room = room
                self.problem = (
                    None
                    if room >= needed
                    else f"it has room for {room} more bytes, less than {needed} "
                    "(TOWER_JOURNAL_MAX_BYTES or the disk); settled triggers are pruned "
                    "after TOWER_RETENTION"
                )
            self._room_check = trio.Event()
            with trio.move_on_after(_ROOM_EVERY):
                await self._room_check.wait()
