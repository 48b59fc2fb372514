"""The schedule plugin, as a specification (time driven by autojump_clock)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tower_trio import ConfigError
from tower_trio.testing import MemoryStateBackend, open_plugin

HERE = Path(__file__).parent
START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
TRIGGER = {"apiVersion": "OT-2/v1alpha1", "protocol": "Calibrate", "spec": {"deck": 1}}


def schedule(tmp_path: Path, *entries: dict[str, Any], **top: object) -> dict[str, object]:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({**top, "entries": list(entries)}))
    return {"file": str(path)}


def every_quarter(**extra: object) -> dict[str, Any]:
    return {"name": "quarterly", "cron": "*/15 * * * *", "trigger": TRIGGER, **extra}


def slot_of(trigger: Any) -> datetime:
    return datetime.fromisoformat(trigger.metadata.spec["slot"])


def after(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


class TestSchedule:
    async def test_fires_at_every_slot(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each cron slot sends the entry's trigger once, at that time."""
        config = schedule(tmp_path, every_quarter())
        async with open_plugin(HERE, config=config, start_time=START) as harness:
            first, second = await harness.next_triggers(2)
            fired_at = trio.current_time()
        assert [slot_of(first), slot_of(second)] == [after(15), after(30)]
        assert fired_at == pytest.approx(30 * 60)
        assert first.protocol == "Calibrate"
        assert first.spec == {"deck": 1}
        assert isinstance(first.metadata.spec, dict)
        assert first.metadata.spec["schedule"] == "quarterly"
        assert first.key == f"schedule:quarterly:{after(15).isoformat()}"

    async def test_cron_is_read_in_the_entry_time_zone(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """'0 9 * * *' in Europe/Berlin fires at 08:00 UTC in winter and 07:00 UTC in summer."""
        entry = {"name": "morning", "cron": "0 9 * * *", "trigger": TRIGGER}
        config = schedule(tmp_path, entry, timezone="Europe/Berlin")
        start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
        async with open_plugin(HERE, config=config, start_time=start) as harness:
            winter, summer = await harness.next_triggers(2)
        assert slot_of(winter).astimezone(UTC) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
        assert slot_of(summer).astimezone(UTC) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
        assert slot_of(winter).hour == 9

    async def test_a_restart_never_fires_the_same_slot_twice(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Stopped just after a slot and started again, the next trigger is the next slot."""
        config = schedule(tmp_path, every_quarter())
        state = MemoryStateBackend()
        async with open_plugin(HERE, config=config, start_time=START, state=state) as harness:
            assert slot_of(await harness.next_trigger()) == after(15)
            await harness.wait_until(lambda: "15" in harness.state["last:quarterly"])
        async with open_plugin(HERE, config=config, start_time=after(16), state=state) as harness:
            assert slot_of(await harness.next_trigger()) == after(30)

    @pytest.mark.parametrize(
        ("catch_up", "expected"),
        [
            pytest.param(None, [60], id="default-latest"),
            pytest.param("latest", [60], id="latest"),
            pytest.param("all", [15, 30, 45, 60], id="all"),
            pytest.param("none", [], id="none"),
        ],
    )
    async def test_slots_missed_while_down_are_caught_up(
        self,
        tmp_path: Path,
        autojump_clock: trio.testing.MockClock,
        catch_up: str | None,
        expected: list[int],
    ) -> None:
        """Down from 00:00 to 01:10, the entry fires what catchUp says at once, then 01:15."""
        extra = {} if catch_up is None else {"catchUp": catch_up}
        config = schedule(tmp_path, every_quarter(**extra))
        state = MemoryStateBackend({"schedule": {"last:quarterly": START.isoformat()}})
        async with open_plugin(HERE, config=config, start_time=after(70), state=state) as harness:
            sent = await harness.next_triggers(len(expected) + 1)
        assert [slot_of(t) for t in sent] == [after(m) for m in [*expected, 75]]

    async def test_a_bad_entry_is_reported_and_the_others_run(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalid cron, trigger, zone or duplicate name: that entry is an error, the rest fire."""
        config = schedule(
            tmp_path,
            {"name": "bad-cron", "cron": "61 * * * *", "trigger": TRIGGER},
            {"name": "bad-trigger", "cron": "* * * * *", "trigger": {**TRIGGER, "spec": 5}},
            {"name": "bad-zone", "cron": "* * * * *", "trigger": TRIGGER, "timezone": "Mars/Base"},
            {"name": "bad-catch-up", "cron": "* * * * *", "trigger": TRIGGER, "catchUp": "some"},
            every_quarter(),
            every_quarter(),
        )
        async with open_plugin(HERE, config=config, start_time=START) as harness:
            errors = await harness.wait_for_item_errors(5)
            trigger = await harness.next_trigger()
        messages = "\n".join(e.message for e in errors)
        assert "'bad-cron': invalid cron expression '61 * * * *'" in messages
        assert (
            "'bad-trigger': invalid trigger: spec: must be a JSON object of protocol parameters"
            in messages
        )
        assert "unknown time zone 'Mars/Base'" in messages
        assert "catchUp must be one of latest, all, none" in messages
        assert "'quarterly' appears twice" in messages
        assert isinstance(trigger.metadata.spec, dict)
        assert trigger.metadata.spec["schedule"] == "quarterly"

    async def test_toml_schedules_work_too(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A .toml file with [[entries]] tables is read like the JSON one."""
        path = tmp_path / "schedule.toml"
        path.write_text(
            'timezone = "UTC"\n'
            "[[entries]]\n"
            'name = "hourly"\n'
            'cron = "0 * * * *"\n'
            'trigger = { apiVersion = "OT-2/v1alpha1", protocol = "Wash", spec = { cycles = 2 } }\n'
        )
        async with open_plugin(HERE, config={"file": str(path)}, start_time=START) as harness:
            trigger = await harness.next_trigger()
        assert (trigger.protocol, slot_of(trigger)) == ("Wash", after(60))

    @pytest.mark.parametrize(
        ("name", "content", "message"),
        [
            pytest.param("missing.json", None, "cannot read the schedule", id="missing"),
            pytest.param("s.yaml", "", "must name a .json or .toml file", id="suffix"),
            pytest.param("s.json", "{", "not valid JSON", id="not-json"),
            pytest.param("s.json", '{"x": 1}', "list of entries under 'entries'", id="shape"),
        ],
    )
    async def test_an_unusable_file_stops_the_plugin_with_a_clear_error(
        self, tmp_path: Path, name: str, content: str | None, message: str
    ) -> None:
        """A schedule that cannot be read at all is a ConfigError saying what to fix."""
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.RaisesGroup(pytest.RaisesExc(ConfigError, match=message)):
            async with open_plugin(HERE, config={"file": str(path)}) as harness:
                await harness.next_trigger()
