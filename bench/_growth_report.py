"""The growth curves as PNG plots and as a Markdown section.

``growth_section`` returns the section's lines (for ``docs/benchmarks.md``
or a file of its own); ``write_plots`` draws one PNG per curve, and one of
the ingest probe's latencies through the prune, into a ``growth/`` folder
beside the Markdown, which links them by that relative path.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import attrs
import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt  # (after choosing the backend)
from matplotlib import ticker

from tower_trio._journal import PRUNE_BATCH

from ._growth import LAB_SCALE, LAB_TRIGGERS_PER_DAY, Curve
from ._growth_journal import PROBE_INTERVAL, JournalGrowth, ProbeSample, PruneResult

if TYPE_CHECKING:
    from pathlib import Path

    from ._report import Machine

__all__ = ["GrowthResult", "growth_section", "write_plots"]

PLOTS = "growth"
"""The folder of the PNGs, beside the Markdown that links them."""
PRUNE_PLOT = "journal-prune"
_PACKAGES = ("trio", "hypercorn", "quart-trio", "pamqp")


@attrs.frozen
class GrowthResult:
    seconds: float
    """How long the whole growth run took."""
    body: Curve | None = None
    journal: JournalGrowth | None = None
    publisher_window: Curve | None = None
    publisher_size: Curve | None = None
    idle: Curve | None = None
    pending: Curve | None = None

    @property
    def curves(self) -> list[Curve]:
        journal = (
            []
            if self.journal is None
            else [self.journal.lookup, self.journal.listing, self.journal.listing_rare]
        )
        return [
            curve
            for curve in (
                self.body,
                *journal,
                self.publisher_window,
                self.publisher_size,
                self.idle,
                self.pending,
            )
            if curve is not None
        ]


# -- plots --------------------------------------------------------------------------------------


def write_plots(result: GrowthResult, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [_plot_curve(curve, folder / f"{curve.key}.png") for curve in result.curves]
    if result.journal is not None:
        written.append(_plot_prune(result.journal.prune, folder / f"{PRUNE_PLOT}.png"))
    return written


def _plot_curve(curve: Curve, path: Path) -> Path:
    count = len(curve.panels)
    figure, axes = plt.subplots(1, count, figsize=(5.2 * count, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], curve.panels, strict=True):
        for line, index in enumerate(panel):
            series = curve.series[index]
            ax.plot(
                curve.xs,
                series.values,
                marker="o" if line == 0 else ".",
                linestyle="-" if line == 0 else "--",
                label=series.label,
            )
        if curve.log_x:
            ax.set_xscale("log")
        values = [v for i in panel for v in curve.series[i].values]
        # A log axis within one decade would show no labelled tick at all.
        if curve.log_y and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            ax.set_ylim(bottom=0, top=max(values) * 1.15 or 1)
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
        if curve.log_x:
            ax.set_xticks(curve.xs, labels=curve.x_texts)
            ax.xaxis.set_minor_locator(ticker.NullLocator())
        else:
            ax.set_xlim(left=0, right=max(curve.xs) * 1.05)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_plain))
        ax.set_xlabel(curve.x_label)
        if len(panel) == 1:
            ax.set_ylabel(curve.series[panel[0]].label)
        else:
            ax.legend(fontsize=8)
        ax.grid(visible=True, which="major", alpha=0.3)
        if curve.bound is not None:
            ax.axvline(curve.bound, color="tab:red", linestyle=":", linewidth=1)
            ax.annotate(
                curve.bound_label.replace("`", ""),
                xy=(curve.bound, 0.97),
                xycoords=("data", "axes fraction"),
                xytext=(4, 0),
                textcoords="offset points",
                verticalalignment="top",
                fontsize=7,
                color="tab:red",
            )
    verdicts = "; ".join(v.text() for v in curve.verdicts()).replace("`", "")
    width = 60 * count
    figure.suptitle(
        "\n".join(
            [curve.title, *textwrap.wrap(f"{curve.series[curve.cost].label}: {verdicts}", width)]
        ),
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plain(value: float, _position: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _plot_prune(prune: PruneResult, path: Path) -> Path:
    figure, ax = plt.subplots(figsize=(8.0, 3.6))
    accepted = [s for s in prune.samples if s.status == 202]
    refused = [s for s in prune.samples if s.status != 202]
    ax.scatter(
        [s.sent for s in accepted], [s.latency for s in accepted], s=6, label="202", zorder=2
    )
    if refused:
        ax.scatter(
            [s.sent for s in refused],
            [s.latency for s in refused],
            s=14,
            marker="x",
            color="tab:red",
            label="not 202",
            zorder=3,
        )
    ax.axvline(prune.prune_ended, color="tab:red", linestyle="--", linewidth=1)
    ax.annotate(
        "prune ended",
        xy=(prune.prune_ended, 0.9),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
        color="tab:red",
    )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    ax.set_xlabel("seconds since the tower answered /healthz (request sent)")
    ax.set_ylabel("POST /triggers latency, s")
    ax.grid(visible=True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(
        f"POST /triggers while a {prune.rows:,}-row journal is pruned "
        f"({prune.tower_deleted:,} rows deleted)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# -- Markdown -----------------------------------------------------------------------------------


def growth_section(
    result: GrowthResult, machine: Machine, *, command: str, level: int = 2
) -> list[str]:
    """The growth curves as Markdown, headed at ``level``; plots linked under growth/."""
    head = "#" * level
    sub = "#" * (level + 1)
    lines = [
        f"{head} Growth curves",
        "",
        f"Measured on {machine.date} with `{command}` in {result.seconds / 60:.1f} minutes: "
        "one run per point, so a single point can be off by the machine's noise; what the "
        "curves show is how each cost grows. Each verdict is the slope of the cost fitted "
        "on log-log axes over all the points: within 0.15 of 0 is flat, within 0.15 of 1 "
        "linear, above 1.15 worse than linear. The slope of the last step alone is given "
        "beside it for reference; with one run per point it is noisier than the fit. Where "
        "the fixed part was measured in the same run (the smallest "
        "request's, a baseline's memory), the cost judged is what lies beyond it; the tables "
        "show both. A curve with a documented bound is judged below and past it.",
        "",
        f"Lab scale assumed in the readings: {LAB_SCALE}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| tower-trio commit | {machine.revision} |",
        f"| CPU | {machine.cores} cores, {machine.cpu} |",
        f"| System | {machine.system} |",
        f"| Load average at the start (1 / 5 / 15 min) | {machine.load_average} |",
        f"| Python | {machine.python} |",
        f"| RabbitMQ | {machine.rabbitmq}, on loopback |",
        f"| HTTP load generator | {machine.load_generator} |",
    ]
    lines.extend(
        f"| {name} | {machine.packages[name]} |" for name in _PACKAGES if name in machine.packages
    )
    lines.extend(
        ["", f"{sub} Verdicts", "", "| Curve | Cost judged | Growth |", "| --- | --- | --- |"]
    )
    for curve in result.curves:
        verdicts = "; ".join(v.text() for v in curve.verdicts())
        lines.append(
            f"| [{curve.title}](#{_anchor(curve.title)}) | {curve.series[curve.cost].label} "
            f"| {verdicts} |"
        )
    if result.journal is not None:
        prune = result.journal.prune
        lines.append(
            f"| [Pruning {prune.rows:,} rows](#{_anchor(_prune_title(prune))}) | ingest "
            f"latency during the prune | {_prune_verdict(prune)} |"
        )
    for curve in result.curves:
        lines.extend(_curve_lines(curve, sub))
    if result.journal is not None:
        lines.extend(_prune_lines(result.journal.prune, sub))
    return lines


def _anchor(title: str) -> str:
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _curve_lines(curve: Curve, sub: str) -> list[str]:
    header = "| " + " | ".join([curve.x_label, *(s.label for s in curve.series)]) + " |"
    align = "| --- | " + " | ".join("---:" for _ in curve.series) + " |"
    rows = [
        "| " + " | ".join([curve.x_texts[i], *(s.text(i) for s in curve.series)]) + " |"
        for i in range(len(curve.xs))
    ]
    verdicts = "; ".join(v.text() for v in curve.verdicts())
    return [
        "",
        f"{sub} {curve.title}",
        "",
        curve.method,
        "",
        header,
        align,
        *rows,
        "",
        f"![{curve.title}]({PLOTS}/{curve.key}.png)",
        "",
        f"**{curve.series[curve.cost].label}: {verdicts}.** {curve.reading}",
    ]


def _prune_title(prune: PruneResult) -> str:
    return f"Pruning at {prune.rows:,} rows"


def _stalls(prune: PruneResult) -> bool:
    """Whether ingest stopped: POSTs sent during the prune were refused."""
    return prune.refused_during > 0


def _p50(samples: list[ProbeSample]) -> float:
    ordered = sorted(s.latency for s in samples)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _prune_verdict(prune: PruneResult) -> str:
    if not prune.during:
        return "not measured: the prune was over before the tower served HTTP"
    if _stalls(prune):
        return (
            f"ingest stalls: POSTs waited up to {prune.longest_wait:.1f} s, "
            f"{prune.refused_during} of {len(prune.during)} not 202"
        )
    return (
        f"ingest goes on, slower: p50 {_p50(prune.during) * 1e3:,.0f} ms during it against "
        f"{_p50(prune.after) * 1e3:,.1f} ms after, longest {prune.longest_wait:.1f} s, none "
        "refused"
    )


def _prune_lines(prune: PruneResult, sub: str) -> list[str]:
    during = prune.during
    after = prune.after
    after_ms = sorted(s.latency for s in after)
    after_p50 = after_ms[len(after_ms) // 2] * 1e3 if after_ms else 0.0
    rate = prune.alone_deleted / prune.alone_seconds if prune.alone_seconds else 0.0
    hourly = LAB_TRIGGERS_PER_DAY / 24
    statuses = ", ".join(f"{status}: {count}" for status, count in prune.statuses_during().items())
    lines = [
        "",
        f"{sub} {_prune_title(prune)}",
        "",
        f"The journal of the lookups above, at {prune.rows:,} rows created over 70 days, and a "
        f"`tower-trio run` started on it with `TOWER_RETENTION={prune.retention_days}d`, as "
        "after that setting was lowered: its first prune starts as it starts. From the moment "
        f"it answers `GET /healthz`, a client sends a small trigger every {PROBE_INTERVAL:g} "
        "s, each on a connection of its own whatever the answers before it, until three "
        "seconds after the tower logs `journal.pruned`. The same prune (`Journal.prune`, "
        "what the tower calls) is also timed alone, in-process, on a copy of the journal.",
        "",
        "| | |",
        "| --- | --- |",
        f"| Journal on disk before | {prune.file_bytes / 1e6:,.0f} MB |",
        f"| Prune alone | {prune.alone_deleted:,} rows deleted in {prune.alone_seconds:.1f} s "
        f"({rate:,.0f} rows/s) |",
        f"| Prune in the tower | {prune.tower_deleted:,} rows deleted, ended "
        f"{prune.prune_ended:.1f} s after `/healthz` answered |",
        f"| POSTs sent during the prune | {len(during)}: longest wait "
        f"{prune.longest_wait:.2f} s; statuses {statuses or 'none'} |",
        f"| POSTs after it | {len(after)}, p50 {after_p50:.1f} ms |",
        f"| Journal on disk after | {prune.file_bytes_after / 1e6:,.0f} MB |",
        "",
        f"![{_prune_title(prune)}]({PLOTS}/{PRUNE_PLOT}.png)",
        "",
    ]
    during_ms = sorted(s.latency for s in during)
    during_p50 = during_ms[len(during_ms) // 2] * 1e3 if during_ms else 0.0
    if not during:
        lines.append(
            "**Not measured:** the prune was over before the tower answered `/healthz`, so "
            "no POST could be sent during it."
        )
    elif _stalls(prune):
        lines.append(
            f"**Ingest stalls while the journal is pruned.** POSTs sent meanwhile waited up to "
            f"{prune.longest_wait:.1f} s (p50 {during_p50:,.0f} ms, against {after_p50:.1f} ms "
            "after it). A POST not stored within `TOWER_PUBLISH_TIMEOUT` gets 503 `journal did "
            "not answer in time` (not stored); one already in a batch the journal is writing "
            "gets 504 `journal outcome unknown` after twice that (stored once the write ends, "
            "and published)."
        )
    else:
        lines.append(
            "**Ingest goes on while the journal is pruned, slower.** The prune deletes "
            f"{PRUNE_BATCH:,} rows a transaction and takes its turn with the ingest's batches "
            "for the journal's one writer, so a POST waits for the transaction under way, "
            f"and no more: p50 {during_p50:,.0f} ms during the prune against "
            f"{after_p50:.1f} ms after it, the longest {prune.longest_wait:.2f} s; none was "
            "refused."
        )
    if during and rate:
        lines.extend(
            [
                "",
                f"At lab scale the hourly prune deletes about {hourly:,.0f} rows, about "
                f"{hourly / rate * 1e3:,.0f} ms of work at this rate. A prune this large comes "
                "only when `TOWER_RETENTION` is lowered, or at the first start after a long stop.",
            ]
        )
    lines.extend(
        [
            "",
            "The file does not shrink: SQLite keeps the freed pages for later rows (there is "
            "no VACUUM), so the journal's size on disk stays that of the largest it has been.",
        ]
    )
    return lines
