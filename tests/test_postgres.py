"""What only the PostgreSQL journal does: its URL, its migrations, reconnecting.

Everything a store must do is in tests/test_storage.py, which runs on
PostgreSQL too. Each test here works in a schema of its own (tests/_postgres.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import psycopg
import pytest
import trio
from psycopg import sql

from tests._helpers import VALID, Broker, unused_port
from tests._postgres import admin, open_schema, schema_url
from tests._towers import open_tower_process, tower_environ
from tests.test_storage import entry, trigger
from tower_trio._cli import main
from tower_trio._config import Settings
from tower_trio._errors import ConfigError, FencedError, JournalError
from tower_trio._journal import SQLiteStorage
from tower_trio._journal_url import PostgresURL, parse_journal_url
from tower_trio._leases import Leader
from tower_trio._postgres import PostgresStorage, open_postgres_storage
from tower_trio._postgres_leases import PostgresLeases
from tower_trio._postgres_schema import SCHEMA_VERSION, connect
from tower_trio._serialization import load_trigger
from tower_trio._storage import Accepted, PageQuery, Refused
from tower_trio._stores import open_storage_from
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from pathlib import Path

    from tower_trio import Trigger
    from tower_trio._storage import Storage

PASSWORD = "pw-never-shown-4711"


def url_of(schema: PostgresURL, **parameters: str) -> PostgresURL:
    """``schema``'s URL with more parameters."""
    assert schema.schema is not None
    url = parse_journal_url(schema_url(schema.schema, **parameters))
    assert isinstance(url, PostgresURL)
    return url


def with_password(url: str) -> str:
    """``url`` with ``PASSWORD`` after its user (trust authentication ignores it)."""
    scheme, _, rest = url.partition("://")
    user, _, host = rest.rpartition("@")
    return f"{scheme}://{user or 'postgres'}:{PASSWORD}@{host}"


class TestTheUrl:
    """TOWER_JOURNAL_URL is read at start-up; a bad one stops it with one clear line."""

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(f"postgresql://u:{PASSWORD}@db:port/tower", id="bad-port"),
            pytest.param(f"postgres://u:{PASSWORD}@db/tower?nonsense=1", id="unknown-parameter"),
            pytest.param(f"postgresql://u:{PASSWORD}@db/tower?schema=Tower", id="bad-schema"),
            pytest.param(f"mysql://u:{PASSWORD}@db/tower", id="other-scheme"),
        ],
    )
    def test_a_bad_url_names_the_variable_never_the_password(self, value: str) -> None:
        """A URL that cannot work is a ConfigError naming TOWER_JOURNAL_URL, without its value."""
        with pytest.raises(ConfigError, match="TOWER_JOURNAL_URL") as caught:
            Settings.from_environ({"TOWER_JOURNAL_URL": value})
        assert PASSWORD not in str(caught.value)

    def test_without_psycopg_the_error_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A PostgreSQL URL on an install without the driver names the extra to install."""
        monkeypatch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(ConfigError, match=r"pip install tower-trio\[postgres\]"):
            Settings.from_environ({"TOWER_JOURNAL_URL": "postgresql://db/tower"})

    def test_the_password_is_kept_out_of_what_is_shown(self) -> None:
        """The URL prints without its password, which libpq still gets; ``schema`` is ours."""
        settings = Settings.from_environ(
            {"TOWER_JOURNAL_URL": f"postgresql://tower:{PASSWORD}@db:5433/lab?schema=tower_a"}
        )
        url = settings.journal_url
        assert isinstance(url, PostgresURL)
        assert str(url) == "postgresql://tower@db:5433/lab?schema=tower_a"
        assert PASSWORD not in repr(settings)
        assert (url.password, url.schema) == (PASSWORD, "tower_a")
        assert url.conninfo == f"postgresql://tower:{PASSWORD}@db:5433/lab"

    @pytest.mark.parametrize(
        "password",
        ["s3cret/pw-tail", "s3cret?pw-tail", "s3cret#pw-tail", "s3cret@pw-tail", "4567/s3cret"],
    )
    def test_config_never_shows_the_password(
        self, password: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A password that would show in pieces is refused; percent-encoded, it is left out."""
        environ = {"TOWER_JOURNAL_URL": f"postgresql://lab:{password}@db:5432/tower"}
        assert main(["config", "--json"], environ) == 2
        out, err = capsys.readouterr()
        pieces = {piece for piece in re.split(r"[/?#@]", password) if len(piece) >= 3}
        for piece in {password, *pieces}:
            assert piece not in out + err
        assert "TOWER_JOURNAL_URL" in err
        assert "percent-encode" in err
        encoded = quote(password, safe="")
        assert (
            main(
                ["config", "--json"],
                {"TOWER_JOURNAL_URL": environ["TOWER_JOURNAL_URL"].replace(password, encoded)},
            )
            == 0
        )
        shown = json.loads(capsys.readouterr().out)["TOWER_JOURNAL_URL"]["value"]
        assert shown == "postgresql://lab@db:5432/tower"

    async def test_a_sqlite_path_opens_the_journal_there(self, tmp_path: Path) -> None:
        """A file path (or sqlite:// and one) puts the SQLite journal at that path."""
        for value, file in (
            (str(tmp_path / "a.sqlite3"), tmp_path / "a.sqlite3"),
            (f"sqlite://{tmp_path}/b.sqlite3", tmp_path / "b.sqlite3"),
        ):
            settings = Settings.from_environ(
                {"TOWER_JOURNAL_URL": value, "TOWER_DATA_DIR": str(tmp_path / "unused")}
            )
            storage = await open_storage_from(settings)
            try:
                assert isinstance(storage, SQLiteStorage)
                assert storage.location == str(file)
            finally:
                storage.close()
        assert file.exists()
        assert not (tmp_path / "unused").exists()


