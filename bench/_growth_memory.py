"""The tower's resident memory against open idle connections and triggers pending.

Idle connections: a ``tower-trio run`` with ``TOWER_HTTP_MAX_CONNECTIONS``
and the keep-alive and read timeouts raised so that nothing is closed while
measured; clients open keep-alive connections, each sends one
``GET /healthz`` and then stays open and silent. RSS is read after each
step, with the connections of the steps before still open.

Pending: a ``tower-trio run`` whose ``TOWER_AMQP_URL`` names a port nothing
listens on, so that every trigger it accepts stays pending; triggers are
posted until the tower's own ``tower_journal_pending`` gauge passes each
step, and RSS is read there. The documented bound is
``TOWER_CACHE_MAX_BYTES``: bodies kept in memory to publish without reading
the journal back; the rest wait in the journal on disk only.
"""

from __future__ import annotations

import http.client
import resource
import uuid
from typing import TYPE_CHECKING

from ._common import BenchError
from ._growth import LAB_PLUGINS, Curve, Series, post_body, resident_bytes, size_text
from ._load import run_load
from ._servers import HOST, pick_port, run_tower, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from ._broker import Vhost
    from ._servers import RunningServer

__all__ = ["run_idle_connections", "run_pending"]

_MIB = 1 << 20
_WARMUP_REQUESTS = 200
_SLICE = 1.0
"""Seconds of load between two reads of the pending gauge."""
_POSTERS = 8


def _port(server: RunningServer) -> int:
    return int(server.base_url.rpartition(":")[2])


