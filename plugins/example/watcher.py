"""Example watcher: one trigger per line appended to a file.

A lab engineer appends a line such as ``PlateTransfer {"volume": 100}`` to
the watched file and the plugin sends it as a trigger. Nothing is sent
unless a line is written, so the plugin is safe to leave enabled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import attrs
import trio

from tower_trio import InvalidTriggerError, Trigger

log = logging.getLogger("tower_trio.plugins.example")


@attrs.frozen
class Config:
    path: Path
    """File to follow (PLUGIN_EXAMPLE_PATH); created, with its folder, if missing."""
    api_version: str = "OT-2/v1alpha1"
    """apiVersion of the triggers it sends (PLUGIN_EXAMPLE_API_VERSION)."""
    interval: float = 1.0
    """Seconds between looks at the file (PLUGIN_EXAMPLE_INTERVAL)."""
    skip_existing: bool = True
    """Ignore lines already in the file at start-up (PLUGIN_EXAMPLE_SKIP_EXISTING)."""


def parse_line(line: str, api_version: str) -> Trigger:
    """``Protocol {json spec}`` → a Trigger; raises ValueError if it is not one."""
    protocol, _, spec = line.strip().partition(" ")
    return Trigger(api_version=api_version, protocol=protocol, spec=json.loads(spec or "null"))


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config) -> None:
    path = trio.Path(config.path)
    # The default, var/example-inbox.txt, is relative to wherever the tower runs.
    await path.parent.mkdir(parents=True, exist_ok=True)
    await path.touch()
    offset = (await path.stat()).st_size if config.skip_existing else 0
    while True:
        async with await path.open("rb") as file:
            await file.seek(offset)
            complete, newline, _ = (await file.read()).rpartition(b"\n")
        offset += len(complete) + len(newline)
        for line in complete.decode(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                trigger = parse_line(line, config.api_version)
            except (ValueError, InvalidTriggerError) as err:
                log.warning("skipped a line that is not a trigger: %r (%s)", line, err)
                continue
            await send_channel.send(trigger)
        await trio.sleep(config.interval)