@pytest.mark.postgres
class TestOpening:
    async def test_towers_starting_at_once_migrate_once(self) -> None:
        """Several stores opening a fresh database together create the schema once, all fine."""
        stores: list[Storage] = []
        async with open_schema() as url:
            try:
                with trio.fail_after(30):
                    async with trio.open_nursery() as nursery:
                        for _ in range(6):
                            nursery.start_soon(_append_opened, stores, url)
                assert len(stores) == 6
                rows = await trio.to_thread.run_sync(
                    admin, f"SELECT version FROM {url.schema}.schema_version"
                )
                assert rows == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
                (store, *_) = stores
                assert await store.pending_count() == 6
            finally:
                for store in stores:
                    store.close()

    async def test_a_newer_schema_is_refused(self) -> None:
        """A database a newer tower-trio has migrated is not written to; the error says so."""
        async with open_schema() as url:
            (await open_postgres_storage(url)).close()
            await trio.to_thread.run_sync(
                admin, f"INSERT INTO {url.schema}.schema_version (version) VALUES (99)"
            )
            with pytest.raises(JournalError, match=r"newer tower-trio.*TOWER_JOURNAL_URL"):
                await open_postgres_storage(url)

    async def test_the_location_never_shows_the_password(self) -> None:
        """The store's location, and its errors, show the URL without the password."""
        async with open_schema() as url:
            with_pw = parse_journal_url(with_password(schema_url(str(url.schema))))
            assert isinstance(with_pw, PostgresURL)
            assert with_pw.password == PASSWORD
            storage = await open_postgres_storage(with_pw)
            try:
                assert PASSWORD not in storage.location
                assert storage.location.startswith("postgresql://postgres@")
            finally:
                storage.close()
            unreachable = parse_journal_url(f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test")
            assert isinstance(unreachable, PostgresURL)
            with pytest.raises(JournalError) as caught:
                await open_postgres_storage(unreachable)
            assert PASSWORD not in str(caught.value)
            assert "cannot open the journal postgresql://postgres@127.0.0.1:1/test" in str(
                caught.value
            )


async def _append_opened(stores: list[Storage], url: PostgresURL) -> None:
    store = await open_postgres_storage(url)
    stores.append(store)
    await store.append([entry(trigger(len(stores)))])


@pytest.mark.postgres
class TestReconnecting:
    async def test_a_terminated_backend_fails_one_call_then_the_store_goes_on(self) -> None:
        """After its connections are killed, a store's next call fails; the one after works."""
        name = f"tower-test-{uuid.uuid4().hex[:8]}"
        async with open_schema() as schema:
            storage = await open_postgres_storage(url_of(schema, application_name=name))
            try:
                with trio.fail_after(20):
                    first = trigger(1)
                    await storage.append([entry(first, "http:k")])
                    assert await storage.get(first.uuid) is not None
                    killed = await trio.to_thread.run_sync(
                        admin,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s",
                        name,
                    )
                    assert killed == [(True,), (True,)]  # the writer and the reader
                    with pytest.raises(JournalError, match="check that PostgreSQL is up"):
                        await storage.append([entry(trigger(2))])
                    with pytest.raises(JournalError):
                        await storage.page(PageQuery(limit=10))
                    (again,) = await storage.append([entry(trigger(1), "http:k")])
                    assert getattr(again, "record", None) is not None  # a Duplicate of the first
                    record = await storage.get(first.uuid)
                    assert record is not None
                    assert record.status is DeliveryStatus.PENDING
                    assert await storage.pending_count() == 1
            finally:
                storage.close()


@pytest.mark.postgres
class TestCutOffInsideATransaction:
    async def test_the_server_ends_a_session_silent_inside_a_transaction(self) -> None:
        """Row locks of a tower cut off mid-transaction are freed after the timeout.

        Another tower's takeover (of a lease, of triggers) waits for those
        locks; without the timeout it would wait until TCP gives up.
        """
        async with open_schema() as schema:

            def scenario() -> float:
                # The cut-off tower: a transaction begun, a row locked, then silence.
                cut_off = connect(schema, idle_in_transaction=0.3)
                other = connect(schema)
                try:
                    cut_off.execute(
                        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(str(schema.schema)))
                    )
                    cut_off.execute("CREATE TABLE held (id int PRIMARY KEY, n int)")
                    cut_off.execute("INSERT INTO held VALUES (1, 0)")
                    cut_off.execute("BEGIN")
                    cut_off.execute("SELECT n FROM held WHERE id = 1 FOR UPDATE")
                    # A regression waits for the lock: it fails in seconds, not hangs.
                    other.execute("SET lock_timeout = '5s'")
                    started = time.monotonic()
                    other.execute("UPDATE held SET n = 1 WHERE id = 1")
                    waited = time.monotonic() - started
                    ended = (
                        psycopg.errors.IdleInTransactionSessionTimeout,
                        psycopg.OperationalError,
                    )
                    with pytest.raises(ended):
                        cut_off.execute("SELECT 1")
                    return waited
                finally:
                    cut_off.close()
                    other.close()

            waited = await trio.to_thread.run_sync(scenario)
        assert waited < 5

    async def test_the_towers_sessions_are_ended_within_either_ttl(self, tmp_path: Path) -> None:
        async with open_schema() as schema:
            settings = Settings.from_environ(
                {
                    "TOWER_JOURNAL_URL": schema_url(str(schema.schema)),
                    "TOWER_LEASE_TTL": "4",
                    "TOWER_REPLICA_TTL": "6",
                    "TOWER_DATA_DIR": str(tmp_path),
                }
            )
            storage = await open_storage_from(settings)
            try:
                assert isinstance(storage, PostgresStorage)

                def shown() -> str:
                    with storage.journal._using(storage.journal._writer, "read") as db:
                        row = db.execute("SHOW idle_in_transaction_session_timeout").fetchone()
                    return str(row[0]) if row else ""

                assert await trio.to_thread.run_sync(shown) == "4s"
            finally:
                storage.close()


