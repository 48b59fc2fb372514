"""Ingest on PostgreSQL against SQLite, and three towers against one.

Three set-ups take turns, round after round, each against a fresh exchange
and a fresh journal: one tower on its SQLite journal (the default), one
tower on PostgreSQL, and three towers sharing one PostgreSQL schema with the
load split evenly over them (a load generator per tower, run at once). On
two cores the three towers, PostgreSQL, RabbitMQ and the load generators all
share the same CPUs: the three-tower figure says what replicas cost on one
machine, not what they gain on three.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING

import attrs

from ._broker import declare_bound_queue, purge_queue
from ._common import BenchError, median, process_cpu_seconds, ratio
from ._http_bench import request_body
from ._load import LoadResult, run_load
from ._servers import RunningServer, pick_port, run_tower, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from ._broker import Vhost

__all__ = [
    "POSTGRES_URL",
    "SETUPS",
    "ReplicasResult",
    "ReplicasRun",
    "Setup",
    "run_replicas_bench",
]

POSTGRES_URL = os.environ.get(
    "TOWER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The database the PostgreSQL set-ups use; each run has a schema of its own, dropped after."""

_SETTLE = 1.0


@attrs.frozen
class Setup:
    name: str
    towers: int
    postgres: bool


SQLITE = Setup("1 tower, SQLite journal", 1, postgres=False)
POSTGRES = Setup("1 tower, PostgreSQL journal", 1, postgres=True)
THREE = Setup("3 towers, one PostgreSQL journal", 3, postgres=True)
SETUPS = (SQLITE, POSTGRES, THREE)


@attrs.frozen
class ReplicasRun:
    setup: Setup
    accepted: int
    """202 answers from all towers together."""
    seconds: float
    cpu_seconds: float
    """The towers' own CPU, all of them together (PostgreSQL's is not counted)."""
    p99: float
    """The worst of the towers' p99 latencies."""
    stored: int
    """Messages on the bound queue once the towers have drained."""

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_seconds / self.accepted if self.accepted else 0.0


