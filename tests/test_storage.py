"""The storage contract: what every ``Storage`` must do, whatever keeps the data.

Each test goes through the ``Storage`` interface only, against every
implementation in ``BACKENDS``; a new store (PostgreSQL, for several
towers) joins by adding its opener there. What only the SQLite journal
does (WAL, fsync, its file) is tested in tests/test_journal.py.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests._postgres import open_schema
from tower_trio import Trigger
from tower_trio._journal import open_storage
from tower_trio._postgres import open_postgres_storage
from tower_trio._serialization import dump_trigger
from tower_trio._storage import (
    Accepted,
    Duplicate,
    Entry,
    Outgoing,
    PageQuery,
    Refused,
    Settlement,
    Storage,
    request_fingerprint,
)
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    Opener = Callable[..., Awaitable[Storage]]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _options(clock: Clock | None, max_bytes: int | None) -> dict[str, Any]:
    return {"max_bytes": max_bytes, **({"clock": clock} if clock else {})}


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Opener]:
    async def open_one(*, clock: Clock | None = None, max_bytes: int | None = None) -> Storage:
        return await open_storage(tmp_path / "journal", **_options(clock, max_bytes))

    yield open_one


@asynccontextmanager
async def _postgres(tmp_path: Path) -> AsyncIterator[Opener]:
    async with open_schema() as url:

        async def open_one(*, clock: Clock | None = None, max_bytes: int | None = None) -> Storage:
            return await open_postgres_storage(url, **_options(clock, max_bytes))

        yield open_one


BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}
"""Each store's opener: given a test's own folder, opens stores in a place of the test's own."""
_MARKS = {"postgres": [pytest.mark.postgres]}


@pytest.fixture(
    params=[pytest.param(name, marks=_MARKS.get(name, [])) for name in sorted(BACKENDS)]
)
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Opens stores of one backend in a place of the test's own (reopening finds the same data)."""
    stores: list[Storage] = []
    async with BACKENDS[request.param](tmp_path) as opener:

        async def open_one(**options: Any) -> Storage:
            store = await opener(**options)
            stores.append(store)
            return store

        try:
            yield open_one
        finally:
            for store in stores:
                store.close()


@pytest.fixture
async def storage(opened: Any) -> Storage:
    store: Storage = await opened()
    return store


def trigger(n: int = 0, **fields: Any) -> Trigger:
    return Trigger(
        **{"api_version": "OT-2/v1alpha1", "protocol": "PlateTransfer", "spec": {"n": n}, **fields}
    )


def entry(t: Trigger, key: str | None = None) -> Entry:
    return (t, dump_trigger(t), key, None if key is None else request_fingerprint(t))


def outgoings(results: list[Accepted | Duplicate | Refused]) -> list[Outgoing]:
    stored = []
    for result in results:
        assert isinstance(result, Accepted)
        stored.append(result.outgoing)
    return stored


async def store(storage: Storage, *triggers: Trigger) -> list[int]:
    return [o.seq for o in outgoings(await storage.append([entry(t) for t in triggers]))]


def answer(
    seq: int, status: DeliveryStatus, at: float = 50.0, error: str | None = None
) -> Settlement:
    return Settlement(seq, status, 1, error, at)


