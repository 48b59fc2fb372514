"""Several ``tower-trio run`` processes on one PostgreSQL journal: each plugin on one at a time.

The towers are real processes on a schema of the test's own; the triggers
are read from a queue bound to the test's exchange. Leaders are killed
with SIGKILL (no release, no drain), or cut off from PostgreSQL by a TCP
proxy that stops forwarding, and a successor must take over within
``TOWER_LEASE_TTL`` and a campaign interval. Timestamps compared across
towers are those of their log lines (one machine, one clock).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import pytest
import trio

from tests._postgres import admin, open_schema, schema_url
from tests._towers import start_tower_process, tower_environ
from tower_trio import Trigger
from tower_trio._serialization import load_trigger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests._helpers import Broker
    from tests._towers import TowerProcess
    from tower_trio._journal_url import PostgresURL

pytestmark = [pytest.mark.postgres, pytest.mark.subprocess]

PLUGINS = Path(__file__).parent.parent / "plugins"
TTL = 2.0
"""Short leases: a takeover within TTL * 4/3, so that the test stays short."""
TICK = {"apiVersion": "OT-2/v1alpha1", "protocol": "Tick", "spec": {}}


@attrs.define
class Received:
    """Every trigger the test's queue has received, as it arrives."""

    triggers: list[Trigger] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def serve(self, broker: Broker, queue: str) -> None:
        async with broker.channel.consume(queue, no_ack=True) as deliveries:
            async for message in deliveries:
                self.triggers.append(load_trigger(message.body))
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Until ``count`` triggers have come (a redelivered one counts again)."""
        while len(self.triggers) < count:
            await self._changed.wait()

    async def wait_for_specs(self, field: str, values: set[Any]) -> None:
        """Until a trigger has come for each of ``values`` of ``spec[field]``."""
        while not values <= {_spec(t).get(field) for t in self.triggers}:
            await self._changed.wait()


def _at(fields: dict[str, str]) -> datetime:
    return datetime.fromisoformat(fields["timestamp"])


async def _first(towers: Sequence[TowerProcess], event: str, count: int = 1) -> TowerProcess:
    """The tower among ``towers`` that logs ``event`` for the ``count``-th time first."""
    winner: list[TowerProcess] = []
    async with trio.open_nursery() as nursery:
        for tower in towers:

            async def wait(tower: TowerProcess = tower) -> None:
                await tower.wait_for(event, count)
                winner.append(tower)
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)
    return winner[0]


async def _start(
    nursery: trio.Nursery, environ: dict[str, str], instance: str, tmp_path: Path
) -> TowerProcess:
    data = tmp_path / instance
    return await start_tower_process(
        nursery, {**environ, "TOWER_INSTANCE": instance, "TOWER_DATA_DIR": str(data)}
    )


def _environ(
    amqp_url: str, broker: Broker, schema: PostgresURL, tmp_path: Path, **plugin: str
) -> dict[str, str]:
    return tower_environ(
        TOWER_AMQP_URL=amqp_url,
        TOWER_EXCHANGE=broker.exchange,
        TOWER_PLUGINS_DIR=str(PLUGINS),
        TOWER_JOURNAL_URL=schema_url(str(schema.schema)),
        TOWER_LEASE_TTL=str(TTL),
        **plugin,
    )


def _schedule(tmp_path: Path) -> dict[str, str]:
    schedule = tmp_path / "schedule.json"
    entry = {"name": "tick", "cron": "* * * * * *", "catchUp": "all", "trigger": TICK}
    schedule.write_text(json.dumps([entry]))
    return {"TOWER_PLUGINS": "schedule", "PLUGIN_SCHEDULE_FILE": str(schedule)}


async def _kill_all(towers: Sequence[TowerProcess]) -> str:
    """Kill whatever still runs; every tower's log."""
    with trio.CancelScope(shield=True):
        for tower in towers:
            if tower.process.returncode is None:
                await tower.kill()
    return "\n".join(tower.log for tower in towers)


