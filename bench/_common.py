"""Small pieces every benchmark uses."""

from __future__ import annotations

import os
import resource
import socket
import statistics
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "BenchError",
    "free_port",
    "median",
    "own_cpu_seconds",
    "process_cpu_seconds",
    "ratio",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """The benchmark could not run; the message says what to fix."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now.

    The servers under test run in subprocesses that read their port from
    the environment, so the port has to be picked here; another process
    grabbing it in between is unlikely on a benchmark machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


_UTIME_INDEX = 11
"""Index of utime among the fields after ``(comm)``: field 14 of proc_pid_stat(5)."""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, every thread included (clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # comm may hold spaces and parentheses; the fields start after the last ')'.
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[_UTIME_INDEX]) + int(fields[_UTIME_INDEX + 1])
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU time of this process, worker threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
