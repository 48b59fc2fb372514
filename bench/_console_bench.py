"""``POST /triggers`` with a console streaming against without, on one tower.

Separate server processes differ from each other by more than the 5% this
part has to judge (the same configuration ranges over ±10-15% from one run
to the next on a shared machine), so one ``tower-trio run`` serves every
window. After a warm-up, the load runs in pairs of windows: one with a
console streaming the live feed (a reader process that reads every event,
``bench/_console_stream.py``) and one without, the order alternating pair by
pair so that a drift of the machine or of the tower (its journal grows all
along) falls on both sides alike. Each pair gives one ratio; the verdict
takes their median. After each window the tower finishes publishing what it
accepted and the queue is emptied: what it held should be at least the
window's 202s.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import TYPE_CHECKING

import attrs

from ._broker import declare_bound_queue, purge_queue, queue_depth
from ._common import median, process_cpu_seconds, ratio
from ._console_stream import console_stream
from ._http_bench import request_body
from ._load import LoadResult, run_load
from ._servers import pick_port, run_tower, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ._broker import Vhost
    from ._console_stream import ConsoleStream
    from ._servers import RunningServer

__all__ = ["ConsoleResult", "ConsoleWindow", "run_console_bench"]

_DRAIN_POLL = 0.25
"""Seconds between two reads of the queue depth while the tower finishes publishing."""
_DRAIN_TIMEOUT = 30.0


@attrs.frozen
class ConsoleWindow:
    pair: int
    """1 for the first pair; 0 for the warm-up, which is not kept."""
    streaming: bool
    """A console had the live feed open and read every event during the window."""
    first: bool
    """This window came first in its pair."""
    load: LoadResult
    cpu_seconds: float
    """The tower process's CPU time while the load ran."""
    events: int
    """Trigger events the console read (0 without one): two per trigger published."""
    stored: int
    """Messages in the queue once the tower had published what the window accepted."""

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_seconds / self.load.accepted if self.load.accepted else 0.0


@attrs.frozen
class ConsoleResult:
    connections: int
    window: float
    """Seconds of load per window."""
    warmup: float
    windows: tuple[ConsoleWindow, ...]

    @property
    def pairs(self) -> int:
        return len(self.windows) // 2

    def _pairs(self) -> list[tuple[ConsoleWindow, ConsoleWindow]]:
        """Each pair's (streaming, not streaming) windows, in the order they ran."""
        streaming = [window for window in self.windows if window.streaming]
        quiet = [window for window in self.windows if not window.streaming]
        return list(zip(streaming, quiet, strict=True))

    @property
    def pair_ratios(self) -> tuple[float, ...]:
        """Per pair, req/s with the console streaming over req/s without."""
        return tuple(
            ratio(streaming.load.rate, quiet.load.rate) for streaming, quiet in self._pairs()
        )

    @property
    def ratio(self) -> float:
        """The median of the pair ratios: the figure the target is held to."""
        return median(list(self.pair_ratios))

    @property
    def lowest(self) -> float:
        return min(self.pair_ratios)

    @property
    def highest(self) -> float:
        return max(self.pair_ratios)

    @property
    def cpu_ratio(self) -> float:
        """The median over pairs of CPU per request streaming over CPU per request not."""
        return median(
            [
                ratio(streaming.cpu_per_request, quiet.cpu_per_request)
                for streaming, quiet in self._pairs()
            ]
        )

    def median_rate(self, *, streaming: bool) -> float:
        return median([w.load.rate for w in self.windows if w.streaming == streaming])


def run_console_bench(
    vhost: Vhost,
    *,
    connections: int,
    window: float,
    pairs: int,
    warmup: float,
    workdir: Path,
    report: Callable[[str], None],
) -> ConsoleResult:
    exchange = f"bench.console.{uuid.uuid4().hex[:8]}"
    declare_bound_queue(vhost.url, exchange, exchange)
    port = pick_port()
    body = request_body()
    windows: list[ConsoleWindow] = []
    with run_tower(
        port=port,
        environ=tower_environ(vhost.url, exchange, port, workdir),
        log_path=workdir / f"{exchange}.log",
        report=report,
    ) as server:
        # The warm-up streams too, so that no measured window pays for what the
        # tower does on its first feed only.
        _run_window(
            vhost,
            exchange,
            server,
            body,
            pair=0,
            first=True,
            streaming=True,
            connections=connections,
            seconds=warmup,
        )
        for pair in range(1, pairs + 1):
            # A B, B A, A B...: each side goes first in every other pair.
            order = (False, True) if pair % 2 == 1 else (True, False)
            for place, streaming in enumerate(order):
                measured = _run_window(
                    vhost,
                    exchange,
                    server,
                    body,
                    pair=pair,
                    first=place == 0,
                    streaming=streaming,
                    connections=connections,
                    seconds=window,
                )
                windows.append(measured)
                report(describe_window(measured))
    return ConsoleResult(
        connections=connections, window=window, warmup=warmup, windows=tuple(windows)
    )


def _run_window(
    vhost: Vhost,
    exchange: str,
    server: RunningServer,
    body: bytes,
    *,
    pair: int,
    first: bool,
    streaming: bool,
    connections: int,
    seconds: float,
) -> ConsoleWindow:
    """One window of load, with a console streaming or without; then the queue emptied."""
    console: ConsoleStream | None = None
    with contextlib.ExitStack() as stack:
        if streaming:
            console = stack.enter_context(console_stream(server.base_url))
        cpu_before = process_cpu_seconds(server.pid)
        load = run_load(
            server.base_url + "/triggers", body, connections=connections, duration=seconds
        )
        cpu_seconds = process_cpu_seconds(server.pid) - cpu_before
        # The console stays open until every trigger is published, so that it
        # reads each one's published event too, as a browser left open would.
        _wait_published(vhost, exchange, load.accepted)
    return ConsoleWindow(
        pair=pair,
        streaming=streaming,
        first=first,
        load=load,
        cpu_seconds=cpu_seconds,
        events=0 if console is None else console.triggers,
        stored=purge_queue(vhost.url, exchange),
    )


def _wait_published(vhost: Vhost, queue: str, accepted: int) -> None:
    """Wait until ``queue`` holds ``accepted`` messages and has stopped growing.

    The tower answers 202 once a trigger is in its journal and publishes it
    afterwards: emptying the queue any earlier would count the window's last
    triggers in the next one. Requests cut off when the load stopped may add
    a few more, hence the wait for the depth to settle.
    """
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    last = -1
    while time.monotonic() < deadline:
        depth = queue_depth(vhost.url, queue)
        if depth >= accepted and depth == last:
            return
        last = depth
        time.sleep(_DRAIN_POLL)
    # Not reached in time: the window's line and table show stored < 202s.


def describe_window(window: ConsoleWindow) -> str:
    load = window.load
    side = "console streaming" if window.streaming else "no console"
    line = (
        f"  pair {window.pair} {'1st' if window.first else '2nd'}  {side:<17} "
        f"{load.rate:>7,.0f} req/s  p99 {load.p99 * 1e3:6.1f} ms  "
        f"CPU {window.cpu_per_request * 1e3:.2f} ms/req  202s {load.accepted}  "
        f"stored {window.stored}"
    )
    if window.streaming:
        line += f"  console read {window.events:,} trigger events"
    if window.stored < load.accepted:
        line += "  (fewer stored than accepted!)"
    return line
