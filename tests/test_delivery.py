"""Delivery guarantees: the journal, idempotency, lookups and broker faults."""

from __future__ import annotations

import sqlite3
import textwrap
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
from pamqp import commands

from tests._helpers import VALID, Broker, run_tower, tower_settings, unused_port
from tests.amqp._fake_broker import FakePeer, serve_fake_broker
from tower_trio import JournalError, Trigger
from tower_trio._journal import Journal, open_journal
from tower_trio._plugins import discover_plugins, select_plugins
from tower_trio._serialization import dump_trigger, load_trigger
from tower_trio._storage import Accepted, Duplicate, JournalRecord, PageQuery, Settlement

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx

    from tests.amqp._fake_broker import FakeBroker


def trigger(n: int = 0, **overrides: Any) -> Trigger:
    fields: dict[str, Any] = {
        "api_version": "OT-2/v1alpha1",
        "protocol": "PlateTransfer",
        "spec": {"n": n},
    }
    return Trigger(**{**fields, **overrides})


def append(journal: Journal, *triggers: Trigger, key: str | None = None) -> list[Any]:
    return journal.append([(t, dump_trigger(t), key, "fp" if key else None) for t in triggers])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class TestJournal:
    def test_rows_come_back_pending_in_order(self, tmp_path: Path) -> None:
        """Appended triggers are pending, oldest first, until settled."""
        journal = open_journal(tmp_path)
        results = append(journal, trigger(1), trigger(2), trigger(3))
        seqs = [r.outgoing.seq for r in results]
        assert seqs == sorted(seqs)
        journal.settle([Settlement(seqs[0], "published", 1, None, 5.0)])
        pending = journal.pending(0, journal.last_seq(), 10)
        assert [load_trigger(o.body).spec for o in pending] == [{"n": 2}, {"n": 3}]
        assert journal.pending_count() == 2

    def test_settling_a_mixed_batch_records_each_outcome(self, tmp_path: Path) -> None:
        """Runs of answers are recorded together, and each trigger keeps its own outcome."""
        journal = open_journal(tmp_path)
        rows = [r.outgoing for r in append(journal, *map(trigger, range(7)))]
        outcomes = [
            ("published", 1, None),
            ("published", 1, None),
            ("unroutable", 1, "312 NO_ROUTE"),
            ("published", 1, None),
            ("pending", 2, "nacked"),
            ("published", 2, None),
        ]
        journal.settle(
            Settlement(row.seq, status, attempts, error, 100.0 + n)
            for n, (row, (status, attempts, error)) in enumerate(zip(rows, outcomes, strict=False))
        )
        records = [journal.get(row.uuid) for row in rows]
        assert [(r.status, r.attempts, r.last_error) for r in records if r] == [
            *outcomes,
            ("pending", 0, None),
        ]
        assert [r.published_at for r in records if r][:2] == [101.0, 101.0]

    def test_survives_reopening(self, tmp_path: Path) -> None:
        """What was committed is there after the journal is closed and opened again."""
        journal = open_journal(tmp_path)
        (accepted,) = append(journal, trigger(7))
        journal.close()
        again = open_journal(tmp_path)
        record = again.get(accepted.outgoing.uuid)
        assert record is not None
        assert record.status == "pending"
        assert load_trigger(record.body).spec == {"n": 7}

    def test_same_key_is_a_duplicate(self, tmp_path: Path) -> None:
        """A second trigger with the same key is not stored; the first one is returned."""
        journal = open_journal(tmp_path)
        (first,) = append(journal, trigger(1), key="k")
        (second,) = journal.append([(trigger(2), b"{}", "k", "other")])
        (third,) = append(journal, trigger(3), key="k")
        assert isinstance(first, Accepted)
        assert isinstance(second, Duplicate)
        assert second.record.uuid == first.outgoing.uuid
        assert not second.same_request
        assert isinstance(third, Duplicate)
        assert third.same_request
        assert journal.pending_count() == 1

    def test_same_key_twice_in_one_batch(self, tmp_path: Path) -> None:
        """Within one batch, the second trigger with a key is a duplicate of the first."""
        journal = open_journal(tmp_path)
        first, second = append(journal, trigger(1), trigger(2), key="k")
        assert isinstance(first, Accepted)
        assert isinstance(second, Duplicate)
        assert second.record.uuid == first.outgoing.uuid
        assert journal.pending_count() == 1

    def test_the_same_trigger_twice_is_stored_once(self, tmp_path: Path) -> None:
        """A trigger sent again (same uuid), in one batch or later, is a duplicate, not an error."""
        journal = open_journal(tmp_path)
        once, other = trigger(1), trigger(2)
        first, again_at_once, neighbour = append(journal, once, once, other)
        (again_later,) = append(journal, once)
        assert isinstance(first, Accepted)
        assert isinstance(neighbour, Accepted)
        assert isinstance(again_at_once, Duplicate)
        assert isinstance(again_later, Duplicate)
        assert again_later.record.uuid == once.uuid
        assert journal.pending_count() == 2

    def test_prune_keeps_pending_and_recent(self, tmp_path: Path) -> None:
        """Only settled rows older than the retention period are pruned."""
        clock = FakeClock()
        journal = open_journal(tmp_path, clock=clock)
        old, recent, pending = (r.outgoing for r in append(journal, *map(trigger, range(3))))
        journal.settle([Settlement(old.seq, "published", 1, None, clock.now)])
        clock.now += 3600
        journal.settle([Settlement(recent.seq, "unroutable", 1, "312 NO_ROUTE", clock.now)])
        clock.now += 1800

        assert journal.prune(retention=3600) == 1

        assert journal.get(old.uuid) is None
        assert journal.get(recent.uuid) is not None
        assert journal.get(pending.uuid) is not None
        clock.now += 10**9
        assert journal.prune(retention=3600) == 1
        assert journal.get(pending.uuid) is not None

    def test_pages_filter_newest_first(self, tmp_path: Path) -> None:
        """Listing filters by each field and pages newest first with a seq cursor."""
        journal = open_journal(tmp_path)
        append(journal, *(trigger(n) for n in range(5)))
        append(journal, trigger(9, api_version="ChiBio/v1alpha1", protocol="Dilute"))

        def listed(**filters: Any) -> list[JournalRecord]:
            records, _ = journal.page(PageQuery(limit=50, **filters))
            return records

        newest, _ = journal.page(PageQuery(limit=3))
        assert [load_trigger(r.body).spec for r in newest] == [{"n": 9}, {"n": 4}, {"n": 3}]
        rest, _ = journal.page(PageQuery(limit=3, before=newest[-1].seq))
        assert [load_trigger(r.body).spec for r in rest] == [{"n": 2}, {"n": 1}, {"n": 0}]
        assert [r.protocol for r in listed(protocol="Dilute")] == ["Dilute"]
        assert len(listed(api_version="OT-2/v1alpha1")) == 5
        assert listed(status="published") == []

    def test_plugin_state_round_trip(self, tmp_path: Path) -> None:
        """Plugin state is kept per plugin, as JSON, and None deletes a key."""
        journal = open_journal(tmp_path)
        journal.save_plugin_state("riffyn", "seen", ["a", "b"])
        journal.save_plugin_state("folder", "seen", 1)
        journal.save_plugin_state("riffyn", "cursor", {"at": 3})
        journal.save_plugin_state("riffyn", "cursor", None)
        assert journal.load_plugin_state("riffyn") == {"seen": ["a", "b"]}
        assert journal.load_plugin_state("folder") == {"seen": 1}

    def test_full_journal_refuses_with_a_journal_error(self, tmp_path: Path) -> None:
        """At its size cap the journal raises JournalError and keeps what it had."""
        journal = open_journal(tmp_path, max_bytes=64 * 1024)
        big = {"blob": "x" * 20_000}
        accepted = 0
        with pytest.raises(JournalError, match="cannot write to the journal"):  # noqa: PT012
            for n in range(10):
                append(journal, trigger(n, spec=big))
                accepted += 1
        assert 1 <= accepted < 10
        assert journal.pending_count() == accepted

    def test_unusable_data_dir_names_the_setting(self, tmp_path: Path) -> None:
        """A data dir that is not a directory is a start-up error naming TOWER_DATA_DIR."""
        (tmp_path / "file").write_text("")
        with pytest.raises(JournalError, match="TOWER_DATA_DIR must be a writable directory"):
            open_journal(tmp_path / "file")

    def test_journal_is_in_wal_mode(self, tmp_path: Path) -> None:
        """The journal runs in WAL mode, so lookups never block the writer."""
        open_journal(tmp_path).close()
        with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