def _slot(trigger: Trigger) -> datetime:
    spec = trigger.metadata.spec
    assert isinstance(spec, dict)
    return datetime.fromisoformat(str(spec["slot"]))


class TestLeadership:
    async def test_every_slot_fires_once_across_two_leader_kills(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Three towers, a schedule firing every second, the leader killed twice: no slot
        is missed (catchUp all) and none is sent twice."""
        queue = await broker.bind("OT-2/v1alpha1")
        received = Received()
        async with open_schema() as schema, trio.open_nursery() as nursery:
            nursery.start_soon(received.serve, broker, queue)
            environ = _environ(amqp_url, broker, schema, tmp_path, **_schedule(tmp_path))
            towers = [await _start(nursery, environ, f"tower-{n}", tmp_path) for n in (1, 2, 3)]
            try:
                with trio.fail_after(40):
                    leaders, killed_at = [], []
                    for kill in range(3):
                        living = [t for t in towers if t not in leaders]
                        leader = await _first(living, "lease.won")
                        leaders.append(leader)
                        await received.wait_for(len(received.triggers) + 4)
                        if kill < 2:
                            await leader.kill()
                            killed_at.append(datetime.now(UTC))
                    assert await leaders[-1].terminate() == 0
            finally:
                logs = await _kill_all(towers)
            nursery.cancel_scope.cancel()
        # One at a time: each ran the plugin only between winning and being killed.
        for before, after, killed in zip(leaders, leaders[1:], killed_at, strict=False):
            assert all(_at(e) < killed for e in before.events("plugin.started")), logs
            assert all(_at(e) > killed for e in after.events("plugin.started")), logs
        terms = [int(t.events("lease.won")[0]["term"]) for t in leaders]
        assert terms == sorted(terms), logs
        assert len(set(terms)) == 3, logs
        by_slot: dict[datetime, set[str]] = {}
        for trigger in received.triggers:
            by_slot.setdefault(_slot(trigger), set()).add(trigger.uuid)
        twice = {slot: uuids for slot, uuids in by_slot.items() if len(uuids) > 1}
        assert not twice, logs
        slots = sorted(by_slot)
        expected = math.floor((slots[-1] - slots[0]).total_seconds()) + 1
        assert len(slots) == expected, (slots, logs)

    async def test_each_file_of_a_shared_folder_is_sent_once_across_a_leader_kill(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Two towers watch one folder; the leader is killed midway; each file is sent once."""
        queue = await broker.bind("OT-2/v1alpha1")
        received = Received()
        folder = tmp_path / "drop"
        folder.mkdir()
        files = 12
        async with open_schema() as schema, trio.open_nursery() as nursery:
            nursery.start_soon(received.serve, broker, queue)
            environ = _environ(
                amqp_url,
                broker,
                schema,
                tmp_path,
                TOWER_PLUGINS="folder",
                PLUGIN_FOLDER_PATH=str(folder),
                PLUGIN_FOLDER_POLL="true",
                PLUGIN_FOLDER_INTERVAL="0.1",
                PLUGIN_FOLDER_SETTLE="0",
            )
            towers = [await _start(nursery, environ, f"tower-{n}", tmp_path) for n in (1, 2)]
            try:
                with trio.fail_after(30):
                    first = await _first(towers, "lease.won")
                    for n in range(files):
                        if n == files // 2:
                            await received.wait_for(n)
                            await first.kill()
                        _drop(folder, n)
                    (second,) = (t for t in towers if t is not first)
                    await second.wait_for("lease.won")
                    await received.wait_for_specs("n", set(range(files)))
                    assert await second.terminate() == 0
            finally:
                logs = await _kill_all(towers)
            nursery.cancel_scope.cancel()
        # The same trigger twice is the outbox's at-least-once (a killed tower's
        # unconfirmed publish, sent again); two triggers for one file would be a
        # file processed twice.
        uuids: dict[int, set[str]] = {}
        for trigger in received.triggers:
            uuids.setdefault(int(_spec(trigger)["n"]), set()).add(trigger.uuid)
        assert sorted(uuids) == list(range(files)), logs
        assert all(len(sent) == 1 for sent in uuids.values()), logs
        # A file sent just before the stop is moved at the next start.
        left = [*folder.glob("*.json"), *(folder / "processed").glob("*.json")]
        assert sorted(p.name for p in left) == [f"{n:02}.json" for n in range(files)]


def _drop(folder: Path, n: int) -> None:
    # Written under a hidden name and renamed: the watcher reads only complete files.
    hidden = folder / f".{n}.json"
    hidden.write_text(json.dumps({**TICK, "spec": {"n": n}}))
    hidden.rename(folder / f"{n:02}.json")


def _spec(trigger: Trigger) -> dict[str, Any]:
    assert isinstance(trigger.spec, dict)
    return trigger.spec


@attrs.define
class BlackHole:
    """A TCP proxy to PostgreSQL that can stop forwarding, leaving every connection open."""

    upstream: tuple[str, int]
    cut: bool = False
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream(*self.upstream) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pipe, client, server)
            nursery.start_soon(self._pipe, server, client)

    async def _pipe(self, source: trio.SocketStream, target: trio.SocketStream) -> None:
        while data := await source.receive_some():
            if self.cut:
                # Swallowed: the tower's queries and renewals wait for an answer.
                await trio.sleep_forever()
            await target.send_all(data)