@attrs.frozen
class ReplicasResult:
    connections: int
    duration: float
    runs: tuple[ReplicasRun, ...]

    def median_rate(self, setup: Setup) -> float:
        return median([run.rate for run in self.runs if run.setup == setup])

    def median_run(self, setup: Setup) -> ReplicasRun:
        ordered = sorted((run for run in self.runs if run.setup == setup), key=lambda r: r.rate)
        return ordered[len(ordered) // 2]

    @property
    def postgres_ratio(self) -> float:
        """One tower's req/s on PostgreSQL over on SQLite."""
        return ratio(self.median_rate(POSTGRES), self.median_rate(SQLITE))

    @property
    def replicas_ratio(self) -> float:
        """Three towers' req/s together over one tower's, both on PostgreSQL."""
        return ratio(self.median_rate(THREE), self.median_rate(POSTGRES))


def run_replicas_bench(
    vhost: Vhost,
    *,
    connections: int,
    duration: float,
    warmup: float,
    rounds: int,
    workdir: Path,
    report: Callable[[str], None],
) -> ReplicasResult:
    runs: list[ReplicasRun] = []
    for round_index in range(rounds):
        order = SETUPS if round_index % 2 == 0 else SETUPS[::-1]
        for setup in order:
            run = _run_setup(
                vhost,
                setup,
                connections=connections,
                duration=duration,
                warmup=warmup,
                workdir=workdir,
                report=report,
            )
            runs.append(run)
            report(describe_run(run))
    return ReplicasResult(connections=connections, duration=duration, runs=tuple(runs))


def describe_run(run: ReplicasRun) -> str:
    line = (
        f"  {run.setup.name:<33} {run.rate:>7,.0f} req/s  p99 {run.p99 * 1e3:6.1f} ms  "
        f"CPU {run.cpu_per_request * 1e3:.2f} ms/req  202s {run.accepted}  stored {run.stored}"
    )
    if run.stored < run.accepted:
        line += "  (fewer stored than accepted!)"
    return line


def _run_setup(
    vhost: Vhost,
    setup: Setup,
    *,
    connections: int,
    duration: float,
    warmup: float,
    workdir: Path,
    report: Callable[[str], None],
) -> ReplicasRun:
    tag = uuid.uuid4().hex[:8]
    exchange = f"bench.replicas.{tag}"
    declare_bound_queue(vhost.url, exchange, exchange)
    body = request_body()
    each = max(1, connections // setup.towers)
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(_postgres_schema(tag)) if setup.postgres else None
        servers: list[RunningServer] = []
        for index in range(setup.towers):
            port = pick_port()
            environ = tower_environ(vhost.url, exchange, port, workdir)
            environ["TOWER_INSTANCE"] = f"bench-{tag}-{index}"
            if journal is not None:
                environ["TOWER_JOURNAL_URL"] = journal
            servers.append(
                stack.enter_context(
                    run_tower(
                        port=port,
                        environ=environ,
                        log_path=workdir / f"{exchange}-{index}.log",
                        report=report,
                    )
                )
            )
        urls = [server.base_url + "/triggers" for server in servers]
        _load_all(urls, body, connections=each, duration=warmup)
        time.sleep(_SETTLE)
        purge_queue(vhost.url, exchange)
        cpu_before = sum(process_cpu_seconds(server.pid) for server in servers)
        loads = _load_all(urls, body, connections=each, duration=duration)
        cpu_seconds = sum(process_cpu_seconds(server.pid) for server in servers) - cpu_before
        time.sleep(_SETTLE)
    stored = purge_queue(vhost.url, exchange)
    return ReplicasRun(
        setup,
        accepted=sum(load.accepted for load in loads),
        seconds=max(load.duration for load in loads),
        cpu_seconds=cpu_seconds,
        p99=max(load.p99 for load in loads),
        stored=stored,
    )


def _load_all(
    urls: list[str], body: bytes, *, connections: int, duration: float
) -> list[LoadResult]:
    """Load every URL at once, one generator each; their results in the order of ``urls``."""
    results: list[LoadResult | BaseException | None] = [None] * len(urls)

    def load(index: int) -> None:
        try:
            results[index] = run_load(urls[index], body, connections=connections, duration=duration)
        except BaseException as err:  # re-raised in the caller's thread below
            results[index] = err

    threads = [threading.Thread(target=load, args=(index,)) for index in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loads: list[LoadResult] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        if result is None:
            raise BenchError("a load generator returned nothing")
        loads.append(result)
    return loads


@contextlib.contextmanager
def _postgres_schema(tag: str) -> Iterator[str]:
    """The journal URL of a schema of its own, dropped (with its tables) on the way out."""
    # Imported here: psycopg is an optional dependency of the tower.
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    name = f"bench_{tag}"
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}schema={name}"
    finally:
        try:
            with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10) as db:
                db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        except psycopg.Error as err:
            raise BenchError(f"could not drop the bench's schema {name}: {err}") from err


def replicas_section(result: ReplicasResult) -> list[str]:
    """The ``## Replicas`` section of docs/benchmarks.md."""
    lines = [
        "",
        "## Replicas",
        "",
        f"`POST /triggers` from {result.connections} keep-alive connections for "
        f"{result.duration:g} s (the median of the runs of each set-up, which take turns), "
        "each request a valid trigger, journaled and published: one tower on its SQLite "
        "journal (the default), one tower on PostgreSQL, and three towers sharing one "
        "PostgreSQL schema (see [replicas](replicas.md)) with the connections split evenly "
        "over them, a load generator each. CPU is the towers' own, all of them together; "
        "PostgreSQL's and RabbitMQ's are not counted. Everything shares the machine's "
        "cores: three towers on one machine show what replicas cost, not what they gain "
        "on three machines.",
        "",
        "| Set-up | req/s | req/s each run | p99 ms (worst tower) | CPU ms/req | 202s | stored |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for setup in SETUPS:
        run = result.median_run(setup)
        each = ", ".join(f"{r.rate:,.0f}" for r in result.runs if r.setup == setup)
        lines.append(
            f"| {setup.name} | {run.rate:,.0f} | {each} | {run.p99 * 1e3:.1f} | "
            f"{run.cpu_per_request * 1e3:.2f} | {run.accepted:,} | {run.stored:,} |"
        )
    lines.extend(
        [
            "",
            f"- PostgreSQL / SQLite, one tower: **{result.postgres_ratio:.2f}x** req/s",
            f"- three towers / one, on PostgreSQL: **{result.replicas_ratio:.2f}x** req/s",
        ]
    )
    return lines