class TestIdempotency:
    async def test_same_key_and_body_returns_the_first_trigger(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A retried request with the same Idempotency-Key gets 200 and the same uuid."""
        queue = await broker.bind("OT-2/v1alpha1")
        headers = {"Idempotency-Key": "order-17"}
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            first = await tower.client.post("/triggers?wait=published", json=VALID, headers=headers)
            again = await tower.client.post("/triggers", json=VALID, headers=headers)
            other = await tower.client.post(
                "/triggers", json={**VALID, "spec": {"volume": 5}}, headers=headers
            )
        assert first.status_code == 202
        assert again.status_code == 200
        assert again.json()["uuid"] == first.json()["uuid"]
        assert again.json()["status"] == "published"
        assert other.status_code == 409
        assert first.json()["uuid"] in other.json()["details"][0]
        assert await broker.count(queue) == 1

    async def test_plugin_key_survives_a_restart(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A plugin that re-sends a keyed trigger after a restart does not publish it twice."""
        plugins_dir = tmp_path / "plugins"
        (plugins_dir / "once").mkdir(parents=True)
        (plugins_dir / "once" / "watcher.py").write_text(
            textwrap.dedent(
                """
                import trio
                from tower_trio import Trigger

                async def run(send_channel):
                    await send_channel.send(Trigger(
                        api_version="OT-2/v1alpha1", protocol="Run", spec={"run": 1}, key="run-1"
                    ))
                """
            )
        )
        plugins, _ = select_plugins(discover_plugins(plugins_dir, entry_points=False), None, {})
        queue = await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path / "data")
        for _ in range(2):
            async with run_tower(settings, plugins) as tower:
                while tower.running.plugins["once"].state.value != "finished":
                    await trio.testing.wait_all_tasks_blocked()
        assert await broker.count(queue) == 1
        assert tower.running.publisher.statistics().duplicates == 1


