"""Several towers on one PostgreSQL journal: who owns a trigger, heartbeats, takeovers.

Each test works in a schema of its own (tests/_postgres.py). The stores
here stand for towers: each is opened with its own instance name, as
``TOWER_INSTANCE`` names a tower. A tower's death is its heartbeat's
expiry, set in the database directly, so no test waits for a clock.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest
import trio

from tests._faults import post_to_a_tower_that_may_die
from tests._helpers import VALID
from tests._postgres import POSTGRES_URL, admin, open_schema, schema_url
from tests._proxy import Proxy, open_proxy
from tests._towers import start_tower_process, tower_environ
from tests.test_storage import answer, entry, store, trigger
from tower_trio._channel import Submission
from tower_trio._config import Settings
from tower_trio._outbox import Outbox
from tower_trio._postgres import PostgresStorage, open_postgres_storage
from tower_trio._storage import Outgoing, PageQuery
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from tests._helpers import Broker
    from tests._towers import TowerProcess
    from tower_trio import Trigger
    from tower_trio._journal_url import PostgresURL

pytestmark = pytest.mark.postgres


@asynccontextmanager
async def towers(*names: str) -> AsyncIterator[list[PostgresStorage]]:
    """One store per name on one fresh schema, as towers sharing a journal see it."""
    async with open_schema() as url:
        opened: list[PostgresStorage] = []
        try:
            for name in names:
                opened.append(await open_postgres_storage(url, instance=name))
            with trio.fail_after(30):
                yield opened
        finally:
            for storage in opened:
                storage.close()


async def expire(storage: PostgresStorage) -> None:
    """Make the tower's heartbeat expired, as if it died ``TOWER_REPLICA_TTL`` ago."""
    url = storage.journal.url
    await trio.to_thread.run_sync(
        admin,
        f"UPDATE {url.schema}.instances SET expires_at = now() - interval '1 s' WHERE name = %s",
        storage.membership.instance,
    )


async def owners(url: PostgresURL) -> dict[int, str | None]:
    rows = await trio.to_thread.run_sync(admin, f"SELECT seq, owner FROM {url.schema}.triggers")
    return dict(rows)


class TestOwnership:
    async def test_each_tower_hands_out_only_what_it_stored(self) -> None:
        """pending and pending_count see a tower's own triggers; lookups see everyone's."""
        async with towers("a", "b") as (a, b):
            mine = await store(a, trigger(1), trigger(2))
            theirs = await store(b, trigger(3))
            more = await store(a, trigger(4))
            assert [o.seq for o in await a.pending(0, 100, 10)] == [*mine, *more]
            assert [o.seq for o in await b.pending(0, 100, 10)] == theirs
            assert (await a.pending_count(), await b.pending_count()) == (3, 1)
            assert await a.last_seq() == await b.last_seq() == more[-1]
            records, _ = await b.page(PageQuery(limit=10))
            assert len(records) == 4
            first = await a.get(records[-1].uuid)
            assert first is not None
            assert await b.get(first.uuid) == first

    async def test_idempotency_keys_are_shared(self) -> None:
        """A key stored by one tower is a duplicate on another, answered with the first trigger."""
        async with towers("a", "b") as (a, b):
            first = trigger(1)
            await a.append([entry(first, "http:k")])
            (again,) = await b.append([entry(trigger(1), "http:k")])
            record = getattr(again, "record", None)
            assert record is not None
            assert record.uuid == first.uuid
            assert getattr(again, "same_request", None) is True
            assert await b.pending_count() == 0

    async def test_a_retry_makes_the_asking_tower_the_owner(self) -> None:
        """A failed trigger retried through another tower is published by that one."""
        async with towers("a", "b") as (a, b):
            (seq,) = await store(a, trigger(1))
            await a.settle([answer(seq, DeliveryStatus.FAILED)])
            record = await a.get((await a.page(PageQuery(limit=1)))[0][0].uuid)
            assert record is not None
            result = await b.retry(record.uuid)
            assert result is not None
            assert result[1] is not None
            assert [o.seq for o in await b.pending(0, seq, 10)] == [seq]
            assert await a.pending(0, seq, 10) == []


