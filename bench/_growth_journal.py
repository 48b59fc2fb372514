"""Lookups, listings and pruning against the journal's size.

The journal is filled with the tower's own ``Journal.append`` in batches of
10,000 (one transaction each, as the ingest stores its batches), each batch
then marked published with ``Journal.settle`` (one ranged UPDATE, as the
broker's multiple-acks are recorded), all before a tower is started on
that data dir. It grows in steps, measured at each: a ``tower-trio run``
on the data dir answers ``GET /triggers/<uuid>`` for uuids drawn from all
the rows, and a listing page filtered by apiVersion, newest first.

The rows' creation times are spread evenly over 70 days, so that at the
largest size a tower started with ``TOWER_RETENTION=7d`` (as after the
setting was lowered from 70 days) finds nine rows in ten to prune. Its
prune starts as the tower starts; a client sends ``POST /triggers`` five
times a second meanwhile, and each answer's latency says whether ingest
waits for the prune. The same prune is also timed alone, in-process, on a
copy of the journal.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import http.client
import itertools
import json
import random
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from tower_trio import Metadata, Trigger
from tower_trio._journal import open_journal
from tower_trio._serialization import dump_trigger
from tower_trio._storage import Accepted, Settlement
from tower_trio._vocabulary import DeliveryStatus

from ._broker import declare_bound_queue, purge_queue
from ._common import BenchError
from ._growth import LAB_ROWS, Curve, Series, nearest, post_body
from ._servers import HOST, pick_port, run_tower, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ._broker import Vhost
    from ._servers import RunningServer

__all__ = ["JournalGrowth", "ProbeSample", "PruneResult", "run_journal_growth"]

BATCH = 10_000
SPAN_DAYS = 70
PRUNE_RETENTION_DAYS = 7
KEEP_ALL = "3650d"
"""TOWER_RETENTION while lookups are measured: nothing is pruned under them."""
COMMON_API = "OT-2/v1alpha1"
RARE_API = "Centrifuge/v1alpha1"
RARE_ROWS = 10
"""Rows of RARE_API, the oldest in the journal: a device that last ran long ago."""
_APIS = (COMMON_API, "TecanSpark/v1alpha1/Spark2", "Hamilton-STAR/v2beta1")
PAGE = 50
_SAMPLE_PER_BATCH = 50
_WARM_LOOKUPS = 30
_LISTING_BUDGET = 10.0
"""Seconds at most for the listings of one filter at one size (at least 3 pages)."""
_PRUNE_TIMEOUT = 600.0
_AFTER_PRUNE = 3.0
"""Seconds the ingest probe goes on after the prune ended."""
PROBE_INTERVAL = 0.2
"""Seconds between two POSTs of the ingest probe, whatever their answers."""
_PROBE_THREADS = 256


@attrs.frozen
class ProbeSample:
    sent: float
    """Seconds from the probe's start (the tower answering /healthz)."""
    latency: float
    status: int


@attrs.frozen
class PruneResult:
    rows: int
    retention_days: int
    file_bytes: int
    """The journal's size on disk before the prune."""
    file_bytes_after: int
    alone_seconds: float
    alone_deleted: int
    tower_deleted: int
    prune_ended: float
    """When the tower logged the end of its prune, in seconds from the probe's start."""
    samples: tuple[ProbeSample, ...]

    @property
    def during(self) -> list[ProbeSample]:
        return [s for s in self.samples if s.sent < self.prune_ended]

    @property
    def after(self) -> list[ProbeSample]:
        return [s for s in self.samples if s.sent >= self.prune_ended]

    @property
    def longest_wait(self) -> float:
        """The longest a POST sent during the prune waited for its answer."""
        return max((s.latency for s in self.during), default=0.0)

    @property
    def refused_during(self) -> int:
        return sum(s.status != 202 for s in self.during)

    def statuses_during(self) -> dict[int, int]:
        return dict(sorted(collections.Counter(s.status for s in self.during).items()))


