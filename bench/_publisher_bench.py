"""Publisher throughput: the tower's publisher against aio-pika.

Both sides publish the same pre-built bodies, persistent, to a durable
topic exchange with a durable queue bound to it, on a publisher-confirms
channel with at most 256 messages unconfirmed, and the clock runs from the
first message handed over until the broker has confirmed the last one.
Connecting and declaring happen before the clock starts on both sides;
building each message's properties happens inside it on both sides.

The tower side is the real thing: ``Publisher.serve`` fed through a trio
memory channel, exactly as the HTTP API and the plugins feed it, so its
figure includes committing every trigger to the journal (SQLite, fsynced)
before publishing it; aio-pika has no such step.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import attrs
import trio

from tower_trio import Metadata, Trigger
from tower_trio._channel import Submission
from tower_trio._config import Settings
from tower_trio._journal import SQLiteStorage, open_journal
from tower_trio._message import APP_ID
from tower_trio._publisher import Publisher

from ._broker import declare_bound_queue, purge_queue
from ._common import BenchError, median, own_cpu_seconds, ratio

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._broker import Vhost

__all__ = ["PublisherResult", "Round", "make_triggers", "run_publisher_bench"]

TOWER = "tower-trio"
AIO_PIKA = "aio-pika"

_API_VERSIONS = ("OT-2/v1alpha1", "TecanSpark/v1alpha1/Spark2", "Hamilton-STAR/v2beta1")


@attrs.frozen
class Round:
    messages: int
    seconds: float
    cpu_seconds: float
    """CPU time of this process (every thread) while the clock ran."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per_message(self) -> float:
        return self.cpu_seconds / self.messages


@attrs.frozen
class PublisherResult:
    messages: int
    body_bytes: int
    in_flight: int
    tower_window: int
    tower_rounds: tuple[Round, ...]
    aio_pika_rounds: tuple[Round, ...]

    journal_bytes_per_trigger: float = 0.0
    """The journal's size on disk (database and WAL) after a round, per trigger."""

    @property
    def tower_window_text(self) -> str:
        return f"a confirm window of {self.tower_window}"

    @property
    def tower(self) -> float:
        """Median msgs/s."""
        return median([round_.rate for round_ in self.tower_rounds])

    @property
    def aio_pika(self) -> float:
        return median([round_.rate for round_ in self.aio_pika_rounds])

    @property
    def tower_cpu(self) -> float:
        """Median CPU seconds per message."""
        return median([round_.cpu_per_message for round_ in self.tower_rounds])

    @property
    def aio_pika_cpu(self) -> float:
        return median([round_.cpu_per_message for round_ in self.aio_pika_rounds])

    @property
    def ratio(self) -> float:
        return ratio(self.tower, self.aio_pika)


def make_triggers(count: int) -> list[Trigger]:
    """Triggers whose JSON bodies are a little over 200 bytes, as a lab sends them."""
    return [
        Trigger(
            api_version=_API_VERSIONS[index % len(_API_VERSIONS)],
            protocol="PlateTransfer",
            spec={"source": f"A{index % 12 + 1}", "destination": "B2", "volume": 100},
            metadata=Metadata(source="bench"),
        )
        for index in range(count)
    ]


def run_publisher_bench(
    vhost: Vhost,
    *,
    messages: int,
    rounds: int,
    in_flight: int,
    tower_window: int | None = None,
    report: Callable[[str], None],
) -> PublisherResult:
    """Alternate the two sides for ``rounds`` rounds, checking every message was stored."""
    triggers = make_triggers(messages)
    suffix = uuid.uuid4().hex[:8]
    # Queues and exchanges are separate namespaces, so each queue takes its exchange's name.
    tower_exchange = f"bench.publisher.tower.{suffix}"
    pika_exchange = f"bench.publisher.aio-pika.{suffix}"
    declare_bound_queue(vhost.url, tower_exchange, tower_exchange)
    declare_bound_queue(vhost.url, pika_exchange, pika_exchange)
    settings = Settings.from_environ(
        {
            "TOWER_AMQP_URL": vhost.url,
            "TOWER_EXCHANGE": tower_exchange,
            # The tower runs as shipped (its default window) unless told otherwise;
            # aio-pika keeps `in_flight` unconfirmed, as the comparison asks.
            **({} if tower_window is None else {"TOWER_CONFIRM_WINDOW": str(tower_window)}),
        }
    )
    prepared = [_Prepared.of(trigger) for trigger in triggers]

    journal_bytes: list[int] = []

    def tower_round() -> tuple[float, float]:
        seconds, cpu_seconds, size = trio.run(_tower_round, settings, triggers)
        journal_bytes.append(size)
        return seconds, cpu_seconds

    def pika_round() -> tuple[float, float]:
        return asyncio.run(_aio_pika_round(vhost.url, pika_exchange, prepared, in_flight))

    sides: dict[str, tuple[Callable[[], tuple[float, float]], str, list[Round]]] = {
        TOWER: (tower_round, tower_exchange, []),
        AIO_PIKA: (pika_round, pika_exchange, []),
    }
    for round_index in range(rounds):
        # Alternating who goes first keeps a drift of the machine from favouring one side.
        order = (TOWER, AIO_PIKA) if round_index % 2 == 0 else (AIO_PIKA, TOWER)
        for name in order:
            run, queue, results = sides[name]
            seconds, cpu_seconds = run()
            stored = purge_queue(vhost.url, queue)
            if stored != messages:
                raise BenchError(
                    f"{name} round {round_index + 1}: the queue held {stored} messages "
                    f"after {messages} were confirmed"
                )
            result = Round(messages, seconds, cpu_seconds)
            results.append(result)
            report(
                f"  round {round_index + 1}: {name:<10} {result.rate:>9,.0f} msgs/s "
                f"({seconds:.3f} s, CPU {result.cpu_per_message * 1e6:.0f} µs/msg, "
                f"{stored} stored)"
            )
    return PublisherResult(
        messages=messages,
        body_bytes=round(sum(len(item.body) for item in prepared) / len(prepared)),
        in_flight=in_flight,
        tower_window=settings.confirm_window,
        tower_rounds=tuple(sides[TOWER][2]),
        aio_pika_rounds=tuple(sides[AIO_PIKA][2]),
        journal_bytes_per_trigger=median([float(size) for size in journal_bytes]) / messages,
    )


