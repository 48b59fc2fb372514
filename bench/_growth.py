"""Growth curves: what one measured cost does as the work grows, and how to judge it.

A ``Curve`` is one run of a measurement at a few sizes of the work (body
bytes, journal rows, open connections...): its table columns, which of them
to plot, and which one is the *cost* whose growth gets a verdict. The
verdict is the slope on log-log axes fitted over all the points (about 0
is flat, about 1 linear, above that worse); the last step's own slope is
shown beside it for reference, noisier than the fit since each point is
one run. A curve with a documented bound (a cache cap) is judged below and
past it separately.

Also here: the request bodies of a given size that every part sends, and
the resident memory of a process.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from tower_trio import Metadata, Trigger
from tower_trio._serialization import dump_trigger

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "LAB_ROWS",
    "LAB_SCALE",
    "LAB_TRIGGERS_PER_DAY",
    "Curve",
    "Series",
    "Verdict",
    "judge",
    "nearest",
    "post_body",
    "resident_bytes",
    "size_text",
    "sized_trigger",
]

FLAT = 0.15
"""Log-log slopes within this of 0 read as flat, within this of 1 as linear."""

LAB_TRIGGERS_PER_DAY = 10_000
LAB_PLUGINS = 100
LAB_RETENTION_DAYS = 7
"""The lab scale every reading is put against: 10k triggers a day from 100 plugins,
kept for the default TOWER_RETENTION."""
LAB_ROWS = LAB_TRIGGERS_PER_DAY * LAB_RETENTION_DAYS
LAB_SCALE = (
    f"{LAB_TRIGGERS_PER_DAY:,} triggers a day from {LAB_PLUGINS} plugins "
    f"({LAB_TRIGGERS_PER_DAY / 86400:.2f}/s on average), kept {LAB_RETENTION_DAYS} days "
    f"(the default `TOWER_RETENTION`): a journal of about {LAB_ROWS:,} rows"
)

API_VERSION = "OT-2/v1alpha1"
PROTOCOL = "PlateTransfer"


@attrs.frozen
class Series:
    """One column of a curve's table: a measured value at each x."""

    label: str
    values: tuple[float, ...]
    fmt: str = ",.0f"

    def text(self, index: int) -> str:
        return format(self.values[index], self.fmt)


@attrs.frozen
class Verdict:
    """How a cost grows over a range of x."""

    scope: str
    """Which points were judged ("all points", "up to the cache bound"...)."""
    slope: float | None
    """Log-log slope fitted over the points in scope (None: fewer than two usable)."""
    tail: float | None
    """Log-log slope between the two largest x in scope."""

    @property
    def growth(self) -> str:
        """The class of the slope fitted over all the points in scope."""
        return _growth_class(self.slope)

    @property
    def tail_growth(self) -> str:
        """The class of the last step alone: shown for reference, noisier than the fit."""
        return _growth_class(self.tail)

    @property
    def worse_than_linear(self) -> bool:
        return self.growth == WORSE

    def text(self) -> str:
        if self.slope is None or self.tail is None:
            return f"{self.growth} ({self.scope})"
        return (
            f"{self.growth} ({self.scope}: log-log slope {self.slope:.2f}; "
            f"last step alone {self.tail:.2f})"
        )


WORSE = "worse than linear"


def _growth_class(slope: float | None) -> str:
    if slope is None:
        return "not judged (fewer than two points)"
    if slope < -FLAT:
        return "falls"
    if slope <= FLAT:
        return "flat"
    if slope < 1 - FLAT:
        return "sub-linear"
    if slope <= 1 + FLAT:
        return "linear"
    return WORSE


