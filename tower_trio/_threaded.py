"""A blocking store made into the tower's ``Storage``: each call in a worker thread.

sqlite3 and psycopg block, and trio has no native driver for either, so
both journals are classes whose every method blocks (``BlockingStore``),
and ``ThreadedStorage`` keeps the writer discipline of ``tower_trio._storage``
for them: writes one at a time, in the order they were called, never
abandoned once started; lookups beside them.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import trio

from ._storage import PRUNE_BATCH

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ._storage import (
        Accepted,
        Duplicate,
        Entry,
        JournalRecord,
        Membership,
        Outgoing,
        PageQuery,
        Refused,
        Settlement,
    )

__all__ = ["BlockingStore", "ThreadedStorage"]

_T = TypeVar("_T")


class BlockingStore(Protocol):
    """A store whose every method blocks; ``ThreadedStorage`` makes it a ``Storage``.

    The methods mean what ``Storage``'s do, with pruning split into batches
    (``prune_batch``) so that other writes take their turn between two.
    """

    clock: Callable[[], float]

    @property
    def location(self) -> str: ...

    def append(self, entries: Sequence[Entry]) -> Sequence[Accepted | Duplicate | Refused]: ...

    def settle(self, settlements: Iterable[Settlement]) -> None: ...

    def retry(self, uuid: str) -> tuple[JournalRecord, Outgoing | None] | None: ...

    def pending(self, after_seq: int, up_to_seq: int, limit: int) -> list[Outgoing]: ...

    def pending_count(self) -> int: ...

    def last_seq(self) -> int: ...

    def prune_batch(self, cutoff: float, batch: int = PRUNE_BATCH) -> int:
        """Delete at most ``batch`` triggers settled before ``cutoff``, in one transaction."""
        ...

    def room(self) -> int: ...

    def get(self, uuid: str) -> JournalRecord | None: ...

    def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]: ...

    def load_plugin_state(self, plugin: str) -> dict[str, Any]: ...

    def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None: ...

    def close(self) -> None: ...


_Store = TypeVar("_Store", bound=BlockingStore)


class ThreadedStorage(Generic[_Store]):
    """The tower's ``Storage`` on a blocking store, each call in a worker thread.

    Writes pass one at a time, in the order they were called (a FIFO
    limiter of one), and are not abandoned when their caller is cancelled
    (``abandon_on_cancel=False``: a transaction that has started commits or
    rolls back before the caller sees its cancellation), except a plugin's
    state (see ``_write_for_plugin``). Lookups have their own limiter and
    connection, so they never wait for a batch commit.
    """

    def __init__(self, store: _Store, *, prune_batch: int = PRUNE_BATCH) -> None:
        self.journal = store
        self.prune_batch = prune_batch
        self._write_lock = trio.CapacityLimiter(1)
        self._read_lock = trio.CapacityLimiter(1)

    @property
    def location(self) -> str:
        return self.journal.location

    @property
    def membership(self) -> Membership | None:
        """None: the tower is the store's one writer, unless a subclass says otherwise."""
        return None

    async def run_write(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function`` as a write: in turn with the others, never abandoned."""
        return await self._write(function, *args)

    async def _write(self, function: Callable[..., _T], *args: Any) -> _T:
        return await trio.to_thread.run_sync(
            function, *args, limiter=self._write_lock, abandon_on_cancel=False
        )

    async def _write_for_plugin(self, function: Callable[..., _T], *args: Any) -> _T:
        # A plugin is cancelled when it stops (its lease ran out, the tower
        # stops) and never looks at what its last state call did; waiting for
        # a store that does not answer (PostgreSQL out of reach) would hold
        # the stop until TCP gives up. Abandoned, the call still ends in its
        # thread, holding the write limiter until then (trio releases it only
        # when the thread ends), so the next write, or the plugin's next
        # load, still comes after it; under a lease, the term fences it.
        return await trio.to_thread.run_sync(
            function, *args, limiter=self._write_lock, abandon_on_cancel=True
        )

    async def _read(self, function: Callable[..., _T], *args: Any) -> _T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._read_lock)

    async def append(self, entries: Sequence[Entry]) -> list[Accepted | Duplicate | Refused]:
        return list(await self._write(self.journal.append, entries))

    async def settle(self, settlements: Iterable[Settlement]) -> None:
        await self._write(self.journal.settle, settlements)

    async def retry(self, uuid: str) -> tuple[JournalRecord, Outgoing | None] | None:
        return await self._write(self.journal.retry, uuid)

    async def pending(self, after_seq: int, up_to_seq: int, limit: int) -> list[Outgoing]:
        return await self._write(self.journal.pending, after_seq, up_to_seq, limit)

    async def pending_count(self) -> int:
        return await self._write(self.journal.pending_count)

    async def last_seq(self) -> int:
        return await self._write(self.journal.last_seq)

    async def prune(self, retention: float) -> int:
        # One transaction per call: batches of new triggers and broker answers
        # take their turn between two, so pruning a large journal never
        # holds up ingest for longer than one batch.
        cutoff = self.journal.clock() - retention
        deleted = 0
        while (count := await self._write(self.journal.prune_batch, cutoff, self.prune_batch)) == (
            self.prune_batch
        ):
            deleted += count
        return deleted + count

    async def room(self) -> int:
        return await self._write(self.journal.room)

    async def get(self, uuid: str) -> JournalRecord | None:
        return await self._read(self.journal.get, uuid)

    async def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]:
        return await self._read(self.journal.page, query)

    async def load_plugin_state(self, plugin: str) -> dict[str, Any]:
        return await self._write_for_plugin(self.journal.load_plugin_state, plugin)

    async def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        await self._write_for_plugin(
            partial(self.journal.save_plugin_state, term=term), plugin, key, value
        )

    def close(self) -> None:
        self.journal.close()
