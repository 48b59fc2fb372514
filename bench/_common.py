"""Small pieces every benchmark uses."""

from __future__ import annotations

import socket
import statistics
from pathlib import Path

__all__ = ["REPO_ROOT", "BenchError", "free_port", "median", "ratio"]

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