class TestAppend:
    async def test_a_stored_trigger_comes_back_as_published(self, storage: Storage) -> None:
        """What is stored is what the publisher sends: body, routing key, protocol, source."""
        t = trigger(1).with_source("plugin:inbox")
        (outgoing,) = outgoings(await storage.append([entry(t)]))
        assert (outgoing.uuid, outgoing.routing_key, outgoing.protocol) == (
            t.uuid,
            "OT-2/v1alpha1",
            "PlateTransfer",
        )
        assert (outgoing.source, outgoing.body, outgoing.attempts) == (
            "plugin:inbox",
            dump_trigger(t),
            0,
        )
        assert outgoing.created_at == t.created_at.timestamp()

    async def test_seqs_grow_in_the_order_of_the_batch(self, storage: Storage) -> None:
        """A batch gets increasing seqs, each above every seq stored before."""
        first = await store(storage, trigger(0))
        batch = await store(storage, trigger(1), trigger(2), trigger(3))
        assert first[0] < batch[0] < batch[1] < batch[2]
        assert await storage.last_seq() == batch[-1]

    async def test_a_known_key_is_a_duplicate_of_the_first(self, storage: Storage) -> None:
        """A key seen before answers with the first trigger; the fingerprint tells a retry."""
        first = trigger(1)
        (kept,) = outgoings(await storage.append([entry(first, "http:k")]))
        retry, changed, fresh = await storage.append(
            [entry(trigger(1), "http:k"), entry(trigger(2), "http:k2"), entry(trigger(3))]
        )
        assert isinstance(retry, Duplicate)
        assert (retry.record.uuid, retry.record.seq, retry.same_request) == (
            first.uuid,
            kept.seq,
            True,
        )
        assert isinstance(changed, Accepted)
        assert isinstance(fresh, Accepted)
        (other,) = await storage.append([entry(trigger(9), "http:k")])
        assert isinstance(other, Duplicate)
        assert not other.same_request

    async def test_a_key_repeated_within_a_batch(self, storage: Storage) -> None:
        """Of two triggers with one key in a batch, the first is stored, the second is its copy."""
        a, b = trigger(1), trigger(1)
        first, second = await storage.append([entry(a, "plugin:x:1"), entry(b, "plugin:x:1")])
        assert isinstance(first, Accepted)
        assert isinstance(second, Duplicate)
        assert second.record.uuid == a.uuid
        assert second.same_request

    async def test_the_same_trigger_twice_is_stored_once(self, storage: Storage) -> None:
        """A trigger object sent again (same uuid) is a duplicate, stored before or in the batch."""
        t = trigger(1)
        first, again = await storage.append([entry(t), entry(t)])
        assert isinstance(first, Accepted)
        assert isinstance(again, Duplicate)
        (later,) = await storage.append([entry(t)])
        assert isinstance(later, Duplicate)
        assert later.record.seq == first.outgoing.seq
        assert await storage.pending_count() == 1


class TestSettle:
    async def test_answers_show_in_lookups(self, storage: Storage) -> None:
        """Each answer sets status, attempts, error and, for a publish only, its time."""
        published, returned, retried = (trigger(n) for n in range(3))
        seqs = await store(storage, published, returned, retried)
        await storage.settle(
            [
                answer(seqs[0], DeliveryStatus.PUBLISHED, at=70.0),
                answer(seqs[1], DeliveryStatus.UNROUTABLE, error="312 NO_ROUTE"),
                Settlement(seqs[2], DeliveryStatus.PENDING, 2, "nacked", 80.0),
            ]
        )
        p, r, q = [await storage.get(t.uuid) for t in (published, returned, retried)]
        assert p is not None
        assert (p.status, p.published_at, p.attempts) == (DeliveryStatus.PUBLISHED, 70.0, 1)
        assert r is not None
        assert (r.status, r.published_at, r.last_error) == (
            DeliveryStatus.UNROUTABLE,
            None,
            "312 NO_ROUTE",
        )
        assert q is not None
        assert (q.status, q.attempts, q.last_error) == (DeliveryStatus.PENDING, 2, "nacked")

    async def test_only_the_answered_triggers_change(self, storage: Storage) -> None:
        """Answers for two triggers with one between leave that one pending."""
        seqs = await store(storage, trigger(0), trigger(1), trigger(2))
        await storage.settle(answer(seq, DeliveryStatus.PUBLISHED) for seq in (seqs[0], seqs[2]))
        assert [o.seq for o in await storage.pending(0, seqs[-1], 10)] == [seqs[1]]
        assert await storage.pending_count() == 1


class TestPending:
    async def test_a_window_after_one_seq_up_to_another_oldest_first(
        self, storage: Storage
    ) -> None:
        """``pending`` excludes ``after_seq``, includes ``up_to_seq``, and stops at ``limit``."""
        seqs = await store(storage, *(trigger(n) for n in range(6)))
        await storage.settle([answer(seqs[2], DeliveryStatus.FAILED)])
        window = await storage.pending(seqs[0], seqs[4], 10)
        assert [o.seq for o in window] == [seqs[1], seqs[3], seqs[4]]
        assert [o.seq for o in await storage.pending(seqs[0], seqs[5], 2)] == [seqs[1], seqs[3]]

    async def test_an_empty_store(self, storage: Storage) -> None:
        """Nothing stored: no seq, nothing pending, nothing to look up."""
        assert (await storage.last_seq(), await storage.pending_count()) == (0, 0)
        assert await storage.get("0" * 32) is None
        assert await storage.page(PageQuery(limit=10)) == ([], False)


