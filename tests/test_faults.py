"""Fault injection: real tower processes, the real broker, triggers counted one by one.

Each test sends a load of jobs from several HTTP clients and through a test
plugin, breaks something in the middle (the broker connection, the broker,
the tower process), then consumes the test's queue until every trigger the
tower accepted has arrived, and reports the duplicates.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from tests._faults import (
    API_VERSION,
    PLUGIN,
    PLUGIN_SOURCE,
    Answers,
    Delivery,
    Feed,
    Step,
    Tally,
    Target,
    consume_until_seen,
    drain,
    rabbitmqctl,
    run_load,
)
from tests._towers import Towers, tower_environ
from tower_trio import amqp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests._towers import TowerProcess

JOBS = 900
"""600 POSTs and 300 plugin triggers per test."""
LOAD_TIMEOUT = 60
# Generous: after a broker restart the tower's reconnect backoff may have grown
# to tens of seconds before it publishes what it journaled meanwhile.
COMPLETION_TIMEOUT = 60


@pytest.fixture
async def trigger_queue(amqp_url: str, unique: str) -> AsyncIterator[str]:
    """A durable queue bound for API_VERSION to an exchange of the same name."""
    name = f"test.faults.{unique}"
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel() as channel,
    ):
        await channel.exchange_declare(name, "topic", durable=True)
        await channel.queue_declare(name, durable=True)
        await channel.queue_bind(name, name, API_VERSION)
    # No connection stays open across the test: the faults would close it.
    try:
        yield name
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            async with (
                amqp.open_connection(amqp_url) as connection,
                connection.open_channel() as channel,
            ):
                await channel.queue_delete(name)
                await channel.exchange_delete(name)


@pytest.fixture
async def feed(nursery: trio.Nursery) -> Feed:
    feed = Feed()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, feed.handle, 0, host="127.0.0.1")
    )
    feed.port = listeners[0].socket.getsockname()[1]
    return feed


@pytest.fixture
async def towers(
    nursery: trio.Nursery, tmp_path: Path, amqp_url: str, trigger_queue: str, feed: Feed
) -> AsyncIterator[Towers]:
    """Tower processes sharing one journal directory, with the feed-driven test plugin."""
    plugin_dir = tmp_path / "plugins" / PLUGIN
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "watcher.py").write_text(PLUGIN_SOURCE)
    environ = tower_environ(
        TOWER_AMQP_URL=amqp_url,
        TOWER_EXCHANGE=trigger_queue,
        TOWER_DATA_DIR=str(tmp_path / "journal"),
        TOWER_PLUGINS_DIR=str(tmp_path / "plugins"),
        TOWER_PLUGINS=PLUGIN,
        PLUGIN_FAULTS_PORT=str(feed.port),
    )
    towers = Towers(nursery, environ)
    try:
        yield towers
    finally:
        with trio.CancelScope(shield=True):
            await towers.kill_all()
        # Shown by pytest only when the test failed.
        print(towers.logs)


async def start_ready(towers: Towers, feed: Feed) -> TowerProcess:
    """A tower connected to the broker, with its plugin connected to the feed."""
    tower = await towers.start()
    with trio.fail_after(30):
        await tower.wait_for("broker.connected")
        await feed.wait_connections(1)
    return tower


async def settle(
    towers: Towers, amqp_url: str, queue: str, answers: Answers, feed: Feed
) -> tuple[Tally, list[int]]:
    """Consume until every accepted trigger has arrived, stop the tower, take the rest."""
    deliveries: list[Delivery] = []
    tally = Tally(answers, feed.released, deliveries)
    # On timeout the assertions below name what is missing.
    with trio.move_on_after(COMPLETION_TIMEOUT):
        await consume_until_seen(amqp_url, queue, tally.expected, deliveries)
    with trio.fail_after(30):
        exit_codes = await towers.terminate_running()
    # Once the tower has exited nothing more can come: the queue now holds
    # every late duplicate there will be.
    await drain(amqp_url, queue, deliveries)
    return tally, exit_codes


def check(scenario: str, tally: Tally, exit_codes: list[int], towers: Towers) -> None:
    summary = tally.summary()
    unsettled = [
        [event.get("pending") for event in tower.events("broker.disconnected")]
        for tower in towers.started
    ]
    print(f"\n{scenario}: {summary}; journal rows unsettled at each disconnect: {unsettled}")
    assert not tally.answers.refused, f"{tally.answers.refused} ({summary})"
    assert not tally.lost, f"lost jobs {tally.lost[:50]} ({summary})"
    assert not tally.mislabelled, f"message_id is not the uuid: {tally.mislabelled[:5]}"
    assert not tally.wrong_uuid, f"arrived under another uuid: {tally.wrong_uuid}"
    assert not tally.unexpected, f"jobs nobody sent: {tally.unexpected}"
    assert not tally.resent, f"plugin triggers published under two uuids: {tally.resent}"
    assert exit_codes == [0], towers.logs


class TestDeliveryUnderFaults:
    async def test_forced_connection_closes(
        self,
        towers: Towers,
        feed: Feed,
        amqp_url: str,
        amqp_vhost: str,
        trigger_queue: str,
    ) -> None:
        """With the broker closing the tower's connection three times mid-load, nothing is lost."""
        tower = await start_ready(towers, feed)
        closes = 0

        async def close_connections() -> None:
            nonlocal closes
            # A close tests something only if it hits an open connection.
            await tower.wait_for("broker.connected", count=closes + 1)
            # Scoped to the session's vhost, so the broker's other users keep theirs.
            await rabbitmqctl("close_all_connections", "-p", amqp_vhost, "fault injection test")
            closes += 1
            await tower.wait_for("broker.disconnected", count=closes)

        answers = Answers()
        with trio.fail_after(LOAD_TIMEOUT):
            await run_load(
                JOBS,
                Target(tower.url),
                feed,
                answers,
                [
                    Step(at=100, hold=350, action=close_connections),
                    Step(at=350, hold=600, action=close_connections),
                    Step(at=600, hold=850, action=close_connections),
                ],
            )

        tally, exit_codes = await settle(towers, amqp_url, trigger_queue, answers, feed)
        check("connection closes", tally, exit_codes, towers)

    async def test_broker_stopped_and_started(
        self, towers: Towers, feed: Feed, amqp_url: str, trigger_queue: str
    ) -> None:
        """Triggers accepted while RabbitMQ is stopped are journaled and arrive once it is back."""
        tower = await start_ready(towers, feed)
        answers = Answers()
        stopped_from = 450
        accepted_while_stopped: set[int] = set()

        async def stop_broker() -> None:
            await rabbitmqctl("stop_app")
            await tower.wait_for("broker.disconnected")
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"{tower.url}/readyz")
            assert ready.status_code == 503, ready.text

        async def start_broker() -> None:
            accepted_while_stopped.update(job for job in answers.accepted if job >= stopped_from)
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")

        async def reconnected() -> None:
            await tower.wait_for("broker.connected", count=2)

        try:
            with trio.fail_after(LOAD_TIMEOUT):
                await run_load(
                    JOBS,
                    Target(tower.url),
                    feed,
                    answers,
                    [
                        Step(at=200, hold=stopped_from, action=stop_broker),
                        Step(at=550, hold=700, action=start_broker),
                        Step(at=700, hold=850, action=reconnected),
                    ],
                )
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(120):
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup")

        tally, exit_codes = await settle(towers, amqp_url, trigger_queue, answers, feed)
        check("broker stop_app/start_app", tally, exit_codes, towers)
        assert accepted_while_stopped, "no POST was answered while the broker was stopped"

    async def test_tower_killed_and_restarted(
        self, towers: Towers, feed: Feed, amqp_url: str, trigger_queue: str
    ) -> None:
        """After a SIGKILL mid-load, the restarted tower delivers everything the first accepted."""
        first = await start_ready(towers, feed)
        target = Target(first.url)

        async def kill_and_restart() -> None:
            target.begin_outage()
            await first.kill()
            second = await towers.start()
            target.move(second.url)

        answers = Answers()
        with trio.fail_after(LOAD_TIMEOUT):
            await run_load(
                JOBS, target, feed, answers, [Step(at=400, hold=550, action=kill_and_restart)]
            )

        tally, exit_codes = await settle(towers, amqp_url, trigger_queue, answers, feed)
        check("tower SIGKILL and restart", tally, exit_codes, towers)
        assert feed.connections == 2, "the restarted tower's plugin did not re-read the feed"
