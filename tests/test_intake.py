"""From source to journal: one writer, answers that match what was stored, bounded memory.

Each test here pins a guarantee that an outside review found broken: a
plugin's state write colliding with a publisher batch, a 503 "not stored"
for a trigger that was stored, memory that grew with waiting requests, and
answers that were 500 for input a client controls.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests._helpers import VALID, Broker, run_tower, tower_settings, unused_port
from tower_trio import JournalError, Trigger
from tower_trio._channel import Intake, Submission, TriggerSendChannel
from tower_trio._journal import Journal, SQLiteStorage, open_journal
from tower_trio._plugins import discover_plugins, select_plugins
from tower_trio._publisher import Publisher
from tower_trio._serialization import dump_trigger, trigger_from_wire
from tower_trio._storage import Settlement, request_fingerprint

if TYPE_CHECKING:
    from collections.abc import Iterable

REPO_PLUGINS = Path(__file__).parent.parent / "plugins"


def trigger(n: int = 0, **spec: Any) -> Trigger:
    return Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"n": n, **spec})


def stored_keys(data_dir: Path) -> set[str]:
    """The idempotency keys the journal on disk holds, read by a connection of our own."""
    with sqlite3.connect(data_dir / "journal.sqlite3") as db:
        return {key for (key,) in db.execute("SELECT idem_key FROM triggers") if key}


class TestOneWriter:
    def test_plugin_state_and_batches_never_interleave(self, tmp_path: Path) -> None:
        """Plugin state saved from one thread while batches commit from another never collide."""
        journal = open_journal(tmp_path)
        errors: list[BaseException] = []

        def batches() -> None:
            try:
                for n in range(300):
                    t = trigger(n)
                    journal.append([(t, dump_trigger(t), None, None)])
            except BaseException as err:  # reported to the test below
                errors.append(err)

        def state() -> None:
            try:
                for n in range(300):
                    journal.save_plugin_state("folder", "cursor", n)
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=batches), threading.Thread(target=state)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert journal.pending_count() == 300
        assert journal.load_plugin_state("folder") == {"cursor": 299}
        journal.close()

    def test_journal_refuses_to_run_without_wal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file system where SQLite cannot use WAL is a start-up error naming the setting."""

        class NoWal(sqlite3.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                if sql.startswith("PRAGMA journal_mode"):
                    return super().execute("SELECT 'delete'")
                return super().execute(sql, *args)

        real_connect = sqlite3.connect
        monkeypatch.setattr(
            sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=NoWal)
        )
        advice = r"WAL mode \(SQLite chose 'delete'\); put TOWER_DATA_DIR on a local file system$"
        with pytest.raises(JournalError, match=advice):
            open_journal(tmp_path)


class TestPluginSend:
    async def test_send_returns_once_the_trigger_is_stored(self) -> None:
        """A plugin's send does not return before the journal reports the trigger stored."""
        inner, receive = trio.open_memory_channel[Submission](1)
        channel = TriggerSendChannel(inner, "lims")
        returned = trio.Event()

        async def plugin() -> None:
            await channel.send(trigger())
            returned.set()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(plugin)
                submission = await receive.receive()
                await trio.testing.wait_all_tasks_blocked()
                assert not returned.is_set()
                submission.accepted()
                await returned.wait()

    async def test_send_raises_when_the_journal_refuses(self) -> None:
        """A trigger the journal refused raises JournalError in the plugin, naming what to do."""
        inner, receive = trio.open_memory_channel[Submission](1)
        channel = TriggerSendChannel(inner, "lims")

        async def journal_full() -> None:
            (await receive.receive()).rejected("database or disk is full")

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal_full)
                with pytest.raises(JournalError, match=r"will not be published.*retry"):
                    await channel.send(trigger())

    async def test_a_plugin_whose_trigger_was_refused_retries_its_item(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """With a full journal, the folder plugin leaves its file in place: nothing is lost."""
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        big = "x" * 30_000
        for n in range(6):
            body = {**VALID, "spec": {"n": n, "blob": big}}
            (inbox / f"{n}.json").write_text(json.dumps(body))
        (folder,), _ = select_plugins(
            discover_plugins(REPO_PLUGINS, entry_points=False),
            ("folder",),
            {
                "PLUGIN_FOLDER_PATH": str(inbox),
                "PLUGIN_FOLDER_POLL": "true",
                "PLUGIN_FOLDER_INTERVAL": "0.05",
                "PLUGIN_FOLDER_SETTLE": "0",
            },
        )
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path / "data", journal_max_bytes=96 * 1024
        )
        async with run_tower(settings, [folder]) as tower:
            with trio.fail_after(20):
                # The journal fills in a worker thread: poll the plugin's status.
                while not tower.running.plugins["folder"].last_error:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            processed = sorted((inbox / "processed").glob("*.json"))
        with sqlite3.connect(tmp_path / "data" / "journal.sqlite3") as db:
            (stored,) = db.execute(
                "SELECT count(*) FROM triggers WHERE source = 'folder'"
            ).fetchone()
        left = sorted(inbox.glob("*.json"))
        assert left, "the journal should have filled up before every file was read"
        assert len(processed) == stored
        assert len(processed) + len(left) == 6