@pytest.mark.postgres
@pytest.mark.subprocess
class TestTowerOnPostgres:
    async def test_a_posted_trigger_is_stored_in_postgres_and_published(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """`tower-trio run` with a PostgreSQL URL takes a POST, journals it there, publishes it."""
        queue = await broker.bind("OT-2/v1alpha1")
        async with open_schema() as schema:
            environ = tower_environ(
                TOWER_AMQP_URL=amqp_url,
                TOWER_EXCHANGE=broker.exchange,
                TOWER_DATA_DIR=str(tmp_path / "data"),
                TOWER_PLUGINS_DIR=str(tmp_path),
                TOWER_JOURNAL_URL=with_password(schema_url(str(schema.schema))),
            )
            async with open_tower_process(environ) as tower:
                with trio.fail_after(30):
                    started = await tower.wait_for("tower.started")
                    assert started["journal"] == f"{schema_url(str(schema.schema))}"
                    url = started["http"].split(",")[0]
                    async with httpx.AsyncClient(base_url=url) as client:
                        response = await client.post("/triggers?wait=published", json=VALID)
                    assert response.status_code == 202, response.text
                    assert response.json()["status"] == "published"
                    (message,) = await broker.take(queue, 1)
                    assert load_trigger(message.body).uuid == response.json()["uuid"]
                    assert await tower.terminate() == 0
            assert PASSWORD not in tower.log
            rows = await trio.to_thread.run_sync(
                admin, f"SELECT uuid, status FROM {schema.schema}.triggers"
            )
            assert rows == [(response.json()["uuid"], "published")]
            assert not (tmp_path / "data" / "journal.sqlite3").exists()

    def test_an_unreachable_database_stops_the_start_in_one_line(self, tmp_path: Path) -> None:
        """A database that cannot be reached exits 2 with one line, the URL without its password."""
        environ = tower_environ(
            TOWER_DATA_DIR=str(tmp_path),
            TOWER_PLUGINS_DIR=str(tmp_path),
            TOWER_JOURNAL_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
        )
        result = subprocess.run(
            [sys.executable, "-m", "tower_trio", "run"],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(
            "tower-trio: error: cannot open the journal postgresql://postgres@127.0.0.1:1/test"
        )
        assert PASSWORD not in result.stderr


def _plugin_trigger(n: int, plugin: str, term: int | None) -> Trigger:
    return trigger(n).with_source(plugin, term=term)


@pytest.mark.postgres
class TestLeasesAndFencing:
    async def test_terms_only_grow_and_a_live_lease_is_not_taken(self) -> None:
        """A free lease is won in a new term, renewed in the same, and taken over only expired."""
        async with open_schema() as url:
            storage = await open_postgres_storage(url)
            a = PostgresLeases(url, "tower-a", timeout=10)
            b = PostgresLeases(url, "tower-b", timeout=10)
            try:
                with trio.fail_after(20):
                    assert await a.campaign("p", 30) == Leader("tower-a", 1)
                    assert await a.campaign("p", 30) == Leader("tower-a", 1)
                    assert await b.campaign("p", 30) == Leader("tower-a", 1)
                    await a.release("p", 1)
                    assert await b.campaign("p", 30) == Leader("tower-b", 2)
                    # Expired (by the database's clock): taken over, one term on.
                    assert await b.campaign("p", 0.001) == Leader("tower-b", 2)
                    await trio.sleep(0.05)
                    assert await a.campaign("p", 30) == Leader("tower-a", 3)
                    # A renewal after its own lease expired starts a new term too.
                    assert await a.campaign("p", 0.001) == Leader("tower-a", 3)
                    await trio.sleep(0.05)
                    assert await a.campaign("p", 30) == Leader("tower-a", 4)
                    # A stale release changes nothing.
                    await a.release("p", 3)
                    assert await b.campaign("p", 30) == Leader("tower-a", 4)
            finally:
                a.close()
                b.close()
                storage.close()

    async def test_state_writes_are_accepted_only_in_the_current_term(self) -> None:
        """The holder's current term writes; an older term, or another tower, is refused."""
        async with open_schema() as url:
            storage = await open_postgres_storage(url, instance="tower-a")
            other = await open_postgres_storage(url, instance="tower-b")
            a = PostgresLeases(url, "tower-a", timeout=10)
            b = PostgresLeases(url, "tower-b", timeout=10)
            try:
                with trio.fail_after(20):
                    assert await a.campaign("p", 30) == Leader("tower-a", 1)
                    await storage.save_plugin_state("p", "k", "one", term=1)
                    with pytest.raises(FencedError, match="leadership term 1"):
                        await other.save_plugin_state("p", "k", "b", term=1)
                    await a.release("p", 1)
                    with pytest.raises(FencedError, match="no longer holds that term"):
                        await storage.save_plugin_state("p", "k", "stale", term=1)
                    assert await b.campaign("p", 30) == Leader("tower-b", 2)
                    await other.save_plugin_state("p", "k", "two", term=2)
                    with pytest.raises(FencedError):
                        await storage.save_plugin_state("p", "k", None, term=1)
                    with pytest.raises(FencedError):
                        await storage.save_plugin_state("p", "k", "future", term=3)
                    assert await storage.load_plugin_state("p") == {"k": "two"}
            finally:
                a.close()
                b.close()
                other.close()
                storage.close()

    async def test_a_trigger_of_a_stale_term_is_not_stored(self) -> None:
        """A stale term's trigger is refused alone; the rest of its batch is stored."""
        async with open_schema() as url:
            storage = await open_postgres_storage(url, instance="tower-a")
            a = PostgresLeases(url, "tower-a", timeout=10)
            try:
                with trio.fail_after(20):
                    assert await a.campaign("p", 30) == Leader("tower-a", 1)
                    current = _plugin_trigger(1, "p", 1)
                    (accepted,) = await storage.append([entry(current, "plugin:p:1")])
                    assert isinstance(accepted, Accepted)
                    await a.release("p", 1)
                    assert await a.campaign("p", 30) == Leader("tower-a", 2)
                    stale = _plugin_trigger(2, "p", 1)
                    http = trigger(3)
                    kept, refused = await storage.append([entry(http), entry(stale, "plugin:p:2")])
                    # The stale leader's trigger alone is refused; the rest of its batch stored.
                    assert isinstance(refused, Refused)
                    assert "trigger of plugin 'p' from leadership term 1" in refused.reason
                    assert await storage.get(stale.uuid) is None
                    assert isinstance(kept, Accepted)
                    assert await storage.get(http.uuid) is not None
                    fresh = _plugin_trigger(2, "p", 2)
                    (stored,) = await storage.append([entry(fresh, "plugin:p:2")])
                    assert isinstance(stored, Accepted)
                    # Without a term (HTTP, or a store of one tower) nothing is fenced.
                    (unfenced,) = await storage.append([entry(trigger(4))])
                    assert isinstance(unfenced, Accepted)
            finally:
                a.close()
                storage.close()

    async def test_a_write_holds_off_a_takeover_until_it_commits(self) -> None:
        """While a fenced write's transaction is open, no other tower can take the lease."""
        async with open_schema() as url:
            storage = await open_postgres_storage(url, instance="tower-a")
            a = PostgresLeases(url, "tower-a", timeout=10)
            b = PostgresLeases(url, "tower-b", timeout=10)
            try:
                with trio.fail_after(20):
                    assert await a.campaign("p", 0.5) == Leader("tower-a", 1)
                    journal = storage.journal

                    def slow_write() -> None:
                        with journal._using(journal._writer, "write to") as db, db.transaction():
                            journal._fence(db, "p", 1, "state")
                            time.sleep(1.0)  # the lease expires meanwhile

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(trio.to_thread.run_sync, slow_write)
                        await trio.sleep(0.7)
                        started = trio.current_time()
                        assert await b.campaign("p", 30) == Leader("tower-b", 2)
                        # It waited for the write's row lock to go.
                        assert trio.current_time() - started > 0.1
            finally:
                a.close()
                b.close()
                storage.close()


@pytest.mark.postgres
class TestLeaseCalls:
    async def test_a_call_without_an_answer_is_abandoned_at_its_deadline(self) -> None:
        """A server that takes the connection and says nothing (a cut network) holds a
        lease call only until its timeout, whose error names the call and the fix."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        held: list[trio.SocketStream] = []

        async def say_nothing(stream: trio.SocketStream) -> None:
            held.append(stream)
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, say_nothing, listeners)
            port = listeners[0].socket.getsockname()[1]
            leases = PostgresLeases(_url_on_port(port), "tower-a", timeout=0.5)
            try:
                with trio.fail_after(3):
                    started = trio.current_time()
                    with pytest.raises(JournalError) as raised:
                        await leases.campaign("p", 9)
                    assert trio.current_time() - started < 1.5
                    with pytest.raises(JournalError) as released:
                        await leases.release("p", 1)
            finally:
                leases.close()
                nursery.cancel_scope.cancel()
        assert held  # the calls did reach the silent server
        shown = _url_on_port(port).shown
        assert str(raised.value) == (
            f"cannot campaign for the lease of plugin 'p' in the journal {shown}: "
            "no answer within 0.5s; check the network to PostgreSQL"
        )
        assert str(released.value).startswith(
            f"cannot release the lease of plugin 'p' in the journal {shown}: no answer"
        )

    async def test_a_server_that_is_not_there_is_named_with_the_fix(self) -> None:
        """A refused connection fails the call at once, naming the URL and what to check."""
        url = _url_on_port(unused_port())
        leases = PostgresLeases(url, "tower-a", timeout=5)
        try:
            with trio.fail_after(5), pytest.raises(JournalError) as raised:
                await leases.release("p", 1)
        finally:
            leases.close()
        message = str(raised.value)
        assert message.startswith(
            f"cannot release the lease of plugin 'p' in the journal {url.shown}: "
        )
        assert message.endswith("; check that PostgreSQL is up and that TOWER_JOURNAL_URL names it")
        # The driver's lines, folded into one line of single spaces.
        assert "Connection refused Is the server running" in message

    async def test_calls_share_one_connection_and_close_ends_it(self) -> None:
        """Lease calls take turns on one connection; close() ends it, and a call that was
        under way when the tower closed its leases does not keep its own."""
        name = f"tower_leases_{uuid.uuid4().hex[:8]}"
        async with open_schema() as plain:
            storage = await open_postgres_storage(plain)
            url = _named(plain, name)
            leases = PostgresLeases(url, "tower-a", timeout=10)
            try:
                with trio.fail_after(20):
                    assert await leases.campaign("p", 30) == Leader("tower-a", 1)
                    assert await leases.campaign("p", 30) == Leader("tower-a", 1)
                    await leases.release("p", 1)
                    assert await _sessions(name) == 1
                    # A campaign held up by a row lock while the tower closes its leases.
                    async with trio.open_nursery() as nursery:
                        locked, unlock = trio.Event(), threading.Event()
                        nursery.start_soon(
                            trio.to_thread.run_sync, _lock_lease_row, plain, locked, unlock
                        )
                        await locked.wait()
                        nursery.start_soon(leases.campaign, "p", 30)
                        await _until_sessions(name, 1, waiting_for_a_lock=True)
                        leases.close()
                        unlock.set()
                    await _until_sessions(name, 0)
            finally:
                leases.close()
                storage.close()

    async def test_no_holder_is_none_when_the_lease_runs_out_between_the_two_reads(
        self,
    ) -> None:
        """A campaign that finds another tower's live lease, which has expired by the
        time it asks who holds it, answers that no one does (and does not fail)."""
        name = f"tower_leases_{uuid.uuid4().hex[:8]}"
        async with open_schema() as plain:
            storage = await open_postgres_storage(plain)
            url = _named(plain, name)
            a = PostgresLeases(url, "tower-a", timeout=10)
            b = PostgresLeases(plain, "tower-b", timeout=10)
            try:
                with trio.fail_after(20):
                    assert await b.campaign("p", 0.5) == Leader("tower-b", 1)
                    async with trio.open_nursery() as nursery:
                        locked, unlock = trio.Event(), threading.Event()
                        nursery.start_soon(
                            trio.to_thread.run_sync, _lock_lease_row, plain, locked, unlock
                        )
                        await locked.wait()
                        answers: list[Leader | None] = []

                        async def campaign() -> None:
                            answers.append(await a.campaign("p", 30))

                        nursery.start_soon(campaign)
                        # Its update judges expiry by the time it started: b's lease is live.
                        await _until_sessions(name, 1, waiting_for_a_lock=True)
                        await trio.sleep(0.6)
                        unlock.set()
                    assert answers == [None]
            finally:
                a.close()
                b.close()
                storage.close()


def _named(url: PostgresURL, application_name: str) -> PostgresURL:
    """``url`` with an application name, by which its sessions are found in pg_stat_activity."""
    named = parse_journal_url(schema_url(str(url.schema), application_name=application_name))
    assert isinstance(named, PostgresURL)
    return named


def _url_on_port(port: int) -> PostgresURL:
    url = parse_journal_url(schema_url("tower_nowhere").replace(":5432/", f":{port}/"))
    assert isinstance(url, PostgresURL)
    return url


async def _sessions(application_name: str, *, waiting_for_a_lock: bool = False) -> int:
    """Open sessions of ``application_name`` (only those waiting for a lock, if asked)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    if waiting_for_a_lock:
        query += " AND wait_event_type = 'Lock'"
    ((count,),) = await trio.to_thread.run_sync(admin, query, application_name)
    return int(count)


async def _until_sessions(
    application_name: str, count: int, *, waiting_for_a_lock: bool = False
) -> None:
    """Wait until the database shows ``count`` such sessions (it notices a close soon after)."""
    while True:
        if await _sessions(application_name, waiting_for_a_lock=waiting_for_a_lock) == count:
            return
        await trio.sleep(0.01)


def _lock_lease_row(url: PostgresURL, locked: trio.Event, unlock: threading.Event) -> None:
    """Hold the lease row of plugin p locked until ``unlock`` is set (in a worker thread)."""
    with connect(url) as db, db.transaction():
        db.execute("SELECT 1 FROM leases WHERE plugin = 'p' FOR UPDATE")
        trio.from_thread.run_sync(locked.set)
        unlock.wait(10)