class TestLookup:
    async def test_get_by_uuid_shows_the_delivery_record(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """GET /triggers/<uuid> gives the trigger as published and how delivery went."""
        await broker.bind("OT-2/v1alpha1")
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            posted = await tower.client.post("/triggers?wait=published", json=VALID)
            found = await tower.client.get(posted.headers["location"])
            missing = await tower.client.get("/triggers/" + "0" * 32)
        body = found.json()
        assert found.status_code == 200
        assert body["status"] == "published"
        assert body["attempts"] == 1
        assert body["lastError"] is None
        assert body["publishedAt"] >= body["createdAt"]
        assert {k: body[k] for k in VALID} == VALID
        assert missing.status_code == 404
        assert missing.json()["error"] == "no such trigger"

    async def test_list_filters_and_pages(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """GET /triggers filters by status, apiVersion, protocol and source, newest first."""
        await broker.bind("OT-2/v1alpha1")
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            uuids = []
            for n in range(5):
                response = await tower.client.post(
                    "/triggers?wait=published", json={**VALID, "spec": {"n": n}}
                )
                uuids.append(response.json()["uuid"])
            await tower.client.post(
                "/triggers?wait=published", json={**VALID, "apiVersion": "Nobody/v1"}
            )
            # The answer comes with the broker's; its record is written just
            # after, and a listing filters on what is written.
            await tower.running.publisher.settlements.flush()
            page1 = (await tower.client.get("/triggers?limit=2&apiVersion=OT-2/v1alpha1")).json()
            page2 = (await tower.client.get(f"/triggers?limit=2&before={page1['next']}")).json()
            unroutable = (await tower.client.get("/triggers?status=unroutable")).json()
            by_source = (await tower.client.get("/triggers?source=http&limit=500")).json()
            bad = await tower.client.get("/triggers?limit=0")
            unknown = await tower.client.get("/triggers?colour=red")
        assert [item["uuid"] for item in page1["items"]] == uuids[:2:-1][:2]
        assert [item["uuid"] for item in page2["items"]] == uuids[2:0:-1]
        assert [item["apiVersion"] for item in unroutable["items"]] == ["Nobody/v1"]
        assert unroutable["next"] is None
        assert len(by_source["items"]) == 6
        assert bad.status_code == 400
        assert bad.json()["details"][0]["field"] == "limit"
        assert unknown.status_code == 400
        assert unknown.json()["details"][0]["field"] == "colour"


class TestStoreAndForward:
    async def test_triggers_accepted_without_broker_go_out_after_restart(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Accepted while the broker is away, published by the next run, oldest first."""
        queue = await broker.bind("OT-2/v1alpha1")
        offline = tower_settings(
            f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
            broker.exchange,
            tmp_path,
            shutdown_grace=0.2,
        )
        async with run_tower(offline) as tower:
            for n in range(20):
                response = await tower.client.post("/triggers", json={**VALID, "spec": {"n": n}})
                assert response.status_code == 202
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            messages = await broker.take(queue, 20)
            assert tower.running.publisher.statistics().pending == 0
        assert [load_trigger(m.body).spec for m in messages] == [{"n": n} for n in range(20)]

    async def test_full_journal_answers_503_and_publishes_nothing(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """When the journal cannot take a trigger the client gets 503, never a false 202."""
        queue = await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, journal_max_bytes=96 * 1024)
        big = {"blob": "x" * 30_000}
        statuses = []
        async with run_tower(settings) as tower:
            for _ in range(6):
                response = await tower.client.post(
                    "/triggers?wait=published", json={**VALID, "spec": big}
                )
                statuses.append(response.status_code)
        assert 202 in statuses
        assert statuses[-1] == 503
        assert response.json()["error"] == "journal unavailable"
        assert await broker.count(queue) == statuses.count(202)


@asynccontextmanager
async def fake_broker_tower(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, trio.MemoryReceiveChannel[FakePeer]]]:
    """A tower publishing to a scripted broker; yields its client and its connections."""
    async with trio.open_nursery() as nursery:
        fake: FakeBroker = await nursery.start(serve_fake_broker)
        peers_in, peers = trio.open_memory_channel[FakePeer](10)
        nursery.start_soon(declare_for_each_connection, fake, peers_in)
        settings = tower_settings(fake.url, "fake.triggers", tmp_path, **overrides)
        async with run_tower(settings) as tower:
            yield tower.client, peers
        nursery.cancel_scope.cancel()


async def declare_for_each_connection(
    fake: FakeBroker,
    peers: trio.MemorySendChannel[FakePeer],
    opened: trio.Event | None = None,
    declares: int = 1,
) -> None:
    """Answer each connection's ``declares`` Exchange.Declare, as RabbitMQ would, then hand it over.

    With ``opened``, the answers wait for it: until then the client is
    connected but cannot publish.
    """
    while True:
        peer = await fake.accept()
        if opened is not None:
            await opened.wait()
        for answered in range(declares):
            await peer.wait_for(
                lambda peer=peer, answered=answered: (  # type: ignore[misc]
                    len(peer.got(commands.Exchange.Declare)) > answered
                )
            )
            await peer.send(1, commands.Exchange.DeclareOk())
        await peers.send(peer)


class TestBrokerFaults:
    async def test_nacked_trigger_is_retried_until_acked(self, tmp_path: Path) -> None:
        """A nack makes the tower publish the trigger again; the second attempt is confirmed."""
        async with fake_broker_tower(tmp_path, publish_timeout=30) as (client, peers):
            peer = await peers.receive()
            async with trio.open_nursery() as nursery:
                responses: list[httpx.Response] = []

                async def post() -> None:
                    responses.append(await client.post("/triggers?wait=published", json=VALID))

                nursery.start_soon(post)
                await peer.wait_published(1)
                await peer.send(1, commands.Basic.Nack(delivery_tag=1))
                published = await peer.wait_published(2)
                await peer.send(1, commands.Basic.Ack(delivery_tag=2))
            assert published[0].body == published[1].body
            assert responses[0].status_code == 202
            record = (await client.get(responses[0].headers["location"])).json()
        assert record["status"] == "published"
        assert record["attempts"] == 2

    async def test_poison_trigger_fails_without_blocking_the_next(self, tmp_path: Path) -> None:
        """After TOWER_MAX_ATTEMPTS nacks a trigger is failed, and the one behind it goes out."""
        async with fake_broker_tower(tmp_path, max_attempts=2) as (client, peers):
            peer = await peers.receive()
            poison = (await client.post("/triggers", json={**VALID, "spec": {"n": 1}})).json()
            healthy = (await client.post("/triggers", json={**VALID, "spec": {"n": 2}})).json()
            await peer.wait_published(2)
            await peer.send(1, commands.Basic.Nack(delivery_tag=1))
            await peer.send(1, commands.Basic.Ack(delivery_tag=2))
            await peer.wait_published(3)
            await peer.send(1, commands.Basic.Nack(delivery_tag=3))
            while (await client.get(f"/triggers/{poison['uuid']}")).json()["status"] == "pending":
                await trio.testing.wait_all_tasks_blocked()
            poisoned = (await client.get(f"/triggers/{poison['uuid']}")).json()
            delivered = (await client.get(f"/triggers/{healthy['uuid']}")).json()
        assert poisoned["status"] == "failed"
        assert poisoned["attempts"] == 2
        assert "nack" in poisoned["lastError"]
        assert delivered["status"] == "published"

    async def test_missing_confirm_reconnects_and_republishes(self, tmp_path: Path) -> None:
        """A confirm that never comes counts as lost: the tower reconnects and publishes again."""
        async with fake_broker_tower(tmp_path, confirm_timeout=0.3) as (client, peers):
            first = await peers.receive()
            response = await client.post("/triggers", json=VALID)
            await first.wait_published(1)
            second = await peers.receive()
            (republished,) = await second.wait_published(1)
            await second.send(1, commands.Basic.Ack(delivery_tag=1))
        assert republished.properties.message_id == response.json()["uuid"]

    async def test_blocked_broker_is_reported_and_triggers_wait(self, tmp_path: Path) -> None:
        """While the broker blocks publishing, /readyz says so and triggers wait in the journal."""
        async with fake_broker_tower(tmp_path, shutdown_grace=0.5) as (client, peers):
            peer = await peers.receive()
            await peer.send(0, commands.Connection.Blocked(reason="low on memory"))
            while (await client.get("/readyz")).status_code == 200:
                await trio.testing.wait_all_tasks_blocked()
            ready = await client.get("/readyz")
            accepted = await client.post("/triggers", json=VALID)
            assert peer.published == []
            await peer.send(0, commands.Connection.Unblocked())
            (published,) = await peer.wait_published(1)
        assert "blocked" in ready.json()["details"][0]
        assert accepted.status_code == 202
        assert published.properties.message_id == accepted.json()["uuid"]


class TestAlternateExchange:
    async def test_unroutable_triggers_go_to_the_alternate_exchange(
        self, amqp_url: str, broker: Broker, tmp_path: Path, unique: str
    ) -> None:
        """With TOWER_UNROUTABLE_EXCHANGE, a trigger nobody is bound for lands there."""
        alternate = f"test.unroutable.{unique}"
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, unroutable_exchange=alternate
        )
        try:
            async with run_tower(settings) as tower:
                declared = await broker.channel.queue_declare("", exclusive=True)
                await broker.channel.queue_bind(declared.name, alternate, "")
                response = await tower.client.post(
                    "/triggers?wait=published", json={**VALID, "apiVersion": "Nobody/v1"}
                )
            (message,) = await broker.take(declared.name, 1)
        finally:
            await broker.channel.exchange_delete(alternate)
        assert response.json()["status"] == "published"
        assert message.routing_key == "Nobody/v1"