class TestPrune:
    async def test_settled_triggers_go_after_the_retention_pending_ones_never(
        self, opened: Any
    ) -> None:
        """Pruning deletes what was settled longer ago than the retention, nothing else."""
        clock = Clock()
        storage: Storage = await opened(clock=clock)
        old, recent, waiting = trigger(0), trigger(1), trigger(2)
        seqs = await store(storage, old, recent, waiting)
        await storage.settle(
            [
                answer(seqs[0], DeliveryStatus.PUBLISHED, at=clock.now - 100),
                answer(seqs[1], DeliveryStatus.UNROUTABLE, at=clock.now - 10),
            ]
        )
        clock.now += 1_000_000
        assert await storage.prune(1_000_050) == 1
        assert await storage.get(old.uuid) is None
        assert await storage.get(recent.uuid) is not None
        clock.now += 10_000_000
        assert await storage.prune(60) == 1
        assert await storage.get(waiting.uuid) is not None
        assert await storage.pending_count() == 1

    async def test_seqs_keep_growing_after_everything_is_pruned(self, opened: Any) -> None:
        """``last_seq`` is the highest seq ever stored: pruning lowers neither it nor the next."""
        clock = Clock()
        storage: Storage = await opened(clock=clock)
        seqs = await store(storage, trigger(0), trigger(1))
        await storage.settle(answer(seq, DeliveryStatus.PUBLISHED, at=clock.now) for seq in seqs)
        clock.now += 100
        assert await storage.prune(10) == 2
        assert await storage.last_seq() == seqs[-1]
        (later,) = await store(storage, trigger(2))
        assert later > seqs[-1]


class TestPage:
    async def test_newest_first_filtered_and_in_pages(self, storage: Storage) -> None:
        """Filters combine; ``before`` pages back; ``more`` says whether to ask again."""
        triggers = [trigger(n, protocol="Home" if n % 2 else "PlateTransfer") for n in range(5)]
        seqs = await store(storage, *triggers)
        await storage.settle([answer(seqs[4], DeliveryStatus.PUBLISHED)])
        records, more = await storage.page(
            PageQuery(status=DeliveryStatus.PENDING, protocol="PlateTransfer", limit=10)
        )
        assert ([r.seq for r in records], more) == ([seqs[2], seqs[0]], False)
        first, more = await storage.page(PageQuery(limit=2))
        assert ([r.seq for r in first], more) == ([seqs[4], seqs[3]], True)
        rest, more = await storage.page(PageQuery(limit=2, before=first[-1].seq))
        assert [r.seq for r in rest] == [seqs[2], seqs[1]]
        by_device, _ = await storage.page(PageQuery(api_version="other/v1", limit=10))
        assert by_device == []

    async def test_a_byte_bound_ends_a_page_early_but_never_empty(self, storage: Storage) -> None:
        """With ``max_bytes``, a page stops before its bodies pass it, one record at least."""
        seqs = await store(storage, *(trigger(n) for n in range(3)))
        records, more = await storage.page(PageQuery(limit=10, max_bytes=1))
        assert ([r.seq for r in records], more) == ([seqs[2]], True)

    async def test_a_key_finds_its_trigger(self, storage: Storage) -> None:
        """The ``key`` filter matches the stored idempotency key exactly."""
        keyed, other = trigger(1), trigger(2)
        await storage.append([entry(keyed, "http:k-1"), entry(other, "http:k-10")])
        records, _ = await storage.page(PageQuery(key="http:k-1", limit=10))
        assert [r.uuid for r in records] == [keyed.uuid]
        assert (await storage.page(PageQuery(key="k-1", limit=10)))[0] == []


