"""Delivery and HTTP guarantees, each pinned by a test that fails when it is broken.

Durability of the journal, withdrawal of a request that timed out, no
republishing of confirmed triggers after a reconnect, the draining state,
``Retry-After`` on every 503 of ``POST /triggers``, the probes and
``/metrics`` outside the rate limit, and no 202 for a trigger the journal
refused. Everything that can be is driven against the real broker.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import pytest
import trio

from tests._helpers import VALID, Broker, run_tower, spec_of, tower_settings, watching
from tower_trio import JournalError, Trigger
from tower_trio import _supervisor as supervisor
from tower_trio._journal import Journal, SQLiteStorage, open_journal
from tower_trio._metrics import instrument
from tower_trio._serialization import dump_trigger, load_trigger
from tower_trio._storage import Accepted, Settlement

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from tower_trio._metrics import ASGIApp, TowerMetrics

ROUTE = "OT-2/v1alpha1"
FULL = 2
"""``PRAGMA synchronous`` reads FULL back as this number."""


def posted(n: int, **extra: Any) -> dict[str, Any]:
    """A valid trigger body whose spec tells it apart from the others of a test."""
    return {**VALID, "spec": {"n": n, **extra}}


def stored_specs(data_dir: Path) -> list[Any]:
    """The specs the journal on disk holds, oldest first, read by a connection of our own."""
    with closing(sqlite3.connect(data_dir / "journal.sqlite3")) as db:
        bodies = db.execute("SELECT body FROM triggers ORDER BY seq").fetchall()
    return [load_trigger(body).spec for (body,) in bodies]


class TestJournalDurability:
    @staticmethod
    def exercise(journal: Journal) -> None:
        """Every kind of write the tower makes: batches, answers, plugin state, pruning."""
        triggers = [
            Trigger(api_version=ROUTE, protocol="PlateTransfer", spec={"n": n}) for n in range(3)
        ]
        accepted = journal.append([(t, dump_trigger(t), None, None) for t in triggers])
        seqs = [result.outgoing.seq for result in accepted if isinstance(result, Accepted)]
        journal.settle([Settlement(seq, "published", 1, None, 0.0) for seq in seqs])
        journal.save_plugin_state("folder", "cursor", 1)
        journal.prune(retention=1.0)

    def test_every_writing_connection_commits_with_full_sync_in_wal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each connection the journal writes through commits with synchronous=FULL in WAL mode."""
        opened: list[tuple[str, sqlite3.Connection]] = []
        commits: list[tuple[int, str]] = []

        class Watched(sqlite3.Connection):
            def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
                super().__init__(database, *args, **kwargs)
                opened.append((database, self))

            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                if sql.strip().upper() == "COMMIT":
                    # Read at the commit itself: a setting changed per transaction counts too.
                    (sync,) = super().execute("PRAGMA synchronous").fetchone()
                    (mode,) = super().execute("PRAGMA journal_mode").fetchone()
                    commits.append((sync, mode))
                return super().execute(sql, *args)

        real_connect = sqlite3.connect
        monkeypatch.setattr(
            sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=Watched)
        )
        journal = open_journal(tmp_path)
        try:
            self.exercise(journal)
            writers = [db for uri, db in opened if "mode=ro" not in uri]
            readers = [db for uri, db in opened if "mode=ro" in uri]
            assert writers, "the journal opened no connection to write through"
            for db in writers:
                assert db.execute("PRAGMA synchronous").fetchone() == (FULL,)
                assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            # The other connections cannot write, so the ones above are all that can.
            for db in readers:
                with pytest.raises(sqlite3.OperationalError, match="readonly"):
                    db.execute("INSERT INTO meta (key, value) VALUES ('probe', 'x')")
            assert len(commits) >= 4
            assert set(commits) == {(FULL, "wal")}
        finally:
            journal.close()


