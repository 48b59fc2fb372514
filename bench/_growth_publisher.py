"""Publisher msgs/s against the confirm window and against message size.

Each point is one round of the publisher benchmark's tower side
(``bench/_publisher_bench.py``): ``Publisher.serve`` fed through a memory
channel, every trigger committed to a fresh journal and then published,
persistent, to a durable exchange with a durable queue bound to it; the
clock runs from the first send to the last confirm. The queue is checked
to hold every message, then purged.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import trio

from tower_trio._config import Settings

from ._broker import declare_bound_queue, purge_queue
from ._common import BenchError
from ._growth import (
    LAB_TRIGGERS_PER_DAY,
    Curve,
    Series,
    nearest,
    size_text,
    sized_trigger,
)
from ._publisher_bench import _Clock, _tower_round, make_triggers

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tower_trio import Trigger

    from ._broker import Vhost

__all__ = ["run_publisher_growth"]


def _round(
    vhost: Vhost, exchange: str, triggers: Sequence[Trigger], window: int | None
) -> tuple[float, float]:
    """Messages per second and CPU µs per message of one tower round."""
    settings = Settings.from_environ(
        {
            "TOWER_AMQP_URL": vhost.url,
            "TOWER_EXCHANGE": exchange,
            **({} if window is None else {"TOWER_CONFIRM_WINDOW": str(window)}),
        }
    )
    clock = _Clock(broker_pid=None)
    trio.run(_tower_round, settings, triggers, clock)
    measured = clock.round(len(triggers))
    stored = purge_queue(vhost.url, exchange)
    if stored != len(triggers):
        raise BenchError(f"the queue held {stored} messages after {len(triggers)} were confirmed")
    return measured.rate, measured.cpu_per_message * 1e6


def run_publisher_growth(
    vhost: Vhost,
    *,
    windows: Sequence[int],
    messages: int,
    sizes: Sequence[int],
    size_budget: int,
    min_messages: int,
    report: Callable[[str], None],
) -> tuple[Curve, Curve]:
    exchange = f"bench.growth.publisher.{uuid.uuid4().hex[:8]}"
    declare_bound_queue(vhost.url, exchange, exchange)
    small = make_triggers(messages)
    window_rates: list[float] = []
    window_cpu: list[float] = []
    for window in windows:
        rate, cpu = _round(vhost, exchange, small, window)
        window_rates.append(rate)
        window_cpu.append(cpu)
        report(f"  window {window:>5}: {rate:9,.0f} msgs/s  CPU {cpu:5.0f} µs/msg")
    defaults = Settings.from_environ({})
    default_window = defaults.confirm_window
    size_rates: list[float] = []
    size_cpu: list[float] = []
    counts: list[int] = []
    for size in sizes:
        count = max(min_messages, min(messages, size_budget // size))
        make = sized_trigger(size)
        triggers = [make() for _ in range(count)]
        rate, cpu = _round(vhost, exchange, triggers, None)
        size_rates.append(rate)
        size_cpu.append(cpu)
        counts.append(count)
        report(
            f"  {size_text(size):>8} messages: {rate:9,.0f} msgs/s  CPU {cpu:7.0f} µs/msg  "
            f"{rate * size / 1e6:6.1f} MB/s  ({count:,} messages)"
        )
    common = (
        "One round of the publisher benchmark's tower side per point (`Publisher.serve` fed "
        "through a trio memory channel: each trigger committed to a fresh journal, SQLite "
        "fsynced, then published persistent with confirms to a durable exchange with a "
        "durable queue bound to it); the clock runs from the first send to the last "
        "confirm, and the queue is checked to hold every message. CPU is the publishing "
        "process's own, all threads."
    )
    best_window, best_rate = max(zip(windows, window_rates, strict=True), key=lambda p: p[1])
    _, at_default = nearest(windows, window_rates, default_window)
    by_window = Curve(
        key="publisher-window",
        title="Publisher msgs/s against TOWER_CONFIRM_WINDOW",
        x_label="confirm window (messages unconfirmed at most)",
        xs=tuple(float(w) for w in windows),
        x_texts=tuple(f"{w:,}" for w in windows),
        series=(
            Series("msgs/s", tuple(window_rates)),
            Series("µs per message", tuple(1e6 / r for r in window_rates), ".0f"),
            Series("CPU µs/msg", tuple(window_cpu), ".0f"),
        ),
        panels=((0,), (2,)),
        cost=1,
        method=f"{messages:,} triggers of about 200 bytes per window. " + common,
        reading=(
            "The cost judged is the time per message. A window only bounds how many "
            "messages wait for their confirm, and no cost per message grows with it; a small "
            "one leaves the publisher waiting while the broker's disk writes catch up "
            f"({window_rates[0]:,.0f} msgs/s at {windows[0]:,}). The default "
            f"({default_window:,}) gave {at_default:,.0f} msgs/s, the best here "
            f"{best_rate:,.0f} at {best_window:,}. Memory held by the window is at most the "
            "window times the body size."
        ),
    )
    largest = sizes[-1]
    by_size = Curve(
        key="publisher-size",
        title="Publisher msgs/s against message size",
        x_label="message body",
        xs=tuple(float(s) for s in sizes),
        x_texts=tuple(size_text(s) for s in sizes),
        series=(
            Series("msgs/s", tuple(size_rates)),
            Series("µs per message", tuple(1e6 / r for r in size_rates), ".0f"),
            Series("CPU µs/msg", tuple(size_cpu), ".0f"),
            Series(
                "MB/s", tuple(r * s / 1e6 for r, s in zip(size_rates, sizes, strict=True)), ".1f"
            ),
            Series("messages", tuple(float(c) for c in counts)),
            Series(
                f"µs per message beyond {size_text(sizes[0])}'s",
                tuple(1e6 / r - 1e6 / size_rates[0] for r in size_rates),
                ".0f",
            ),
        ),
        panels=((0,), (3,)),
        cost=5,
        method=(
            f"The tower's default window ({default_window:,}); per size, "
            f"{size_text(size_budget)} of bodies (between {min_messages:,} and {messages:,} "
            "messages), each a plate run padded to the exact published size. "
            + (
                "Every round's bodies fit in `TOWER_CACHE_MAX_BYTES` "
                f"({size_text(defaults.cache_max_bytes)}), so none is read back from the "
                "journal before it is published (a larger burst has the bodies past the cap "
                "read back from it first). "
                if max(c * s for c, s in zip(counts, sizes, strict=True))
                <= defaults.cache_max_bytes
                else ""
            )
            + common
        ),
        reading=(
            f"The cost judged is the time per message beyond a {size_text(sizes[0])} message's: "
            "the part that follows the bytes, written to the journal, fsynced, then sent and "
            "stored by the broker. At "
            f"{size_text(largest)} the publisher moves {size_rates[-1]:,.0f} messages/s "
            f"({size_rates[-1] * largest / 1e6:,.0f} MB/s); the lab scale assumed here "
            f"averages {LAB_TRIGGERS_PER_DAY / 86400:.2f} messages/s."
        ),
    )
    return by_window, by_size
