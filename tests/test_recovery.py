"""Recovery: how long the tower waits before trying again, and what it says meanwhile.

Plugins that crash and a broker that refuses the tower are retried with
capped, jittered exponential backoff (docs/plugins.md, docs/delivery.md).
Plugin restarts run on trio's virtual clock; the publisher talks to the real
broker and hops to worker threads, so its waits are read from its log lines
over a short stretch of real time.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from tests._helpers import VALID, run_tower, tower_settings, watching
from tower_trio._backoff import Backoff
from tower_trio._channel import Submission
from tower_trio._journal import SQLiteStorage, open_journal
from tower_trio._plugins import ConfiguredPlugin, DiscoveredPlugin, serve_plugin
from tower_trio._publisher import Publisher
from tower_trio._runtime import PluginState, PluginStatus

if TYPE_CHECKING:
    from pathlib import Path

    from tower_trio._channel import TriggerSendChannel

# docs/plugins.md: "A plugin that ran for over a minute before failing restarts after 1 s again."
STABLE_RUN = 60.0


@attrs.define
class _Crashing:
    """A plugin that runs for the next of ``runs`` seconds, then raises; it returns after the last.

    It notes, on trio's clock, when each run started and when it crashed.
    """

    runs: list[float]
    starts: list[float] = attrs.Factory(list)
    crashes: list[float] = attrs.Factory(list)

    async def run(self, send_channel: TriggerSendChannel) -> None:
        self.starts.append(trio.current_time())
        if len(self.crashes) == len(self.runs):
            return
        await trio.sleep(self.runs[len(self.crashes)])
        self.crashes.append(trio.current_time())
        raise RuntimeError("source went away")

    def waits(self) -> list[float]:
        """Seconds from each crash to the restart that followed it."""
        return [start - crash for crash, start in zip(self.crashes, self.starts[1:], strict=True)]


async def _supervise(plugin: _Crashing, backoff: Backoff | None = None) -> PluginStatus:
    """Run ``plugin`` under the tower's supervision until it returns."""
    configured = ConfiguredPlugin(
        DiscoveredPlugin("crashing", "tests", plugin.run, None, wants_config=False), None
    )
    send, receive = trio.open_memory_channel[Submission](1)
    status = PluginStatus("crashing")
    async with receive:
        # Virtual time: a bound far above the longest schedule here (about 300 s).
        with trio.fail_after(3600):
            await serve_plugin(configured, send, status, backoff=backoff)
    return status