def _request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def _raise_file_limit(needed: int) -> None:
    """Raise this process's (and so the tower's) open-file limit to ``needed`` if it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{needed} open files are needed, and the hard limit is {hard}; raise it "
            "(ulimit -Hn) or measure fewer connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def run_idle_connections(
    vhost: Vhost,
    *,
    steps: Sequence[int],
    workdir: Path,
    report: Callable[[str], None],
) -> Curve:
    most = max(steps)
    _raise_file_limit(2 * most + 256)
    exchange = f"bench.growth.idle.{uuid.uuid4().hex[:8]}"
    port = pick_port()
    environ = tower_environ(vhost.url, exchange, port, workdir)
    environ.update(
        TOWER_HTTP_MAX_CONNECTIONS=str(most + 100),
        TOWER_HTTP_KEEP_ALIVE_TIMEOUT="600",
        TOWER_HTTP_READ_TIMEOUT="600",
    )
    rss: list[float] = []
    with run_tower(
        port=port, environ=environ, log_path=workdir / f"{exchange}.log", report=report
    ) as server:
        warm = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            for _ in range(_WARMUP_REQUESTS):
                _request(warm, "GET", "/healthz")
        finally:
            warm.close()
        baseline = resident_bytes(server.pid)
        report(f"  no idle connection: RSS {baseline / _MIB:.1f} MiB")
        idle: list[http.client.HTTPConnection] = []
        try:
            for step in steps:
                while len(idle) < step:
                    connection = http.client.HTTPConnection(HOST, port, timeout=30)
                    idle.append(connection)
                    status, _ = _request(connection, "GET", "/healthz")
                    if status != 200:
                        raise BenchError(f"GET /healthz on connection {len(idle)}: {status}")
                # One more answer on the first: every connection before it is served.
                _request(idle[0], "GET", "/healthz")
                rss.append(resident_bytes(server.pid) / _MIB)
                per = (rss[-1] * _MIB - baseline) / step / 1024
                report(f"  {step:>5} idle connections: RSS {rss[-1]:.1f} MiB ({per:.1f} KiB each)")
        finally:
            for connection in idle:
                connection.close()
    per_connection = (rss[-1] * _MIB - baseline) / steps[-1] / 1024
    return Curve(
        key="rss-idle-connections",
        title="Tower RSS against open idle HTTP connections",
        x_label="open idle keep-alive connections",
        xs=tuple(float(s) for s in steps),
        x_texts=tuple(f"{s:,}" for s in steps),
        series=(
            Series("RSS MiB", tuple(rss), ".1f"),
            Series("above baseline MiB", tuple(r - baseline / _MIB for r in rss), ".1f"),
        ),
        panels=((1,),),
        cost=1,
        log_y=False,
        method=(
            "`tower-trio run` with `TOWER_HTTP_MAX_CONNECTIONS` above the largest step and "
            "`TOWER_HTTP_KEEP_ALIVE_TIMEOUT` and `TOWER_HTTP_READ_TIMEOUT` at 600 s, so that "
            f"nothing is closed while measured; after {_WARMUP_REQUESTS} warm-up requests its "
            f"RSS was {baseline / _MIB:.1f} MiB (the baseline). Clients then open keep-alive "
            "connections that each send one `GET /healthz` and stay open and silent; RSS "
            "(VmRSS) is read after each step with the earlier connections still open. The "
            "cost judged is RSS above the baseline."
        ),
        reading=(
            f"About {per_connection:.0f} KiB per idle connection (each is a task with its "
            "HTTP state and buffers). The tower caps them at `TOWER_HTTP_MAX_CONNECTIONS` "
            "(1,000 by default), which bounds this memory; further clients wait in the "
            f"kernel's backlog. At lab scale the plugins ({LAB_PLUGINS}) run inside the "
            "tower and hold no connection; device services and dashboards hold a few dozen."
        ),
    )


def _pending_gauge(connection: http.client.HTTPConnection) -> int:
    status, data = _request(connection, "GET", "/metrics")
    if status != 200:
        raise BenchError(f"GET /metrics answered {status}")
    for line in data.decode().splitlines():
        if line.startswith("tower_journal_pending "):
            return round(float(line.split()[1]))
    raise BenchError("GET /metrics has no tower_journal_pending")


def run_pending(
    *,
    steps: Sequence[int],
    body_size: int,
    cache_bytes: int,
    workdir: Path,
    report: Callable[[str], None],
) -> Curve:
    body = post_body(body_size)
    exchange = f"bench.growth.pending.{uuid.uuid4().hex[:8]}"
    port = pick_port()
    closed = pick_port()
    environ = tower_environ(f"amqp://guest:guest@{HOST}:{closed}/%2F", exchange, port, workdir)
    environ.update(TOWER_CACHE_MAX_BYTES=str(cache_bytes), TOWER_SHUTDOWN_GRACE="1")
    pending: list[float] = []
    rss: list[float] = []
    with run_tower(
        port=port,
        environ=environ,
        log_path=workdir / f"{exchange}.log",
        report=report,
        ready_path="/healthz",
    ) as server:
        control = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            # Warm the POST path, refused triggers first (nothing stored), then
            # stored ones: the baseline holds the code paths and the journal's
            # caches, and growth is counted from the triggers pending there.
            for _ in range(_WARMUP_REQUESTS):
                status, _ = _request(control, "POST", "/triggers", b'{"apiVersion": "x"}')
                if status != 422:
                    raise BenchError(f"an invalid trigger was answered {status}, not 422")
            for _ in range(_WARMUP_REQUESTS):
                status, _ = _request(control, "POST", "/triggers", body)
                if status != 202:
                    raise BenchError(f"a trigger was answered {status}, not 202")
            origin = float(_pending_gauge(control))
            baseline = resident_bytes(server.pid)
            report(f"  {origin:,.0f} pending after the warm-up: RSS {baseline / _MIB:.1f} MiB")
            url = server.base_url + "/triggers"
            count = 0
            for step in steps:
                while count < step:
                    load = run_load(url, body, connections=_POSTERS, duration=_SLICE)
                    if load.not_accepted:
                        raise BenchError(
                            f"with the broker away, {load.not_accepted} POSTs were not "
                            f"accepted (statuses {load.statuses})"
                        )
                    count = _pending_gauge(control)
                pending.append(float(count))
                rss.append(resident_bytes(server.pid) / _MIB)
                report(
                    f"  {count:>6,} pending ({size_text(count * body_size)} of bodies): "
                    f"RSS {rss[-1]:.1f} MiB"
                )
        finally:
            control.close()
    bound = cache_bytes / body_size
    below = [(p, r) for p, r in zip(pending, rss, strict=True) if p <= bound]
    above = [(p, r) for p, r in zip(pending, rss, strict=True) if p > bound]
    per_below = (below[-1][1] * _MIB - baseline) / (below[-1][0] - origin) if below else 0.0
    per_above = (
        (above[-1][1] - below[-1][1]) * _MIB / (above[-1][0] - below[-1][0])
        if above and below
        else 0.0
    )
    return Curve(
        key="rss-pending",
        title="Tower RSS against triggers pending while the broker is away",
        x_label=f"triggers pending ({size_text(body_size)} bodies)",
        xs=tuple(pending),
        x_texts=tuple(f"{int(p):,}" for p in pending),
        series=(
            Series("RSS MiB", tuple(rss), ".1f"),
            Series("above baseline MiB", tuple(r - baseline / _MIB for r in rss), ".1f"),
            Series(
                "their bodies MiB",
                tuple((p - origin) * body_size / _MIB for p in pending),
                ".1f",
            ),
        ),
        panels=((1, 2),),
        cost=1,
        origin=origin,
        log_x=False,
        log_y=False,
        bound=bound,
        bound_label=f"`TOWER_CACHE_MAX_BYTES` ({size_text(cache_bytes)})",
        method=(
            "`tower-trio run` with `TOWER_AMQP_URL` naming a port nothing listens on, so that "
            f"everything it accepts stays pending, and `TOWER_CACHE_MAX_BYTES={cache_bytes}` "
            f"(the default). {_POSTERS} connections post {size_text(body_size)} triggers in "
            f"slices of {_SLICE:g} s; after each slice the tower's own `tower_journal_pending` "
            "gauge is read, and RSS (VmRSS) once it passes a step. The baseline is RSS after "
            f"{_WARMUP_REQUESTS} refused POSTs (422, nothing stored) and {_WARMUP_REQUESTS} "
            f"accepted ones: {baseline / _MIB:.1f} MiB with {origin:,.0f} pending. The cost "
            "judged is RSS above it, against the triggers pending beyond those."
        ),
        reading=(
            f"Below the bound, about {per_below / 1024:.1f} KiB per pending trigger (its "
            f"{size_text(body_size)} body kept to publish without reading the journal back, "
            "and its record); past it, "
            f"{per_above:.0f} bytes per trigger: the rest wait in the journal on disk only, "
            "so a long outage costs disk, not memory. At lab scale a whole day's triggers "
            f"({size_text(10_000 * body_size)} at this size) would fit under the default bound."
        ),
    )
