"""Idle CPU: what ``tower-trio run`` costs while nothing happens.

Two towers are measured, one after the other: one with no plugins, and one
with 20 plugins that have nothing to do, as a lab's tower spends most of its
time: 10 folder watchers (inotify, the default) on empty folders and 10
schedules whose one entry fires once a year. Each plugin is a copy of the
built-in's ``watcher.py`` in a plugins folder of the run's own, under a name
of its own, so each has its own configuration and task, as 20 configured
plugins would. The window starts ``SETTLE`` seconds after ``/readyz``
answered 200 and ``GET /plugins`` showed every plugin running: what the
plugins do as they start (a first look at the folder, the schedule's state)
is start-up, not idleness, and takes about half a second here.

The figure is user + system time from ``/proc/<pid>/stat`` (every thread,
including ones that ended), in clock ticks. The per-thread scheduler
statistics give a finer figure, in nanoseconds, for the threads alive at
both ends of the window.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._common import REPO_ROOT, BenchError, process_cpu_seconds
from ._servers import pick_port, run_tower, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._broker import Vhost

__all__ = [
    "FOLDER_WATCHERS",
    "IDLE_PLUGINS",
    "SCHEDULES",
    "SETTLE",
    "IdleResult",
    "IdleRun",
    "run_idle_bench",
]

FOLDER_WATCHERS = 10
SCHEDULES = 10
IDLE_PLUGINS = FOLDER_WATCHERS + SCHEDULES
SETTLE = 2.0
"""Seconds between every plugin running and the start of the window."""
_RUNNING_TIMEOUT = 30.0
_POLL_INTERVAL = 0.1
_YEARLY = {
    "entries": [
        {
            "name": "yearly-calibration",
            "cron": "0 3 1 1 *",
            "trigger": {"apiVersion": "OT-2/v1alpha1", "protocol": "Calibrate", "spec": {}},
        }
    ]
}


@attrs.frozen
class IdleRun:
    plugins: int
    seconds: float
    """How long the tower sat idle while measured."""
    cpu_seconds: float
    """User + system CPU time over that window, at clock-tick resolution."""
    cpu_seconds_fine: float | None
    """The same from the scheduler's nanosecond counters; None where unavailable."""

    def budget(self, per_ten_seconds: float) -> float:
        return per_ten_seconds * self.seconds / 10

    @property
    def fine_text(self) -> str:
        if self.cpu_seconds_fine is None:
            return ""
        return f" (scheduler counters: {self.cpu_seconds_fine:.4f} s)"


@attrs.frozen
class IdleResult:
    runs: tuple[IdleRun, ...]
    """Without plugins, then with ``IDLE_PLUGINS`` idle plugins."""

    @property
    def measured(self) -> IdleRun:
        """The run the target is about: the one with the idle plugins."""
        return self.runs[-1]


def _sched_cpu(pid: int) -> dict[str, int]:
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[task.name] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return times


def _idle_plugins(workdir: Path, environ: dict[str, str]) -> Path:
    """A plugins folder with the idle plugins, configured in ``environ``."""
    plugins_dir = workdir / "idle-plugins"
    plugins_dir.mkdir(exist_ok=True)
    schedule = workdir / "idle-schedule.json"
    schedule.write_text(json.dumps(_YEARLY))
    for kind, count in (("folder", FOLDER_WATCHERS), ("schedule", SCHEDULES)):
        for index in range(count):
            name = f"{kind}_{index:02d}"
            (plugins_dir / name).mkdir(exist_ok=True)
            shutil.copyfile(
                REPO_ROOT / "plugins" / kind / "watcher.py", plugins_dir / name / "watcher.py"
            )
            prefix = f"PLUGIN_{name.upper()}_"
            if kind == "folder":
                environ[prefix + "PATH"] = str(workdir / "inboxes" / name)
            else:
                environ[prefix + "FILE"] = str(schedule)
    return plugins_dir


def _wait_running(base_url: str, plugins: int) -> None:
    deadline = time.monotonic() + _RUNNING_TIMEOUT
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(base_url + "/plugins", timeout=5.0) as response:
            listed = json.load(response)["plugins"]
        states = {plugin["name"]: plugin["state"] for plugin in listed}
        if sum(state == "running" for state in states.values()) == plugins:
            return
        time.sleep(_POLL_INTERVAL)
    raise BenchError(
        f"the idle tower did not run its {plugins} plugins within {_RUNNING_TIMEOUT:g} s: {states}"
    )


def _measure(
    vhost: Vhost, *, plugins: int, seconds: float, workdir: Path, report: Callable[[str], None]
) -> IdleRun:
    exchange = f"bench.idle.{uuid.uuid4().hex[:8]}"
    port = pick_port()
    environ = tower_environ(vhost.url, exchange, port, workdir)
    if plugins:
        environ["TOWER_PLUGINS_DIR"] = str(_idle_plugins(workdir, environ))
    with run_tower(
        port=port, environ=environ, log_path=workdir / f"{exchange}.log", report=report
    ) as server:
        _wait_running(server.base_url, plugins)
        time.sleep(SETTLE)
        ticks_before, sched_before = process_cpu_seconds(server.pid), _sched_cpu(server.pid)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        ticks_after, sched_after = process_cpu_seconds(server.pid), _sched_cpu(server.pid)
    common = sched_before.keys() & sched_after.keys()
    fine = sum(sched_after[task] - sched_before[task] for task in common) / 1e9 if common else None
    return IdleRun(
        plugins=plugins,
        seconds=elapsed,
        cpu_seconds=ticks_after - ticks_before,
        cpu_seconds_fine=fine,
    )


def run_idle_bench(
    vhost: Vhost, *, seconds: float, workdir: Path, report: Callable[[str], None]
) -> IdleResult:
    if not Path("/proc/self/stat").exists():
        raise BenchError("the idle CPU benchmark reads /proc, which this system does not have")
    runs = []
    for plugins in (0, IDLE_PLUGINS):
        run = _measure(vhost, plugins=plugins, seconds=seconds, workdir=workdir, report=report)
        report(
            f"  {plugins:>2} plugins: {run.cpu_seconds:.2f} s CPU in {run.seconds:.1f} s"
            f"{run.fine_text}"
        )
        runs.append(run)
    return IdleResult(tuple(runs))
