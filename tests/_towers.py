"""``tower-trio run`` as a real process in tests: started, its log read as it is written.

A test waits for the lines the tower logs (``wait_for("broker.connected")``)
instead of sleeping, then signals the process and checks its exit code and
log. The tower's stderr is read all the time, because a full pipe would
stall it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "RUN",
    "TowerProcess",
    "Towers",
    "log_fields",
    "open_tower_process",
    "start_tower_process",
    "tower_environ",
]

RUN = (sys.executable, "-m", "tower_trio", "run")
"""The command that starts a tower from the checkout under test."""

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_fields(line: str) -> dict[str, str]:
    """The fields of one tower log line: a JSON object, or key=value pairs on a terminal."""
    if line.startswith("{"):
        try:
            decoded = json.loads(line)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return {str(key): str(value) for key, value in decoded.items()}
    fields = {}
    for key, raw in _FIELD.findall(line):
        value = raw
        if raw.startswith('"'):
            value = raw[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        fields[key] = value
    return fields


def tower_environ(**variables: str) -> dict[str, str]:
    """The test process's environment without its TOWER_/PLUGIN_ settings, plus ``variables``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOWER_", "PLUGIN_"))}
    environ["TOWER_HTTP_PORT"] = "0"
    environ.update(variables)
    return environ


@attrs.define(eq=False)
class TowerProcess:
    """One ``tower-trio run`` process and everything it has logged so far."""

    process: trio.Process
    url: str = ""
    _lines: list[str] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)
    _log_closed: bool = False

    @property
    def log(self) -> str:
        return "\n".join(self._lines)

    def events(self, event: str) -> list[dict[str, str]]:
        found = (log_fields(line) for line in self._lines)
        return [fields for fields in found if fields.get("event") == event]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def read_log(self) -> None:
        # Reading all the time matters: a full stderr pipe would stall the tower.
        assert self.process.stderr is not None
        unread = b""
        try:
            async for chunk in self.process.stderr:
                *lines, unread = (unread + chunk).split(b"\n")
                self._lines.extend(line.decode(errors="replace") for line in lines)
                self._notify()
        finally:
            if unread:
                self._lines.append(unread.decode(errors="replace"))
            self._log_closed = True
            self._notify()

    async def wait_for(self, event: str, count: int = 1) -> dict[str, str]:
        """The ``count``-th line logging ``event``, once the tower has written it."""
        while True:
            found = self.events(event)
            if len(found) >= count:
                return found[count - 1]
            if self._log_closed:
                raise AssertionError(
                    f"the tower exited before logging event={event} {count} time(s):\n{self.log}"
                )
            await self._changed.wait()

    async def _wait_log_closed(self) -> None:
        while not self._log_closed:
            await self._changed.wait()

    async def kill(self) -> None:
        """SIGKILL: no chance to drain or to close the journal."""
        self.process.kill()
        await self.process.wait()

    async def terminate(self) -> int:
        """SIGTERM, then the exit code once the process and its log have ended."""
        self.process.send_signal(signal.SIGTERM)
        returncode = await self.process.wait()
        await self._wait_log_closed()
        return returncode


async def start_tower_process(
    nursery: trio.Nursery,
    environ: Mapping[str, str],
    *,
    command: Sequence[str | Path] = RUN,
    cwd: Path | None = None,
) -> TowerProcess:
    """Start ``command`` with ``environ``; ``nursery`` reads its log until the process ends."""
    process = await trio.lowlevel.open_process(
        list(command),
        env=environ,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tower = TowerProcess(process)
    nursery.start_soon(tower.read_log)
    return tower


@asynccontextmanager
async def open_tower_process(
    environ: Mapping[str, str],
    *,
    command: Sequence[str | Path] = RUN,
    cwd: Path | None = None,
) -> AsyncIterator[TowerProcess]:
    """A tower process for the block; killed on the way out if the block left it running."""
    async with trio.open_nursery() as nursery:
        tower = await start_tower_process(nursery, environ, command=command, cwd=cwd)
        try:
            yield tower
        finally:
            if tower.process.returncode is None:
                with trio.CancelScope(shield=True):
                    await tower.kill()


@attrs.define(eq=False)
class Towers:
    """Starts tower processes with one environment; whatever still runs is killed at the end."""

    nursery: trio.Nursery
    environ: dict[str, str]
    started: list[TowerProcess] = attrs.Factory(list)

    async def start(self) -> TowerProcess:
        tower = await start_tower_process(self.nursery, self.environ)
        self.started.append(tower)
        with trio.fail_after(30):
            started = await tower.wait_for("tower.started")
        tower.url = started["http"].split(",")[0]
        return tower

    async def terminate_running(self) -> list[int]:
        """SIGTERM every tower still running; their exit codes."""
        return [
            await tower.terminate() for tower in self.started if tower.process.returncode is None
        ]

    async def kill_all(self) -> None:
        for tower in self.started:
            if tower.process.returncode is None:
                await tower.kill()

    @property
    def logs(self) -> str:
        return "\n".join(
            f"--- tower {n} (exit code {tower.process.returncode}) ---\n{tower.log}"
            for n, tower in enumerate(self.started, 1)
        )