@attrs.define
class HeldBatches:
    """Holds the journal's batch writes (the publisher's intake) until released.

    The real journal writes the batch afterwards: only its timing is changed,
    as a disk that hangs for a while would change it.
    """

    append: Callable[[Any], Awaitable[Any]]
    entered: trio.Event = attrs.Factory(trio.Event)
    released: trio.Event = attrs.Factory(trio.Event)

    @classmethod
    def install(cls, storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch) -> HeldBatches:
        held = cls(storage.append)
        monkeypatch.setattr(storage, "append", held.held_append)
        return held

    async def held_append(self, entries: Any) -> Any:
        self.entered.set()
        await self.released.wait()
        return await self.append(entries)


class TestWithdrawal:
    async def test_request_not_taken_in_time_is_refused_and_never_stored(
        self, amqp_url: str, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A request whose wait ran out before the journal took it gets 503 and is never stored."""
        queue = await broker.bind(ROUTE)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, publish_timeout=0.5)
        with trio.fail_after(20):
            async with run_tower(settings) as tower:
                held = HeldBatches.install(tower.storage, monkeypatch)
                first: list[httpx.Response] = []

                async def post_first() -> None:
                    first.append(await tower.client.post("/triggers", json=posted(0)))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(post_first)
                    # The journal is busy with the first batch: the next request waits in line.
                    await held.entered.wait()
                    refused = await tower.client.post(
                        "/triggers", json=posted(1), headers={"Idempotency-Key": "withdrawn"}
                    )
                    held.released.set()
                after = await tower.client.post("/triggers", json=posted(2))
                # Published in order: once the later trigger is out, the refused one
                # would have gone out before it.
                messages = await broker.take(queue, 2)
                assert await broker.count(queue) == 0
        assert refused.status_code == 503
        assert refused.json()["error"] == "journal did not answer in time"
        assert "will not be published" in refused.json()["details"][0]
        assert refused.headers["Retry-After"] == "1"
        assert first[0].status_code in {202, 504}
        assert after.status_code == 202
        assert [load_trigger(m.body).spec for m in messages] == [{"n": 0}, {"n": 2}]
        assert stored_specs(tmp_path) == [{"n": 0}, {"n": 2}]


@attrs.define
class Relay:
    """A TCP relay between the tower and the broker, which the test can cut."""

    target: tuple[str, int]
    port: int = 0
    accepted: int = 0
    _links: set[trio.CancelScope] = attrs.Factory(set)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._link, listeners)
            task_status.started()

    def url(self, amqp_url: str) -> str:
        """``amqp_url`` through this relay."""
        parts = urlsplit(amqp_url)
        credentials = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{self.port}"))

    def cut(self) -> None:
        """Drop every connection through the relay; new ones are still let through."""
        for scope in self._links:
            scope.cancel()

    async def _link(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        with trio.CancelScope() as scope:
            self._links.add(scope)
            try:
                async with (
                    client,
                    await trio.open_tcp_stream(*self.target) as upstream,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(_pump, client, upstream, scope)
                    nursery.start_soon(_pump, upstream, client, scope)
            finally:
                self._links.discard(scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, link: trio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        # Either side gone: the whole link goes, as a dropped connection would.
        link.cancel()


@attrs.define
class RefusedSettle:
    """The journal's record of broker answers, failing while ``refusing`` (a full disk)."""

    settle: Callable[[Sequence[Settlement]], None]
    refusing: bool = True

    def __call__(self, settlements: Sequence[Settlement]) -> None:
        if self.refusing:
            raise JournalError("cannot write to the journal: database or disk is full")
        self.settle(settlements)


class TestNoRepublishAfterReconnect:
    COUNT = 5

    async def confirmed_then_one_more_after_a_cut(
        self,
        amqp_url: str,
        broker: Broker,
        tmp_path: Path,
        refusal: Callable[[Journal], RefusedSettle | None] = lambda journal: None,
    ) -> tuple[list[str], list[str], int]:
        """Posts COUNT confirmed triggers, cuts the connection, posts one more.

        ``refusal`` may make the journal refuse the records of broker answers
        from the start. Returns the uuids posted, those the queue got, and the
        number of reconnects.
        """
        queue = await broker.bind(ROUTE)
        host, _, port = urlsplit(amqp_url).netloc.rpartition("@")[2].partition(":")
        relay = Relay((host, int(port or 5672)))
        uuids: list[str] = []
        with trio.fail_after(25), watching("tower_trio._publisher", "broker.connected") as log:
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.serve)
                settings = tower_settings(relay.url(amqp_url), broker.exchange, tmp_path)
                async with run_tower(settings) as tower:
                    refused = refusal(tower.journal)
                    for n in range(self.COUNT):
                        response = await tower.client.post(
                            "/triggers?wait=published", json=posted(n)
                        )
                        assert response.json()["status"] == "published"
                        uuids.append(response.json()["uuid"])
                    if refused is not None:
                        # Confirmed, yet the journal still says pending for each of them.
                        assert tower.running.publisher.statistics().unrecorded == self.COUNT
                    relay.cut()
                    await log.wait_for(2)
                    response = await tower.client.post(
                        "/triggers?wait=published", json=posted(self.COUNT)
                    )
                    assert response.json()["status"] == "published"
                    uuids.append(response.json()["uuid"])
                    # Republished rows would come before the last one, on the same channel.
                    messages = await broker.take(queue, self.COUNT + 1)
                    assert await broker.count(queue) == 0
                    reconnects = tower.running.publisher.statistics().reconnects
                    if refused is not None:
                        refused.refusing = False
                nursery.cancel_scope.cancel()
        assert relay.accepted == 2
        return uuids, [m.properties.message_id or "" for m in messages], reconnects

    async def test_confirmed_triggers_go_out_once(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """After a dropped connection the queue holds each confirmed trigger once, and the next."""
        sent, received, reconnects = await self.confirmed_then_one_more_after_a_cut(
            amqp_url, broker, tmp_path
        )
        assert reconnects == 1
        assert received == sent

    async def test_confirmed_but_unrecorded_triggers_go_out_once(
        self, amqp_url: str, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Confirmed triggers whose records could not be written are not republished either."""

        def refuse(journal: Journal) -> RefusedSettle:
            refusal = RefusedSettle(journal.settle)
            monkeypatch.setattr(journal, "settle", refusal)
            return refusal

        sent, received, reconnects = await self.confirmed_then_one_more_after_a_cut(
            amqp_url, broker, tmp_path, refuse
        )
        assert reconnects == 1
        assert received == sent


@attrs.define
class Gate:
    """Holds every HTTP request in front of the API until opened.

    Stands between the tower's own ASGI layers and the socket, so a request
    whose head has arrived (a busy connection, which a shutdown lets finish)
    reaches the API only when the test says.
    """

    arrivals: trio.MemorySendChannel[str]
    opened: trio.Event = attrs.Factory(trio.Event)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def instrument_behind_gate(app: ASGIApp, metrics: TowerMetrics, **kw: Any) -> ASGIApp:
            return self.wrap(instrument(app, metrics, **kw))

        monkeypatch.setattr(supervisor, "instrument", instrument_behind_gate)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await self.arrivals.send(scope["path"])
                await self.opened.wait()
            await app(scope, receive, send)

        return held


class TestDraining:
    async def test_draining_tower_refuses_triggers_and_is_not_ready(
        self, amqp_url: str, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once shutdown begins, POST /triggers gets 503 with Retry-After and /readyz says why."""
        arrivals_in, arrivals = trio.open_memory_channel[str](2)
        gate = Gate(arrivals_in)
        gate.install(monkeypatch)
        answers: dict[str, httpx.Response] = {}
        with trio.fail_after(15), watching("tower_trio._supervisor", "tower.stopping") as log:
            async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:

                async def post() -> None:
                    answers["/triggers"] = await tower.client.post("/triggers", json=VALID)

                async def probe() -> None:
                    answers["/readyz"] = await tower.client.get("/readyz")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(post)
                    nursery.start_soon(probe)
                    assert {await arrivals.receive(), await arrivals.receive()} == {
                        "/triggers",
                        "/readyz",
                    }
                    tower.shutdown.set()
                    await log.wait_for(1)
                    gate.opened.set()
        refused, ready = answers["/triggers"], answers["/readyz"]
        assert refused.status_code == 503
        assert refused.json()["error"] == "shutting down"
        assert refused.headers["Retry-After"] == "10"
        assert ready.status_code == 503
        assert ready.headers["Retry-After"] == "10"
        assert ready.json()["error"] == "not ready"
        assert "shutting down" in ready.json()["details"]
        assert stored_specs(tmp_path) == []


class TestRetryAfterOnEvery503:
    """The other 503s of POST /triggers are pinned where their path is driven.

    Draining: TestDraining; not taken in time: TestWithdrawal; journal full:
    TestNoFalse202; too many bytes waiting: tests/test_intake.py
    (TestMemoryBounds). This class drives the one left, the broker's refusal.
    """

    async def test_trigger_the_broker_refuses_gets_503_with_retry_after(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A trigger nacked TOWER_MAX_ATTEMPTS times answers 503 with Retry-After and Location."""
        await broker.bind(ROUTE, refusing=True)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, max_attempts=1)
        with trio.fail_after(15):
            async with run_tower(settings) as tower:
                refused = await tower.client.post("/triggers?wait=published", json=VALID)
                record = (await tower.client.get(refused.headers["Location"])).json()
        assert refused.status_code == 503
        assert refused.json()["error"] == "broker refused the trigger"
        assert refused.headers["Retry-After"] == "10"
        assert record["status"] == "failed"


class TestRateLimitExemptions:
    async def test_probes_and_metrics_answer_while_the_api_is_limited(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Over TOWER_RATE_LIMIT the API gets 429, but /metrics, /healthz and /readyz answer 200."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, rate_limit=0.01, rate_burst=2
        )
        with trio.fail_after(15):
            async with run_tower(settings) as tower:
                client = tower.client
                spent = [(await client.get("/triggers")).status_code for _ in range(2)]
                limited = await client.get("/triggers")
                exempt = [
                    (path, (await client.get(path)).status_code)
                    for _ in range(5)
                    for path in ("/metrics", "/healthz", "/readyz")
                ]
                still_limited = await client.post("/triggers", json=VALID)
        assert spent == [200, 200]
        assert limited.status_code == 429
        assert "Retry-After" in limited.headers
        assert exempt == [
            (path, 200) for _ in range(5) for path in ("/metrics", "/healthz", "/readyz")
        ]
        assert still_limited.status_code == 429


class TestNoFalse202:
    async def test_trigger_the_full_journal_refused_gets_503_and_is_not_published(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Without ?wait, a trigger the journal cannot store gets 503, never 202, and stays out."""
        queue = await broker.bind(ROUTE)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, journal_max_bytes=96 * 1024)
        blob = "x" * 30_000
        statuses: list[int] = []
        with trio.fail_after(20):
            async with run_tower(settings) as tower:
                for n in range(8):
                    response = await tower.client.post("/triggers", json=posted(n, blob=blob))
                    statuses.append(response.status_code)
                    if response.status_code != 202:
                        break
                assert statuses[-1] == 503, statuses
                assert response.json()["error"] == "journal unavailable"
                assert "Retry-After" in response.headers
                accepted = len(statuses) - 1
                messages = await broker.take(queue, accepted)
                assert await broker.count(queue) == 0
        assert accepted >= 1
        assert [spec_of(load_trigger(m.body))["n"] for m in messages] == list(range(accepted))
        assert [spec["n"] for spec in stored_specs(tmp_path)] == list(range(accepted))
