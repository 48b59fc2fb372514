"""Idle CPU: what ``tower-trio run`` costs while nothing happens.

The figure is user + system time from ``/proc/<pid>/stat`` (every thread,
including ones that ended), in clock ticks. The per-thread scheduler
statistics give a finer figure, in nanoseconds, for the threads alive at
both ends of the window.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._common import BenchError
from ._servers import pick_port, run_server, tower_command, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._broker import Vhost

__all__ = ["IdleResult", "run_idle_bench"]

_UTIME_INDEX = 11
"""Index of utime among the fields after ``(comm)``: field 14 of proc_pid_stat(5)."""


@attrs.frozen
class IdleResult:
    seconds: float
    """How long the tower sat idle while measured."""
    cpu_seconds: float
    """User + system CPU time over that window, at clock-tick resolution."""
    cpu_seconds_fine: float | None
    """The same from the scheduler's nanosecond counters; None where unavailable."""

    def budget(self, per_ten_seconds: float) -> float:
        return per_ten_seconds * self.seconds / 10


def _ticks_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # comm may hold spaces and parentheses; the fields start after the last ')'.
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[_UTIME_INDEX]) + int(fields[_UTIME_INDEX + 1])
    return ticks / os.sysconf("SC_CLK_TCK")


def _sched_cpu(pid: int) -> dict[str, int]:
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[task.name] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return times


def run_idle_bench(
    vhost: Vhost, *, seconds: float, workdir: Path, report: Callable[[str], None]
) -> IdleResult:
    if not Path("/proc/self/stat").exists():
        raise BenchError("the idle CPU benchmark reads /proc, which this system does not have")
    exchange = f"bench.idle.{uuid.uuid4().hex[:8]}"
    port = pick_port()
    with run_server(
        "tower-trio",
        tower_command(),
        port=port,
        ready_path="/readyz",
        log_path=workdir / f"{exchange}.log",
        environ=tower_environ(vhost.url, exchange, port, workdir),
        report=report,
    ) as server:
        ticks_before, sched_before = _ticks_cpu(server.pid), _sched_cpu(server.pid)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        ticks_after, sched_after = _ticks_cpu(server.pid), _sched_cpu(server.pid)
    common = sched_before.keys() & sched_after.keys()
    fine = sum(sched_after[task] - sched_before[task] for task in common) / 1e9 if common else None
    return IdleResult(
        seconds=elapsed, cpu_seconds=ticks_after - ticks_before, cpu_seconds_fine=fine
    )
