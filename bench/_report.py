"""What the run measured, on what, as console lines and as ``docs/benchmarks.md``."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._broker import broker_version
from ._common import REPO_ROOT, median, ratio
from ._http_bench import CEILING, CONTENDERS, NO_JOURNAL, PEER, TOWER, TOWER_PUBLISHED
from ._idle import FOLDER_WATCHERS, SCHEDULES
from ._idle import SETTLE as IDLE_SETTLE
from ._load import generator_name
from ._peer_fastapi import uvicorn_stack
from ._publisher_bench import AIO_PIKA, BARE, CLIENT, SIDES
from ._publisher_bench import TOWER as TOWER_PUBLISHER
from ._replicas_bench import replicas_section

if TYPE_CHECKING:
    from ._console_bench import ConsoleResult, ConsoleWindow
    from ._http_bench import Contender, HttpResult
    from ._idle import IdleResult
    from ._publisher_bench import PublisherResult
    from ._replicas_bench import ReplicasResult

__all__ = [
    "CEILING_TARGET",
    "CONSOLE_TARGET",
    "HTTP_TARGET",
    "IDLE_TARGET",
    "NO_JOURNAL_TARGET",
    "PUBLISHER_TARGET",
    "SERVER_TARGETS",
    "Machine",
    "describe_machine",
    "render_markdown",
    "server_met",
    "server_ratios",
    "uncommitted_changes",
    "verdict",
]

PUBLISHER_TARGET = 2.0
"""tower-trio over aio-pika, in every round."""
CEILING_TARGET = 0.9
"""tower-trio over the bare trio + pamqp loop."""
HTTP_TARGET = 1.0
NO_JOURNAL_TARGET = 0.9
CONSOLE_TARGET = 0.95
"""Ingest with a console streaming, over ingest without: within 5%."""
SERVER_TARGETS = {"rate": 0.85, "cpu": 1.25, "p99": 1.5, "wait": 0.9}
"""tower-trio against the bare app on its own server (Hypercorn), in the same run:
req/s at least, CPU per request and p99 at most; ``?wait=published`` against
the journaled 202, at least."""
IDLE_TARGET = 0.05
"""CPU seconds per 10 s of idleness."""

_PACKAGES = (
    "tower-trio",
    "trio",
    "hypercorn",
    "quart-trio",
    "pamqp",
    "aio-pika",
    "aiormq",
    "fastapi",
    "pydantic",
    "uvicorn",
)


@attrs.frozen
class Machine:
    date: str
    cores: int
    cpu: str
    system: str
    python: str
    rabbitmq: str
    packages: dict[str, str]
    peer_stack: str
    load_generator: str
    load_average: str
    """The 1, 5 and 15 minute load averages when the run started: how busy the machine was."""
    revision: str
    """The commit of tower-trio that was measured."""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


_MEASURED = ("tower_trio", "plugins", "bench", "pyproject.toml")
"""What a figure depends on: a change here makes docs/benchmarks.md describe other code."""


def uncommitted_changes() -> list[str]:
    """Files under the measured paths that differ from HEAD (empty outside git)."""
    try:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", *_MEASURED)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(maxsplit=1)[1] for line in status.splitlines()]


def _revision() -> str:
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if uncommitted_changes() else "")


def describe_machine(*, peer_plain: bool = False) -> Machine:
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count() or 0,
        cpu=_cpu_model(),
        system=f"{platform.system()} {platform.release()}",
        python=f"{platform.python_implementation()} {platform.python_version()}",
        rabbitmq=broker_version(),
        packages={package: _version(package) for package in _PACKAGES},
        peer_stack=uvicorn_stack(plain=peer_plain),
        load_generator=generator_name(),
        load_average=" / ".join(f"{load:.2f}" for load in os.getloadavg()),
        revision=_revision(),
    )


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def render_markdown(
    machine: Machine,
    *,
    command: str,
    publisher: PublisherResult | None,
    http: HttpResult | None,
    idle: IdleResult | None,
    replicas: ReplicasResult | None = None,
    console: ConsoleResult | None = None,
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by `python -m bench`; rerun `just bench` rather than editing by hand. -->",
        "",
        f"Measured on {machine.date} with `{command}`. Every figure below comes from that one "
        "run: absolute numbers drift from run to run on a shared machine, so compare the "
        "ratios, which were measured side by side.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| tower-trio commit | {machine.revision} |",
        f"| CPU | {machine.cores} cores, {machine.cpu} |",
        f"| System | {machine.system} |",
        f"| Load average at the start (1 / 5 / 15 min) | {machine.load_average} |",
        f"| Python | {machine.python} |",
        f"| RabbitMQ | {machine.rabbitmq}, on loopback |",
        f"| Load generator | {machine.load_generator} |",
        f"| uvicorn event loop + HTTP parser | {machine.peer_stack} |",
    ]
    lines.extend(f"| {name} | {version} |" for name, version in machine.packages.items())
    lines.extend(_summary(publisher, http, console, idle))
    if publisher is not None:
        lines.extend(_publisher_section(publisher))
    if http is not None:
        lines.extend(_http_section(http, machine))
    if console is not None:
        lines.extend(_console_section(console, machine))
    if idle is not None:
        lines.extend(_idle_section(idle))
    if replicas is not None:
        lines.extend(replicas_section(replicas))
    lines.extend(
        [
            "",
            "## Growth curves",
            "",
            "How each cost grows with the work (body size, journal rows and pruning, confirm "
            "window, message size, idle connections, triggers pending while the broker is "
            "away), one run each, with its plot and a verdict (flat, linear or worse) read "
            "against the lab scale assumed: [growth.md](growth.md), written by "
            "`just bench-growth` (about 8 minutes; it names its own commit and machine).",
            "",
            "## Where the time goes",
            "",
            "The profile of a `POST /triggers` against the bare app's, and what each change "
            "to the request path was worth: [performance.md](performance.md).",
            "",
            "## Reproducing",
            "",
            "Run `just bench` from the repository root with RabbitMQ running locally "
            "(`rabbitmqctl` on PATH, guest/guest on 127.0.0.1:5672). It creates a vhost of its "
            "own and deletes it at the end. The HTTP part uses `wrk` when it is on PATH (`just "
            "bench` installs Debian's `wrk` when it is missing), else a trio + h11 generator that"
            " competes with the servers for CPU; the peer runs on uvloop + httptools when they "
            "are installed (`uvicorn[standard]`), else on asyncio + h11 (`--peer-plain` forces "
            "that). The machine table says which were used. `python -m bench --quick` is a smoke "
            "check; `--only publisher|http|console|idle|replicas` runs one part; `--help` lists "
            "the rest.",
            "",
        ]
    )
    return "\n".join(lines)


def _summary(
    publisher: PublisherResult | None,
    http: HttpResult | None,
    console: ConsoleResult | None,
    idle: IdleResult | None,
) -> list[str]:
    lines = [
        "",
        "## Summary",
        "",
        "| Measure | tower-trio | peer | ratio | target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    if publisher is not None:
        lowest = publisher.lowest_ratio(TOWER_PUBLISHER, AIO_PIKA)
        lines.append(
            f"| Publisher msgs/s (vs aio-pika), lowest round | {publisher.tower:,.0f} | "
            f"{publisher.aio_pika:,.0f} | {lowest:.2f}x (median {publisher.ratio:.2f}x) | "
            f"≥ {PUBLISHER_TARGET:.1f}x in every round | "
            f"{verdict(lowest >= PUBLISHER_TARGET)} |"
        )
        ceiling = publisher.ratio_of(TOWER_PUBLISHER, BARE)
        lines.append(
            f"| Publisher msgs/s (vs a bare trio + pamqp loop, the ceiling) | "
            f"{publisher.tower:,.0f} | {publisher.rate(BARE):,.0f} | {ceiling:.2f}x | "
            f"≥ {CEILING_TARGET:.1f}x | {verdict(ceiling >= CEILING_TARGET)} |"
        )
        lines.append(
            f"| Publisher msgs/s without the journal: the AMQP client alone (vs the bare loop) | "
            f"{publisher.rate(CLIENT):,.0f} | {publisher.rate(BARE):,.0f} | "
            f"{publisher.ratio_of(CLIENT, BARE):.2f}x | | |"
        )
        lines.append(
            f"| Journal bytes on disk per trigger (database + WAL) | "
            f"{publisher.journal_bytes_per_trigger:,.0f} | | | | |"
        )
        lines.append(
            f"| Publisher CPU µs/msg (aio-pika ÷ tower-trio) | {publisher.tower_cpu * 1e6:.0f} | "
            f"{publisher.aio_pika_cpu * 1e6:.0f} | "
            f"{ratio(publisher.aio_pika_cpu, publisher.tower_cpu):.2f}x | | |"
        )
    if http is not None:
        peer = http.median_run(PEER).load.rate
        for contender in (TOWER, TOWER_PUBLISHED):
            value = http.ratio(contender)
            label = "" if contender == TOWER else " with `?wait=published`"
            lines.append(
                f"| `POST /triggers` req/s{label} (vs FastAPI) | "
                f"{http.median_run(contender).load.rate:,.0f} | {peer:,.0f} | {value:.2f}x | "
                f"≥ {HTTP_TARGET:.1f}x | {verdict(value >= HTTP_TARGET)} |"
            )
        journaled = http.median_run(TOWER).load.rate
        before = http.median_run(NO_JOURNAL).load.rate
        against_before = ratio(journaled, before)
        lines.append(
            f"| `POST /triggers` req/s with the journal (vs the core service before it) | "
            f"{journaled:,.0f} | {before:,.0f} | {against_before:.2f}x | "
            f"≥ {NO_JOURNAL_TARGET:.1f}x | {verdict(against_before >= NO_JOURNAL_TARGET)} |"
        )
        ceiling = http.median_run(CEILING).load.rate
        lines.append(
            f"| Bare ASGI app on Hypercorn (the HTTP server's own ceiling, vs FastAPI) | "
            f"{ceiling:,.0f} | {peer:,.0f} | {http.ratio(CEILING):.2f}x | | |"
        )
        lines.extend(_server_rows(http))
        peer_cpu = http.median_run(PEER).cpu_per_request
        for contender in (TOWER, TOWER_PUBLISHED):
            tower_cpu = http.median_run(contender).cpu_per_request
            label = "" if contender == TOWER else " with `?wait=published`"
            lines.append(
                f"| `POST /triggers` server CPU ms/req{label} (FastAPI ÷ tower-trio) | "
                f"{tower_cpu * 1e3:.2f} | {peer_cpu * 1e3:.2f} | "
                f"{ratio(peer_cpu, tower_cpu):.2f}x | | |"
            )
    if console is not None:
        lines.append(
            f"| `POST /triggers` req/s with a console streaming (vs without, one tower, "
            f"{console.pairs} alternating pairs) | {console.median_rate(streaming=True):,.0f} | "
            f"{console.median_rate(streaming=False):,.0f} | {console.ratio:.2f}x (median pair; "
            f"{console.lowest:.2f}x to {console.highest:.2f}x) | "
            f"≥ {CONSOLE_TARGET:.2f}x | {verdict(console.ratio >= CONSOLE_TARGET)} |"
        )
    if idle is not None:
        measured = idle.measured
        budget = measured.budget(IDLE_TARGET)
        lines.append(
            f"| Idle CPU s in {measured.seconds:.0f} s, {measured.plugins} idle plugins | "
            f"{measured.cpu_seconds:.2f} | | | "
            f"< {budget:.3f} | {verdict(measured.cpu_seconds < budget)} |"
        )
    return lines


def server_ratios(http: HttpResult) -> dict[str, tuple[float, float, float]]:
    """tower-trio against its own server's ceiling: (tower, ceiling, ratio) per measure."""
    tower, bare = http.median_run(TOWER), http.median_run(CEILING)
    waited = http.median_run(TOWER_PUBLISHED).load.rate
    pairs = {
        "rate": (tower.load.rate, bare.load.rate),
        "cpu": (tower.cpu_per_request * 1e3, bare.cpu_per_request * 1e3),
        "p99": (tower.load.p99 * 1e3, bare.load.p99 * 1e3),
        "wait": (waited, tower.load.rate),
    }
    return {name: (mine, theirs, ratio(mine, theirs)) for name, (mine, theirs) in pairs.items()}


