"""``POST /triggers`` against body size: req/s and the server's CPU per request.

One ``tower-trio run`` per size, as ``bench/_http_bench.py`` runs it: its
own exchange with a durable queue bound to it, a fresh journal, a warm-up,
then the measured load from the same generator. The body is a plate run
with rich per-well records, padded to the exact size.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
import uuid
from typing import TYPE_CHECKING

from tower_trio._serialization import dump_trigger, trigger_from_wire

from ._broker import declare_bound_queue, purge_queue
from ._common import BenchError, process_cpu_seconds
from ._growth import LAB_TRIGGERS_PER_DAY, Curve, Series, nearest, post_body, size_text
from ._load import generator_name, run_load
from ._servers import pick_port, run_tower, tower_environ

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from ._broker import Vhost

__all__ = ["run_body_sizes"]

DEFAULT_MAX_BODY = 1 << 20
"""The tower's TOWER_MAX_BODY_BYTES default; raised when a size needs it."""
_CODEC_BYTES = 8 << 20
"""Bytes of bodies to time the in-process decode, check and encode on, per size."""


def codec_cpu(body: bytes) -> float:
    """CPU seconds the tower's own code takes to decode, check and encode ``body`` once.

    What the HTTP handler does with every body (``json.loads``,
    ``trigger_from_wire``) and what storing it takes (``dump_trigger``, the
    body journaled and published); the median of repeats, in this process.
    """
    times = []
    for _ in range(max(5, min(200, _CODEC_BYTES // len(body)))):
        started = time.process_time()
        dump_trigger(trigger_from_wire(json.loads(body), source="http"))
        times.append(time.process_time() - started)
    return statistics.median(times)


def run_body_sizes(
    vhost: Vhost,
    *,
    sizes: Sequence[int],
    connections: int,
    duration: float,
    warmup: float,
    workdir: Path,
    report: Callable[[str], None],
) -> Curve:
    rates: list[float] = []
    cpu: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    megabytes: list[float] = []
    codec: list[float] = []
    max_body = max(DEFAULT_MAX_BODY, 2 * max(sizes))
    for size in sizes:
        body = post_body(size)
        exchange = f"bench.growth.body.{uuid.uuid4().hex[:8]}"
        declare_bound_queue(vhost.url, exchange, exchange)
        port = pick_port()
        environ = tower_environ(vhost.url, exchange, port, workdir)
        environ["TOWER_MAX_BODY_BYTES"] = str(max_body)
        with run_tower(
            port=port, environ=environ, log_path=workdir / f"{exchange}.log", report=report
        ) as server:
            url = server.base_url + "/triggers"
            run_load(url, body, connections=connections, duration=warmup)
            cpu_before = process_cpu_seconds(server.pid)
            load = run_load(url, body, connections=connections, duration=duration)
            cpu_seconds = process_cpu_seconds(server.pid) - cpu_before
        stored = purge_queue(vhost.url, exchange)
        shutil.rmtree(environ["TOWER_DATA_DIR"], ignore_errors=True)
        if not load.accepted or load.not_accepted > load.requests // 100:
            raise BenchError(
                f"POST /triggers with {size_text(size)} bodies: {load.accepted} accepted, "
                f"{load.not_accepted} not (statuses {load.statuses}, errors {load.errors})"
            )
        rates.append(load.rate)
        cpu.append(cpu_seconds / load.requests * 1e3)
        p50.append(load.p50 * 1e3)
        p99.append(load.p99 * 1e3)
        megabytes.append(load.rate * size / 1e6)
        codec.append(codec_cpu(body) * 1e3)
        report(
            f"  {size_text(size):>8} bodies: {load.rate:7,.0f} req/s  "
            f"CPU {cpu[-1]:6.2f} ms/req (decode, check, encode {codec[-1]:6.2f})  "
            f"p50 {p50[-1]:7.1f} ms  p99 {p99[-1]:7.1f} ms  "
            f"{megabytes[-1]:6.1f} MB/s  (202s {load.accepted:,}, stored {stored:,})"
        )
    method = (
        f"`tower-trio run` (no plugins, a fresh journal, its own exchange with a durable "
        f"queue bound to it) per body size; {connections} keep-alive connections from "
        f"{generator_name()} for {duration:g} s after a {warmup:g} s warm-up, one run each. "
        "Each body is a valid trigger: a plate run with per-well records of about 290 bytes "
        "(well, step, volume, reagent, concentration, mixing, notes), padded to the exact "
        f"size; `TOWER_MAX_BODY_BYTES={max_body}`. CPU is the server process's own (all its "
        "threads) per response; the tower answers once the trigger is in its journal on disk. "
        "Beside it, the CPU the tower's own decode, check and encode take for one such body "
        "(`json.loads`, `trigger_from_wire`, `dump_trigger`: what the handler does with every "
        "body, and the bytes it journals and publishes), timed in-process."
    )
    _, fixed = nearest(sizes, cpu, 250)
    plate, plate_rate = nearest(sizes, rates, 65536)
    _, plate_cpu = nearest(sizes, cpu, 65536)
    # Timed apart, in two processes, the two figures can cross by some percent.
    share = (
        "about all of the CPU per request"
        if codec[-1] >= 0.9 * cpu[-1]
        else f"{codec[-1] / cpu[-1]:.0%} of the CPU per request"
    )
    average = LAB_TRIGGERS_PER_DAY / 86400
    reading = (
        f"A request costs about {fixed:.1f} ms of CPU whatever its body; past a few KiB the "
        "work that follows the bytes takes over, and it is Python's: decoding the JSON, the "
        "validation walk over every key of the spec, and encoding the trigger again (cattrs "
        f"unstructures the whole spec first). That part alone, timed in-process, is {share} "
        f"at {size_text(sizes[-1])} ({codec[-1]:.0f} of {cpu[-1]:.0f} ms). The cost judged "
        f"is the CPU beyond that of a {size_text(sizes[0])} request: the part that grows with "
        "the body. At "
        f"{size_text(plate)}, about a 96-well plate with rich specs, the tower takes "
        f"{plate_rate:,.0f} triggers/s at {plate_cpu:.1f} ms of CPU each: a whole day of the "
        f"lab scale assumed here ({LAB_TRIGGERS_PER_DAY:,} triggers, {average:.2f}/s on "
        f"average) would go through in {LAB_TRIGGERS_PER_DAY / plate_rate / 60:.1f} minutes."
    )
    return Curve(
        key="post-body-size",
        title="POST /triggers against body size",
        x_label="request body",
        xs=tuple(float(size) for size in sizes),
        x_texts=tuple(size_text(size) for size in sizes),
        series=(
            Series("req/s", tuple(rates)),
            Series("server CPU ms/req", tuple(cpu), ".2f"),
            Series("p50 ms", tuple(p50), ".1f"),
            Series("p99 ms", tuple(p99), ".1f"),
            Series("body MB/s", tuple(megabytes), ".1f"),
            Series("decode, check, encode ms (in-process)", tuple(codec), ".2f"),
            Series(
                f"CPU ms/req beyond {size_text(sizes[0])}'s", tuple(c - cpu[0] for c in cpu), ".2f"
            ),
        ),
        panels=((0,), (1, 5)),
        cost=6,
        method=method,
        reading=reading,
    )
