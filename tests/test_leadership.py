"""Leadership in one process, on virtual time: campaigns, local deadlines, fencing, release.

The leases here are a table in memory judged by trio's clock, standing in
for PostgreSQL's (whose SQL is tested in tests/test_postgres.py, and the
whole in real processes in tests/test_replicas.py). A tower cut off from
the table waits for an answer until its lease calls time out, as a tower
whose network to PostgreSQL stops does.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from tests._helpers import logged, watching
from tower_trio import Trigger
from tower_trio._channel import Submission, TriggerSendChannel
from tower_trio._errors import FencedError, JournalError
from tower_trio._leadership import MARGIN, serve_led_plugin
from tower_trio._leases import HeldTerm, Leader, Leases, SoleLeases
from tower_trio._models import FieldError, InvalidTriggerError
from tower_trio._plugins import ConfiguredPlugin, DiscoveredPlugin
from tower_trio._runtime import MemoryStateBackend, PluginState, PluginStatus, State, StateBackend
from tower_trio._status import _plugin_health

TTL = 9.0


@attrs.define
class Table:
    """The ``leases`` table: plugin → (holder, term, expiry by the table's clock)."""

    rows: dict[str, tuple[str, int, float]] = attrs.Factory(dict)
    unreachable: set[str] = attrs.Factory(set)


@attrs.define
class FakeLeases:
    """One tower's ``Leases`` on the shared table."""

    table: Table
    instance: str
    timeout: float = TTL / 3
    shared: bool = True
    released: list[int] = attrs.Factory(list)
    campaigns: list[float] = attrs.Factory(list)
    """When each campaign (or renewal) was sent."""

    async def _reach(self) -> None:
        if self.instance in self.table.unreachable:
            await trio.sleep(self.timeout)
            raise JournalError("no answer")
        await trio.lowlevel.checkpoint()

    async def campaign(self, plugin: str, ttl: float) -> Leader | None:
        self.campaigns.append(trio.current_time())
        await self._reach()
        now = trio.current_time()
        holder, term, expires = self.table.rows.get(plugin, ("", 0, now))
        if holder == self.instance and expires > now:
            self.table.rows[plugin] = (holder, term, now + ttl)
        elif expires <= now:
            self.table.rows[plugin] = (self.instance, term + 1, now + ttl)
        holder, term, _ = self.table.rows[plugin]
        return Leader(holder, term)

    async def release(self, plugin: str, term: int) -> None:
        await self._reach()
        holder, held, _ = self.table.rows[plugin]
        if (holder, held) == (self.instance, term):
            self.table.rows[plugin] = (holder, held, trio.current_time())
            self.released.append(term)

    def live(self, plugin: str, term: int) -> bool:
        holder, held, expires = self.table.rows[plugin]
        return (holder, held) == (self.instance, term) and expires > trio.current_time()

    def close(self) -> None:
        pass


@attrs.define
class Runs:
    """When each tower ran the plugin: (instance, term, start, end)."""

    spans: list[tuple[str, int | None, float, float]] = attrs.Factory(list)


def _plugin(runs: Runs, instance: str, table: Table | None = None) -> ConfiguredPlugin:
    async def run(send_channel: Any, state: State) -> None:
        start = trio.current_time()
        term = None if table is None else table.rows["p"][1]
        try:
            await trio.sleep_forever()
        finally:
            runs.spans.append((instance, term, start, trio.current_time()))

    return ConfiguredPlugin(DiscoveredPlugin("p", "test", run, None, False, True), None)


def _trigger() -> Trigger:
    return Trigger(api_version="OT-2/v1alpha1", protocol="Tick", spec={})


def _state(status: PluginStatus) -> PluginState:
    """The state now (a call, so that a type checker does not keep an earlier one)."""
    return status.state


async def _drain(receive: trio.MemoryReceiveChannel[Submission]) -> None:
    async for submission in receive:
        submission.accepted()


class FencingBackend(MemoryStateBackend):
    """State whose writes are refused unless the writer's term is live in the table."""

    def __init__(self, leases: FakeLeases) -> None:
        super().__init__()
        self.leases = leases

    async def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        if term is None or not self.leases.live(plugin, term):
            raise FencedError(f"term {term} is over")
        await super().save_plugin_state(plugin, key, value, term=term)


class TestLeadership:
    async def test_a_tower_cut_off_stops_its_plugin_before_another_starts_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The leader's renewals stop answering: its plugin stops before its lease
        expires, and the other tower starts it after that, in the next term."""
        table, runs = Table(), Runs()
        send, receive = trio.open_memory_channel[Submission](10)
        statuses = {name: PluginStatus("p") for name in ("a", "b")}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, receive)
            for name in ("a", "b"):
                await _start_led(
                    nursery,
                    _plugin(runs, name, table),
                    send.clone(),
                    FakeLeases(table, name),
                    statuses[name],
                )
                await trio.sleep(0.5)
            # Not a multiple of TTL / 3: no renewal is under way when the cut comes.
            await trio.sleep(19.9)
            assert statuses["a"].state is PluginState.RUNNING
            assert statuses["b"].state is PluginState.STANDBY
            assert statuses["b"].leader == Leader("a", 1)
            table.unreachable.add("a")
            cut_at = trio.current_time()
            _, _, expires = table.rows["p"]
            await trio.sleep(3 * TTL)
            assert _state(statuses["a"]) is PluginState.STANDBY
            assert _state(statuses["b"]) is PluginState.RUNNING
            assert statuses["b"].leader == Leader("b", 2)
            nursery.cancel_scope.cancel()
        (first, second) = sorted(runs.spans, key=lambda span: span[2])
        assert first[:2] == ("a", 1)
        assert second[:2] == ("b", 2)
        assert first[3] <= expires - MARGIN * TTL + 0.01
        assert second[2] >= expires
        # Takeover within the TTL and one campaign interval of the last renewal.
        assert second[2] - cut_at <= TTL + TTL / 3 + 0.01

    async def test_plugins_stop_while_postgres_is_away_and_resume_when_it_returns(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A tower alone that loses the database stops its plugin, and runs it again after."""
        table, runs = Table(), Runs()
        status = PluginStatus("p")
        send, receive = trio.open_memory_channel[Submission](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, receive)
            await _start_led(
                nursery, _plugin(runs, "a", table), send, FakeLeases(table, "a"), status
            )
            await trio.sleep(10.1)
            table.unreachable.add("a")
            await trio.sleep(2 * TTL)
            assert _state(status) is PluginState.STANDBY
            assert len(runs.spans) == 1
            table.unreachable.clear()
            await trio.sleep(TTL)
            assert _state(status) is PluginState.RUNNING
            assert status.leader == Leader("a", 2)
            nursery.cancel_scope.cancel()
        assert [span[:2] for span in runs.spans] == [("a", 1), ("a", 2)]

    @pytest.mark.parametrize("swallows", [True, False], ids=["swallowed", "raised"])
    async def test_a_fenced_state_write_stops_the_run_at_once(
        self,
        autojump_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture,
        swallows: bool,
    ) -> None:
        """When the store refuses a state write, the run stops at once, whatever the plugin
        does with the error, without a crash logged, and the tower campaigns again."""
        table = Table()
        leases = FakeLeases(table, "a")
        status = PluginStatus("p")
        starts: list[int | None] = []
        ends: list[float] = []

        async def run(send_channel: Any, state: State) -> None:
            starts.append(table.rows["p"][1])
            if len(starts) == 1:
                # Another tower took the lease behind this one's back.
                table.rows["p"] = ("b", 2, trio.current_time() + 1.0)
            try:
                with contextlib.suppress(*([JournalError] if swallows else [])):
                    await state.set("k", len(starts))
                await trio.sleep_forever()
            finally:
                ends.append(trio.current_time())

        plugin = ConfiguredPlugin(DiscoveredPlugin("p", "test", run, None, False, True), None)
        send, receive = trio.open_memory_channel[Submission](10)
        with (
            watching("tower_trio._runtime", "plugin.crashed") as crashed,
            watching("tower_trio._leadership", "lease.fenced") as fenced,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, receive)
                await _start_led(
                    nursery, plugin, send, leases, status, state_backend=FencingBackend(leases)
                )
                await trio.sleep(TTL)
                nursery.cancel_scope.cancel()
        assert starts == [1, 3]
        assert ends[0] == 0.0
        assert (fenced.count, crashed.count) == (1, 0)
        assert [(f["plugin"], f["term"]) for f in logged(caplog, "lease.fenced")] == [("p", 1)]
        # Stopped by the store, not by its own deadline: no local expiry is logged.
        assert logged(caplog, "lease.expired_locally") == []
        assert table.rows["p"][:2] == ("a", 3)
        assert leases.released == [3]

    async def test_the_lease_is_released_on_the_way_out(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A tower that stops gives its lease up, so another takes it over at its next campaign."""
        table, runs = Table(), Runs()
        send, receive = trio.open_memory_channel[Submission](10)
        status = PluginStatus("p")
        with caplog.at_level(logging.INFO, logger="tower_trio"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, receive)
                async with trio.open_nursery() as leading:
                    await _start_led(
                        leading,
                        _plugin(runs, "a", table),
                        send.clone(),
                        FakeLeases(table, "a"),
                        status,
                    )
                    await trio.sleep(1)
                    leading.cancel_scope.cancel()
                await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
        holder, term, expires = table.rows["p"]
        assert (holder, term) == ("a", 1)
        assert expires == 1.0  # at once, not TTL after the last renewal
        assert status.leader is None
        released = logged(caplog, "lease.released")
        assert [(fields["plugin"], fields["term"]) for fields in released] == [("p", 1)]

    async def test_the_release_waits_for_a_trigger_still_being_written(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A tower stopped while its plugin's trigger is in a batch releases the lease only
        once that batch is written, so the trigger is not refused under an ended term."""
        table = Table()
        send, receive = trio.open_memory_channel[Submission](10)
        committed_at: list[float] = []

        async def run(send_channel: Any) -> None:
            await send_channel.send(_trigger())

        async def journal() -> None:
            submission = await receive.receive()
            assert submission.take()
            await trio.sleep(1)
            _, term, _ = table.rows["p"]
            assert FakeLeases(table, "a").live("p", term)
            submission.accepted()
            committed_at.append(trio.current_time())

        plugin = ConfiguredPlugin(DiscoveredPlugin("p", "test", run, None, False), None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal)
            async with trio.open_nursery() as leading:
                await _start_led(leading, plugin, send.clone(), FakeLeases(table, "a"))
                await trio.sleep(0.5)
                leading.cancel_scope.cancel()
        _, _, released_at = table.rows["p"]
        assert committed_at == [1.0]
        assert released_at == 1.0


class TestRenewals:
    async def test_a_leader_renews_and_a_standby_campaigns_every_third_of_the_ttl(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Renewals and campaigns come TTL / 3 apart: often enough that two may fail
        before the leader's local deadline, no more often than that."""
        table, runs = Table(), Runs()
        send, receive = trio.open_memory_channel[Submission](10)
        towers = {name: FakeLeases(table, name) for name in ("a", "b")}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, receive)
            for name, leases in towers.items():
                await _start_led(nursery, _plugin(runs, name), send.clone(), leases)
                await trio.sleep(0.5)
            await trio.sleep(2 * TTL)
            nursery.cancel_scope.cancel()
        for name, start in (("a", 0.0), ("b", 0.5)):
            sent = towers[name].campaigns
            assert sent == pytest.approx([start + k * TTL / 3 for k in range(len(sent))])
            assert len(sent) == 7

    async def test_a_renewal_that_fails_once_does_not_stop_the_plugin(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One renewal without an answer is logged; the next one, answered before the
        local deadline, keeps the plugin running in the same term."""
        table, runs = Table(), Runs()
        leases = FakeLeases(table, "a", timeout=0.5)
        status = PluginStatus("p")
        send, receive = trio.open_memory_channel[Submission](10)
        with caplog.at_level(logging.INFO, logger="tower_trio"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, receive)
                await _start_led(nursery, _plugin(runs, "a", table), send, leases, status)
                await trio.sleep(4)
                table.unreachable.add("a")  # the renewal sent at 6 s gets no answer
                await trio.sleep(3)
                table.unreachable.clear()  # the one at 9.5 s does, before 10.2 s
                await trio.sleep(2 * TTL)
                assert _state(status) is PluginState.RUNNING
                assert status.leader == Leader("a", 1)
                nursery.cancel_scope.cancel()
        assert [span[:2] for span in runs.spans] == [("a", 1)]
        (failed,) = logged(caplog, "lease.renew_failed")
        assert failed["plugin"] == "p"
        assert "no answer" in str(failed["error"])
        assert logged(caplog, "lease.expired_locally") == []

    async def test_each_change_of_leadership_is_logged_with_its_plugin_and_term(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Won, renewal failed, expired locally, lost, unknown, won again, lost to another
        tower (not expired), won again, release failed: each a line naming the plugin."""
        table, runs = Table(), Runs()
        leases = FakeLeases(table, "a", timeout=1.0)
        send, receive = trio.open_memory_channel[Submission](10)
        with caplog.at_level(logging.INFO, logger="tower_trio"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, receive)
                async with trio.open_nursery() as leading:
                    await _start_led(leading, _plugin(runs, "a", table), send, leases)
                    await trio.sleep(4)
                    # Renewals at 6 s and 10 s get no answer; the run stops at 10.2 s
                    # (3 s + 80% of the TTL), and the campaign then gets none either.
                    table.unreachable.add("a")
                    await trio.sleep(8)
                    table.unreachable.clear()  # won again at 14.2 s, in term 2
                    await trio.sleep(6)
                    # Another tower takes it from under this one's renewal at 20.2 s,
                    # and lets it run out at 27 s; this one wins it back at 29.2 s.
                    table.rows["p"] = ("b", 3, trio.current_time() + TTL)
                    await trio.sleep(12)
                    table.unreachable.add("a")
                    leading.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
        logged = [
            (record.msg, record.__dict__["fields"])
            for record in caplog.records
            if str(record.msg).startswith("lease.")
        ]
        assert [(event, fields["plugin"], fields.get("term")) for event, fields in logged] == [
            ("lease.won", "p", 1),
            ("lease.renew_failed", "p", None),
            ("lease.expired_locally", "p", 1),
            ("lease.lost", "p", 1),
            ("lease.unknown", "p", None),
            ("lease.won", "p", 2),
            ("lease.lost", "p", 2),
            ("lease.won", "p", 4),
            ("lease.release_failed", "p", None),
        ]
        errors = [fields["error"] for _, fields in logged if "error" in fields]
        assert len(errors) == 3
        assert all("no answer" in str(error) for error in errors)
        assert [span[:2] for span in runs.spans] == [("a", 1), ("a", 2), ("a", 4)]

    async def test_a_refused_trigger_makes_the_leader_ask_for_its_lease_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The journal refusing a leader's trigger may mean its term is over: it renews
        (or learns it lost) then, not at the next third of the TTL."""
        refused: list[JournalError] = []

        async def run(send_channel: Any) -> None:
            await trio.sleep(1)
            try:
                await send_channel.send(_trigger())
            except JournalError as err:
                refused.append(err)
            await trio.sleep_forever()

        async def journal(receive: trio.MemoryReceiveChannel[Submission]) -> None:
            submission = await receive.receive()
            assert submission.take()
            submission.rejected("a stale leadership term")

        plugin = ConfiguredPlugin(DiscoveredPlugin("p", "test", run, None, False), None)
        leases = FakeLeases(Table(), "a")
        send, receive = trio.open_memory_channel[Submission](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal, receive)
            await _start_led(nursery, plugin, send, leases)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        assert len(refused) == 1
        assert leases.campaigns == [0.0, 1.0]

    async def test_a_leaders_triggers_are_checked_as_a_sole_towers_are(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The per-protocol check applies under a lease too: a trigger that fails it is
        raised to the plugin, and never reaches the journal."""
        refused: list[InvalidTriggerError] = []

        async def run(send_channel: Any) -> None:
            try:
                await send_channel.send(_trigger())
            except InvalidTriggerError as err:
                refused.append(err)
            await trio.sleep_forever()

        plugin = ConfiguredPlugin(DiscoveredPlugin("p", "test", run, None, False), None)
        send, receive = trio.open_memory_channel[Submission](10)
        async with trio.open_nursery() as nursery:
            await _start_led(
                nursery,
                plugin,
                send,
                FakeLeases(Table(), "a"),
                check=lambda trigger: [FieldError("spec.volume", "is required")],
            )
            await trio.sleep(1)
            assert receive.statistics().current_buffer_used == 0
            nursery.cancel_scope.cancel()
        (error,) = refused
        assert error.errors == (FieldError("spec.volume", "is required"),)


class TestOnTheWayOut:
    async def test_an_error_while_stopping_is_not_hidden_by_the_cancellation(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A bug that raises while a stopped leader lets its lease go reaches the
        supervisor: closing the plugin's channel must not replace it with Cancelled."""

        @attrs.define
        class BrokenRelease(FakeLeases):
            async def release(self, plugin: str, term: int) -> None:
                raise RuntimeError("release broke")

        send, receive = trio.open_memory_channel[Submission](10)
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="release broke")):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, receive)
                await _start_led(nursery, _plugin(Runs(), "a"), send, BrokenRelease(Table(), "a"))
                await trio.sleep(1)
                nursery.cancel_scope.cancel()


class TestSoleTower:
    async def test_a_tower_alone_leads_every_plugin_in_the_first_term(self) -> None:
        """On a journal of its own, the plugin runs at once, in term 1, led by this tower."""
        runs = Runs()
        status = PluginStatus("p")
        send, receive = trio.open_memory_channel[Submission](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, receive)
            await _start_led(nursery, _plugin(runs, "a"), send, SoleLeases("tower-a"), status)
            await trio.sleep(0.1)
            assert status.state is PluginState.RUNNING
            assert status.leader == Leader("tower-a", 1)
            nursery.cancel_scope.cancel()
        assert [span[0] for span in runs.spans] == ["a"]


class TestStatusPanel:
    def test_standby_is_healthy_while_some_tower_leads(self) -> None:
        """A plugin led elsewhere is green; one no tower leads yet is amber, never red."""
        led = {"state": "standby", "leader": {"instance": "tower-b", "term": 2}}
        assert _plugin_health(led) == "green"
        assert _plugin_health({"state": "standby", "leader": None}) == "amber"
        assert _plugin_health({"state": "running", "leader": None}) == "green"


class TestACancelledLeadersSend:
    async def test_a_trigger_not_yet_taken_is_withdrawn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled before the journal took it, a leader's trigger is withdrawn, not stored."""
        send, receive = trio.open_memory_channel[Submission](10)
        channel = TriggerSendChannel(send, "p", held=HeldTerm(3))
        with trio.move_on_after(1):
            await channel.send(_trigger())
        submission = receive.receive_nowait()
        assert submission.trigger.term == 3
        assert submission.withdrawn
        assert not submission.take()

    async def test_a_taken_trigger_is_left_for_the_release_to_wait_for(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled after the journal took it, the send stops at once; its batch's answer is
        what the tower waits for before it releases the lease."""
        send, receive = trio.open_memory_channel[Submission](10)
        held = HeldTerm(3)
        channel = TriggerSendChannel(send, "p", held=held)

        async def journal() -> None:
            submission = await receive.receive()
            assert submission.take()
            await trio.sleep(5)
            submission.accepted()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal)
            with trio.move_on_after(1) as scope:
                await channel.send(_trigger())
            assert scope.cancelled_caught
            assert trio.current_time() == 1.0
            assert len(held.unsettled) == 1
            await held.settle()
            assert trio.current_time() == 5.0
            assert held.unsettled == []

    async def test_without_a_term_the_trigger_stays_queued(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A tower alone on its journal keeps the old rule: a queued trigger is stored."""
        send, receive = trio.open_memory_channel[Submission](10)
        channel = TriggerSendChannel(send, "p")
        with trio.move_on_after(1):
            await channel.send(_trigger())
        submission = receive.receive_nowait()
        assert submission.trigger.term is None
        assert submission.take()


async def _start_led(
    nursery: trio.Nursery,
    plugin: ConfiguredPlugin,
    send: trio.MemorySendChannel[Submission],
    leases: Leases,
    status: PluginStatus | None = None,
    *,
    state_backend: StateBackend | None = None,
    check: Any = None,
) -> None:
    """Start ``serve_led_plugin`` for ``plugin`` on ``leases``, with state in memory by default."""
    await nursery.start(
        lambda task_status: serve_led_plugin(
            plugin,
            send,
            PluginStatus(plugin.name) if status is None else status,
            leases,
            ttl=TTL,
            state_backend=MemoryStateBackend() if state_backend is None else state_backend,
            check=check,
            task_status=task_status,
        )
    )