def server_met(name: str, value: float) -> bool:
    target = SERVER_TARGETS[name]
    return value <= target if name in ("cpu", "p99") else value >= target


_SERVER_LABELS = {
    "rate": ("`POST /triggers` req/s (vs the bare app on Hypercorn)", "≥", "{:,.0f}"),
    "cpu": ("`POST /triggers` server CPU ms/req (vs the bare app on Hypercorn)", "≤", "{:.2f}"),
    "p99": ("`POST /triggers` p99 ms at the same connections (vs the bare app)", "≤", "{:.1f}"),
    "wait": ("`?wait=published` req/s (vs the journaled 202)", "≥", "{:,.0f}"),
}


def _server_rows(http: HttpResult) -> list[str]:
    rows = []
    for name, (mine, theirs, value) in server_ratios(http).items():
        label, sign, shape = _SERVER_LABELS[name]
        rows.append(
            f"| {label} | {shape.format(mine)} | {shape.format(theirs)} | {value:.2f}x | "
            f"{sign} {SERVER_TARGETS[name]:.2f}x | {verdict(server_met(name, value))} |"
        )
    return rows


def _micro(value: float | None) -> str:
    return "" if value is None else f"{value * 1e6:.0f}"


def _publisher_section(result: PublisherResult) -> list[str]:
    rounds = len(result.rounds)
    tower = TOWER_PUBLISHER

    def row(side: str) -> str:
        loop = result.loop_cpu(side)
        workers = None if loop is None else result.cpu(side) - loop
        each = ", ".join(f"{run.rate:,.0f}" for run in result.runs(side))
        return (
            f"| {side} | {result.rate(side):,.0f} | {result.cpu(side) * 1e6:.0f} | "
            f"{_micro(workers)} | {_micro(result.broker_cpu(side))} | {each} |"
        )

    lowest = result.lowest_ratio(tower, AIO_PIKA)
    ceiling = result.ratio_of(tower, BARE)
    client = result.ratio_of(CLIENT, BARE)
    journal_cpu = result.cpu(tower) - result.cpu(CLIENT)
    tower_loop, client_loop = result.loop_cpu(tower), result.loop_cpu(CLIENT)
    lines = [
        "",
        "## Publisher throughput",
        "",
        f"{result.messages:,} triggers (JSON bodies of {result.body_bytes} bytes on average), "
        "persistent, to a durable topic exchange with a durable queue bound to it, publisher "
        f"confirms on, mandatory; aio-pika keeps at most {result.in_flight} unconfirmed, the "
        f"other three run with {result.tower_window_text} (the tower's). The clock runs "
        "from the first message handed over to the last confirm; connecting, declaring and "
        "serializing the bodies happen before it. Every side runs once as a warm-up (not "
        f"counted), then {rounds} rounds; a round publishes the {result.messages:,} "
        f"triggers in {result.slices} runs per side, the sides taking turns run by run "
        "(each taking each place in turn), so that a change in the machine's load falls on "
        "all of them alike; the queues are emptied after the round, so the broker holds as "
        "many messages at the end as after one run of them all. Every timed run starts from "
        "a collected heap and the inputs are frozen out of the collector's sight; "
        "tower-trio's sides collect as `tower-trio run` makes the tower collect, aio-pika "
        "and the bare loop as Python does by default. CPU is the "
        "publishing process's own (all its threads) while the clock ran; the broker's is "
        "RabbitMQ's Erlang VM's over the same time.",
        "",
        "- **tower-trio**: `Publisher.serve` fed through a trio memory channel, one "
        "`send` per trigger, as the HTTP API and the plugins feed it: each trigger is "
        "committed to the journal (SQLite, fsynced) and then published on the project's "
        "own AMQP client, and each confirm is recorded in the journal. Its confirm window "
        "is a setting of the tower (`TOWER_CONFIRM_WINDOW`); the figures are for the tower "
        "as shipped unless the report says otherwise.",
        f"- **aio-pika**: {result.in_flight} coroutines, each publishing and awaiting its "
        "confirm on one confirm-mode channel; no journal.",
        f"- **{CLIENT}**: the project's AMQP client (`tower_trio.amqp`) publishing the "
        "same triggers as the publisher does (its property templates, its window, "
        "mandatory) and awaiting the last confirm: the tower without the journal, the "
        "hand-over from the sources and the publisher's bookkeeping.",
        f"- **{BARE}** (`bench/_bare_amqp.py`): the ceiling. One trio task on one socket, "
        "a minimal handshake, one confirm-mode channel; it writes as many messages as the "
        "window has room for in one `send_all` and counts the broker's acks. Its frames "
        "are marshalled by pamqp before the clock starts (pamqp's encoding of the "
        "properties alone costs more CPU than the tower's whole client), so while the clock "
        "runs it only writes bytes and counts acks. It keeps no journal, has no "
        "per-message outcomes (it stops at anything but an ack), no heartbeats, no flow "
        "control, no reconnects.",
        "",
        "| Publisher | msgs/s (median) | CPU µs/msg (median) | of which worker threads "
        "| broker CPU µs/msg | msgs/s each round |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    lines.extend(row(side) for side in SIDES)
    lines.extend(
        [
            "",
            "| Round | tower-trio / aio-pika | tower-trio / bare loop | client / bare loop |",
            "| ---: | ---: | ---: | ---: |",
        ]
    )
    for index, round_ in enumerate(result.rounds):
        lines.append(
            f"| {index + 1} | "
            f"{ratio(round_[tower].rate, round_[AIO_PIKA].rate):.2f}x | "
            f"{ratio(round_[tower].rate, round_[BARE].rate):.2f}x | "
            f"{ratio(round_[CLIENT].rate, round_[BARE].rate):.2f}x |"
        )
    lines.extend(
        [
            "",
            "Every round of every side (its runs taken together), with what the machine did "
            "meanwhile: the broker's CPU per message (it serves other clients too, if any), "
            "and how many cores the other processes kept busy on average.",
            "",
            "| Round | publisher | msgs/s | CPU µs/msg | broker CPU µs/msg | other cores busy |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
    )
    for index, round_ in enumerate(result.rounds):
        lines.extend(
            f"| {index + 1} | {side} | {round_[side].rate:,.0f} | "
            f"{round_[side].cpu_per_message * 1e6:.0f} | "
            f"{_micro(round_[side].broker_cpu_per_message)} | "
            f"{'' if round_[side].other_cores is None else f'{round_[side].other_cores:.2f}'} |"
            for side in SIDES
        )
    weakest = min(
        range(rounds),
        key=lambda index: ratio(
            result.rounds[index][tower].rate, result.rounds[index][AIO_PIKA].rate
        ),
    )
    lines.extend(
        [
            "",
            f"- tower-trio / aio-pika: **{lowest:.2f}x** msgs/s in the weakest round, round "
            f"{weakest + 1} (median {result.ratio:.2f}x; target ≥ {PUBLISHER_TARGET:.1f}x in "
            f"every round: {verdict(lowest >= PUBLISHER_TARGET)}).{_weakest(result, weakest)}",
            f"- tower-trio / bare trio + pamqp loop: **{ceiling:.2f}x** msgs/s (target ≥ "
            f"{CEILING_TARGET:.1f}x: {verdict(ceiling >= CEILING_TARGET)}). The AMQP client "
            f"alone reaches {client:.2f}x of the loop, and tower-trio "
            f"{result.ratio_of(tower, CLIENT):.2f}x of the client: the rest of the tower "
            f"costs {journal_cpu * 1e6:.0f} µs of CPU per message more than the client"
            + (
                ""
                if tower_loop is None or client_loop is None
                else f" ({(result.cpu(tower) - tower_loop) * 1e6:.0f} µs in the journal's "
                "worker threads, SQLite's inserts, updates and commits; "
                f"{(tower_loop - client_loop) * 1e6:.0f} µs more in the event loop's thread: "
                "the hand-over from the sources, one scheduler pass per trigger, and the "
                "publisher's bookkeeping)"
            )
            + ".",
            f"- On {result.cores} cores the broker and the publisher share the CPU: what a "
            "side spends per message, the broker cannot, so a side's rate follows its CPU "
            "per message plus the broker's, and falls when the rest of the machine is busy.",
            "- Every queue held every confirmed message.",
        ]
    )
    return lines


def _weakest(result: PublisherResult, index: int) -> str:
    """What tower-trio and the machine did in the weakest round, against its other rounds."""
    runs = result.runs(TOWER_PUBLISHER)
    run = runs[index]
    own = (
        f" In that round tower-trio spent {run.cpu_per_message * 1e6:.0f} µs of CPU per "
        f"message (median of its rounds {result.cpu(TOWER_PUBLISHER) * 1e6:.0f})"
    )
    machine = []
    if run.other_cores is not None and all(r.other_cores is not None for r in runs):
        usual = median([r.other_cores or 0.0 for r in runs])
        machine.append(f"{run.other_cores:.2f} other cores busy (median {usual:.2f})")
    broker = run.broker_cpu_per_message
    if broker is not None and (usual_broker := result.broker_cpu(TOWER_PUBLISHER)) is not None:
        machine.append(
            f"the broker at {broker * 1e6:.0f} µs of CPU per message (median "
            f"{usual_broker * 1e6:.0f})"
        )
    return own + (f"; the machine had {' and '.join(machine)}." if machine else ".")


def _http_row(result: HttpResult, contender: Contender) -> str:
    run = result.median_run(contender)
    load = run.load
    low, high = result.spread(contender)
    return (
        f"| {run.contender.name} | {run.contender.answers_when} | {load.rate:,.0f} | "
        f"{low:,.0f} to {high:,.0f} | "
        f"{load.p50 * 1e3:.1f} | {load.p99 * 1e3:.1f} | {run.cpu_per_request * 1e3:.2f} | "
        f"{load.not_accepted} | {load.accepted:,} | {run.stored:,} |"
    )


def _http_section(result: HttpResult, machine: Machine) -> list[str]:
    which = "" if result.rounds == 1 else f" (the median of {result.rounds} runs each)"
    lines = [
        "",
        "## HTTP: `POST /triggers`",
        "",
        f"{result.connections} keep-alive connections from {machine.load_generator} (one "
        f"thread) for {result.duration:g} s{which}, each request a valid trigger, after a "
        "short warm-up. Each server is one process with a "
        "fresh exchange, a durable queue bound to it and (for the tower) a fresh journal.",
        "",
        "- **tower-trio**: `tower-trio run` (Hypercorn + Quart-Trio, the journal, the "
        "project's publisher), no plugins; measured as clients get it by default and with "
        "`?wait=published`. What a [console](console.md) streaming the live feed costs it "
        "is measured on one tower, below.",
        f"- **FastAPI peer** (`bench/_peer_fastapi.py`): FastAPI + uvicorn ({machine.peer_stack})"
        " + aio-pika with `publisher_confirms=True`, one worker, the same field rules, "
        "the same JSON answer; it publishes persistent and waits for the confirm on every "
        "request. It does less than the tower for each request, so the comparison flatters "
        "it: no journal (a crash loses what it accepted), no idempotency keys, no caps on "
        "a spec's depth, key count or string length, no per-protocol JSON Schema check, no "
        "body-size limit enforced before reading, no auth, rate limit or metrics.",
        "- **tower-trio before the journal**: the same command run from the last commit of "
        "the core service before the journal landed (extracted from git at "
        "`bench/_http_bench.py:NO_JOURNAL_REVISION`), which answered once the broker had "
        "confirmed; the journaled ingest is held to at least 0.9x of it.",
        "- **bare ASGI on Hypercorn** (`bench/_bare_hypercorn.py`): the HTTP server tower-trio "
        "is built on, serving an app that only decodes the body and answers 202; no "
        "validation, journal or broker. No server on Hypercorn's trio worker can be faster, "
        "so this is the ceiling for tower-trio's figure.",
        "",
        "req/s counts 202 responses only. CPU is the server process's own (all its threads) "
        "per response. Stored is the queue depth once the server has drained; it should be at "
        "least the 202 count (requests cut off when the load stops may still publish).",
        "",
        "The req/s column is the median run's; the range beside it is the lowest and the "
        "highest of all runs of that server, the spread to read every ratio against. The "
        "other columns are the median run's.",
        "",
        "| Server | 202 once | req/s | req/s range | p50 ms | p99 ms | CPU ms/req | not 202 "
        "| 202s | stored |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines.extend(_http_row(result, contender) for contender in CONTENDERS)
    lines.append("")
    for contender in (TOWER, TOWER_PUBLISHED):
        value = result.ratio(contender)
        lines.append(
            f"- {contender.name} / FastAPI peer: **{value:.2f}x** req/s (target ≥ "
            f"{HTTP_TARGET:.1f}x: {verdict(value >= HTTP_TARGET)})"
        )
    ceiling = result.median_run(CEILING).load.rate
    lines.append(
        f"- bare ASGI on Hypercorn / FastAPI peer: {result.ratio(CEILING):.2f}x; tower-trio "
        f"reaches {result.median_run(TOWER).load.rate / ceiling:.0%} of its own server's "
        "ceiling."
    )
    return lines


def _console_section(result: ConsoleResult, machine: Machine) -> list[str]:
    lines = [
        "",
        "## Console",
        "",
        "What a [console](console.md) left open on the live feed costs `POST /triggers`. One "
        "`tower-trio run` process (no plugins, a fresh journal, a fresh exchange with a "
        "durable queue bound to it) serves every window: separate processes of the same "
        "configuration differ from each other by more than the 5% judged here. After a "
        f"{result.warmup:g} s warm-up with a console open, {result.pairs} pairs of "
        f"{result.window:g} s windows of load from {result.connections} keep-alive "
        f"connections of {machine.load_generator} (one thread), each request a valid "
        "trigger: in each pair one window with a console streaming and one without, the "
        "order alternating pair by pair (without first in odd pairs, with first in even "
        "ones), so that a drift of the machine or of the tower (its journal grows all "
        "along) falls on both sides alike.",
        "",
        "The console is a reader in a process of its own (`bench/_console_stream.py`), on "
        "the same cores as the tower, that holds `GET /console/events` open as a browser "
        "would and reads every event. It connects before the window's load starts and "
        "stays until the tower has published every trigger the window accepted, so that "
        "it reads each trigger's pending and published rows; events read counts its "
        "`trigger` events, two per trigger published.",
        "",
        "CPU is the tower process's own (all its threads, from `/proc/<pid>/stat`) while "
        "the load ran, per 202; the reader's, the load generator's and RabbitMQ's are not "
        "counted, nor what the tower spends publishing after the load stops. After each "
        "window the tower publishes what it accepted (the queue depth stops growing) and "
        "the queue is emptied: stored is what it held, which should be at least the "
        "window's 202s.",
        "",
        "| Pair | order | console | req/s | CPU ms/req | p99 ms | events read | 202s | stored |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines.extend(_console_row(window) for window in result.windows)
    each = ", ".join(f"{value:.2f}x" for value in result.pair_ratios)
    short = [
        f"{w.pair} ({'with' if w.streaming else 'without'})"
        for w in result.windows
        if w.stored < w.load.accepted
    ]
    lines.extend(
        [
            "",
            f"- with a console streaming / without: **{result.ratio:.2f}x** req/s, the median "
            f"of the {result.pairs} pairs (target ≥ {CONSOLE_TARGET:.2f}x: "
            f"{verdict(result.ratio >= CONSOLE_TARGET)}); pair by pair {each} (lowest "
            f"{result.lowest:.2f}x, highest {result.highest:.2f}x).",
            f"- CPU per request, with / without: {result.cpu_ratio:.2f}x, the median of the pairs.",
            "- Every window's queue held at least its 202s."
            if not short
            else f"- The queue held fewer messages than 202s after pair {', '.join(short)}.",
        ]
    )
    return lines


def _console_row(window: ConsoleWindow) -> str:
    load = window.load
    return (
        f"| {window.pair} | {'1st' if window.first else '2nd'} | "
        f"{'yes' if window.streaming else 'no'} | {load.rate:,.0f} | "
        f"{window.cpu_per_request * 1e3:.2f} | {load.p99 * 1e3:.1f} | "
        f"{f'{window.events:,}' if window.streaming else ''} | {load.accepted:,} | "
        f"{window.stored:,} |"
    )


def _idle_section(result: IdleResult) -> list[str]:
    measured = result.measured
    budget = measured.budget(IDLE_TARGET)
    lines = [
        "",
        "## Idle CPU",
        "",
        "`tower-trio run` with the broker connected and no traffic, measured from "
        f"{IDLE_SETTLE:g} s after `/readyz` answered 200 and every plugin ran (what plugins do "
        "as they start is start-up, not idleness): user + system CPU time of the process "
        f"from `/proc/<pid>/stat`, over {measured.seconds:.1f} s. Twice: with no plugins, and "
        f"with {measured.plugins} plugins that have nothing to do, as a lab's tower spends most "
        f"of its time: {FOLDER_WATCHERS} folder watchers on empty folders (inotify, the "
        f"default) and {SCHEDULES} schedules whose one entry fires once a year, each a copy of "
        "the built-in under a name and configuration of its own.",
        "",
        "| Plugins | CPU s | scheduler counters, s |",
        "| ---: | ---: | ---: |",
    ]
    lines.extend(
        f"| {run.plugins} | {run.cpu_seconds:.2f} | "
        f"{'' if run.cpu_seconds_fine is None else f'{run.cpu_seconds_fine:.4f}'} |"
        for run in result.runs
    )
    lines.extend(
        [
            "",
            f"With {measured.plugins} idle plugins: **{measured.cpu_seconds:.2f} s** of CPU in "
            f"{measured.seconds:.1f} s; target < {budget:.3f} s: "
            f"{verdict(measured.cpu_seconds < budget)}.",
        ]
    )
    return lines
