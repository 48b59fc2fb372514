"""The tower end to end, in-process, against the real broker.

Each test starts ``serve_tower`` on port 0 with its own exchange, binds its
own queues, and checks what a device service would receive.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from tests._helpers import VALID, Broker, Tower, run_tower, spec_of, tower_settings, unused_port
from tower_trio._config import default_instance
from tower_trio._plugins import discover_plugins, select_plugins
from tower_trio._serialization import load_trigger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tower_trio._journal import SQLiteStorage

REPO = Path(__file__).parent.parent


@pytest.fixture
async def tower(amqp_url: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Tower]:
    async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
        yield tower


@attrs.define
class _Commits:
    """Counts the batches the publisher commits to the journal, for a test to wait on."""

    count: int = 0
    _changed: trio.Event = attrs.Factory(trio.Event)

    @classmethod
    def of(cls, storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch) -> _Commits:
        commits = cls()
        append = storage.append

        async def counted(entries: Any) -> Any:
            result = await append(entries)
            commits.count += 1
            commits._changed.set()
            return result

        monkeypatch.setattr(storage, "append", counted)
        return commits

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            self._changed = trio.Event()
            await self._changed.wait()


class TestPublishing:
    async def test_posted_trigger_arrives_with_every_property(
        self, tower: Tower, broker: Broker
    ) -> None:
        """A 202 means the bound queue holds the trigger, routed and labelled as documented."""
        queue = await broker.bind("OT-2/v1alpha1")
        before = datetime.now(UTC).replace(microsecond=0)

        response = await tower.client.post(
            "/triggers?wait=published",
            json={**VALID, "metadata": {"spec": {"experiment": "exp-42"}}},
        )

        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "published"
        assert response.headers["location"] == f"/triggers/{body['uuid']}"
        (message,) = await broker.take(queue, 1)
        assert message.exchange == broker.exchange
        assert message.routing_key == "OT-2/v1alpha1"
        trigger = load_trigger(message.body)
        assert trigger.uuid == body["uuid"]
        assert trigger.spec == {"volume": 100}
        assert trigger.metadata.source == "http"
        assert trigger.metadata.spec == {"experiment": "exp-42"}
        # The answer is the published body with the status and creation time in front.
        assert {k: v for k, v in body.items() if k not in {"status", "createdAt"}} == json.loads(
            message.body
        )
        assert "createdAt" not in json.loads(message.body)
        props = message.properties
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        assert props.message_id == trigger.uuid
        assert props.type == "PlateTransfer"
        assert props.app_id == "tower-trio"
        assert props.headers == {"protocol": "PlateTransfer", "source": "http"}
        assert props.timestamp is not None
        assert before <= props.timestamp <= datetime.now(UTC)

    async def test_device_suffix_routes_to_that_device_only(
        self, tower: Tower, broker: Broker
    ) -> None:
        """A trigger for Spark2 reaches the queue bound to Spark2, not the one for Spark1."""
        spark1 = await broker.bind("TecanSpark/v1alpha1/Spark1")
        spark2 = await broker.bind("TecanSpark/v1alpha1/Spark2")

        response = await tower.client.post(
            "/triggers?wait=published",
            json={**VALID, "apiVersion": "TecanSpark/v1alpha1/Spark2"},
        )

        assert response.status_code == 202
        assert await broker.count(spark2) == 1
        assert await broker.count(spark1) == 0

    async def test_plate_trigger_keeps_every_well(self, tower: Tower, broker: Broker) -> None:
        """A plate trigger is published with its plate and one spec per well, in order."""
        queue = await broker.bind("ChiBio/v1alpha1/ChiBio1")
        wells = [{"od": n} for n in range(96)]

        response = await tower.client.post(
            "/triggers",
            json={
                "apiVersion": "ChiBio/v1alpha1/ChiBio1",
                "protocol": "Dilute",
                "spec": wells,
                "plate": {"rows": 8, "columns": 12},
            },
        )

        assert response.status_code == 202
        (message,) = await broker.take(queue, 1)
        trigger = load_trigger(message.body)
        assert trigger.spec == wells
        assert trigger.plate is not None
        assert (trigger.plate.rows, trigger.plate.columns) == (8, 12)

    async def test_unroutable_trigger_is_reported_not_lost_silently(self, tower: Tower) -> None:
        """With no queue bound for its apiVersion, the answer says the trigger is unroutable."""
        response = await tower.client.post(
            "/triggers?wait=published", json={**VALID, "apiVersion": "Nobody/v1"}
        )

        assert response.status_code == 202
        assert response.json()["status"] == "unroutable"
        assert tower.running.publisher.statistics().unroutable == 1

    async def test_many_concurrent_posts_are_all_confirmed(
        self, tower: Tower, broker: Broker
    ) -> None:
        """Concurrent requests share the confirm window and each gets its own answer."""
        queue = await broker.bind("OT-2/v1alpha1")
        statuses: list[int] = []
        uuids: set[str] = set()

        async def post(n: int) -> None:
            response = await tower.client.post(
                "/triggers?wait=published", json={**VALID, "spec": {"n": n}}
            )
            statuses.append(response.status_code)
            uuids.add(response.json()["uuid"])

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(post, n)

        assert statuses == [202] * 200
        messages = await broker.take(queue, 200)
        assert {m.properties.message_id for m in messages} == uuids
        assert sorted(spec_of(load_trigger(m.body))["n"] for m in messages) == list(range(200))

    async def test_large_spec_is_split_across_small_frames(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A 1 MB spec published with frame_max 4096 arrives byte for byte."""
        settings = tower_settings(
            amqp_url + "?frame_max=4096", broker.exchange, tmp_path, max_body_bytes=4 * 1024 * 1024
        )
        queue = await broker.bind("OT-2/v1alpha1")
        spec = {"payload": "x" * (1024 * 1024), "volume": 1}
        async with run_tower(settings) as tower:
            response = await tower.client.post(
                "/triggers?wait=published", json={**VALID, "spec": spec}
            )
        assert response.status_code == 202
        (message,) = await broker.take(queue, 1)
        assert len(message.body) > 1024 * 1024
        assert load_trigger(message.body).spec == spec


