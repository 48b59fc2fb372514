"""``python -m bench.growth``: how each cost of the tower grows with the work, plotted.

One run each: ``POST /triggers`` against body size, lookups and listings
against journal rows and the cost of a large prune, the publisher against
its confirm window and message size, and the tower's memory against idle
connections and against triggers pending while the broker is away. Prints
as it goes; with ``--output`` (and on a full run, ``docs/growth.md``)
writes the Markdown section and its PNGs, in ``growth/`` beside it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._broker import open_vhost
from ._common import REPO_ROOT, BenchError
from ._growth_http import run_body_sizes
from ._growth_journal import run_journal_growth
from ._growth_memory import run_idle_connections, run_pending
from ._growth_publisher import run_publisher_growth
from ._growth_report import PLOTS, GrowthResult, growth_section, write_plots
from ._report import describe_machine, uncommitted_changes

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["GrowthPlan", "main"]

PARTS = ("body", "journal", "publisher", "memory")
DOCS_PATH = REPO_ROOT / "docs" / "growth.md"
COMMAND = "python -m bench.growth"


@attrs.frozen
class GrowthPlan:
    """The sizes each curve is measured at; ``quick()`` is a smoke check."""

    body_sizes: tuple[int, ...] = (250, 4096, 65536, 524288)
    connections: int = 32
    http_seconds: float = 5.0
    warmup: float = 1.0
    journal_rows: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    lookups: int = 300
    listings: int = 50
    windows: tuple[int, ...] = (64, 256, 1024, 4096)
    window_messages: int = 20_000
    message_sizes: tuple[int, ...] = (250, 4096, 65536, 524288)
    message_budget: int = 48 << 20
    """Bytes of bodies per message-size round (between min_messages and window_messages):
    under the tower's TOWER_CACHE_MAX_BYTES, so that no body is read back from the journal."""
    min_messages: int = 50
    idle_connections: tuple[int, ...] = (100, 300, 1000)
    pending: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000, 24000, 32000)
    pending_body: int = 4096
    cache_bytes: int = 64 << 20
    """TOWER_CACHE_MAX_BYTES for the pending curve (the tower's default)."""

    @classmethod
    def quick(cls) -> GrowthPlan:
        return cls(
            http_seconds=2.0,
            warmup=0.5,
            journal_rows=(2_000, 20_000),
            lookups=50,
            listings=5,
            window_messages=2_000,
            message_budget=4 << 20,
            min_messages=20,
            idle_connections=(50, 200),
            pending=(600, 1000, 1500, 2000),
            cache_bytes=4 << 20,
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.growth",
        description=(
            "Measure how tower-trio's costs grow with the work, one run each, and plot them. "
            "A full run writes docs/growth.md and docs/growth/*.png."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke check (journals of 2k and 20k rows); writes no docs",
    )
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run this part (repeatable); writes no docs"
    )
    parser.add_argument(
        "--broker", default="127.0.0.1:5672", help="RabbitMQ host:port (127.0.0.1:5672)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=(
            "write the Markdown section here and its PNGs in growth/ beside it "
            "(default: docs/growth.md on a full run)"
        ),
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Without this, SIGTERM would skip the clean-up that stops the towers and
    # deletes the vhost and the temporary journals.
    signal.signal(signal.SIGTERM, _interrupt)
    plan = GrowthPlan.quick() if args.quick else GrowthPlan()
    parts = tuple(args.only) if args.only else PARTS
    full_run = not args.quick and not args.only
    output: Path | None = args.output or (DOCS_PATH if full_run else None)
    changed = uncommitted_changes()
    if output == DOCS_PATH and changed:
        print(
            "growth: error: uncommitted changes to "
            + ", ".join(changed)
            + "; commit them before writing docs/growth.md, or pass --output PATH",
            file=sys.stderr,
        )
        return 1
    started = time.monotonic()
    try:
        machine = describe_machine()
        _say(
            f"tower-trio {machine.revision}; {machine.cores} cores (load {machine.load_average}), "
            f"{machine.python}, RabbitMQ {machine.rabbitmq}, load: {machine.load_generator}"
        )
        result = _run(plan, parts, args.broker, started)
    except BenchError as err:
        print(f"growth: error: {err}", file=sys.stderr)
        return 1
    _say(f"\nGrowth run took {result.seconds / 60:.1f} minutes")
    for curve in result.curves:
        _say(f"  {curve.title}: " + "; ".join(v.text() for v in curve.verdicts()))
    if output is not None:
        arguments = list(sys.argv[1:] if argv is None else argv)
        command = "python -m bench.growth " + " ".join(arguments) if arguments else COMMAND
        output.parent.mkdir(parents=True, exist_ok=True)
        plots = write_plots(result, output.parent / PLOTS)
        lines = [
            "# Benchmarks: growth curves",
            "",
            "<!-- Written by `python -m bench.growth`; rerun it rather than editing by hand. -->",
            "",
            *growth_section(result, machine, command=command),
            "",
        ]
        output.write_text("\n".join(lines))
        _say(f"\nWrote {output} and {len(plots)} plots in {output.parent / PLOTS}")
    return 0


def _run(plan: GrowthPlan, parts: tuple[str, ...], broker: str, started: float) -> GrowthResult:
    result = GrowthResult(seconds=0.0)
    with (
        tempfile.TemporaryDirectory(prefix="tower-trio-growth-") as tmp,
        open_vhost(broker) as vhost,
    ):
        workdir = Path(tmp)
        if "body" in parts:
            _say("\nPOST /triggers against body size")
            body = run_body_sizes(
                vhost,
                sizes=plan.body_sizes,
                connections=plan.connections,
                duration=plan.http_seconds,
                warmup=plan.warmup,
                workdir=workdir,
                report=_say,
            )
            result = attrs.evolve(result, body=body)
        if "journal" in parts:
            _say("\nLookups, listings and pruning against journal rows")
            journal = run_journal_growth(
                vhost,
                sizes=plan.journal_rows,
                lookups=plan.lookups,
                listings=plan.listings,
                workdir=workdir,
                report=_say,
            )
            result = attrs.evolve(result, journal=journal)
        if "publisher" in parts:
            _say("\nPublisher against confirm window and message size")
            window, size = run_publisher_growth(
                vhost,
                windows=plan.windows,
                messages=plan.window_messages,
                sizes=plan.message_sizes,
                size_budget=plan.message_budget,
                min_messages=plan.min_messages,
                report=_say,
            )
            result = attrs.evolve(result, publisher_window=window, publisher_size=size)
        if "memory" in parts:
            _say("\nRSS against idle connections")
            idle = run_idle_connections(
                vhost, steps=plan.idle_connections, workdir=workdir, report=_say
            )
            _say("\nRSS against triggers pending while the broker is away")
            pending = run_pending(
                steps=plan.pending,
                body_size=plan.pending_body,
                cache_bytes=plan.cache_bytes,
                workdir=workdir,
                report=_say,
            )
            result = attrs.evolve(result, idle=idle, pending=pending)
    return attrs.evolve(result, seconds=time.monotonic() - started)


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