@attrs.frozen
class Curve:
    """One growth curve: its measurements, what to plot, and the cost to judge."""

    key: str
    """File stem of its plot: docs/growth/<key>.png."""
    title: str
    x_label: str
    xs: tuple[float, ...]
    x_texts: tuple[str, ...]
    series: tuple[Series, ...]
    panels: tuple[tuple[int, ...], ...]
    """The plot's panels, each the indices into ``series`` of the lines it draws."""
    cost: int
    """Index into ``series`` of the cost whose growth is judged."""
    method: str
    """How it was measured, for the report."""
    reading: str = ""
    """What the verdict means for the tower, and at lab scale."""
    log_x: bool = True
    log_y: bool = True
    bound: float | None = None
    """The x at which a documented bound is reached, if the curve has one."""
    bound_label: str = ""
    origin: float = 0.0
    """The x the cost is measured from (its baseline's): subtracted from x when judging."""

    def verdicts(self) -> list[Verdict]:
        points = [
            (x - self.origin, value)
            for x, value in zip(self.xs, self.series[self.cost].values, strict=True)
        ]
        if self.bound is None:
            return [judge(points, "all points")]
        bound = self.bound - self.origin
        below = [p for p in points if p[0] <= bound]
        # Past the bound, growth is judged from the last point below it on.
        above = [p for p in points if p[0] > bound]
        if below and above:
            above = [below[-1], *above]
        verdicts = [judge(below, f"up to {self.bound_label}")]
        if len(above) >= 2:
            verdicts.append(judge(above, f"past {self.bound_label}"))
        return verdicts


def judge(points: Sequence[tuple[float, float]], scope: str) -> Verdict:
    """Fit log-log slopes to ``(x, cost)`` points; non-positive values are left out."""
    usable = sorted((x, y) for x, y in points if x > 0 and y > 0)
    if len(usable) < 2:
        return Verdict(scope, None, None)
    logs_x = [math.log(x) for x, _ in usable]
    logs_y = [math.log(y) for _, y in usable]
    slope = statistics.linear_regression(logs_x, logs_y).slope
    tail = (logs_y[-1] - logs_y[-2]) / (logs_x[-1] - logs_x[-2])
    return Verdict(scope, slope, tail)


def nearest(xs: Sequence[float], values: Sequence[float], x: float) -> tuple[float, float]:
    """The point of a curve whose x is nearest ``x`` (on log axes)."""
    index = min(range(len(xs)), key=lambda i: abs(math.log(xs[i] / x)))
    return xs[index], values[index]


def size_text(size: float) -> str:
    """250 B, 4 KiB, 512 KiB, 64 MiB."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == round(value) else f"{value:.1f} {unit}"
    return f"{size:.0f} B"


# -- bodies of a given size ---------------------------------------------------------------


def _plate_spec(wells: int, note: str) -> dict[str, Any]:
    """A plate run with rich per-well records (~290 bytes and 9 keys a well), and a note."""
    rows = "ABCDEFGH"
    return {
        "plate": "96-well",
        "wells": [
            {
                "well": f"{rows[index // 12 % 8]}{index % 12 + 1:02d}",
                "step": f"{index:05d}",
                "volume": 12.5,
                "reagent": "buffer-0001",
                "concentration": 0.125,
                "mix": {"cycles": 3, "volume": 50.0},
                "notes": "n" * 150,
            }
            for index in range(wells)
        ],
        "note": note,
    }


def _sized_spec(size: int, encode: Callable[[dict[str, Any]], bytes]) -> dict[str, Any]:
    """A spec whose ``encode``d body is ``size`` bytes (or as small as it gets)."""
    one = len(encode(_plate_spec(1, "")))
    # Each well after the first brings its comma too.
    per_well = len(encode(_plate_spec(2, ""))) - one
    wells = 0 if size < one else 1 + (size - one) // per_well
    spec = _plate_spec(wells, "")
    spec["note"] = "x" * max(0, size - len(encode(spec)))
    return spec


def _post_wire(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "protocol": PROTOCOL,
        "spec": spec,
        "metadata": {"spec": {"operator": "bench"}},
    }


def _encode(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire, separators=(",", ":")).encode()


def post_body(size: int) -> bytes:
    """A valid ``POST /triggers`` body of ``size`` bytes: a plate run, padded to size."""
    return _encode(_post_wire(_sized_spec(size, lambda spec: _encode(_post_wire(spec)))))


def _trigger(spec: dict[str, Any]) -> Trigger:
    return Trigger(
        api_version=API_VERSION, protocol=PROTOCOL, spec=spec, metadata=Metadata(source="bench")
    )


def sized_trigger(size: int) -> Callable[[], Trigger]:
    """A maker of triggers (each with its own uuid) whose published body is ``size`` bytes."""
    spec = _sized_spec(size, lambda spec: dump_trigger(_trigger(spec)))
    return lambda: _trigger(spec)


# -- memory -------------------------------------------------------------------------------------


def resident_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")
