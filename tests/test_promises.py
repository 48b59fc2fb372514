"""The promises of the delivery, security and HTTP API pages that no other test pinned.

Each class is named after the section of docs/delivery.md, docs/security.md
or docs/http-api.md that makes the promise; docs/testing.md lists which test
pins which promise. Towers run in-process on the real clock (the journal
works in threads), against the real broker where the promise is about it, or
with the broker away where it is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import pickle
import shutil
import sqlite3
import ssl
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio
from pamqp import commands

from tests._helpers import (
    VALID,
    Broker,
    run_tower,
    spec_of,
    tower_settings,
    unused_port,
    watching,
)
from tests.amqp._certificates import make_tls_files
from tests.test_guarantees import HeldBatches, Relay, posted, stored_specs
from tests.test_http_boundary import _connect, _read_to_end
from tests.test_recovery import _fields, _named
from tests.test_security import OTHER, TOKEN, FakeClock
from tower_trio import Trigger, amqp
from tower_trio import _leadership as leadership
from tower_trio import _supervisor as supervisor
from tower_trio._auth import Guard, RateLimiter, Tokens
from tower_trio._channel import Intake, Submission, TriggerSendChannel
from tower_trio._config import Settings
from tower_trio._plugins import ConfiguredPlugin, DiscoveredPlugin, serve_plugin
from tower_trio._serialization import load_trigger
from tower_trio._server import serve_http
from tower_trio.amqp._frames import PROTOCOL_HEADER, Frame, FrameReader

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests._helpers import Tower

ROUTE = "OT-2/v1alpha1"
THIRD = "third-token-0123456789abcdef"


def offline_settings(unique: str, data_dir: Path, **overrides: Any) -> Settings:
    """A tower's settings with no broker where its URL points, and a short grace to stop."""
    return tower_settings(
        f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
        f"test.triggers.{unique}",
        data_dir,
        **{"shutdown_grace": 0.1, **overrides},
    )


@pytest.fixture
async def offline_tower(unique: str, tmp_path: Path) -> AsyncIterator[Tower]:
    """An in-process tower whose broker is away: the HTTP API and the journal only."""
    async with run_tower(offline_settings(unique, tmp_path)) as tower:
        yield tower


def broker_address(amqp_url: str) -> tuple[str, int]:
    host, _, port = urlsplit(amqp_url).netloc.rpartition("@")[2].partition(":")
    return host, int(port or 5672)


def numbers(messages: list[amqp.Message]) -> list[int]:
    """The ``n`` of each message's trigger, as ``posted`` numbered them."""
    return [spec_of(load_trigger(message.body))["n"] for message in messages]


def location_uuid(response: httpx.Response) -> str:
    return response.headers["Location"].removeprefix("/triggers/")


@attrs.define
class WrittenBatches(HeldBatches):
    """``HeldBatches`` that also says when a held batch has been written."""

    written: trio.Event = attrs.Factory(trio.Event)

    async def held_append(self, entries: Any) -> Any:
        result = await super().held_append(entries)
        self.written.set()
        return result