class TestAnswersNeverLie:
    async def test_every_202_is_stored_and_every_503_is_not(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Under load with a tiny timeout, the answer always matches what the journal holds."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, publish_timeout=0.002)
        answers: dict[str, int] = {}
        async with run_tower(settings) as tower:

            async def post(n: int) -> None:
                key = f"req-{n}"
                response = await tower.client.post(
                    "/triggers",
                    json={**VALID, "spec": {"n": n}},
                    headers={"Idempotency-Key": key},
                )
                answers[key] = response.status_code
                if response.status_code >= 500:
                    assert "Retry-After" in response.headers

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for n in range(300):
                        nursery.start_soon(post, n)
        stored = {key.removeprefix("http:") for key in stored_keys(tmp_path)}
        refused = {key for key, status in answers.items() if status == 503}
        accepted = {key for key, status in answers.items() if status == 202}
        assert refused, "the timeout should have refused some requests"
        assert accepted <= stored
        assert not refused & stored
        assert set(answers.values()) <= {202, 503, 504}

    async def test_withdrawal_and_intake_exclude_each_other(self) -> None:
        """Once the journal has taken a submission it cannot be withdrawn, and vice versa."""
        taken = Submission.of(trigger(1))
        assert taken.take()
        assert not taken.withdraw()
        withdrawn = Submission.of(trigger(2))
        assert withdrawn.withdraw()
        assert not withdrawn.take()
        assert withdrawn.intake is Intake.WAITING


class TestMemoryBounds:
    async def test_waiting_requests_hold_a_bounded_number_of_bytes(self, tmp_path: Path) -> None:
        """Past TOWER_WAIT_MAX_BYTES, ?wait=published gets 503 at once and nothing is stored."""
        body = {**VALID, "spec": {"blob": "x" * 100_000}}
        settings = tower_settings(
            f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
            "tower.unused",
            tmp_path,
            wait_max_bytes=250_000,
            publish_timeout=3.0,
            shutdown_grace=0.1,
        )
        statuses: list[int] = []
        async with run_tower(settings) as tower:
            waiting = trio.Event()

            async def wait_for_broker() -> None:
                response = await tower.client.post("/triggers?wait=published", json=body)
                statuses.append(response.status_code)

            with trio.fail_after(15):
                async with trio.open_nursery() as nursery:
                    for _ in range(2):
                        nursery.start_soon(wait_for_broker)
                    # Both bodies are journaled and waiting for a broker that is not there.
                    while tower.running.publisher.statistics().pending < 2:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    waiting.set()
                    refused = await tower.client.post("/triggers?wait=published", json=body)
                    assert refused.status_code == 503
                    assert "TOWER_WAIT_MAX_BYTES" in refused.json()["details"][0]
                    assert "Retry-After" in refused.headers
                    plain = await tower.client.post("/triggers", json=body)
                    assert plain.status_code == 202
            assert tower.running.publisher.statistics().pending == 3
        assert statuses == [504, 504]

    async def test_the_publisher_cache_is_bounded_by_bytes(self, tmp_path: Path) -> None:
        """While the broker is away the cache of recent bodies stays under its byte cap."""
        settings = tower_settings(
            f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
            "tower.unused",
            tmp_path,
            cache_max_bytes=100_000,
            shutdown_grace=0.1,
        )
        async with run_tower(settings) as tower:
            for n in range(12):
                body = {**VALID, "spec": {"n": n, "blob": "x" * 30_000}}
                assert (await tower.client.post("/triggers", json=body)).status_code == 202
            stats = tower.running.publisher.statistics()
            assert stats.pending == 12
            assert 0 < stats.cached_bytes <= 100_000

    async def test_a_listing_page_is_bounded_by_bytes(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A page of large triggers ends early with a cursor, and the next pages hold the rest."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, list_max_bytes=250_000)
        async with run_tower(settings) as tower:
            sent = []
            for n in range(7):
                body = {**VALID, "spec": {"n": n, "blob": "x" * 100_000}}
                response = await tower.client.post("/triggers", json=body)
                sent.append(response.json()["uuid"])
            seen: list[str] = []
            url = "/triggers?limit=500"
            pages = 0
            while url:
                page = (await tower.client.get(url)).json()
                pages += 1
                assert len(page["items"]) <= 2
                seen.extend(item["uuid"] for item in page["items"])
                url = page["next"] and f"/triggers?limit=500&before={page['next']}"
        assert seen == sent[::-1]
        assert pages >= 4


class TestClientControlledInput:
    @pytest.mark.parametrize(
        "source",
        ["\ud800", "x" * 10_000, {"a": [[[]]]}, 5],
        ids=["lone-surrogate", "long", "object", "number"],
    )
    async def test_metadata_source_never_makes_a_500(
        self, amqp_url: str, broker: Broker, tmp_path: Path, source: object
    ) -> None:
        """Whatever a client puts in metadata.source, with a key, it is overridden, not a 500."""
        # Escaped JSON: a lone surrogate is valid JSON text, though not valid Unicode.
        body = json.dumps({**VALID, "metadata": {"source": source}})
        headers = {"Content-Type": "application/json", "Idempotency-Key": "k1"}
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            response = await tower.client.post("/triggers", content=body, headers=headers)
            again = await tower.client.post("/triggers", content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["metadata"]["source"] == "http"
        assert again.status_code == 200

    async def test_deeply_nested_source_with_a_key_is_not_a_500(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """metadata.source nested near the parser's depth limit, with a key, is never a 500."""
        answers = set()
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            # Around the depth where decoding still works but encoding again
            # runs out of stack; where exactly depends on the stack in use.
            for depth in range(850, 1001):
                nested = "[" * depth + "]" * depth
                raw = (
                    b'{"apiVersion":"OT-2/v1alpha1","protocol":"PlateTransfer","spec":{"v":1},'
                    b'"metadata":{"source":' + nested.encode() + b"}}"
                )
                response = await tower.client.post(
                    "/triggers",
                    content=raw,
                    headers={"Content-Type": "application/json", "Idempotency-Key": f"d{depth}"},
                )
                answers.add(response.status_code)
        assert answers <= {202, 400}
        assert 202 in answers

    def test_the_fingerprint_ignores_what_the_tower_assigns(self) -> None:
        """Two requests asking for the same thing have one fingerprint, whatever their source."""
        first = trigger_from_wire({**VALID, "metadata": {"source": "\ud800"}}, source="http")
        second = trigger_from_wire(VALID, source="http")
        other = trigger_from_wire({**VALID, "spec": {"volume": 1}}, source="http")
        assert request_fingerprint(first) == request_fingerprint(second)
        assert request_fingerprint(first) != request_fingerprint(other)


class TestReadiness:
    async def test_a_full_journal_is_not_ready(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """/readyz names the journal once it has no room for another trigger of the largest size."""
        roomy = tower_settings(
            amqp_url,
            broker.exchange,
            tmp_path / "roomy",
            journal_max_bytes=1024 * 1024,
            max_body_bytes=64 * 1024,
        )
        async with run_tower(roomy) as tower:
            assert (await tower.client.get("/readyz")).status_code == 200
        full = tower_settings(
            amqp_url, broker.exchange, tmp_path / "full", journal_max_bytes=256 * 1024
        )
        async with run_tower(full) as tower:
            response = await tower.client.get("/readyz")
        assert response.status_code == 503
        (reason,) = response.json()["details"]
        assert reason.startswith("journal cannot take more triggers")
        assert "TOWER_JOURNAL_MAX_BYTES" in reason


class _NoRoomForAnswers(Journal):
    """A journal whose disk filled up after the triggers: broker answers cannot be written."""

    def settle(self, settlements: Iterable[Settlement]) -> None:
        del settlements
        raise JournalError("cannot write to the journal: database or disk is full")


class TestShutdownCount:
    async def test_the_last_count_includes_answers_that_were_not_written(
        self, amqp_url: str, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Published triggers whose records could not be written are logged as pending at exit."""
        await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path)
        journal = _NoRoomForAnswers(tmp_path / "journal.sqlite3")
        publisher = Publisher(settings, SQLiteStorage(journal))
        send, receive = trio.open_memory_channel[Submission](10)
        with caplog.at_level(logging.WARNING), trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(publisher.serve, receive)
                async with send:
                    for n in range(3):
                        await send.send(Submission.of(trigger(n)))
        journal.close()
        assert publisher.statistics().published == 3
        (record,) = [r for r in caplog.records if r.msg == "publisher.stopped_with_pending"]
        fields = record.fields  # type: ignore[attr-defined]
        assert fields["pending"] == 3
        assert fields["unrecorded"] == 3