class TestRetry:
    async def test_failed_and_unroutable_triggers_go_pending_again(self, opened: Any) -> None:
        """A retry makes the trigger pending with fresh attempts, and counts itself."""
        clock = Clock()
        storage: Storage = await opened(clock=clock)
        failed, returned = trigger(1), trigger(2)
        seqs = await store(storage, failed, returned)
        await storage.settle(
            [
                Settlement(seqs[0], DeliveryStatus.FAILED, 5, "nacked", 60.0),
                answer(seqs[1], DeliveryStatus.UNROUTABLE, error="312 NO_ROUTE"),
            ]
        )
        for t, seq in zip((failed, returned), seqs, strict=True):
            result = await storage.retry(t.uuid)
            assert result is not None
            record, outgoing = result
            assert (record.status, record.attempts, record.last_error) == (
                DeliveryStatus.PENDING,
                0,
                None,
            )
            assert (record.retries, record.retried_at) == (1, clock.now)
            assert outgoing is not None
            assert (outgoing.seq, outgoing.uuid, outgoing.attempts) == (seq, t.uuid, 0)
            assert outgoing.body == dump_trigger(t)
        assert [o.seq for o in await storage.pending(0, seqs[-1], 10)] == seqs
        assert await storage.pending_count() == 2

    async def test_only_failed_or_unroutable_change(self, storage: Storage) -> None:
        """Pending and published triggers are left alone: nothing is queued twice."""
        waiting, published, gone = trigger(1), trigger(2), trigger(3)
        seqs = await store(storage, waiting, published, gone)
        await storage.settle([answer(seqs[1], DeliveryStatus.PUBLISHED)])
        await storage.settle([answer(seqs[2], DeliveryStatus.UNROUTABLE)])
        for t, status in ((waiting, DeliveryStatus.PENDING), (published, DeliveryStatus.PUBLISHED)):
            result = await storage.retry(t.uuid)
            assert result is not None
            assert (result[0].status, result[0].retries, result[1]) == (status, 0, None)
        first = await storage.retry(gone.uuid)
        again = await storage.retry(gone.uuid)
        assert first is not None
        assert first[1] is not None
        assert again is not None
        assert (again[0].retries, again[1]) == (1, None)
        assert await storage.retry("0" * 32) is None

    async def test_a_retried_trigger_settles_again(self, storage: Storage) -> None:
        """After a retry, the broker's next answer is recorded as for any trigger."""
        t = trigger(1)
        (seq,) = await store(storage, t)
        await storage.settle([answer(seq, DeliveryStatus.UNROUTABLE, error="312 NO_ROUTE")])
        await storage.retry(t.uuid)
        await storage.settle([answer(seq, DeliveryStatus.PUBLISHED, at=90.0)])
        record = await storage.get(t.uuid)
        assert record is not None
        assert (record.status, record.published_at, record.retries) == (
            DeliveryStatus.PUBLISHED,
            90.0,
            1,
        )


class TestPluginState:
    async def test_saved_values_are_loaded_again_after_reopening(self, opened: Any) -> None:
        """State is durable and per plugin; saving None deletes a key."""
        storage: Storage = await opened()
        await storage.save_plugin_state("inbox", "cursor", {"page": 3})
        await storage.save_plugin_state("inbox", "gone", [1])
        await storage.save_plugin_state("inbox", "gone", None)
        await storage.save_plugin_state("riffyn", "cursor", "x")
        storage.close()
        again: Storage = await opened()
        assert await again.load_plugin_state("inbox") == {"cursor": {"page": 3}}
        assert await again.load_plugin_state("riffyn") == {"cursor": "x"}
        assert await again.load_plugin_state("nobody") == {}


class TestWriterDiscipline:
    async def test_writes_from_many_tasks_all_land(self, storage: Storage) -> None:
        """Concurrent writers (batches, answers, plugin state) never fail each other."""
        triggers = [trigger(n) for n in range(20)]

        async def one(n: int) -> None:
            (result,) = await storage.append([entry(triggers[n])])
            assert isinstance(result, Accepted)
            await storage.settle([answer(result.outgoing.seq, DeliveryStatus.PUBLISHED)])
            await storage.save_plugin_state("p", str(n), n)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(one, n)
        assert await storage.pending_count() == 0
        assert len(await storage.load_plugin_state("p")) == 20

    async def test_room_is_positive_and_bounded_by_a_cap(self, opened: Any) -> None:
        """A store reports the bytes it can still take, at most its cap."""
        capped: Storage = await opened(max_bytes=256 * 1024)
        assert 0 < await capped.room() <= 256 * 1024