class TestTheJournal:
    """docs/delivery.md, "The journal"."""

    async def test_triggers_that_arrived_together_are_committed_in_one_transaction(
        self, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every trigger that arrived while a batch was written goes into the next, one commit."""
        count = 20
        statements: list[str] = []
        real_connect = sqlite3.connect

        def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            db: sqlite3.Connection = real_connect(*args, **kwargs)
            db.set_trace_callback(statements.append)
            return db

        monkeypatch.setattr(sqlite3, "connect", traced)
        # A submission's source waits for the commit once the submission is in the channel.
        queued = 0
        all_queued = trio.Event()
        wait_committed = Submission.wait_committed

        async def counted(submission: Submission) -> Intake:
            nonlocal queued
            queued += 1
            if queued == count + 1:
                all_queued.set()
            return await wait_committed(submission)

        monkeypatch.setattr(Submission, "wait_committed", counted)
        batches: list[tuple[int, list[str]]] = []
        statuses: list[int] = []
        with trio.fail_after(20):
            async with run_tower(offline_settings(unique, tmp_path)) as tower:
                journal = tower.journal
                append = journal.append

                def observed_append(entries: Any) -> Any:
                    # The writer lock is held throughout: these statements are the batch's.
                    start = len(statements)
                    try:
                        return append(entries)
                    finally:
                        transaction = [
                            s for s in statements[start:] if s in {"BEGIN IMMEDIATE", "COMMIT"}
                        ]
                        batches.append((len(entries), transaction))

                monkeypatch.setattr(journal, "append", observed_append)
                held = HeldBatches.install(tower.storage, monkeypatch)

                async def post(n: int) -> None:
                    statuses.append(
                        (await tower.client.post("/triggers", json=posted(n))).status_code
                    )

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(post, 0)
                    await held.entered.wait()
                    for n in range(1, count + 1):
                        nursery.start_soon(post, n)
                    await all_queued.wait()
                    held.released.set()
        assert statuses == [202] * (count + 1)
        assert batches == [
            (1, ["BEGIN IMMEDIATE", "COMMIT"]),
            (count, ["BEGIN IMMEDIATE", "COMMIT"]),
        ]
        assert sorted(spec["n"] for spec in stored_specs(tmp_path)) == list(range(count + 1))


class TestWhatTheAnswersMean:
    """docs/delivery.md, "What the answers of POST /triggers mean"."""

    async def test_commit_that_does_not_end_is_504_outcome_unknown_and_a_retry_stores_once(
        self, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A commit still running after twice the timeout is 504 with Location; a retry is 200."""
        settings = offline_settings(unique, tmp_path, publish_timeout=0.5)
        key = {"Idempotency-Key": "order-17"}
        with trio.fail_after(20):
            async with run_tower(settings) as tower:
                held = WrittenBatches.install(tower.storage, monkeypatch)
                assert isinstance(held, WrittenBatches)
                unknown = await tower.client.post("/triggers", json=VALID, headers=key)
                # The disk comes back: the trigger the journal took is stored after all.
                held.released.set()
                await held.written.wait()
                record = await tower.client.get(unknown.headers["Location"])
                retry = await tower.client.post("/triggers", json=VALID, headers=key)
        assert unknown.status_code == 504
        assert unknown.json()["error"] == "journal outcome unknown"
        assert unknown.headers["Retry-After"] == "1"
        assert record.status_code == 200
        assert record.json()["uuid"] == location_uuid(unknown)
        assert retry.status_code == 200
        assert retry.json()["uuid"] == location_uuid(unknown)
        assert stored_specs(tmp_path) == [VALID["spec"]]

    async def test_504_pending_carries_the_location_of_the_record(
        self, unique: str, tmp_path: Path
    ) -> None:
        """?wait=published with the broker away: 504 pending, and Location leads to the record."""
        settings = offline_settings(unique, tmp_path, publish_timeout=1.0)
        with trio.fail_after(15):
            async with run_tower(settings) as tower:
                waited = await tower.client.post("/triggers?wait=published", json=VALID)
                record = await tower.client.get(waited.headers["Location"])
        assert waited.status_code == 504
        assert waited.json()["status"] == "pending"
        assert location_uuid(waited) == waited.json()["uuid"]
        assert record.json()["status"] == "pending"

    def test_send_nowait_only_queues(self) -> None:
        """send_nowait returns with the trigger queued, not stored; a refusal never reaches it."""
        inner, receive = trio.open_memory_channel[Submission](1)
        channel = TriggerSendChannel(inner, "folder")
        trigger = Trigger(api_version=ROUTE, protocol="PlateTransfer", spec={"n": 1}, key="item")
        channel.send_nowait(trigger)
        queued = receive.receive_nowait()
        assert queued.intake is Intake.WAITING
        assert queued.trigger.uuid == trigger.uuid
        assert queued.trigger.metadata.source == "folder"
        assert queued.key == "plugin:folder:item"
        # The journal's refusal comes after send_nowait returned: no one is told.
        queued.rejected("cannot write to the journal: database or disk is full")
        channel.send_nowait(trigger)
        with pytest.raises(trio.WouldBlock):
            channel.send_nowait(trigger)


class TestFaultsOneByOne:
    """docs/delivery.md, "Faults, one by one"."""

    async def test_unroutable_trigger_is_logged_and_not_retried(
        self, amqp_url: str, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A returned trigger is logged as trigger.unroutable with its routing key, sent once."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, max_attempts=3)
        with caplog.at_level(logging.INFO, logger="tower_trio"), trio.fail_after(15):
            async with run_tower(settings) as tower:
                answer = await tower.client.post("/triggers?wait=published", json=VALID)
                record = (await tower.client.get(answer.headers["Location"])).json()
                statistics = tower.running.publisher.statistics()
        assert answer.status_code == 202
        assert answer.json()["status"] == "unroutable"
        assert (record["status"], record["attempts"]) == ("unroutable", 1)
        assert (statistics.attempts, statistics.unroutable, statistics.pending) == (1, 1, 0)
        (logged,) = _named(caplog, "trigger.unroutable")
        assert logged.levelno == logging.WARNING
        assert _fields(logged)["uuid"] == answer.json()["uuid"]
        assert _fields(logged)["routing_key"] == ROUTE
        assert _named(caplog, "trigger.failed") == []

    async def test_trigger_given_up_is_logged_as_failed(
        self, amqp_url: str, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A trigger nacked TOWER_MAX_ATTEMPTS times is an error line, trigger.failed."""
        await broker.bind(ROUTE, refusing=True)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, max_attempts=1)
        with caplog.at_level(logging.INFO, logger="tower_trio"), trio.fail_after(15):
            async with run_tower(settings) as tower:
                refused = await tower.client.post("/triggers?wait=published", json=VALID)
        assert refused.status_code == 503
        (logged,) = _named(caplog, "trigger.failed")
        assert logged.levelno == logging.ERROR
        assert _fields(logged)["uuid"] == location_uuid(refused)
        assert _fields(logged)["attempts"] == 1

    async def test_channel_closed_by_the_broker_reconnects_and_republishes_oldest_first(
        self,
        amqp_url: str,
        broker: Broker,
        unique: str,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Publishing to a deleted exchange closes the channel; the tower reconnects, in order."""
        # Deleting the exchange drops its bindings; its alternate exchange keeps a
        # queue bound across the deletion, so what is republished can be seen.
        alternate = f"test.unroutable.{unique}"
        await broker.channel.exchange_declare(alternate, "fanout", durable=True)
        queue = (await broker.channel.queue_declare("", exclusive=True)).name
        broker.queues.append(queue)
        await broker.channel.queue_bind(queue, alternate, "")
        # Nothing kept in memory: every pending trigger is read back from the journal.
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, unroutable_exchange=alternate, cache_max_bytes=1
        )
        try:
            with (
                caplog.at_level(logging.INFO, logger="tower_trio"),
                watching("tower_trio._publisher", "broker.connected") as connected,
                trio.fail_after(20),
            ):
                async with run_tower(settings) as tower:
                    await broker.channel.exchange_delete(broker.exchange)
                    for n in range(5):
                        response = await tower.client.post("/triggers", json=posted(n))
                        assert response.status_code == 202
                    await connected.wait_for(2)
                    messages = await broker.take(queue, 5)
                    assert await broker.count(queue) == 0
                    reconnects = tower.running.publisher.statistics().reconnects
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await broker.channel.exchange_delete(alternate)
        assert numbers(messages) == list(range(5))
        assert reconnects == 1
        (closed,) = _named(caplog, "broker.disconnected")
        assert "404 NOT_FOUND" in str(_fields(closed)["error"])

    async def test_unwritable_journal_answers_503_and_logs_the_error(
        self,
        unique: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A write SQLite refuses is a 503 and an error line naming the journal; nothing is lost."""
        unwritable = False

        class Journaled(sqlite3.Connection):
            def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
                if unwritable:
                    raise sqlite3.OperationalError("attempt to write a readonly database")
                return super().executemany(sql, parameters)

        real_connect = sqlite3.connect
        monkeypatch.setattr(
            sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=Journaled)
        )
        with caplog.at_level(logging.INFO, logger="tower_trio"), trio.fail_after(15):
            async with run_tower(offline_settings(unique, tmp_path)) as tower:
                unwritable = True
                refused = await tower.client.post("/triggers", json=posted(0))
                unwritable = False
                accepted = await tower.client.post("/triggers", json=posted(1))
        assert refused.status_code == 503
        assert refused.json()["error"] == "journal unavailable"
        (logged,) = _named(caplog, "journal.write_failed")
        assert logged.levelno == logging.ERROR
        error = str(_fields(logged)["error"])
        assert "readonly database" in error
        assert str(tmp_path / "journal.sqlite3") in error
        assert accepted.status_code == 202
        assert stored_specs(tmp_path) == [posted(1)["spec"]]


@attrs.define
class Tap(Relay):
    """A relay to the broker that drops every connection until opened, and keeps what passed."""

    opened: bool = False
    streams: list[tuple[bytearray, bytearray]] = attrs.Factory(list)
    """For each connection let through: the bytes to the broker, and those to the tower."""

    async def _link(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        async with client:
            if not self.opened:
                return
            to_broker, to_tower = bytearray(), bytearray()
            self.streams.append((to_broker, to_tower))
            async with (
                await trio.open_tcp_stream(*self.target) as upstream,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_copy, client, upstream, to_broker, nursery.cancel_scope)
                nursery.start_soon(_copy, upstream, client, to_tower, nursery.cancel_scope)


async def _copy(
    source: trio.SocketStream, sink: trio.SocketStream, kept: bytearray, link: trio.CancelScope
) -> None:
    try:
        async for chunk in source:
            # Kept before it is passed on: whatever one side received is in ``kept``.
            kept.extend(chunk)
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        link.cancel()


def _frames(data: bytes | bytearray) -> list[Frame]:
    return [frame for _, frame in FrameReader().feed(data)]


class TestShutdown:
    """docs/delivery.md, "Shutdown"."""

    async def test_pending_triggers_go_out_first_at_the_next_start_and_the_close_is_clean(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Pending triggers go before a newer one at the next start; the end is Connection.Close."""
        queue = await broker.bind(ROUTE)
        tap = Tap(broker_address(amqp_url))
        with trio.fail_after(25):
            async with trio.open_nursery() as nursery:
                await nursery.start(tap.serve)
                settings = tower_settings(
                    tap.url(amqp_url), broker.exchange, tmp_path, shutdown_grace=0.2
                )
                async with run_tower(settings) as tower:
                    for n in range(3):
                        assert (await tower.client.post("/triggers", json=posted(n))).is_success
                # The next start: the broker comes back only once a newer trigger is in.
                async with run_tower(attrs.evolve(settings, shutdown_grace=5.0)) as tower:
                    newer = await tower.client.post("/triggers", json=posted(3))
                    tap.opened = True
                    messages = await broker.take(queue, 4)
                    assert await broker.count(queue) == 0
                nursery.cancel_scope.cancel()
        assert newer.status_code == 202
        assert numbers(messages) == list(range(4))
        ((to_broker, to_tower),) = tap.streams
        assert to_broker.startswith(PROTOCOL_HEADER)
        sent = _frames(to_broker[len(PROTOCOL_HEADER) :])
        received = _frames(to_tower)
        assert isinstance(sent[-1], commands.Connection.Close)
        assert sent[-1].reply_code == 200
        assert isinstance(received[-1], commands.Connection.CloseOk)
        assert not any(isinstance(frame, commands.Connection.Close) for frame in received)


class TestRetention:
    """docs/delivery.md, "Retention"."""

    async def test_settled_triggers_are_pruned_in_the_background(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A running tower deletes a published trigger once TOWER_RETENTION has passed."""
        queue = await broker.bind(ROUTE)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, retention=0.5)
        with watching("tower_trio._outbox", "journal.pruned") as pruned, trio.fail_after(15):
            async with run_tower(settings) as tower:
                published = await tower.client.post("/triggers?wait=published", json=VALID)
                kept = await tower.client.get(published.headers["Location"])
                with trio.fail_after(5):
                    await pruned.wait_for(1)
                gone = await tower.client.get(published.headers["Location"])
                await broker.take(queue, 1)
        assert published.json()["status"] == "published"
        assert kept.status_code == 200
        assert gone.status_code == 404
        assert gone.json()["error"] == "no such trigger"


class TestAmqpOverTls:
    """docs/security.md, "AMQP over TLS"."""

    def test_tls_1_2_or_later(self) -> None:
        """Every TLS context the tower builds refuses protocol versions older than TLS 1.2."""
        url = "amqps://guest:guest@localhost/%2F"
        with make_tls_files() as files:
            contexts = [
                Settings(amqp_url=url).amqp_ssl_context(),
                Settings(amqp_url=url, amqp_ca_file=files.ca).amqp_ssl_context(),
                Settings(
                    amqp_url=url,
                    amqp_ca_file=files.ca,
                    amqp_cert_file=files.client_cert,
                    amqp_key_file=files.client_key,
                ).amqp_ssl_context(),
            ]
        for context in contexts:
            assert context is not None
            assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


class TestWhenTlsFails:
    """docs/security.md, "Renewing certificates" and "When it fails"."""

    async def test_unreadable_tls_file_fails_that_attempt_and_tls_failures_are_retried(
        self, amqp_url: str, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A CA file gone fails an attempt naming it, then TLS fails; both broker.disconnected."""
        with make_tls_files() as files:
            ca_file = tmp_path / "ca.pem"
            shutil.copy(files.ca, ca_file)
        # amqps:// to the plain AMQP port: once the file is back, TLS itself fails.
        host, port = broker_address(amqp_url)
        vhost = urlsplit(amqp_url).path
        settings = tower_settings(
            f"amqps://guest:guest@{host}:{port}{vhost}",
            f"test.triggers.{unique}",
            tmp_path / "data",
            amqp_ca_file=ca_file,
            shutdown_grace=0.2,
        )
        away = ca_file.rename(tmp_path / "ca.pem.away")
        with (
            caplog.at_level(logging.INFO, logger="tower_trio"),
            watching("tower_trio._publisher", "broker.disconnected") as disconnected,
            trio.fail_after(15),
        ):
            async with run_tower(settings):
                # The tower reports started once its first attempt is over.
                away.rename(ca_file)
                await disconnected.wait_for(2)
        unreadable, tls_failure = _named(caplog, "broker.disconnected")[:2]
        assert str(ca_file) in str(_fields(unreadable)["error"])
        assert "does not answer in TLS" in str(_fields(tls_failure)["error"])
        assert {unreadable.levelno, tls_failure.levelno} == {logging.ERROR}
        retried = _named(caplog, "broker.reconnecting")[0]
        assert unreadable.created <= retried.created <= tls_failure.created


class TestApiTokens:
    """docs/security.md, "API tokens"."""

    def test_a_value_starting_with_dot_slash_is_a_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """TOWER_API_TOKENS=./tokens reads the file relative to the working directory."""
        (tmp_path / "tokens").write_text(f"# one a line\n{TOKEN}\n\n{OTHER}\n")
        monkeypatch.chdir(tmp_path)
        settings = Settings.from_environ({"TOWER_API_TOKENS": "./tokens"})
        assert settings.api_tokens == Tokens.of([TOKEN, OTHER])

    def test_tokens_are_held_as_sha256_digests_only(self) -> None:
        """Neither the settings nor the guard keep a token's text, only its SHA-256 digest."""
        settings = Settings.from_environ(
            {"TOWER_API_TOKENS": f"{TOKEN},{OTHER}", "TOWER_RATE_LIMIT": "10/s"}
        )
        guard = Guard.from_settings(settings)
        assert settings.api_tokens is not None
        assert settings.api_tokens.digests == tuple(
            hashlib.sha256(token.encode()).digest() for token in (TOKEN, OTHER)
        )
        # Everything either object holds, however deep, is in its pickle.
        for held in (pickle.dumps(settings), pickle.dumps(guard)):
            assert TOKEN.encode() not in held
            assert OTHER.encode() not in held

    def test_every_configured_token_is_compared_in_constant_time(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Whichever token is presented, hmac.compare_digest sees each configured digest once."""
        compared: list[tuple[bytes, bytes]] = []
        compare_digest = hmac.compare_digest

        def spy(configured: bytes, presented: bytes) -> bool:
            compared.append((configured, presented))
            return compare_digest(configured, presented)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        tokens = Tokens.of([TOKEN, OTHER, THIRD])
        guard = Guard(api=tokens)
        for presented, status in [
            (TOKEN, None),
            (OTHER, None),
            (THIRD, None),
            ("a-guess-that-is-long-enough", 403),
        ]:
            compared.clear()
            denial = guard.check("/triggers", f"Bearer {presented}", "192.0.2.7")
            assert (None if denial is None else denial.status) == status
            digest = hashlib.sha256(presented.encode()).digest()
            assert sorted(compared) == sorted((configured, digest) for configured in tokens.digests)


class TestRateLimit:
    """docs/security.md, "Rate limit"."""

    def test_ten_thousand_clients_are_remembered_by_default(self) -> None:
        """The limiter keeps 10 000 clients' buckets, and forgets some only past that."""
        limiter = RateLimiter(rate=1.0, burst=10, clock=FakeClock())
        for client in range(10_000):
            limiter.acquire(client)
        assert len(limiter) == 10_000
        limiter.acquire("one more")
        assert len(limiter) < 10_000

    def test_full_buckets_are_forgotten_first(self) -> None:
        """Past the cap, clients whose bucket refilled go before busy ones, however recent."""
        clock = FakeClock()
        limiter = RateLimiter(rate=1.0, burst=10, clock=clock)
        for client in range(4_000):
            for _ in range(10):
                limiter.acquire(("busy", client))
        clock.now = 1.0
        for client in range(6_000):
            limiter.acquire(("idle", client))
        # Four seconds on, every idle bucket is full again and no busy one is.
        clock.now = 5.0
        limiter.acquire("newcomer")
        assert len(limiter) == 4_001
        # A busy client is still held to what is left in its bucket (5), not a fresh 10.
        assert [limiter.acquire(("busy", 0)) > 0 for _ in range(6)] == [False] * 5 + [True]


async def _raw_post(url: str, content_type: str, token: str | None) -> bytes:
    """The whole answer to a POST /triggers with a body, up to the server's close."""
    body = b'{"apiVersion": "OT-2/v1alpha1", "protocol": "PlateTransfer", "spec": {}}'
    head = (
        f"POST /triggers HTTP/1.1\r\nHost: tower\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    stream = await _connect(url)
    async with stream:
        await stream.send_all(head.encode() + b"\r\n" + body)
        # Far below the keep-alive timeout: only the tower's own close ends this.
        with trio.fail_after(3):
            return await _read_to_end(stream)


class TestSlowClients:
    """docs/security.md, "Slow clients"."""

    async def test_early_refusals_close_the_connection(self, unique: str, tmp_path: Path) -> None:
        """415, 429, 401 and 403 answered before the body was read close the connection."""
        settings = offline_settings(
            unique,
            tmp_path,
            api_tokens=Tokens.of([TOKEN]),
            rate_limit=0.001,
            rate_burst=2,
            http_keep_alive_timeout=30.0,
        )
        requests = [
            ("text/plain", TOKEN),
            ("text/plain", TOKEN),
            ("application/json", TOKEN),  # the token's bucket is empty now
            ("application/json", None),
            ("application/json", "a-guess-that-is-long-enough"),
        ]
        with trio.fail_after(20):
            async with run_tower(settings) as tower:
                url = tower.running.http_urls[0]
                answers = [await _raw_post(url, kind, token) for kind, token in requests]
        heads = [answer.partition(b"\r\n\r\n")[0].lower() for answer in answers]
        statuses = [int(head.split()[1]) for head in heads]
        assert statuses == [415, 415, 429, 401, 403]
        for head in heads:
            assert b"\r\nconnection: close" in head


class TestSizeAndShapeOfARequest:
    """docs/security.md, "Size and shape of a request"."""

    async def test_idempotency_key_outside_1_to_256_printable_ascii_is_400(
        self, offline_tower: Tower, tmp_path: Path
    ) -> None:
        """Empty, 257 characters, non-ASCII or a control character: 400, nothing stored."""
        bad = [b"", b"k" * 257, b"caf\xc3\xa9", b"tab\there"]
        good = [b"k", b"k" * 256, b"~order 17/a+b=c?"]
        client = offline_tower.client
        refused = [
            await client.post("/triggers", json=VALID, headers={b"Idempotency-Key": key})
            for key in bad
        ]
        accepted = [
            await client.post("/triggers", json=posted(n), headers={b"Idempotency-Key": key})
            for n, key in enumerate(good)
        ]
        assert [r.status_code for r in refused] == [400] * len(bad)
        assert {r.json()["error"] for r in refused} == {"invalid Idempotency-Key"}
        assert [r.status_code for r in accepted] == [202] * len(good)
        assert stored_specs(tmp_path) == [posted(n)["spec"] for n in range(len(good))]


class TestWhatIsNeverShown:
    """docs/security.md, "What is never shown"."""

    @pytest.mark.parametrize("broker_side", ["unreachable", "refusing"])
    async def test_readyz_never_shows_the_broker_password(
        self, broker_side: str, amqp_url: str, unique: str, tmp_path: Path
    ) -> None:
        """A broker away, or refusing the login: /readyz says why, without the password."""
        password = "Pw-never-shown-7c1e"
        host, port = broker_address(amqp_url)
        if broker_side == "unreachable":
            url = f"amqp://tower:{password}@127.0.0.1:{unused_port()}/lab"
        else:
            url = f"amqp://guest:{password}@{host}:{port}{urlsplit(amqp_url).path}"
        settings = tower_settings(url, f"test.triggers.{unique}", tmp_path, shutdown_grace=0.1)
        with trio.fail_after(15):
            async with run_tower(settings) as tower:
                ready = await tower.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["details"][0].startswith("broker not connected: ")
        assert password not in ready.text


class TestHttpApi:
    """docs/http-api.md, "HTTP API" (and its last lines, on unknown methods)."""

    async def test_a_bug_gives_500_and_its_traceback_only_to_the_log(
        self,
        offline_tower: Tower,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A failing journal lookup answers 500 internal error; the traceback goes to the log."""

        def broken_lookup(uuid: str) -> None:
            raise RuntimeError("lookup exploded at row 7")

        monkeypatch.setattr(offline_tower.journal, "get", broken_lookup)
        with caplog.at_level(logging.INFO, logger="tower_trio"):
            answer = await offline_tower.client.get("/triggers/" + "0" * 32)
        assert answer.status_code == 500
        assert answer.json() == {
            "error": "internal error",
            "details": ["the tower hit an unexpected error; see its log"],
        }
        assert "exploded" not in answer.text
        (logged,) = _named(caplog, "http.unexpected_error")
        assert logged.levelno == logging.ERROR
        assert logged.exc_info is not None
        assert isinstance(logged.exc_info[1], RuntimeError)
        assert "exploded" in str(logged.exc_info[1])

    async def test_405_carries_allow(self, offline_tower: Tower) -> None:
        """A method a route does not serve gets 405 with the route's methods in Allow."""
        put = await offline_tower.client.put("/triggers", json=VALID)
        post = await offline_tower.client.post("/healthz")
        assert (put.status_code, post.status_code) == (405, 405)
        assert {"GET", "POST"} <= {m.strip() for m in put.headers["Allow"].split(",")}
        assert "GET" in {m.strip() for m in post.headers["Allow"].split(",")}
        assert "POST" not in {m.strip() for m in post.headers["Allow"].split(",")}


class TestPostTriggers:
    """docs/http-api.md, "POST /triggers"."""

    @pytest.mark.parametrize(
        "content_type",
        ["application/vnd.lab.trigger+json", "application/merge-patch+json; charset=utf-8"],
    )
    async def test_plus_json_content_types_are_accepted(
        self, content_type: str, offline_tower: Tower
    ) -> None:
        """A JSON body sent as any *+json type is taken like application/json."""
        answer = await offline_tower.client.post(
            "/triggers", content=json.dumps(VALID), headers={"Content-Type": content_type}
        )
        assert answer.status_code == 202

    async def test_unknown_query_parameter_is_400(
        self, offline_tower: Tower, tmp_path: Path
    ) -> None:
        """POST /triggers?colour=blue gets 400 naming the parameter, and stores nothing."""
        answer = await offline_tower.client.post("/triggers?colour=blue", json=VALID)
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid query parameter"
        assert answer.json()["details"][0]["field"] == "colour"
        assert stored_specs(tmp_path) == []


class TestGetTriggers:
    """docs/http-api.md, "GET /triggers"."""

    async def test_limit_defaults_to_50(self, offline_tower: Tower) -> None:
        """Without limit, a page holds the 50 newest triggers and a cursor to the rest."""
        async with trio.open_nursery() as nursery:
            for n in range(51):
                nursery.start_soon(partial(offline_tower.client.post, "/triggers", json=posted(n)))
        first = (await offline_tower.client.get("/triggers")).json()
        rest = (await offline_tower.client.get(f"/triggers?before={first['next']}")).json()
        assert len(first["items"]) == 50
        assert first["next"] is not None
        assert len(rest["items"]) == 1
        assert rest["next"] is None


class TestGetReadyz:
    """docs/http-api.md, "GET /readyz"."""

    async def test_not_ready_until_every_plugin_has_started(
        self, amqp_url: str, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While a plugin's task has not started, /readyz is 503 naming it; 200 once it has."""

        async def idle(send_channel: object) -> None:
            await trio.sleep_forever()

        plugin = ConfiguredPlugin(DiscoveredPlugin("idle", "tests", idle, None, False), None)
        urls: list[str] = []

        async def serve_http_noted(
            *args: Any, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
        ) -> None:
            async with trio.open_nursery() as nursery:
                urls.extend(await nursery.start(partial(serve_http, *args)))
                task_status.started(urls)

        waiting, release = trio.Event(), trio.Event()

        async def held_plugin(*args: Any, **kwargs: Any) -> None:
            # Called once the HTTP API serves; the plugin's start waits for the test.
            waiting.set()
            await release.wait()
            await serve_plugin(*args, **kwargs)

        monkeypatch.setattr(supervisor, "serve_http", serve_http_noted)
        monkeypatch.setattr(leadership, "serve_plugin", held_plugin)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path)
        shutdown, started = trio.Event(), trio.Event()
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:

                async def tower() -> None:
                    await nursery.start(
                        partial(supervisor.serve_tower, settings, [plugin], shutdown=shutdown)
                    )
                    started.set()

                nursery.start_soon(tower)
                await waiting.wait()
                async with httpx.AsyncClient(base_url=urls[0]) as client:
                    before = await client.get("/readyz")
                    release.set()
                    await started.wait()
                    after = await client.get("/readyz")
                shutdown.set()
        assert before.status_code == 503
        assert before.json()["details"] == ["plugin idle has not started"]
        assert after.status_code == 200
