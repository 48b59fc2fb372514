"""Schedule: triggers at times given by cron expressions, in a time zone.

The schedule is a JSON or TOML file (``PLUGIN_SCHEDULE_FILE``) listing
entries, each a name, a cron expression and the trigger to send. The last
slot of each entry is kept in the plugin's state, so a restart never fires
a slot twice, and slots missed while the tower was down are caught up as
the entry's ``catchUp`` says.
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import trio
from cronsim import CronSim

from tower_trio import ConfigError, InvalidTriggerError, Trigger
from tower_trio.plugin import (
    State,
    report_item_error,
    seconds_until,
    trigger_from_json,
    utc_now,
)

CATCH_UP = ("latest", "all", "none")
# A cron entry that fires every minute and was down for months would
# otherwise flood the devices; beyond this many, only the newest are sent.
MAX_CATCH_UP = 100
# Wake at least this often while waiting, so that a wall clock that jumps
# (NTP, a suspended VM) delays a slot by at most this much.
_LONGEST_NAP = 60.0


@attrs.frozen
class Config:
    file: Path
    """The schedule, a .json or .toml file (PLUGIN_SCHEDULE_FILE)."""
    timezone: str = "UTC"
    """Time zone of entries that name none, like Europe/Berlin (PLUGIN_SCHEDULE_TIMEZONE)."""


@attrs.frozen
class Entry:
    name: str
    cron: str
    zone: ZoneInfo
    trigger: dict[str, Any]
    catch_up: str = "latest"

    def slots_after(self, moment: datetime) -> CronSim:
        """The entry's slots strictly after ``moment``, in its time zone."""
        return CronSim(self.cron, moment.astimezone(self.zone))

    def build(self, slot: datetime) -> Trigger:
        wire = dict(self.trigger)
        metadata = dict(wire.get("metadata") or {})
        metadata["spec"] = {
            **(metadata.get("spec") or {}),
            "schedule": self.name,
            "slot": slot.isoformat(),
        }
        wire["metadata"] = metadata
        return trigger_from_json(wire, key=f"schedule:{self.name}:{slot.isoformat()}")


def _zone(name: object, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{where}: unknown time zone {name!r} (use a name like 'Europe/Berlin')"
        ) from None


def parse_entry(raw: object, index: int, default_zone: ZoneInfo) -> Entry:
    """One schedule entry; raises ValueError saying what is wrong with it."""
    where = f"entry {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table/object with name, cron and trigger")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} needs a 'name'")
    where = f"entry {name!r}"
    unknown = sorted(set(raw) - {"name", "cron", "timezone", "trigger", "catchUp"})
    if unknown:
        raise ValueError(f"{where}: unknown field {', '.join(unknown)}")
    zone = _zone(raw["timezone"], where) if "timezone" in raw else default_zone
    cron, trigger = raw.get("cron"), raw.get("trigger")
    if not isinstance(cron, str):
        raise ValueError(f"{where} needs a 'cron' expression like '0 9 * * 1-5'")
    try:
        CronSim(cron, utc_now())
    except Exception as err:
        raise ValueError(f"{where}: invalid cron expression {cron!r}: {err}") from None
    catch_up = raw.get("catchUp", "latest")
    if catch_up not in CATCH_UP:
        raise ValueError(f"{where}: catchUp must be one of {', '.join(CATCH_UP)}")
    if not isinstance(trigger, dict):
        raise ValueError(f"{where} needs a 'trigger' object (apiVersion, protocol, spec)")
    entry = Entry(name, cron, zone, trigger, catch_up)
    try:
        entry.build(utc_now())
    except InvalidTriggerError as err:
        raise ValueError(f"{where}: {err}") from None
    return entry


def parse_schedule(text: str, suffix: str, default_zone: str) -> tuple[list[Entry], list[str]]:
    """The valid entries of a schedule file, and the problems of the others.

    Raises ConfigError if the file as a whole cannot be used.
    """
    try:
        document: Any = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except ValueError as err:
        raise ConfigError(f"the schedule file is not valid {suffix[1:].upper()}: {err}") from None
    if isinstance(document, list):
        document = {"entries": document}
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise ConfigError("the schedule file must hold a list of entries under 'entries'")
    try:
        zone = _zone(document.get("timezone", default_zone), "the schedule")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    entries, problems, names = [], [], set()
    for index, raw in enumerate(document["entries"]):
        try:
            entry = parse_entry(raw, index, zone)
        except ValueError as err:
            problems.append(str(err))
            continue
        if entry.name in names:
            problems.append(f"entry {entry.name!r} appears twice; names must be unique")
            continue
        names.add(entry.name)
        entries.append(entry)
    return entries, problems


def missed_slots(entry: Entry, last: datetime, now: datetime) -> list[datetime]:
    """The slots in (last, now] to fire now, as the entry's catchUp says."""
    if entry.catch_up == "none":
        return []
    missed: list[datetime] = []
    for slot in entry.slots_after(last):
        if slot > now:
            break
        missed.append(slot)
        # Only the newest are kept, so a long outage costs memory for few.
        del missed[:-MAX_CATCH_UP]
    return missed[-1:] if entry.catch_up == "latest" else missed


async def serve_entry(
    entry: Entry, send_channel: trio.abc.SendChannel[Trigger], state: State
) -> None:
    key = f"last:{entry.name}"
    now = utc_now()
    saved = await state.get(key)
    last = datetime.fromisoformat(saved) if saved else now
    caught_up = missed_slots(entry, last, now)
    for slot in caught_up:
        await _fire(entry, slot, send_channel)
    # "last" is the newest slot dealt with, fired or deliberately skipped.
    last = max([last, *caught_up]) if entry.catch_up != "none" else max(last, now)
    await state.set(key, last.isoformat())
    while True:
        slot = next(entry.slots_after(last))
        # The wall clock is what matters here, and no trio event tracks it.
        while (remaining := seconds_until(slot)) > 0:  # noqa: ASYNC110
            await trio.sleep(min(remaining, _LONGEST_NAP))
        await _fire(entry, slot, send_channel)
        await state.set(key, slot.isoformat())
        last = slot


async def _fire(entry: Entry, slot: datetime, send_channel: trio.abc.SendChannel[Trigger]) -> None:
    try:
        trigger = entry.build(slot)
    except InvalidTriggerError as err:  # pragma: no cover - checked when the file is read
        report_item_error(f"entry {entry.name}", err)
        return
    await send_channel.send(trigger)


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config, state: State) -> None:
    path = trio.Path(config.file)
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"PLUGIN_SCHEDULE_FILE={config.file} must name a .json or .toml file")
    try:
        text = await path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            f"cannot read the schedule PLUGIN_SCHEDULE_FILE={config.file}: {err}; "
            "create it or point the variable at it"
        ) from err
    entries, problems = parse_schedule(text, path.suffix, config.timezone)
    for problem in problems:
        report_item_error("schedule", problem)
    async with trio.open_nursery() as nursery:
        for entry in entries:
            nursery.start_soon(serve_entry, entry, send_channel, state)