class TestTakeover:
    async def test_a_live_towers_triggers_are_left_alone(self) -> None:
        """Nothing is taken from a tower whose heartbeat has not expired."""
        async with towers("a", "b") as (a, b):
            await store(a, trigger(1), trigger(2))
            assert await b.membership.take_over(10) == []
            assert await a.membership.heartbeat(10) is True
            assert await a.pending_count() == 2

    async def test_an_expired_towers_triggers_are_taken_in_order(self) -> None:
        """A live tower takes a dead one's pending triggers, oldest first, and owns them."""
        async with towers("a", "b") as (a, b):
            seqs = await store(a, trigger(1), trigger(2), trigger(3))
            await a.settle([answer(seqs[0], DeliveryStatus.PUBLISHED)])
            await store(b, trigger(4))
            await expire(a)
            taken = await b.membership.take_over(10)
            assert [(o.seq, owner) for o, owner in taken] == [(seqs[1], "a"), (seqs[2], "a")]
            assert await b.membership.take_over(10) == []
            assert [o.seq for o in await b.pending(0, 100, 10)][:2] == seqs[1:]
            assert await a.pending_count() == 0
            assert (await owners(a.journal.url))[seqs[0]] == "a"  # settled: left as it was

    async def test_the_dead_tower_learns_it_lapsed(self) -> None:
        """A tower whose heartbeat expired is told so by its next heartbeat, then lives again."""
        async with towers("a", "b") as (a, b):
            await store(a, trigger(1))
            await expire(a)
            assert len(await b.membership.take_over(10)) == 1
            assert await a.membership.heartbeat(10) is False
            assert await a.membership.heartbeat(10) is True
            (seq,) = await store(a, trigger(2))
            assert await b.membership.take_over(10) == []
            assert [o.seq for o in await a.pending(0, 100, 10)] == [seq]

    async def test_a_tower_that_left_is_taken_over_at_once(self) -> None:
        """After leave (a graceful stop), the others take its triggers without waiting."""
        async with towers("a", "b") as (a, b):
            await store(a, trigger(1))
            await a.membership.leave()
            assert [owner for _, owner in await b.membership.take_over(10)] == ["a"]

    async def test_triggers_stored_before_owners_existed_are_taken(self) -> None:
        """Triggers from a journal older than ownership (no owner) go to the first live tower."""
        async with towers("a") as (a,):
            seqs = await store(a, trigger(1), trigger(2))
            await trio.to_thread.run_sync(
                admin, f"UPDATE {a.journal.url.schema}.triggers SET owner = NULL"
            )
            assert await a.pending_count() == 0
            taken = await a.membership.take_over(10)
            assert [(o.seq, owner) for o, owner in taken] == [(s, None) for s in seqs]
            assert await a.pending_count() == 2

    async def test_claimers_never_get_the_same_trigger(self) -> None:
        """Three towers taking over one dead tower's triggers at once split them, no overlap."""
        async with towers("dead", "b", "c", "d") as (dead, *claimers):
            stored: list[int] = []
            for n in range(10):
                stored += await store(dead, *(trigger(100 * n + i) for i in range(100)))
            await expire(dead)
            got: dict[str, list[int]] = {}

            async def claim(storage: PostgresStorage) -> None:
                mine = got.setdefault(storage.membership.instance, [])
                while taken := await storage.membership.take_over(37):
                    mine.extend(o.seq for o, _ in taken)
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                for storage in claimers:
                    nursery.start_soon(claim, storage)
            every = [seq for seqs in got.values() for seq in seqs]
            assert sorted(every) == stored  # each once: none lost, none twice
            assert sum(1 for seqs in got.values() if seqs) >= 2, got  # they did overlap in time
            table = await owners(dead.journal.url)
            for name, seqs in got.items():
                assert {table[seq] for seq in seqs} <= {name}

    async def test_a_locked_trigger_is_skipped_not_waited_for(self) -> None:
        """A row another transaction holds is skipped; the rest are taken at once."""
        async with towers("a", "b") as (a, b):
            seqs = await store(a, trigger(1), trigger(2), trigger(3))
            await expire(a)
            locking = f"SELECT seq FROM {a.journal.url.schema}.triggers WHERE seq = {seqs[0]} "
            async with open_transaction(locking + "FOR UPDATE", commit=False):
                with trio.fail_after(5):
                    taken = await b.membership.take_over(10)
            assert [o.seq for o, _ in taken] == seqs[1:]
            assert [o.seq for o, _ in await b.membership.take_over(10)] == seqs[:1]

    async def test_a_renewal_racing_a_takeover_never_both_win(self) -> None:
        """A renewal that waited for a takeover's lock on its row finds the row gone: lapsed."""
        async with towers("a") as (a,):
            renewed: list[bool] = []

            async def renew() -> None:
                renewed.append(await a.membership.heartbeat(10))

            # What take_over's first statement does to an expired row, kept open;
            # the row is live here, so that the renewal qualifies and waits for it.
            deleting = f"DELETE FROM {a.journal.url.schema}.instances WHERE name = 'a'"
            async with (
                trio.open_nursery() as nursery,
                open_transaction(deleting, commit=True),
            ):
                nursery.start_soon(renew)
                # The server's lock table has no event to wait on.
                while not await trio.to_thread.run_sync(  # noqa: ASYNC110
                    admin,
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE instances%%'",
                ):
                    await trio.sleep(0.01)
                assert renewed == []
            assert renewed == [False]