@attrs.frozen
class JournalGrowth:
    lookup: Curve
    listing: Curve
    listing_rare: Curve
    prune: PruneResult
    fill_rows_per_second: float


@attrs.define
class _Filler:
    """Writes rows into the journal in ``data_dir`` with the tower's own Journal."""

    data_dir: Path
    planned: int
    rng: random.Random
    rows: int = 0
    seconds: float = 0.0
    sample: list[str] = attrs.field(factory=list)
    origin: float = attrs.field(factory=time.time)

    def created_at(self, index: int) -> float:
        return self.origin - SPAN_DAYS * 86400 * (1 - index / self.planned)

    def fill_to(self, rows: int) -> None:
        started = time.perf_counter()
        journal = open_journal(self.data_dir)
        try:
            while self.rows < rows:
                count = min(BATCH, rows - self.rows)
                triggers = [self._trigger(self.rows + offset) for offset in range(count)]
                results = journal.append([(t, dump_trigger(t), None, None) for t in triggers])
                journal.settle(
                    Settlement(r.outgoing.seq, DeliveryStatus.PUBLISHED, 1, None, at)
                    for r in results
                    if isinstance(r, Accepted)
                    for at in (r.outgoing.created_at + 0.05,)
                )
                picked = self.rng.sample(triggers, min(_SAMPLE_PER_BATCH, count))
                self.sample.extend(trigger.uuid for trigger in picked)
                self.rows += count
        finally:
            journal.close()
        self.seconds += time.perf_counter() - started

    def _trigger(self, index: int) -> Trigger:
        api = RARE_API if index < RARE_ROWS else _APIS[index % len(_APIS)]
        return Trigger(
            api_version=api,
            protocol="PlateTransfer",
            spec={"source": f"A{index % 12 + 1}", "destination": "B2", "volume": 100},
            metadata=Metadata(source="http"),
            created_at=datetime.fromtimestamp(self.created_at(index), UTC),
        )


