"""``POST /triggers`` under load: ``tower-trio run`` against the FastAPI peer.

Each server runs in its own subprocess against its own exchange, with a
durable queue bound to it so that every accepted trigger is routable and
stored. After a short warm-up (discarded, then the queue purged) the load
runs for the measured period; once the server has been stopped, and so has
drained, the queue depth is read: it must be at least the number of 202s.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

import attrs

from ._broker import declare_bound_queue, purge_queue
from ._common import median, ratio
from ._load import LoadResult, run_load
from ._servers import peer_command, pick_port, run_server, tower_command, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ._broker import Vhost

__all__ = ["HttpResult", "HttpSide", "request_body", "run_http_bench"]

TOWER = "tower-trio"
PEER = "FastAPI peer"

_SETTLE = 0.5
"""Seconds for requests cut off by the end of the warm-up to finish publishing."""


@attrs.frozen
class HttpSide:
    name: str
    load: LoadResult
    stored: int
    """Messages in the side's queue after the measured run and the server's drain."""


@attrs.frozen
class HttpResult:
    connections: int
    duration: float
    tower_runs: tuple[HttpSide, ...]
    peer_runs: tuple[HttpSide, ...]

    @property
    def tower(self) -> HttpSide:
        return _median_run(self.tower_runs)

    @property
    def peer(self) -> HttpSide:
        return _median_run(self.peer_runs)

    @property
    def ratio(self) -> float:
        return ratio(self.tower.load.rate, self.peer.load.rate)


def _median_run(runs: tuple[HttpSide, ...]) -> HttpSide:
    rates = [run.load.rate for run in runs]
    middle = median(rates)
    return min(runs, key=lambda run: abs(run.load.rate - middle))


def request_body() -> bytes:
    return json.dumps(
        {
            "apiVersion": "OT-2/v1alpha1",
            "protocol": "PlateTransfer",
            "spec": {"source": "A1", "destination": "B2", "volume": 100},
            "metadata": {"spec": {"operator": "bench"}},
        },
        separators=(",", ":"),
    ).encode()


def run_http_bench(
    vhost: Vhost,
    *,
    connections: int,
    duration: float,
    warmup: float,
    rounds: int,
    workdir: Path,
    report: Callable[[str], None],
) -> HttpResult:
    plugins_dir = workdir / "no-plugins"
    plugins_dir.mkdir(exist_ok=True)
    body = request_body()
    runs: dict[str, list[HttpSide]] = {TOWER: [], PEER: []}
    for round_index in range(rounds):
        order = (TOWER, PEER) if round_index % 2 == 0 else (PEER, TOWER)
        for name in order:
            exchange = f"bench.http.{'tower' if name == TOWER else 'peer'}.{uuid.uuid4().hex[:8]}"
            declare_bound_queue(vhost.url, exchange, exchange)
            port = pick_port()
            if name == TOWER:
                command = tower_command()
                environ = tower_environ(vhost.url, exchange, port, plugins_dir)
                ready_path = "/readyz"
            else:
                command = peer_command(vhost.url, exchange, port)
                environ = None
                ready_path = "/healthz"
            log_path = workdir / f"{exchange}.log"
            with run_server(
                name,
                command,
                port=port,
                ready_path=ready_path,
                log_path=log_path,
                environ=environ,
            ) as server:
                url = f"{server.base_url}/triggers"
                run_load(url, body, connections=connections, duration=warmup)
                time.sleep(_SETTLE)
                purge_queue(vhost.url, exchange)
                load = run_load(url, body, connections=connections, duration=duration)
            stored = purge_queue(vhost.url, exchange)
            side = HttpSide(name, load, stored)
            runs[name].append(side)
            report(_describe(side))
    return HttpResult(
        connections=connections,
        duration=duration,
        tower_runs=tuple(runs[TOWER]),
        peer_runs=tuple(runs[PEER]),
    )


def _describe(side: HttpSide) -> str:
    load = side.load
    line = (
        f"  {side.name:<13} {load.rate:>8,.0f} req/s  p50 {load.p50 * 1e3:6.1f} ms  "
        f"p99 {load.p99 * 1e3:6.1f} ms  202s {load.accepted}  not 202 {load.not_accepted}  "
        f"stored {side.stored}"
    )
    if side.stored < load.accepted:
        line += "  (fewer stored than accepted!)"
    return line
