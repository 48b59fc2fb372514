"""The console's server side: retry, the live feed, the status panel, sessions and CSRF.

The page itself is driven in a real browser in tests/console/; these
tests hold the guarantees beneath it against a real tower and broker.
"""

from __future__ import annotations

import contextlib
import json
import re
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import h11
import pytest
import trio

from tests._helpers import VALID, Broker, run_tower, tower_settings, watching
from tower_trio._auth import Sessions, parse_tokens
from tower_trio._config import default_instance
from tower_trio._console import MAX_STREAMS, _row
from tower_trio._feed import Change, Feed
from tower_trio._serialization import format_datetime
from tower_trio._storage import Outgoing
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx

    from tests._helpers import Tower

TOKEN = "console-token-0123456789"


class Events:
    """A live feed read as a browser's EventSource would, over a socket of its own.

    Read with h11 rather than an HTTP client library: a stream that the test
    leaves unfinished must close with the test, with nothing left to collect.
    """

    def __init__(self, stream: trio.SocketStream, connection: h11.Connection) -> None:
        self._stream = stream
        self._connection = connection
        self._buffer = b""
        self.status = 0

    async def _event(self) -> Any:
        while True:
            event = self._connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._connection.receive_data(await self._stream.receive_some(65536))

    async def start(self) -> None:
        with trio.fail_after(5):
            response = await self._event()
        assert isinstance(response, h11.Response)
        self.status = response.status_code
        self.headers = {k.decode(): v.decode() for k, v in response.headers}

    async def next(self, kind: str | None = None) -> tuple[str, Any]:
        """The next event (of ``kind``, skipping others), within a few seconds."""
        with trio.fail_after(5):
            while True:
                while b"\n\n" not in self._buffer:
                    event = await self._event()
                    assert isinstance(event, h11.Data), event
                    self._buffer += bytes(event.data)
                block, self._buffer = self._buffer.split(b"\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.decode().splitlines())
                if kind is None or fields.get("event") == kind:
                    return fields.get("event", "message"), json.loads(fields["data"])

    async def trigger(self, uuid: str, status: str) -> dict[str, Any]:
        while True:
            _, row = await self.next("trigger")
            if row["uuid"] == uuid and row["status"] == status:
                return row  # type: ignore[no-any-return]


@asynccontextmanager
async def open_feed(client: httpx.AsyncClient) -> AsyncIterator[Events]:
    """``GET /console/events`` as the browser sends it, with the client's cookies."""
    url = client.base_url
    stream = await trio.open_tcp_stream(url.host, url.port or 80)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{url.host}:{url.port}"), ("Accept", "text/event-stream")]
        if client.cookies:
            cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
            headers.append(("Cookie", cookie))
        request = h11.Request(method="GET", target="/console/events", headers=headers)
        await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
        events = Events(stream, connection)
        await events.start()
        yield events


@asynccontextmanager
async def live_feed(client: httpx.AsyncClient) -> AsyncIterator[Events]:
    async with open_feed(client) as events:
        assert events.status == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        yield events


@pytest.fixture
async def tower(amqp_url: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Tower]:
    async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as running:
        yield running


async def unroutable(tower: Tower) -> str:
    """A trigger the broker returned (no queue bound yet), once that is recorded."""
    response = await tower.client.post(
        "/triggers", json={**VALID, "apiVersion": "Nobody/v1"}, params={"wait": "published"}
    )
    assert response.json()["status"] == "unroutable"
    return str(response.json()["uuid"])


class TestRetry:
    async def test_an_unroutable_trigger_is_delivered_once_after_a_queue_is_bound(
        self, tower: Tower, broker: Broker
    ) -> None:
        """Retried after binding, it reaches the queue once, whatever the repeats of the call."""
        uuid = await unroutable(tower)
        queue = await broker.bind("Nobody/v1")
        with watching("tower_trio._http", "trigger.retried") as audit:
            async with live_feed(tower.client) as events:
                first = await tower.client.post(f"/triggers/{uuid}/retry")
                assert first.status_code == 202
                assert first.headers["location"] == f"/triggers/{uuid}"
                assert (first.json()["status"], first.json()["retries"]) == ("pending", 1)
                assert first.json()["retriedAt"] is not None
                assert (await events.trigger(uuid, "pending"))["retries"] == 1
                await events.trigger(uuid, "published")
            (message,) = await broker.take(queue, 1)
        assert message.properties.message_id == uuid
        assert audit.count == 1
        record = (await tower.client.get(f"/triggers/{uuid}")).json()
        assert (record["status"], record["retries"], record["attempts"]) == ("published", 1, 1)
        published = await tower.client.post(f"/triggers/{uuid}/retry")
        assert published.status_code == 409
        assert "run twice" in published.json()["details"][0]
        assert await broker.count(queue) == 0

    async def test_unknown_triggers_and_malformed_uuids_are_404(self, tower: Tower) -> None:
        for uuid in ("0" * 32, "x"):
            response = await tower.client.post(f"/triggers/{uuid}/retry")
            assert response.status_code == 404
            assert response.json()["error"] == "no such trigger"

    async def test_a_pending_trigger_is_not_queued_again(
        self, tower: Tower, broker: Broker
    ) -> None:
        """Retries at once: one queues it; the others find it pending (200) or published (409)."""
        uuid = await unroutable(tower)
        queue = await broker.bind("Nobody/v1")
        statuses = []

        async def retry() -> None:
            statuses.append((await tower.client.post(f"/triggers/{uuid}/retry")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(retry)
        assert statuses.count(202) == 1
        assert set(statuses) <= {200, 202, 409}
        await broker.take(queue, 1)
        with trio.move_on_after(0.5):
            await broker.take(queue, 1)
            pytest.fail("the retried trigger was delivered twice")


class TestLiveFeed:
    async def test_a_trigger_shows_pending_then_published(
        self, tower: Tower, broker: Broker
    ) -> None:
        """The feed starts with the status, then follows a trigger from accepted to published."""
        await broker.bind("OT-2/v1alpha1")
        async with live_feed(tower.client) as events:
            kind, status = await events.next()
            assert kind == "status"
            assert status["broker"]["state"] == "connected"
            response = await tower.client.post("/triggers", json=VALID)
            uuid = response.json()["uuid"]
            pending = await events.trigger(uuid, "pending")
            published = await events.trigger(uuid, "published")
        assert pending["seq"] == published["seq"]
        assert (pending["apiVersion"], pending["protocol"], pending["source"]) == (
            "OT-2/v1alpha1",
            "PlateTransfer",
            "http",
        )
        assert published["publishedAt"] is not None
        assert pending["publishedAt"] is None

    async def test_status_comes_every_second(self, tower: Tower) -> None:
        async with live_feed(tower.client) as events:
            await events.next("status")
            start = trio.current_time()
            await events.next("status")
            assert 0.5 < trio.current_time() - start < 2.5

    async def test_a_closed_page_unsubscribes(self, tower: Tower) -> None:
        feed = tower.running.publisher.feed
        async with live_feed(tower.client) as events:
            await events.next("status")
            assert len(feed) == 1
        with trio.fail_after(5):
            # The server learns of the closed socket on its own time; the
            # feed has nothing to wait on for that.
            while len(feed):  # noqa: ASYNC110
                await trio.sleep(0.01)

    async def test_feeds_beyond_the_bound_are_refused(self, tower: Tower) -> None:
        """Past MAX_STREAMS open feeds, one more is answered 503 with Retry-After."""
        feed = tower.running.publisher.feed
        with contextlib.ExitStack() as stack:
            for _ in range(MAX_STREAMS):
                stack.enter_context(feed.subscribe())
            response = await tower.client.get("/console/events")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        async with live_feed(tower.client) as events:
            assert (await events.next())[0] == "status"


class TestFeed:
    def change(self, seq: int) -> Change:
        outgoing = Outgoing(seq, f"{seq:032x}", "OT-2/v1", "P", "http", b"{}", 1.0, 0)
        return Change(outgoing, DeliveryStatus.PENDING, 0, None, 1.0)

    async def test_events_come_in_order(self) -> None:
        feed = Feed(buffer=4)
        with feed.subscribe() as subscription:
            for seq in (1, 2, 3):
                feed.report(self.change(seq))
            events, lost = await subscription.take()
        assert ([e.outgoing.seq for e in events], lost) == ([1, 2, 3], False)

    async def test_a_slow_subscriber_loses_the_oldest_and_is_told(self) -> None:
        """Memory stays bounded per subscriber; the next take says events were lost."""
        feed = Feed(buffer=4)
        with feed.subscribe() as slow, feed.subscribe() as quick:
            for seq in range(1, 11):
                feed.report(self.change(seq))
                if seq % 2 == 0:
                    assert (await quick.take())[1] is False
            events, lost = await slow.take()
            assert ([e.outgoing.seq for e in events], lost) == ([7, 8, 9, 10], True)
            feed.report(self.change(11))
            assert (await slow.take())[1] is False
        assert not feed.watched

    async def test_take_waits_for_an_event(self) -> None:
        feed = Feed()
        with feed.subscribe() as subscription:
            async with trio.open_nursery() as nursery:
                taken: list[Any] = []

                async def take() -> None:
                    taken.append(await subscription.take())

                nursery.start_soon(take)
                await trio.testing.wait_all_tasks_blocked()
                assert taken == []
                feed.report(self.change(1))
        assert [e.outgoing.seq for e in taken[0][0]] == [1]


class TestFeedRows:
    """The feed spells each row from a template, not through the JSON encoder."""

    @pytest.mark.parametrize(
        ("status", "last_error", "retries"),
        [
            (DeliveryStatus.PENDING, None, None),
            (DeliveryStatus.PUBLISHED, None, 2),
            (DeliveryStatus.FAILED, 'broker said "no"\\ \n\t\x00 \u2603 \U0001f9ea', None),
        ],
    )
    def test_a_row_is_the_json_its_fields_make(
        self, status: DeliveryStatus, last_error: str | None, retries: int | None
    ) -> None:
        outgoing = Outgoing(
            7, "ab" * 16, 'OT-2/"v1"', "Pl\\ate\n", "plugin \u00e9\x1f", b"{}", 1.5, 0
        )
        change = Change(outgoing, status, 3, last_error, 1_790_000_000.25, retries)
        expected = {
            "seq": 7,
            "uuid": "ab" * 16,
            "apiVersion": 'OT-2/"v1"',
            "protocol": "Pl\\ate\n",
            "source": "plugin \u00e9\x1f",
            "status": status.value,
            "createdAt": format_datetime(datetime.fromtimestamp(1.5, UTC)),
            "attempts": 3,
            "lastError": last_error,
            "publishedAt": "2026-09-21T14:13:20.250000Z"
            if status is DeliveryStatus.PUBLISHED
            else None,
        }
        if retries is not None:
            expected["retries"] = retries
        assert json.loads(_row(change)) == expected


class TestStatus:
    async def test_parts_and_health(self, tower: Tower) -> None:
        status = (await tower.client.get("/console/api/status")).json()
        assert (status["health"], status["ready"], status["reasons"]) == ("green", True, [])
        assert status["instance"] == default_instance()
        assert status["broker"]["state"] == "connected"
        assert "guest:guest" not in status["broker"]["url"]
        assert status["journal"]["pending"] == 0
        assert status["plugins"] == []

    async def test_amqp_properties_of_a_trigger(self, tower: Tower) -> None:
        uuid = (await tower.client.post("/triggers", json=VALID)).json()["uuid"]
        amqp = (await tower.client.get(f"/console/api/triggers/{uuid}/amqp")).json()
        assert (amqp["exchange"], amqp["routingKey"]) == (tower.exchange, "OT-2/v1alpha1")
        properties = amqp["properties"]
        assert (properties["message_id"], properties["type"], properties["delivery_mode"]) == (
            uuid,
            "PlateTransfer",
            2,
        )
        assert properties["headers"] == {"protocol": "PlateTransfer", "source": "http"}
        missing = await tower.client.get(f"/console/api/triggers/{'0' * 32}/amqp")
        assert missing.status_code == 404


class TestCrossSite:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "null"},
        ],
    )
    async def test_browser_requests_from_other_sites_change_nothing(
        self, tower: Tower, headers: dict[str, str]
    ) -> None:
        response = await tower.client.post("/triggers", json=VALID, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"] == "cross-site request refused"
        retry = await tower.client.post(f"/triggers/{'0' * 32}/retry", headers=headers)
        assert retry.status_code == 403
        listed = await tower.client.get("/triggers")
        assert listed.json()["items"] == []

    async def test_the_consoles_own_requests_pass(self, tower: Tower) -> None:
        origin = str(tower.client.base_url).rstrip("/")
        response = await tower.client.post(
            "/triggers", json=VALID, headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"}
        )
        assert response.status_code == 202


class TestSessions:
    @pytest.fixture
    async def tower(self, amqp_url: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Tower]:
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, api_tokens=parse_tokens(TOKEN)
        )
        async with run_tower(settings) as running:
            yield running

    async def sign_in(self, tower: Tower, token: str) -> httpx.Response:
        return await tower.client.post("/console/session", data={"token": token})

    async def test_a_wrong_token_is_refused_and_sets_no_cookie(self, tower: Tower) -> None:
        response = await self.sign_in(tower, "not-the-token-at-all")
        assert response.status_code == 403
        assert "set-cookie" not in response.headers
        assert (await tower.client.get("/triggers")).status_code == 401

    async def test_the_cookie_is_httponly_strict_and_authenticates(self, tower: Tower) -> None:
        response = await self.sign_in(tower, TOKEN)
        assert response.status_code == 303
        assert response.headers["location"] == "/console"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS it is set
        assert TOKEN not in cookie
        assert (await tower.client.get("/triggers")).status_code == 200

    async def test_changes_need_the_csrf_token(self, tower: Tower) -> None:
        await self.sign_in(tower, TOKEN)
        refused = await tower.client.post("/triggers", json=VALID)
        assert refused.status_code == 403
        assert "X-CSRF-Token" in refused.json()["details"][0]
        wrong = await tower.client.post("/triggers", json=VALID, headers={"X-CSRF-Token": "x"})
        assert wrong.status_code == 403
        assert (await tower.client.get("/triggers")).json()["items"] == []
        csrf = await _session_csrf(tower)
        accepted = await tower.client.post("/triggers", json=VALID, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 202

    async def test_signing_out_ends_the_session(self, tower: Tower) -> None:
        await self.sign_in(tower, TOKEN)
        csrf = await _session_csrf(tower)
        response = await tower.client.post("/console/logout", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 204
        assert 'tower_session=""' in response.headers["set-cookie"] or (
            "Max-Age=0" in response.headers["set-cookie"]
        )
        tower.client.cookies.clear()
        assert (await tower.client.get("/triggers")).status_code == 401

    async def test_a_bearer_token_still_works_without_csrf(self, tower: Tower) -> None:
        response = await tower.client.post(
            "/triggers", json=VALID, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 202

    async def test_the_feed_needs_a_session(self, tower: Tower) -> None:
        async with open_feed(tower.client) as refused:
            assert refused.status == 401
        await self.sign_in(tower, TOKEN)
        async with live_feed(tower.client) as events:
            assert (await events.next())[0] == "status"


async def _session_csrf(tower: Tower) -> str:
    """The CSRF token the console's page carries for its session."""
    page = await tower.client.get("/console")
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


class TestSessionStore:
    def test_sessions_expire_and_the_oldest_go_first(self) -> None:
        now = [0.0]
        sessions = Sessions(clock=lambda: now[0], lifetime=10, max_sessions=2)
        first, _ = sessions.open(b"a")
        second, _ = sessions.open(b"b")
        assert sessions.get(first) is not None
        third, _ = sessions.open(b"c")
        assert (sessions.get(first), len(sessions)) == (None, 2)
        assert sessions.get(second) is not None
        now[0] = 10
        assert sessions.get(third) is None
        assert sessions.get("made-up") is None

    def test_only_a_digest_of_the_cookie_is_kept(self) -> None:
        sessions = Sessions(clock=lambda: 0.0)
        cookie, session = sessions.open(b"token-digest")
        assert cookie.encode() not in b"".join(sessions._sessions)
        assert repr(session) == "Session(<hidden>)"
        sessions.close(cookie)
        assert sessions.get(cookie) is None