def run_journal_growth(
    vhost: Vhost,
    *,
    sizes: Sequence[int],
    lookups: int,
    listings: int,
    workdir: Path,
    report: Callable[[str], None],
) -> JournalGrowth:
    data_dir = workdir / "journal-growth"
    filler = _Filler(data_dir, max(sizes), random.Random(13))
    lookup_p50: list[float] = []
    lookup_p99: list[float] = []
    common: list[list[float]] = []
    rare: list[list[float]] = []
    for size in sizes:
        filler.fill_to(size)
        report(
            f"  {filler.rows:,} rows in the journal ({filler.rows / filler.seconds:,.0f} rows/s "
            "written so far)"
        )
        with _tower(
            vhost,
            data_dir,
            retention=KEEP_ALL,
            ready_path="/readyz",
            workdir=workdir,
            report=report,
        ) as (server, _):
            connection = _connect(server)
            try:
                latencies = _lookups(connection, filler.sample, lookups, filler.rng)
                common.append(_listings(connection, COMMON_API, PAGE, listings))
                rare.append(_listings(connection, RARE_API, RARE_ROWS, listings))
            finally:
                connection.close()
        lookup_p50.append(_percentile(latencies, 50) * 1e3)
        lookup_p99.append(_percentile(latencies, 99) * 1e3)
        report(
            f"    lookup p50 {lookup_p50[-1]:.2f} ms p99 {lookup_p99[-1]:.2f} ms; "
            f"listing ({COMMON_API}) median {statistics.median(common[-1]) * 1e3:.2f} ms; "
            f"listing ({RARE_API}, {RARE_ROWS} oldest rows) median "
            f"{statistics.median(rare[-1]) * 1e3:.1f} ms over {len(rare[-1])} pages"
        )
    prune = _prune(vhost, data_dir, filler.rows, workdir, report)
    xs = tuple(float(size) for size in sizes)
    lab_x, lab_p50 = nearest(xs, lookup_p50, LAB_ROWS)
    x_texts = tuple(f"{size:,}" for size in sizes)
    fill = (
        f"The journal is filled with the tower's own `Journal.append`, {BATCH:,} rows a "
        "transaction (as the ingest stores a batch), each batch then marked published with "
        f"`Journal.settle`, at {filler.rows / filler.seconds:,.0f} rows/s, before a "
        "`tower-trio run` is started on that data dir (nothing pruned: "
        f"`TOWER_RETENTION={KEEP_ALL}`). Rows are small triggers (JSON bodies of about 200 "
        f"bytes) spread over three apiVersions; the {RARE_ROWS} oldest are `{RARE_API}`."
    )
    lookup = Curve(
        key="journal-lookup",
        title="GET /triggers/<uuid> against journal rows",
        x_label="rows in the journal",
        xs=xs,
        x_texts=x_texts,
        series=(
            Series("p50 ms", tuple(lookup_p50), ".2f"),
            Series("p99 ms", tuple(lookup_p99), ".2f"),
        ),
        panels=((0, 1),),
        cost=0,
        method=fill
        + f" {lookups} lookups of uuids drawn from all the rows, one after another on one "
        "keep-alive connection; latency is the client's, request sent to answer read.",
        reading=(
            "A lookup is one seek in the uuid's unique index (a B-tree, a few pages deep even "
            "at a million rows), then the row; the HTTP round trip dominates. At "
            f"{lab_x:,.0f} rows, the nearest to the lab's {LAB_ROWS:,}, the p50 was "
            f"{lab_p50:.2f} ms."
        ),
    )
    listing = Curve(
        key="journal-listing",
        title=f"GET /triggers?apiVersion={COMMON_API}&limit={PAGE} against journal rows",
        x_label="rows in the journal",
        xs=xs,
        x_texts=x_texts,
        series=_page_series(common),
        panels=((0, 1),),
        cost=0,
        method=fill
        + f" The first page of `GET /triggers?apiVersion={COMMON_API}&limit={PAGE}` (one row "
        f"in three matches), {listings} times one after another on one connection.",
        reading=(
            "There is no index on apiVersion: the page walks the rows newest first and stops "
            f"at the {PAGE}th match, so its cost follows how common the filter is (here one "
            "in three: about 150 rows read), not the journal's size."
        ),
    )
    at_lab, rare_at_largest = _extrapolate(xs, [statistics.median(r) for r in rare])
    listing_rare = Curve(
        key="journal-listing-rare",
        title=f"GET /triggers?apiVersion={RARE_API}&limit={PAGE} against journal rows",
        x_label="rows in the journal",
        xs=xs,
        x_texts=x_texts,
        series=(
            *_page_series(rare),
            Series(
                "median ms beyond the common filter's",
                tuple(
                    (statistics.median(r) - statistics.median(c)) * 1e3
                    for r, c in zip(rare, common, strict=True)
                ),
                ".2f",
            ),
        ),
        panels=((0, 1, 3),),
        cost=3,
        method=fill + f" The page of `GET /triggers?apiVersion={RARE_API}&limit={PAGE}`, whose "
        f"{RARE_ROWS} rows are the oldest in the journal (a device that last ran long ago), "
        f"as often as fits in {_LISTING_BUDGET:g} s (at least 3 times).",
        reading=(
            "With no index on apiVersion, a filter that matches fewer than "
            f"{PAGE} rows, or only old ones, makes the page walk every row newest first (the "
            "same holds for protocol and source). The cost judged is the time beyond the "
            "common filter's page at the same size (a request's fixed cost): the rows read. "
            "At the lab's "
            f"{LAB_ROWS:,} rows that is about {at_lab * 1e3:,.0f} ms a page by this curve "
            f"({rare_at_largest * 1e3:,.0f} ms at {xs[-1]:,.0f}); it runs on the reader "
            "connection, beside ingest, so it slows only the one who asked. An index on "
            "(api_version, seq) would make it a seek."
        ),
    )
    return JournalGrowth(
        lookup=lookup,
        listing=listing,
        listing_rare=listing_rare,
        prune=prune,
        fill_rows_per_second=filler.rows / filler.seconds,
    )