class TestPluginRestarts:
    """On trio's virtual clock: these plugins never leave the trio thread."""

    async def test_a_stable_run_resets_the_backoff(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A crash after over a minute of running waits the initial delay, not the grown one."""
        plugin = _Crashing([0.0, 0.0, 0.0, STABLE_RUN + 1, 0.0])
        status = await _supervise(plugin, Backoff(initial=1.0, cap=60.0, jitter=0.0))
        assert plugin.waits() == [1.0, 2.0, 4.0, 1.0, 2.0]
        assert status.restarts == 5
        assert status.state is PluginState.FINISHED

    async def test_a_run_shorter_than_a_minute_keeps_the_backoff_growing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plugin that crashes before it ran for a minute is not taken for recovered."""
        plugin = _Crashing([0.0, 0.0, 0.0, STABLE_RUN - 1, 0.0])
        await _supervise(plugin, Backoff(initial=1.0, cap=60.0, jitter=0.0))
        assert plugin.waits() == [1.0, 2.0, 4.0, 8.0, 16.0]

    async def test_restart_delays_double_from_one_second_up_to_a_minute(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With the tower's own backoff, delays double from 1 s, are jittered, and stop at 60 s."""
        plugin = _Crashing([0.0] * 10)
        await _supervise(plugin)
        bases = [min(60.0, 2.0**n) for n in range(10)]
        assert bases[-4:] == [60.0] * 4
        for wait, base in zip(plugin.waits(), bases, strict=True):
            assert 0.8 * base <= wait <= base


def _named(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.msg == event]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = record.__dict__["fields"]
    return fields


def _seconds(record: logging.LogRecord) -> float:
    """The ``delay`` of a ``broker.reconnecting`` line ("0.47s") in seconds."""
    return float(_fields(record)["delay"].removesuffix("s"))


def _refused(amqp_url: str, unique: str, refusal: str) -> tuple[str, list[str]]:
    """A URL the broker refuses, and the phrases the refusal must be explained with."""
    if refusal == "wrong-password":
        return amqp_url.replace(":guest@", ":not-the-password@", 1), [
            "refused the login of user 'guest'",
            "check the user and password",
        ]
    missing = f"tower-trio-missing-{unique}"
    return f"{amqp_url.rsplit('/', 1)[0]}/{missing}", [
        f"vhost {missing!r} does not exist",
        f"rabbitmqctl add_vhost {missing}",
    ]


class TestBrokerRefusal:
    """The real broker refusing the tower; real time, a few seconds at most per test."""

    @pytest.mark.parametrize("refusal", ["wrong-password", "missing-vhost"])
    async def test_refusal_is_an_error_retried_with_growing_delays_while_http_accepts(
        self,
        refusal: str,
        amqp_url: str,
        unique: str,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Each refusal is an error saying what to fix; retries wait 0.5, 1, 2 s (jittered)."""
        url, explanation = _refused(amqp_url, unique, refusal)
        settings = tower_settings(url, f"test.triggers.{unique}", tmp_path, shutdown_grace=0.2)
        with (
            caplog.at_level(logging.INFO, logger="tower_trio"),
            watching("tower_trio._publisher", "broker.reconnecting") as reconnecting,
            trio.fail_after(15),
        ):
            async with run_tower(settings) as tower:
                accepted = await tower.client.post("/triggers", json=VALID)
                record = await tower.client.get(accepted.headers["location"])
                ready = await tower.client.get("/readyz")
                await reconnecting.wait_for(3)
                pending = tower.running.publisher.statistics().pending
        waits = _named(caplog, "broker.reconnecting")[:3]
        attempts = _named(caplog, "broker.disconnected")[:3]

        assert accepted.status_code == 202
        assert accepted.json()["status"] == "pending"
        assert record.json()["status"] == "pending"
        assert pending == 1
        assert ready.status_code == 503
        assert all(phrase in ready.json()["details"][0] for phrase in explanation)
        assert len(attempts) == 3
        for attempt in attempts:
            assert attempt.levelno == logging.ERROR
            error = str(_fields(attempt)["error"])
            assert all(phrase in error for phrase in explanation)
            assert "not-the-password" not in error
        delays = [_seconds(wait) for wait in waits]
        for delay, base in zip(delays, [0.5, 1.0, 2.0], strict=True):
            assert 0.8 * base <= delay <= base
        # Each next attempt really came after its delay, not at once.
        for wait, (failed, retried) in zip(waits, itertools.pairwise(attempts), strict=False):
            assert retried.created - failed.created >= 0.95 * _seconds(wait)

    async def test_a_long_outage_waits_the_cap_between_attempts(
        self, amqp_url: str, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After many refused attempts the publisher waits at most 30 s, with jitter, not more."""
        url, _ = _refused(amqp_url, unique, "wrong-password")
        journal = open_journal(tmp_path)
        publisher = Publisher(
            tower_settings(url, f"test.triggers.{unique}", tmp_path), SQLiteStorage(journal)
        )
        # Half an hour of outage, as counted by the publisher's own backoff.
        for _ in range(60):
            publisher._reconnect_backoff.next_delay()
        send, receive = trio.open_memory_channel[Submission](1)
        try:
            with (
                caplog.at_level(logging.INFO, logger="tower_trio"),
                watching("tower_trio._publisher", "broker.reconnecting") as reconnecting,
                trio.fail_after(10),
            ):
                async with send, trio.open_nursery() as nursery:
                    await nursery.start(publisher.serve, receive)
                    await reconnecting.wait_for(1)
                    nursery.cancel_scope.cancel()
        finally:
            journal.close()
        wait = _named(caplog, "broker.reconnecting")[0]
        assert 24.0 <= _seconds(wait) <= 30.0
