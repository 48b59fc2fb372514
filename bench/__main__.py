"""``python -m bench``: run the benchmarks, print the figures, write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._broker import open_vhost
from ._common import REPO_ROOT, BenchError
from ._console_bench import run_console_bench
from ._http_bench import NO_JOURNAL, TOWER, TOWER_PUBLISHED, run_http_bench
from ._idle import IDLE_PLUGINS, run_idle_bench
from ._publisher_bench import AIO_PIKA, BARE, CLIENT, run_publisher_bench
from ._publisher_bench import TOWER as TOWER_PUBLISHER
from ._replicas_bench import run_replicas_bench
from ._report import (
    CEILING_TARGET,
    CONSOLE_TARGET,
    HTTP_TARGET,
    IDLE_TARGET,
    NO_JOURNAL_TARGET,
    PUBLISHER_TARGET,
    SERVER_TARGETS,
    describe_machine,
    render_markdown,
    server_met,
    server_ratios,
    uncommitted_changes,
    verdict,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from ._broker import Vhost
    from ._console_bench import ConsoleResult
    from ._http_bench import HttpResult
    from ._idle import IdleResult
    from ._publisher_bench import PublisherResult
    from ._replicas_bench import ReplicasResult

PARTS = ("publisher", "http", "console", "idle", "replicas")
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
COMMAND = "just bench"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measure tower-trio against its peers in one run: publisher throughput against "
            "aio-pika and a bare trio + pamqp loop, POST /triggers against FastAPI + uvicorn + "
            "aio-pika, POST /triggers with a console streaming against without, idle CPU with "
            "and without 20 idle plugins, and the journal on PostgreSQL and in replicas. "
            "A full run writes docs/benchmarks.md."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "small figures for a smoke check (2000 messages, 3 s runs, 3 console pairs of "
            "2 s); writes no docs"
        ),
    )
    parser.add_argument("--only", choices=PARTS, help="run one part; writes no docs")
    parser.add_argument("--messages", type=int, help="triggers per publisher round (20000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="publisher rounds, after a warm-up (3)"
    )
    parser.add_argument("--duration", type=float, help="seconds of HTTP load per server (10)")
    parser.add_argument("--http-rounds", type=int, default=3, help="HTTP runs per server (3)")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections (32)")
    parser.add_argument(
        "--console-pairs",
        type=int,
        help="pairs of windows with and without a console streaming, on one tower (8)",
    )
    parser.add_argument(
        "--console-window", type=float, help="seconds of load per console window (5)"
    )
    parser.add_argument(
        "--peer-plain",
        action="store_true",
        help="run the FastAPI peer on asyncio + h11 rather than uvloop + httptools",
    )
    parser.add_argument(
        "--in-flight", type=int, default=256, help="aio-pika's unconfirmed messages (256)"
    )
    parser.add_argument(
        "--tower-window",
        type=int,
        help="the tower's TOWER_CONFIRM_WINDOW (default: the tower's own default)",
    )
    parser.add_argument("--idle-seconds", type=float, help="idle window (10)")
    parser.add_argument(
        "--broker", default="127.0.0.1:5672", help="RabbitMQ host:port (127.0.0.1:5672)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the Markdown report (default: docs/benchmarks.md on a full run)",
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A plain SIGTERM would end the process without running the clean-up
    # that stops the servers and deletes the vhost; Ctrl-C already does.
    signal.signal(signal.SIGTERM, _interrupt)
    messages = args.messages or (2000 if args.quick else 20000)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = 1.0
    idle_seconds = args.idle_seconds or (3.0 if args.quick else 10.0)
    parts = (args.only,) if args.only else PARTS
    full_run = not args.quick and args.only is None
    output: Path | None = args.output or (DOCS_PATH if full_run else None)

    changed = uncommitted_changes()
    if output == DOCS_PATH and changed:
        # The page names the commit it measured; figures from a dirty tree would
        # describe code that no commit holds.
        print(
            "bench: error: uncommitted changes to "
            + ", ".join(changed)
            + "; commit them before writing docs/benchmarks.md, or pass --output PATH",
            file=sys.stderr,
        )
        return 1

    publisher: PublisherResult | None = None
    http: HttpResult | None = None
    console: ConsoleResult | None = None
    idle: IdleResult | None = None
    replicas: ReplicasResult | None = None
    try:
        machine = describe_machine(peer_plain=args.peer_plain)
        _say(f"Measuring tower-trio at commit {machine.revision}")
        _say(
            f"tower-trio {machine.revision}; "
            f"{machine.cores} cores (load {machine.load_average}), {machine.python}, "
            f"RabbitMQ {machine.rabbitmq}, "
            f"load: {machine.load_generator}, peer: uvicorn on {machine.peer_stack}"
        )
        with (
            tempfile.TemporaryDirectory(prefix="tower-trio-bench-") as tmp,
            open_vhost(args.broker) as vhost,
        ):
            workdir = Path(tmp)
            if "publisher" in parts:
                _say(
                    f"\nPublisher: {messages:,} persistent triggers, confirms, "
                    f"aio-pika {args.in_flight} in flight, tower-trio "
                    f"{args.tower_window or 'default'} window, a warm-up and {args.rounds} rounds"
                )
                publisher = run_publisher_bench(
                    vhost,
                    messages=messages,
                    rounds=args.rounds,
                    in_flight=args.in_flight,
                    tower_window=args.tower_window,
                    report=_say,
                )
                _say(
                    f"  journal on disk: {publisher.journal_bytes_per_trigger:,.0f} bytes "
                    "per trigger (database and WAL)"
                )
                _say(
                    f"  median: tower-trio {publisher.tower:,.0f} msgs/s "
                    f"({publisher.tower_cpu * 1e6:.0f} µs CPU/msg), aio-pika "
                    f"{publisher.aio_pika:,.0f} msgs/s ({publisher.aio_pika_cpu * 1e6:.0f} µs "
                    f"CPU/msg), bare loop {publisher.rate(BARE):,.0f} msgs/s"
                )
                _say(_publisher_verdicts(publisher, indent="  "))
            if "http" in parts:
                _say(
                    f"\nHTTP: POST /triggers, {args.connections} connections, "
                    f"{duration:g} s per server after a {warmup:g} s warm-up"
                )
                http = run_http_bench(
                    vhost,
                    connections=args.connections,
                    duration=duration,
                    warmup=warmup,
                    rounds=args.http_rounds,
                    peer_plain=args.peer_plain,
                    workdir=workdir,
                    report=_say,
                )
                for contender in (TOWER, TOWER_PUBLISHED):
                    ratio = http.ratio(contender)
                    _say(
                        f"  {contender.name} / FastAPI peer: {ratio:.2f}x req/s "
                        f"(target >= {HTTP_TARGET:.1f}x: {verdict(ratio >= HTTP_TARGET)})"
                    )
            if "console" in parts:
                console = _run_console(args, vhost, workdir, warmup=warmup)
            if "idle" in parts:
                idle = _run_idle(vhost, workdir, seconds=idle_seconds)
            if "replicas" in parts:
                replicas = _run_replicas(args, vhost, workdir, duration=duration, warmup=warmup)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    _summarize(publisher, http, console, idle)
    if output is not None:
        arguments = list(sys.argv[1:] if argv is None else argv)
        command = "python -m bench " + " ".join(arguments) if arguments else COMMAND
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(
            render_markdown(
                machine,
                command=command,
                publisher=publisher,
                http=http,
                idle=idle,
                replicas=replicas,
                console=console,
            )
        )
        _say(f"\nWrote {output}")
    return 0


def _run_idle(vhost: Vhost, workdir: Path, *, seconds: float) -> IdleResult:
    _say(
        f"\nIdle CPU: tower-trio run, no plugins and {IDLE_PLUGINS} idle plugins, "
        f"{seconds:g} s each"
    )
    idle = run_idle_bench(vhost, seconds=seconds, workdir=workdir, report=_say)
    measured = idle.measured
    budget = measured.budget(IDLE_TARGET)
    _say(
        f"  with {measured.plugins} plugins: target < {budget:.3f} s: "
        f"{verdict(measured.cpu_seconds < budget)}"
    )
    return idle


def _run_console(
    args: argparse.Namespace, vhost: Vhost, workdir: Path, *, warmup: float
) -> ConsoleResult:
    pairs = args.console_pairs or (3 if args.quick else 8)
    window = args.console_window or (2.0 if args.quick else 5.0)
    _say(
        f"\nConsole: POST /triggers on one tower, {args.connections} connections, "
        f"{pairs} pairs of {window:g} s windows with and without a console streaming "
        f"(order alternating), after a {warmup:g} s warm-up"
    )
    console = run_console_bench(
        vhost,
        connections=args.connections,
        window=window,
        pairs=pairs,
        warmup=warmup,
        workdir=workdir,
        report=_say,
    )
    _say(
        f"  median: {console.median_rate(streaming=True):,.0f} req/s streaming, "
        f"{console.median_rate(streaming=False):,.0f} without; CPU per request "
        f"{console.cpu_ratio:.2f}x (median of the pairs)"
    )
    _say(_console_verdict(console, indent="  "))
    return console


def _console_verdict(console: ConsoleResult, *, indent: str) -> str:
    return (
        f"{indent}{'console streaming / not':<34} {console.ratio:5.2f}x req/s   "
        f"(pairs {console.lowest:.2f}x to {console.highest:.2f}x) "
        f"(target >= {CONSOLE_TARGET:.2f}x: {verdict(console.ratio >= CONSOLE_TARGET)})"
    )


def _run_replicas(
    args: argparse.Namespace, vhost: Vhost, workdir: Path, *, duration: float, warmup: float
) -> ReplicasResult:
    _say(
        f"\nReplicas: POST /triggers on SQLite, on PostgreSQL, and on three towers "
        f"sharing PostgreSQL, {args.connections} connections, {duration:g} s each"
    )
    replicas = run_replicas_bench(
        vhost,
        connections=args.connections,
        duration=duration,
        warmup=warmup,
        rounds=args.http_rounds,
        workdir=workdir,
        report=_say,
    )
    _say(
        f"  PostgreSQL / SQLite {replicas.postgres_ratio:.2f}x req/s; "
        f"three towers / one {replicas.replicas_ratio:.2f}x req/s"
    )
    return replicas


_SERVER_SAYINGS = {
    "rate": "tower-trio / bare Hypercorn, req/s",
    "cpu": "tower-trio / bare, CPU per request",
    "p99": "tower-trio / bare, p99 latency",
    "wait": "?wait=published / 202, req/s",
}


def journal_ratio(http: HttpResult) -> float:
    """The journaled ingest's req/s over the core service's before the journal."""
    return http.median_run(TOWER).load.rate / http.median_run(NO_JOURNAL).load.rate


def _summarize(
    publisher: PublisherResult | None,
    http: HttpResult | None,
    console: ConsoleResult | None,
    idle: IdleResult | None,
) -> None:
    _say("\nSummary")
    if publisher is not None:
        _say(_publisher_verdicts(publisher, indent="  publisher   "))
    if http is not None:
        for contender in (TOWER, TOWER_PUBLISHED):
            ratio = http.ratio(contender)
            _say(
                f"  http        {contender.name + ' / peer':<34} {ratio:5.2f}x req/s   "
                f"(target >= {HTTP_TARGET:.1f}x: {verdict(ratio >= HTTP_TARGET)})"
            )
        for name, (_, _, value) in server_ratios(http).items():
            label = _SERVER_SAYINGS[name]
            target = SERVER_TARGETS[name]
            sign = "<=" if name in ("cpu", "p99") else ">="
            _say(
                f"  http        {label:<34} {value:5.2f}x         "
                f"(target {sign} {target:.2f}x: {verdict(server_met(name, value))})"
            )
        journal = journal_ratio(http)
        _say(
            f"  http        {'journaled / before the journal':<34} {journal:5.2f}x req/s   "
            f"(target >= {NO_JOURNAL_TARGET:.1f}x: {verdict(journal >= NO_JOURNAL_TARGET)})"
        )
    if console is not None:
        _say(_console_verdict(console, indent="  console     "))
    if idle is not None:
        measured = idle.measured
        budget = measured.budget(IDLE_TARGET)
        label = f"tower-trio CPU, {measured.plugins} idle plugins"
        _say(
            f"  idle        {label:<34} {measured.cpu_seconds:5.2f} s in "
            f"{measured.seconds:.0f} s (target < {budget:.3f} s: "
            f"{verdict(measured.cpu_seconds < budget)})"
        )


def _publisher_verdicts(publisher: PublisherResult, *, indent: str) -> str:
    each = ", ".join(f"{value:.2f}x" for value in publisher.round_ratios(TOWER_PUBLISHER, AIO_PIKA))
    lowest = publisher.lowest_ratio(TOWER_PUBLISHER, AIO_PIKA)
    ceiling = publisher.ratio_of(TOWER_PUBLISHER, BARE)
    return (
        f"{indent}{'tower-trio / aio-pika, each round':<34} {each} msgs/s "
        f"(target >= {PUBLISHER_TARGET:.1f}x in every round: "
        f"{verdict(lowest >= PUBLISHER_TARGET)})\n"
        f"{indent}{'tower-trio / bare trio + pamqp':<34} {ceiling:5.2f}x msgs/s  "
        f"(target >= {CEILING_TARGET:.1f}x: {verdict(ceiling >= CEILING_TARGET)}); "
        f"client alone / bare {publisher.ratio_of(CLIENT, BARE):.2f}x"
    )


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