def _page_series(pages: list[list[float]]) -> tuple[Series, ...]:
    return (
        Series("median ms", tuple(statistics.median(p) * 1e3 for p in pages), ".2f"),
        Series("max ms", tuple(max(p) * 1e3 for p in pages), ".2f"),
        Series("pages", tuple(float(len(p)) for p in pages)),
    )


def _extrapolate(xs: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """The cost at the lab's row count, scaled linearly from the nearest point; and the last."""
    x, value = nearest(xs, seconds, LAB_ROWS)
    return value * LAB_ROWS / x, seconds[-1]


@contextlib.contextmanager
def _tower(
    vhost: Vhost,
    data_dir: Path,
    *,
    retention: str,
    ready_path: str,
    workdir: Path,
    report: Callable[[str], None],
) -> Iterator[tuple[RunningServer, Path]]:
    """A tower on ``data_dir``, and the path of its log."""
    exchange = f"bench.growth.journal.{uuid.uuid4().hex[:8]}"
    declare_bound_queue(vhost.url, exchange, exchange)
    port = pick_port()
    environ = tower_environ(vhost.url, exchange, port, workdir)
    environ.update(TOWER_DATA_DIR=str(data_dir), TOWER_RETENTION=retention)
    log_path = workdir / f"{exchange}.log"
    try:
        with run_tower(
            port=port, environ=environ, log_path=log_path, report=report, ready_path=ready_path
        ) as server:
            yield server, log_path
    finally:
        purge_queue(vhost.url, exchange)


def _connect(server: RunningServer) -> http.client.HTTPConnection:
    port = int(server.base_url.rpartition(":")[2])
    return http.client.HTTPConnection(HOST, port, timeout=60)


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise BenchError(f"GET {path} answered {response.status}: {data[:300]!r}")
    return elapsed, data


def _lookups(
    connection: http.client.HTTPConnection, sample: list[str], count: int, rng: random.Random
) -> list[float]:
    uuids = [rng.choice(sample) for _ in range(_WARM_LOOKUPS + count)]
    latencies = [_get(connection, f"/triggers/{one}")[0] for one in uuids]
    # The first ones warm the connection and the caches; they are not counted.
    return latencies[_WARM_LOOKUPS:]


def _listings(
    connection: http.client.HTTPConnection, api: str, expected: int, count: int
) -> list[float]:
    path = f"/triggers?apiVersion={api}&limit={PAGE}"
    _get(connection, path)
    latencies: list[float] = []
    started = time.monotonic()
    while len(latencies) < count and (
        len(latencies) < 3 or time.monotonic() - started < _LISTING_BUDGET
    ):
        elapsed, data = _get(connection, path)
        items = len(json.loads(data)["items"])
        if items != expected:
            raise BenchError(f"GET {path} listed {items} triggers, not {expected}")
        latencies.append(elapsed)
    return latencies


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(percent / 100 * len(ordered)) - 1))
    return ordered[rank]


def _journal_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("journal.sqlite3*") if p.is_file())


