"""Idle CPU: what ``tower-trio run`` costs while nothing happens.

The figure is user + system time from ``/proc/<pid>/stat`` (every thread,
including ones that ended), in clock ticks. The per-thread scheduler
statistics give a finer figure, in nanoseconds, for the threads alive at
both ends of the window.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._common import BenchError, process_cpu_seconds
from ._servers import pick_port, run_server, tower_command, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._broker import Vhost

__all__ = ["IdleResult", "run_idle_bench"]


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
        ticks_before, sched_before = process_cpu_seconds(server.pid), _sched_cpu(server.pid)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        ticks_after, sched_after = process_cpu_seconds(server.pid), _sched_cpu(server.pid)
    common = sched_before.keys() & sched_after.keys()
    fine = sum(sched_after[task] - sched_before[task] for task in common) / 1e9 if common else None
    return IdleResult(
        seconds=elapsed, cpu_seconds=ticks_after - ticks_before, cpu_seconds_fine=fine
    )