@asynccontextmanager
async def open_transaction(statement: str, *, commit: bool) -> AsyncIterator[None]:
    """``statement`` run in a transaction held open (its locks too) for the block."""
    holding = trio.Event()
    release = trio.Event()

    def hold() -> None:
        with psycopg.connect(POSTGRES_URL, connect_timeout=10) as db:
            db.execute(statement)
            trio.from_thread.run_sync(holding.set)
            trio.from_thread.run(release.wait)
            db.commit() if commit else db.rollback()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, hold)
        await holding.wait()
        try:
            yield
        finally:
            release.set()


async def ingest(outbox: Outbox, *triggers: Trigger) -> None:
    """Store ``triggers`` through the outbox, as the HTTP API would."""
    send, receive = trio.open_memory_channel[Submission](len(triggers))
    async with send:
        for t in triggers:
            send.send_nowait(Submission.of(t))
    await outbox.serve_ingest(receive)


async def hand_out(outbox: Outbox, cursor: int) -> tuple[list[int], int]:
    """Every seq ``next_batch`` hands out from ``cursor`` until it would wait; the new cursor."""
    seqs: list[int] = []
    while True:
        with trio.move_on_after(0.5) as waited:
            batch = await outbox.next_batch(cursor)
        if waited.cancelled_caught or batch is None:
            return seqs, cursor
        rows, cursor = batch
        seqs += [row.seq for row in rows]