def _prune(
    vhost: Vhost, data_dir: Path, rows: int, workdir: Path, report: Callable[[str], None]
) -> PruneResult:
    copy = workdir / "journal-growth-copy"
    shutil.copytree(data_dir, copy)
    file_bytes = _journal_bytes(data_dir)
    retention = f"{PRUNE_RETENTION_DAYS}d"
    report(
        f"  prune: a tower started with TOWER_RETENTION={retention} on {rows:,} rows "
        f"({file_bytes / 1e6:,.0f} MB), a POST /triggers every {PROBE_INTERVAL:g} s meanwhile"
    )
    with _tower(
        vhost,
        data_dir,
        retention=retention,
        ready_path="/healthz",
        workdir=workdir,
        report=report,
    ) as (server, log_path):
        samples, ended, deleted = _probe_until_pruned(server, log_path)
    file_bytes_after = _journal_bytes(data_dir)
    journal = open_journal(copy)
    try:
        started = time.perf_counter()
        alone_deleted = journal.prune(PRUNE_RETENTION_DAYS * 86400.0)
        alone_seconds = time.perf_counter() - started
    finally:
        journal.close()
    shutil.rmtree(copy, ignore_errors=True)
    result = PruneResult(
        rows=rows,
        retention_days=PRUNE_RETENTION_DAYS,
        file_bytes=file_bytes,
        file_bytes_after=file_bytes_after,
        alone_seconds=alone_seconds,
        alone_deleted=alone_deleted,
        tower_deleted=deleted,
        prune_ended=ended,
        samples=tuple(samples),
    )
    after = result.after
    report(
        f"    alone: {alone_deleted:,} rows deleted in {alone_seconds:.1f} s; in the tower: "
        f"{deleted:,} deleted, ended {ended:.1f} s after /healthz answered; "
        f"{len(result.during)} POSTs sent meanwhile, the longest waited "
        f"{result.longest_wait:.2f} s, statuses {result.statuses_during()}; after: "
        f"{len(after)} POSTs, p50 {_percentile([s.latency for s in after], 50) * 1e3:.1f} ms"
    )
    return result


def _probe_until_pruned(
    server: RunningServer, log_path: Path
) -> tuple[list[ProbeSample], float, int]:
    """POST a trigger every PROBE_INTERVAL, whatever the answers, until the prune has ended.

    Open loop: each POST has a connection (and a thread) of its own, so a
    stalled one does not hold back the next, and the samples cover the
    prune evenly.
    """
    body = post_body(250)
    port = int(server.base_url.rpartition(":")[2])
    origin_wall = time.time()
    origin = time.perf_counter()
    log = _LogWatch(log_path)
    pruned: tuple[float, int] | None = None
    futures: list[concurrent.futures.Future[ProbeSample]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=_PROBE_THREADS) as pool:
        for tick in itertools.count():
            # Pacing the sends, not waiting for readiness.
            time.sleep(max(0.0, origin + tick * PROBE_INTERVAL - time.perf_counter()))
            futures.append(pool.submit(_post_once, port, body, origin))
            if pruned is None:
                pruned = log.pruned()
            elapsed = time.perf_counter() - origin
            if pruned is not None and elapsed > pruned[0] - origin_wall + _AFTER_PRUNE:
                break
            if elapsed > _PRUNE_TIMEOUT:
                for future in futures:
                    future.cancel()
                raise BenchError(
                    f"the tower did not log journal.pruned within {_PRUNE_TIMEOUT:g} s"
                )
        samples = [future.result() for future in futures]
    assert pruned is not None  # the loop ends only once it is known
    return samples, pruned[0] - origin_wall, pruned[1]


def _post_once(port: int, body: bytes, origin: float) -> ProbeSample:
    connection = http.client.HTTPConnection(HOST, port, timeout=_PRUNE_TIMEOUT)
    sent = time.perf_counter()
    try:
        connection.request(
            "POST", "/triggers", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as err:
        raise BenchError(f"POST /triggers during the prune failed: {err}") from err
    finally:
        connection.close()
    return ProbeSample(sent - origin, time.perf_counter() - sent, response.status)


@attrs.define
class _LogWatch:
    """Reads the tower's JSON log as it grows, looking for the end of its prune."""

    path: Path
    offset: int = 0

    def pruned(self) -> tuple[float, int] | None:
        """When the prune ended (epoch seconds) and how many rows it deleted, once logged."""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "journal.pruned":
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
                return at, int(event["deleted"])
        return None
