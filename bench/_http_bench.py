"""``POST /triggers`` under load: ``tower-trio run`` against the FastAPI peer.

The tower is measured twice: as clients get it by default (202 once the
trigger is in its journal on disk) and with ``?wait=published`` (202 once
the broker has confirmed it), which is what the peer does for every
request. Each run gets a server of its own in a subprocess, with its own
exchange and a durable queue bound to it, so that every accepted trigger is
routable and stored. After a short warm-up (discarded, then the queue
purged) the load runs for the measured period; once the server has been
stopped, and so has drained, the queue depth is read: it should be at least
the number of 202s.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
import uuid
from typing import TYPE_CHECKING, Literal

import attrs

from ._broker import declare_bound_queue, purge_queue
from ._common import REPO_ROOT, BenchError, median, process_cpu_seconds, ratio
from ._load import LoadResult, run_load
from ._servers import peer_command, pick_port, run_server, tower_command, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ._broker import Vhost

__all__ = [
    "CEILING",
    "CONTENDERS",
    "Contender",
    "HttpResult",
    "HttpRun",
    "request_body",
    "run_http_bench",
]

_SETTLE = 0.5
"""Seconds for requests cut off by the end of the warm-up to finish publishing."""


@attrs.frozen
class Contender:
    name: str
    kind: Literal["tower", "peer", "ceiling", "baseline"]
    path: str
    answers_when: str
    publishes: bool = True


TOWER = Contender("tower-trio", "tower", "/triggers", "journaled (the default)")
TOWER_PUBLISHED = Contender(
    "tower-trio ?wait=published", "tower", "/triggers?wait=published", "confirmed by the broker"
)
PEER = Contender("FastAPI peer", "peer", "/triggers", "confirmed by the broker")
CEILING = Contender(
    "bare ASGI on Hypercorn",
    "ceiling",
    "/triggers",
    "JSON decoded (nothing stored or published)",
    publishes=False,
)
NO_JOURNAL = Contender(
    "tower-trio before the journal",
    "baseline",
    "/triggers",
    "confirmed by the broker (the core service, no journal)",
)
CONTENDERS = (TOWER, TOWER_PUBLISHED, NO_JOURNAL, PEER, CEILING)

NO_JOURNAL_REVISION = "3d81e2e8139450d1791d4348288af45d97718e38"
"""The last commit of the core service before the journal: its ingest path is
the baseline the journaled one is held to (>= 0.9x)."""


def _checkout_no_journal(workdir: Path) -> Path:
    """That revision's ``tower_trio`` package, extracted from git into ``workdir``."""
    target = workdir / "no-journal"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", NO_JOURNAL_REVISION, "tower_trio"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(
            "cannot extract the pre-journal tower from git (the HTTP bench runs from a "
            f"checkout): {archive.stderr.decode(errors='replace').strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


@attrs.frozen
class HttpRun:
    contender: Contender
    load: LoadResult
    stored: int
    """Messages in the queue after the measured run and the server's drain."""
    cpu_seconds: float
    """The server process's CPU time during the measured run."""

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_seconds / self.load.requests if self.load.requests else 0.0


@attrs.frozen
class HttpResult:
    connections: int
    duration: float
    runs: tuple[HttpRun, ...]

    def median_run(self, contender: Contender) -> HttpRun:
        runs = [run for run in self.runs if run.contender == contender]
        middle = median([run.load.rate for run in runs])
        return min(runs, key=lambda run: abs(run.load.rate - middle))

    def ratio(self, contender: Contender) -> float:
        """``contender``'s req/s over the peer's."""
        return ratio(self.median_run(contender).load.rate, self.median_run(PEER).load.rate)

    def spread(self, contender: Contender) -> tuple[float, float]:
        """The lowest and highest req/s of ``contender``'s runs."""
        rates = [run.load.rate for run in self.runs if run.contender == contender]
        return min(rates), max(rates)

    @property
    def rounds(self) -> int:
        return sum(run.contender == PEER for run in self.runs)


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
    peer_plain: bool,
    workdir: Path,
    report: Callable[[str], None],
) -> HttpResult:
    body = request_body()
    no_journal_source = _checkout_no_journal(workdir)
    runs: list[HttpRun] = []
    for round_index in range(rounds):
        # Alternating the order keeps a drift of the machine from favouring one side.
        order = CONTENDERS if round_index % 2 == 0 else CONTENDERS[::-1]
        for contender in order:
            exchange = f"bench.http.{contender.kind}.{uuid.uuid4().hex[:8]}"
            declare_bound_queue(vhost.url, exchange, exchange)
            port = pick_port()
            if contender.kind == "tower":
                command = tower_command()
                environ = tower_environ(vhost.url, exchange, port, workdir)
                ready_path = "/readyz"
            elif contender.kind == "baseline":
                # -P: ``-m`` would put the working directory (this checkout)
                # ahead of PYTHONPATH, and run today's tower in its place.
                command = [sys.executable, "-P", "-m", "tower_trio", "run"]
                environ = tower_environ(vhost.url, exchange, port, workdir)
                environ["PYTHONPATH"] = str(no_journal_source)
                ready_path = "/readyz"
            elif contender.kind == "peer":
                command = peer_command(vhost.url, exchange, port, plain=peer_plain)
                environ = None
                ready_path = "/healthz"
            else:
                command = [sys.executable, "-m", "bench._bare_hypercorn", "--port", str(port)]
                environ = None
                ready_path = "/healthz"
            with run_server(
                contender.name,
                command,
                port=port,
                ready_path=ready_path,
                log_path=workdir / f"{exchange}.log",
                environ=environ,
                report=report,
            ) as server:
                url = server.base_url + contender.path
                run_load(url, body, connections=connections, duration=warmup)
                time.sleep(_SETTLE)
                purge_queue(vhost.url, exchange)
                cpu_before = process_cpu_seconds(server.pid)
                load = run_load(url, body, connections=connections, duration=duration)
                cpu_seconds = process_cpu_seconds(server.pid) - cpu_before
            stored = purge_queue(vhost.url, exchange)
            run = HttpRun(contender, load, stored, cpu_seconds)
            runs.append(run)
            report(describe_run(run))
    return HttpResult(connections=connections, duration=duration, runs=tuple(runs))


def describe_run(run: HttpRun) -> str:
    load = run.load
    line = (
        f"  {run.contender.name:<27} {load.rate:>7,.0f} req/s  p50 {load.p50 * 1e3:6.1f} ms  "
        f"p99 {load.p99 * 1e3:6.1f} ms  CPU {run.cpu_per_request * 1e3:.2f} ms/req  "
        f"202s {load.accepted}  not 202 {load.not_accepted}  stored {run.stored}"
    )
    if run.contender.publishes and run.stored < load.accepted:
        line += "  (fewer stored than accepted!)"
    return line