async def _tower_round(settings: Settings, triggers: Sequence[Trigger]) -> tuple[float, float, int]:
    """Seconds, CPU seconds, and the journal's size on disk (database and WAL) after."""
    with tempfile.TemporaryDirectory(prefix="tower-trio-bench-journal-") as data_dir:
        # A fresh journal per round, so that no round starts with a backlog.
        journal = open_journal(Path(data_dir))
        try:
            seconds, cpu_seconds = await _publish_through(
                Publisher(settings, SQLiteStorage(journal)), settings, triggers
            )
            return seconds, cpu_seconds, journal.size_bytes()
        finally:
            journal.close()


async def _publish_through(
    publisher: Publisher, settings: Settings, triggers: Sequence[Trigger]
) -> tuple[float, float]:
    """Seconds and CPU seconds from the first send until all are confirmed."""
    send_channel, receive_channel = trio.open_memory_channel[Submission](settings.channel_size)
    # Bodies are serialized here, before the clock, as aio-pika's are.
    submissions = [Submission.of(trigger) for trigger in triggers[:-1]]
    last = Submission.of(triggers[-1], wait_published=True)
    submissions.append(last)
    drained_at = 0.0

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal drained_at
        await publisher.serve(receive_channel, task_status=task_status)
        drained_at = time.perf_counter()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        before = publisher.statistics()
        if not before.connected:
            raise BenchError(f"the tower's publisher could not connect: {before.last_error}")
        cpu_started = own_cpu_seconds()
        started = time.perf_counter()
        async with send_channel:
            for submission in submissions:
                await send_channel.send(submission)
        await last.wait_settled()
        settled_at = time.perf_counter()
        cpu_settled = own_cpu_seconds()
        at_last = publisher.statistics()
    stats = publisher.statistics()
    if stats.published != len(triggers):
        raise BenchError(
            f"the tower's publisher confirmed {stats.published} of {len(triggers)} "
            f"(unroutable {stats.unroutable}, failed {stats.failed}, nacked {stats.nacked})"
        )
    # Confirms settle in publish order, so the last settling means all did,
    # unless a nack sent one round again; then the drain is the honest end.
    cpu_seconds = cpu_settled - cpu_started
    if at_last.published == len(triggers):
        return settled_at - started, cpu_seconds
    return drained_at - started, cpu_seconds


@attrs.frozen
class _Prepared:
    body: bytes
    routing_key: str
    message_id: str
    protocol: str
    source: str
    created_at: datetime

    @classmethod
    def of(cls, trigger: Trigger) -> _Prepared:
        return cls(
            body=Submission.of(trigger).body,
            routing_key=trigger.routing_key,
            message_id=trigger.uuid,
            protocol=trigger.protocol,
            source=trigger.metadata.source,
            created_at=trigger.created_at,
        )


async def _aio_pika_round(
    url: str, exchange_name: str, prepared: Sequence[_Prepared], in_flight: int
) -> tuple[float, float]:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        pending = iter(prepared)

        async def publish_some() -> None:
            # Each worker waits for its own confirm, so `in_flight` workers keep
            # exactly that many messages unconfirmed: aio-pika's usual pattern.
            for item in pending:
                message = aio_pika.Message(
                    item.body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=item.message_id,
                    type=item.protocol,
                    app_id=APP_ID,
                    timestamp=item.created_at,
                    headers={"protocol": item.protocol, "source": item.source},
                )
                await exchange.publish(message, routing_key=item.routing_key)

        cpu_started = own_cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(publish_some() for _ in range(in_flight)))
        return time.perf_counter() - started, own_cpu_seconds() - cpu_started
