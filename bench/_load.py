"""HTTP load: ``POST /triggers`` on N keep-alive connections for a while.

``wrk`` is used when it is on PATH: it is written in C and leaves the
second core to the server under test. Otherwise a trio + h11 generator
does the same job, at a far higher CPU cost that the server then competes
with, so its figures are only comparable with each other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import attrs
import h11
import trio

from ._common import BenchError

__all__ = ["LoadResult", "generator_name", "run_load"]

ACCEPTED = 202

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

local threads = {{}}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {{}}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local counts = {{}}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            counts[status] = (counts[status] or 0) + count
        end
    end
    local parts = {{}}
    for status, count in pairs(counts) do
        table.insert(parts, string.format('"%d":%d', status, count))
    end
    local errors = summary.errors
    io.write(string.format(
        '{marker}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
        .. '"errors":%d,"statuses":{{%s}}}}\\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        errors.connect + errors.read + errors.write + errors.timeout,
        table.concat(parts, ",")))
end
"""
_MARKER = "BENCH-RESULT "


@attrs.frozen
class LoadResult:
    requests: int
    """Responses received, whatever their status."""
    duration: float
    statuses: dict[int, int]
    errors: int
    """Connection errors and timeouts: requests that got no response."""
    p50: float
    p99: float

    @property
    def accepted(self) -> int:
        return self.statuses.get(ACCEPTED, 0)

    @property
    def rate(self) -> float:
        """Accepted triggers per second: a fast error must not count as throughput."""
        return self.accepted / self.duration if self.duration else 0.0

    @property
    def not_accepted(self) -> int:
        return self.requests - self.accepted + self.errors


def generator_name() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "trio + h11 (wrk not found)"
    version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first_line = (version.stdout or version.stderr).splitlines()[:1]
    return first_line[0].split(" Copyright")[0] if first_line else "wrk"


def run_load(url: str, body: bytes, *, connections: int, duration: float) -> LoadResult:
    """POST ``body`` to ``url`` from ``connections`` keep-alive connections."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        return _run_wrk(wrk, url, body, connections=connections, duration=duration)
    return trio.run(_run_trio, url, body, connections, duration)


def _run_wrk(wrk: str, url: str, body: bytes, *, connections: int, duration: float) -> LoadResult:
    script_text = _WRK_SCRIPT.format(body=body.decode(), marker=_MARKER)
    with tempfile.TemporaryDirectory(prefix="tower-trio-bench-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(script_text)
        # One wrk thread: on a two-core machine the other core belongs to the server.
        argv = [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "15s",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=duration + 60
        )
    for line in done.stdout.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line.removeprefix(_MARKER))
            return LoadResult(
                requests=raw["requests"],
                duration=raw["duration_us"] / 1e6,
                statuses={int(status): count for status, count in raw["statuses"].items()},
                errors=raw["errors"],
                p50=raw["p50_us"] / 1e6,
                p99=raw["p99_us"] / 1e6,
            )
    raise BenchError(f"wrk printed no result (exit {done.returncode}): {done.stderr.strip()}")


@attrs.define
class _Tally:
    latencies: list[float] = attrs.field(factory=list)
    statuses: Counter[int] = attrs.field(factory=Counter)
    errors: int = 0


@attrs.frozen
class _Target:
    host: str
    port: int
    request: h11.Request
    body: bytes


async def _run_trio(url: str, body: bytes, connections: int, duration: float) -> LoadResult:
    host, port, path = _split_url(url)
    request = h11.Request(
        method="POST",
        target=path,
        headers=[
            ("Host", f"{host}:{port}"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ],
    )
    target = _Target(host, port, request, body)
    tally = _Tally()
    started = time.perf_counter()
    deadline = trio.current_time() + duration
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_drive_connection, target, deadline, tally)
    elapsed = time.perf_counter() - started
    latencies = sorted(tally.latencies)
    return LoadResult(
        requests=len(latencies),
        duration=elapsed,
        statuses=dict(tally.statuses),
        errors=tally.errors,
        p50=_percentile(latencies, 50),
        p99=_percentile(latencies, 99),
    )


async def _drive_connection(target: _Target, deadline: float, tally: _Tally) -> None:
    try:
        stream = await trio.open_tcp_stream(target.host, target.port)
    except OSError:
        tally.errors += 1
        return
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        while trio.current_time() < deadline:
            sent = time.perf_counter()
            data = b"".join(
                connection.send(event) or b""
                for event in (target.request, h11.Data(data=target.body), h11.EndOfMessage())
            )
            try:
                await stream.send_all(data)
                status = await _read_response(stream, connection)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                tally.errors += 1
                return
            tally.latencies.append(time.perf_counter() - sent)
            tally.statuses[status] += 1
            connection.start_next_cycle()


async def _read_response(stream: trio.SocketStream, connection: h11.Connection) -> int:
    status = 0
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some()
            if not chunk:
                raise trio.BrokenResourceError("the server closed the connection")
            connection.receive_data(chunk)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            return status
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("the server closed the connection")


def _split_url(url: str) -> tuple[str, int, str]:
    rest = url.removeprefix("http://")
    authority, _, path = rest.partition("/")
    host, _, port = authority.partition(":")
    return host, int(port or 80), "/" + path


def _percentile(ordered: list[float], percent: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(percent / 100 * len(ordered)) - 1))
    return ordered[rank]