class TestBadInput:
    @pytest.mark.parametrize(
        ("content", "content_type", "status", "error"),
        [
            pytest.param(b"{nope", "application/json", 400, "malformed JSON", id="malformed"),
            pytest.param(b"[1, 2", "application/json", 400, "malformed JSON", id="truncated"),
            pytest.param(b"\xff\xfe", "application/json", 400, "malformed JSON", id="not-utf8"),
            pytest.param(
                json.dumps(VALID).encode(), "text/plain", 415, "unsupported media type", id="text"
            ),
            pytest.param(
                json.dumps(VALID).encode(), "", 415, "unsupported media type", id="no-type"
            ),
            pytest.param(b"[1, 2]", "application/json", 422, "invalid trigger", id="array"),
            pytest.param(b"null", "application/json", 422, "invalid trigger", id="null"),
        ],
    )
    async def test_bad_bodies_get_a_json_error(
        self, tower: Tower, content: bytes, content_type: str, status: int, error: str
    ) -> None:
        """Each kind of bad body gets its documented status and a JSON error body."""
        headers = {"content-type": content_type} if content_type else {}
        response = await tower.client.post("/triggers", content=content, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == error
        assert isinstance(response.json()["details"], list)

    async def test_invalid_trigger_names_every_bad_field(self, tower: Tower) -> None:
        """A 422 lists each offending field with a reason, not just the first."""
        response = await tower.client.post(
            "/triggers",
            json={
                "apiVersion": "OT-2/v0",
                "protocol": "9lives",
                "spec": "volume=5",
                "uuid": "0" * 32,
                "colour": "red",
            },
        )
        assert response.status_code == 422
        fields = {d["field"] for d in response.json()["details"]}
        assert fields == {"apiVersion", "protocol", "spec", "uuid", "colour"}

    async def test_oversized_body_is_refused_with_413(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A body over TOWER_MAX_BODY_BYTES gets 413 naming the limit, and nothing is published."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, max_body_bytes=1000)
        queue = await broker.bind("OT-2/v1alpha1")
        async with run_tower(settings) as tower:
            response = await tower.client.post(
                "/triggers", json={**VALID, "spec": {"blob": "x" * 2000}}
            )
            small = await tower.client.post("/triggers?wait=published", json=VALID)
        assert response.status_code == 413
        assert "TOWER_MAX_BODY_BYTES" in response.json()["details"][0]
        assert small.status_code == 202
        assert await broker.count(queue) == 1

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [("GET", "/nowhere", 404), ("DELETE", "/triggers", 405), ("PUT", "/healthz", 405)],
    )
    async def test_unknown_routes_answer_json(
        self, tower: Tower, method: str, path: str, status: int
    ) -> None:
        """Unknown paths and methods get JSON errors too."""
        response = await tower.client.request(method, path)
        assert response.status_code == status
        assert "error" in response.json()

    async def test_deeply_nested_json_is_a_client_error(self, tower: Tower) -> None:
        """JSON nested deeper than the parser allows is a 400, not a crash."""
        content = b"[" * 100_000 + b"]" * 100_000
        response = await tower.client.post(
            "/triggers", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400


class TestProbes:
    async def test_ready_when_connected(self, tower: Tower) -> None:
        """With the broker connected and no plugins, both probes answer 200."""
        assert (await tower.client.get("/healthz")).status_code == 200
        response = await tower.client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "instance": default_instance()}

    async def test_broker_down_means_not_ready_but_still_accepting(
        self,
        broker: Broker,
        tmp_path: Path,
        mock_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without a broker the tower says why it is not ready and journals what it gets."""
        # trio's clock stands still (real time bounds the test) while the journal
        # commits in its worker thread: TOWER_PUBLISH_TIMEOUT runs out only when
        # the test moves the clock, after the commit, however slow the disk.
        settings = tower_settings(
            f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
            broker.exchange,
            tmp_path,
            publish_timeout=0.5,
            shutdown_grace=0.2,
        )
        waited: list[httpx.Response] = []
        async with run_tower(settings) as tower:
            try:
                commits = _Commits.of(tower.storage, monkeypatch)
                health = await tower.client.get("/healthz")
                ready = await tower.client.get("/readyz")
                accepted = await tower.client.post("/triggers", json=VALID)
                async with trio.open_nursery() as nursery:

                    async def wait_published() -> None:
                        waited.append(
                            await tower.client.post("/triggers?wait=published", json=VALID)
                        )

                    nursery.start_soon(wait_published)
                    await commits.wait_for(2)
                    mock_clock.jump(settings.publish_timeout)
                record = await tower.client.get(accepted.headers["location"])
            finally:
                # Stopping waits TOWER_SHUTDOWN_GRACE for the broker: let time run.
                mock_clock.rate = 1.0
        assert health.status_code == 200
        assert ready.status_code == 503
        assert "broker not connected" in ready.json()["details"][0]
        assert accepted.status_code == 202
        assert accepted.json()["status"] == "pending"
        assert waited[0].status_code == 504
        assert waited[0].json()["status"] == "pending"
        assert record.json()["status"] == "pending"
        assert tower.running.publisher.statistics().pending == 2


class TestPlugins:
    async def test_example_plugin_trigger_arrives(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A line appended to the example's file arrives as a trigger from source 'example'."""
        inbox = tmp_path / "inbox.txt"
        inbox.write_text('PlateTransfer {"volume": 7}\n')
        environ = {"PLUGIN_EXAMPLE_PATH": str(inbox), "PLUGIN_EXAMPLE_SKIP_EXISTING": "false"}
        plugins, _ = select_plugins(
            discover_plugins(REPO / "plugins", entry_points=False), ("example",), environ
        )
        queue = await broker.bind("OT-2/v1alpha1")
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path), plugins) as tower:
            assert (await tower.client.get("/readyz")).status_code == 200
            (message,) = await broker.take(queue, 1)
        trigger = load_trigger(message.body)
        assert trigger.protocol == "PlateTransfer"
        assert trigger.spec == {"volume": 7}
        assert trigger.metadata.source == "example"
        assert message.properties.headers == {"protocol": "PlateTransfer", "source": "example"}