class TestOutboxAmongReplicas:
    async def test_others_triggers_are_gaps_crossed_without_reading(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its own triggers go out once each, in order, from memory, across others' seqs."""
        async with towers("a", "b") as (a, b):
            outbox = Outbox(Settings(), a)
            await outbox.load()
            reads: list[tuple[int, int]] = []
            pending = a.pending

            async def counted(after: int, up_to: int, limit: int) -> list[Outgoing]:
                reads.append((after, up_to))
                return await pending(after, up_to, limit)

            monkeypatch.setattr(a, "pending", counted)
            await ingest(outbox, trigger(1), trigger(2))
            theirs = await store(b, trigger(3), trigger(4))
            await ingest(outbox, trigger(5))
            await store(b, trigger(6))
            await ingest(outbox, trigger(7))
            seqs, cursor = await hand_out(outbox, 0)
            assert seqs == [1, 2, 5, 7]
            assert reads == []
            # b dies: its triggers behind the cursor go out at once, once.
            await expire(b)
            taken = await a.membership.take_over(10)
            outbox.taken_over([outgoing for outgoing, _ in taken])
            again, _ = await hand_out(outbox, cursor)
            assert sorted(again) == [*theirs, 6]
            assert outbox.pending == 7

    async def test_a_taken_trigger_ahead_of_the_cursor_goes_out_once(self) -> None:
        """Taken over past the cursor, a trigger is read back when the cursor gets there."""
        async with towers("a", "b") as (a, b):
            outbox = Outbox(Settings(), a)
            await outbox.load()
            await ingest(outbox, trigger(1))
            theirs = await store(b, trigger(2), trigger(3))
            await expire(b)
            outbox.taken_over([o for o, _ in await a.membership.take_over(10)])
            await ingest(outbox, trigger(4))
            seqs, _ = await hand_out(outbox, 0)
            assert seqs == [1, *theirs, 4]

    async def test_forget_reads_back_only_what_is_still_its_own(self) -> None:
        """After a fresh start, what another tower took meanwhile is not handed out."""
        async with towers("a", "b") as (a, b):
            outbox = Outbox(Settings(), a)
            await outbox.load()
            await ingest(outbox, trigger(1), trigger(2))
            await expire(a)
            await b.membership.take_over(1)  # b takes the oldest only
            outbox.forget()
            await outbox.recount()
            seqs, _ = await hand_out(outbox, 0)
            assert seqs == [2]
            assert outbox.pending == 1


# -- real towers: `tower-trio run` processes sharing one schema and one exchange --------

TTL = 3.0
"""TOWER_REPLICA_TTL of the towers below: short, so that a takeover fits in a test."""
TAKEOVER_BOUND = 1.2 * TTL + 1.5
"""A dead tower's triggers are published within this many seconds of its death:
the ttl, one look for them (a fifth of it), and time to publish."""


async def start_towers(
    nursery: trio.Nursery, schema: PostgresURL, tmp_path: Path, **environs: dict[str, str]
) -> dict[str, TowerProcess]:
    """One tower per name, all on ``schema``; each name's environment adds its own variables."""
    started = {}
    for name, extra in environs.items():
        defaults = {
            "TOWER_INSTANCE": name,
            "TOWER_DATA_DIR": str(tmp_path / name),
            "TOWER_PLUGINS_DIR": str(tmp_path),
            "TOWER_JOURNAL_URL": schema_url(str(schema.schema)),
            "TOWER_REPLICA_TTL": str(TTL),
        }
        environ = tower_environ(**(defaults | extra))
        tower = await start_tower_process(nursery, environ)
        with trio.fail_after(30):
            tower.url = (await tower.wait_for("tower.started"))["http"].split(",")[0]
        started[name] = tower
    return started


async def receive_until(
    broker: Broker, queue: str, wanted: set[str], seen: dict[str, float]
) -> None:
    """Consume ``queue`` into ``seen`` (message_id → arrival time) until every wanted id came."""
    async with broker.channel.consume(queue, no_ack=True) as deliveries:
        async for message in deliveries:
            message_id = message.properties.message_id
            assert message_id is not None
            seen.setdefault(message_id, trio.current_time())
            if wanted <= seen.keys():
                return


@pytest.mark.subprocess
class TestTowers:
    async def test_a_killed_towers_triggers_are_published_by_another(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Load on three towers, one killed mid-load: every 202 reaches the queue, its in time."""
        queue = await broker.bind("OT-2/v1alpha1")
        # The victim's broker never answers, so whatever it accepts is still
        # pending when it dies: only a takeover can publish it.
        victim_env = {"TOWER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "TOWER_EXCHANGE": ""}
        live_env = {"TOWER_AMQP_URL": amqp_url, "TOWER_EXCHANGE": ""}
        accepted: dict[str, list[str]] = {}
        async with open_schema() as schema, trio.open_nursery() as nursery:
            victim_env["TOWER_EXCHANGE"] = live_env["TOWER_EXCHANGE"] = broker.exchange
            towers = await start_towers(
                nursery, schema, tmp_path, t1=live_env, t2=live_env, t3=victim_env
            )
            victim_busy, survivors_busy, stop = trio.Event(), trio.Event(), trio.Event()
            killed_at = 0.0

            async def load(name: str, tower: TowerProcess) -> None:
                mine = accepted.setdefault(name, [])
                async with httpx.AsyncClient(base_url=tower.url, timeout=10) as client:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        body = {**VALID, "spec": {"volume": n}}
                        try:
                            response = await post_to_a_tower_that_may_die(client, "/triggers", body)
                        except httpx.TransportError:
                            return  # the tower was killed: this one was not accepted
                        if response.status_code == 202:
                            mine.append(response.json()["uuid"])
                        if name == "t3" and len(mine) >= 40:
                            victim_busy.set()
                        if killed_at and name != "t3" and len(mine) >= 120:
                            survivors_busy.set()

            with trio.fail_after(30):
                async with trio.open_nursery() as clients:
                    for name, tower in towers.items():
                        for _ in range(3):
                            clients.start_soon(load, name, tower)
                    await victim_busy.wait()
                    await towers["t3"].kill()
                    killed_at = trio.current_time()
                    await survivors_busy.wait()
                    stop.set()
            assert all(accepted.get(name) for name in towers), {
                n: len(u) for n, u in accepted.items()
            }
            wanted = {uuid for uuids in accepted.values() for uuid in uuids}
            seen: dict[str, float] = {}
            with trio.move_on_after(TAKEOVER_BOUND + 10):
                await receive_until(broker, queue, wanted, seen)
            lost = wanted - seen.keys()
            logs = "\n".join(tower.log for tower in towers.values())
            assert not lost, f"{len(lost)} accepted triggers never reached the queue\n{logs}"
            took = max(seen[uuid] for uuid in accepted["t3"]) - killed_at
            print(f"takeover: {len(accepted['t3'])} triggers published {took:.2f} s after the kill")
            assert took <= TAKEOVER_BOUND, took
            taken = [
                int(fields["triggers"])
                for name in ("t1", "t2")
                for fields in towers[name].events("replica.took_over")
                if fields["previous_owner"] == "t3"
            ]
            assert sum(taken) >= len(accepted["t3"])
            for name in ("t1", "t2"):
                assert await towers[name].terminate() == 0

    async def test_idempotency_and_lookups_span_the_towers(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A key used on one tower is known to another; any tower looks up any trigger."""
        await broker.bind("OT-2/v1alpha1")
        env = {"TOWER_AMQP_URL": amqp_url, "TOWER_EXCHANGE": broker.exchange}
        async with open_schema() as schema, trio.open_nursery() as nursery:
            towers = await start_towers(nursery, schema, tmp_path, t1=env, t2=env)
            with trio.fail_after(20):
                async with (
                    httpx.AsyncClient(base_url=towers["t1"].url) as one,
                    httpx.AsyncClient(base_url=towers["t2"].url) as two,
                ):
                    key = {"Idempotency-Key": "run-42"}
                    first = await one.post("/triggers?wait=published", json=VALID, headers=key)
                    assert first.status_code == 202, first.text
                    uuid = first.json()["uuid"]
                    again = await two.post("/triggers", json=VALID, headers=key)
                    assert again.status_code == 200, again.text
                    assert again.json()["uuid"] == uuid
                    other = {**VALID, "spec": {"volume": 7}}
                    conflict = await two.post("/triggers", json=other, headers=key)
                    assert conflict.status_code == 409
                    assert uuid in conflict.text
                    looked_up = await two.get(f"/triggers/{uuid}")
                    assert looked_up.status_code == 200
                    assert looked_up.json()["status"] == "published"
                    listed = await two.get("/triggers", params={"key": "run-42"})
                    assert [item["uuid"] for item in listed.json()["items"]] == [uuid]
            for tower in towers.values():
                assert await tower.terminate() == 0
            assert sum(len(t.events("trigger.duplicate")) for t in towers.values()) == 2

    async def test_a_tower_cut_off_from_postgres_refuses_then_resumes(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Without PostgreSQL: 503 with Retry-After, /readyz says why; all resumes after."""
        queue = await broker.bind("OT-2/v1alpha1")
        async with (
            open_schema() as schema,
            open_proxy("127.0.0.1", 5432) as proxy,
            trio.open_nursery() as nursery,
        ):
            env = proxied_environ(schema, proxy, amqp_url, broker)
            tower = (await start_towers(nursery, schema, tmp_path, t1=env))["t1"]
            with trio.fail_after(30):
                async with httpx.AsyncClient(base_url=tower.url, timeout=10) as client:
                    before = await client.post("/triggers?wait=published", json=VALID)
                    assert before.status_code == 202, before.text
                    proxy.cut()
                    refused = await client.post("/triggers", json=VALID)
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["error"] == "journal unavailable"
                    assert refused.headers["Retry-After"] == "3"
                    looked_up = await client.get(f"/triggers/{before.json()['uuid']}")
                    assert looked_up.status_code == 503, looked_up.text
                    assert looked_up.json()["error"] == "journal unavailable"
                    assert looked_up.headers["Retry-After"] == "3"
                    # The failed write says so at once; the heartbeat's failure
                    # follows within its interval, and /readyz must name it.
                    await readiness(client, unreachable)
                    # Past its safe time it stops publishing, and joins again after.
                    await tower.wait_for("publisher.paused")
                    journal = (await client.get("/console/api/status")).json()["journal"]
                    assert journal["health"] == "red"
                    assert journal["replica"]["live"] is False
                    proxy.restore()
                    await readiness(client, lambda ready, reasons: ready)
                    await tower.wait_for("publisher.resumed")
                    journal = (await client.get("/console/api/status")).json()["journal"]
                    assert journal["replica"]["live"] is True
                    after = await client.post("/triggers?wait=published", json=VALID)
                    assert after.status_code == 202, after.text
                    assert after.json()["status"] == "published"
                    messages = await broker.take(queue, 2)
            assert [m.properties.message_id for m in messages] == [
                before.json()["uuid"],
                after.json()["uuid"],
            ]
            assert await tower.terminate() == 0
            assert tower.events("replica.heartbeat_failed")

    async def test_postgres_away_under_load_loses_nothing(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Two towers under load lose PostgreSQL and get it back: every 202 is published."""
        queue = await broker.bind("OT-2/v1alpha1")
        accepted: list[str] = []
        refused: list[int] = []
        async with (
            open_schema() as schema,
            open_proxy("127.0.0.1", 5432) as proxy,
            trio.open_nursery() as nursery,
        ):
            env = proxied_environ(schema, proxy, amqp_url, broker)
            towers = await start_towers(nursery, schema, tmp_path, t1=env, t2=env)
            warmed, during, after, stop = trio.Event(), trio.Event(), trio.Event(), trio.Event()

            async def load(tower: TowerProcess) -> None:
                async with httpx.AsyncClient(base_url=tower.url, timeout=10) as client:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        answer = await client.post("/triggers", json={**VALID, "spec": {"n": n}})
                        if answer.status_code == 202:
                            accepted.append(answer.json()["uuid"])
                            if len(accepted) >= 50:
                                warmed.set()
                            if not proxy.cut_off and refused:
                                after.set()
                        else:
                            assert answer.status_code == 503, answer.text
                            assert "Retry-After" in answer.headers
                            refused.append(n)
                            during.set()
                            await trio.sleep(0.05)

            with trio.fail_after(40):
                async with trio.open_nursery() as clients:
                    for tower in towers.values():
                        for _ in range(2):
                            clients.start_soon(load, tower)
                    await warmed.wait()
                    proxy.cut()
                    await during.wait()
                    proxy.restore()
                    await after.wait()
                    stop.set()
                wanted = set(accepted)
                seen: dict[str, float] = {}
                await receive_until(broker, queue, wanted, seen)
            assert wanted <= seen.keys()
            for tower in towers.values():
                assert await tower.terminate() == 0


def proxied_environ(
    schema: PostgresURL, proxy: Proxy, amqp_url: str, broker: Broker
) -> dict[str, str]:
    """A tower's variables with its journal reached through ``proxy`` (which a test can cut)."""
    through_proxy = schema_url(str(schema.schema)).replace(":5432/", f":{proxy.port}/")
    return {
        "TOWER_AMQP_URL": amqp_url,
        "TOWER_EXCHANGE": broker.exchange,
        "TOWER_JOURNAL_URL": through_proxy,
        "TOWER_PUBLISH_TIMEOUT": "3",
    }


async def readiness(
    client: httpx.AsyncClient, until: Callable[[bool, list[str]], bool]
) -> list[str]:
    """Ask /readyz until ``until(ready, reasons)`` holds; the reasons it gave then."""
    while True:
        answer = await client.get("/readyz")
        ready = answer.status_code == 200
        reasons = [] if ready else answer.json()["details"]
        if until(ready, reasons):
            return reasons
        await trio.sleep(0.05)


def unreachable(ready: bool, reasons: list[str]) -> bool:
    return not ready and any(r.startswith("journal unreachable:") for r in reasons)