class TestFencing:
    async def test_a_leader_cut_off_from_postgres_stops_before_another_takes_over(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A tower whose PostgreSQL stops answering stops its plugin before its lease
        expires; another tower takes the plugin over after that, in the next term."""
        await broker.bind("OT-2/v1alpha1")
        target = urlsplit(schema_url("x"))
        proxy = BlackHole((target.hostname or "127.0.0.1", target.port or 5432))
        async with open_schema() as schema, trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve)
            environ = _environ(amqp_url, broker, schema, tmp_path, **_schedule(tmp_path))
            direct = environ["TOWER_JOURNAL_URL"]
            proxied = urlunsplit(urlsplit(direct)._replace(netloc=f"127.0.0.1:{port}"))
            if target.username:
                proxied = proxied.replace("//", f"//{target.username}@", 1)
            cut_off = await _start(
                nursery, {**environ, "TOWER_JOURNAL_URL": proxied}, "tower-cut", tmp_path
            )
            started = [cut_off]
            try:
                with trio.fail_after(30):
                    won = await cut_off.wait_for("lease.won")
                    await cut_off.wait_for("plugin.started")
                    other = await _start(nursery, environ, "tower-other", tmp_path)
                    started.append(other)
                    http = (await other.wait_for("tower.started"))["http"].split(",")[0]
                    async with httpx.AsyncClient(base_url=http) as client:
                        await other.wait_for("broker.connected")
                        ready = await client.get("/readyz")
                        (standby,) = (await client.get("/plugins")).json()["plugins"]
                    proxy.cut = True
                    stopped = await cut_off.wait_for("lease.expired_locally")
                    taken = await other.wait_for("lease.won")
                    rows = await trio.to_thread.run_sync(
                        admin, f"SELECT holder, term FROM {schema.schema}.leases"
                    )
            finally:
                await _kill_all(started)
            nursery.cancel_scope.cancel()
        # The standby is ready without the plugin it does not lead, and names its leader.
        assert ready.status_code == 200, ready.text
        assert standby["state"] == "standby"
        assert standby["leader"] == {"instance": "tower-cut", "term": int(won["term"])}
        assert _at(stopped) < _at(taken), cut_off.log
        assert int(taken["term"]) == int(won["term"]) + 1
        assert rows == [("tower-other", int(taken["term"]))]
