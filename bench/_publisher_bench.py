"""Publisher throughput: the tower's publisher against aio-pika and against its own ceiling.

Every side publishes the same pre-built bodies, persistent, to a durable
topic exchange with a durable queue bound to it, on a publisher-confirms
channel, and the clock runs from the first message handed over until the
broker has confirmed the last one. Connecting and declaring happen before
the clock starts on every side.

* **tower-trio**: the real thing. ``Publisher.serve`` fed through a trio
  memory channel, exactly as the HTTP API and the plugins feed it, so its
  figure includes committing every trigger to the journal (SQLite, fsynced)
  and recording every confirm there.
* **aio-pika**: ``in_flight`` coroutines, each publishing and awaiting its
  confirm; no journal.
* **tower-trio's AMQP client, no journal**: ``tower_trio.amqp`` publishing the
  same stored triggers with the publisher's property templates and window,
  awaiting the last confirm. The tower minus this is what the journal (and
  the publisher's bookkeeping around it) costs.
* **bare trio + pamqp** (``bench/_bare_amqp.py``): the ceiling of any trio
  publisher of these messages, with the tower's window.

Fairness and stability: every side runs once as a warm-up (not counted);
the inputs are built before the first round and then frozen out of the
garbage collector's sight (``gc.freeze``), so that no side's collections
scan another's data; each timed run starts from a collected heap. tower-trio's
sides collect garbage as ``tower-trio run`` makes the tower collect; aio-pika
and the bare loop as Python does by default, as their users run them. A round
publishes its messages in ``SLICES`` runs per side, the sides taking turns
run by run and each taking each place in turn, so that a change in the
machine's load (on a shared machine, what makes a round weak) falls on all
of them alike rather than on whichever side ran then. Each run also records
what the broker and the rest of the machine did while its clock ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import attrs
import trio

from tower_trio import Metadata, Trigger, amqp
from tower_trio._channel import Submission
from tower_trio._cli import COLLECTOR_THRESHOLDS
from tower_trio._config import Settings
from tower_trio._journal import SQLiteStorage, open_journal
from tower_trio._message import APP_ID, PropertyTemplates
from tower_trio._publisher import Publisher
from tower_trio._storage import Outgoing

from ._bare_amqp import open_bare_connection
from ._broker import declare_bound_queue, purge_queue
from ._common import BenchError, median, own_cpu_seconds, ratio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ._broker import Vhost

__all__ = [
    "AIO_PIKA",
    "BARE",
    "CLIENT",
    "SIDES",
    "TOWER",
    "PublisherResult",
    "Round",
    "make_triggers",
    "run_publisher_bench",
]

TOWER = "tower-trio"
AIO_PIKA = "aio-pika"
CLIENT = "tower-trio AMQP client, no journal"
BARE = "bare trio + pamqp"
SIDES = (TOWER, AIO_PIKA, CLIENT, BARE)

WARM_UP_MESSAGES = 5000
"""Messages each side publishes in its warm-up run (at most the round's)."""
SLICES = 2
"""Runs per side and round: a round's messages are published in this many runs per
side, the sides taking turns run by run, so that all of them see the same machine.
More would average the machine's load better, but each run has a start and an end
where the pipeline is not full, which costs the tower's (journal, then broker) most."""

_API_VERSIONS = ("OT-2/v1alpha1", "TecanSpark/v1alpha1/Spark2", "Hamilton-STAR/v2beta1")
_BROKER_PROCESS = b"beam.smp"


@attrs.frozen
class Round:
    messages: int
    seconds: float
    cpu_seconds: float
    """CPU time of this process (every thread) while the clock ran."""
    loop_cpu_seconds: float | None = None
    """CPU time of the thread that ran the event loop; the rest of ``cpu_seconds`` is
    worker threads' (for tower-trio: the journal's SQLite work)."""
    broker_cpu_seconds: float | None = None
    """CPU time of the broker's process while the clock ran; None if it was not found."""
    other_cores: float | None = None
    """Cores busy, on average while the clock ran, with anything but this process and
    the broker (other programs, the kernel's own work, a hypervisor's steal)."""

    @classmethod
    def total(cls, runs: Sequence[Round]) -> Round:
        """Several runs of one side taken together, as one run of all their messages."""
        seconds = sum(run.seconds for run in runs)
        loops = [run.loop_cpu_seconds for run in runs]
        brokers = [run.broker_cpu_seconds for run in runs]
        others = [run.other_cores for run in runs]
        return cls(
            sum(run.messages for run in runs),
            seconds,
            sum(run.cpu_seconds for run in runs),
            loop_cpu_seconds=None if None in loops else sum(value or 0.0 for value in loops),
            broker_cpu_seconds=None if None in brokers else sum(v or 0.0 for v in brokers),
            other_cores=None
            if None in others
            else sum((run.other_cores or 0.0) * run.seconds for run in runs) / seconds,
        )

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per_message(self) -> float:
        return self.cpu_seconds / self.messages

    @property
    def loop_cpu_per_message(self) -> float | None:
        if self.loop_cpu_seconds is None:
            return None
        return self.loop_cpu_seconds / self.messages

    @property
    def broker_cpu_per_message(self) -> float | None:
        if self.broker_cpu_seconds is None:
            return None
        return self.broker_cpu_seconds / self.messages


@attrs.frozen
class PublisherResult:
    messages: int
    body_bytes: int
    in_flight: int
    tower_window: int
    rounds: tuple[dict[str, Round], ...]
    """Each measured round, every side's slices in it taken together (no warm-up)."""
    slices: int = 1
    """Runs each side made per round, the sides interleaved run by run."""
    cores: int = 0

    journal_bytes_per_trigger: float = 0.0
    """The journal's size on disk (database and WAL) after publishing a round's triggers
    in one run, per trigger."""

    @property
    def tower_window_text(self) -> str:
        return f"a confirm window of {self.tower_window}"

    def runs(self, side: str) -> tuple[Round, ...]:
        return tuple(round_[side] for round_ in self.rounds)

    def rate(self, side: str) -> float:
        """Median msgs/s."""
        return median([run.rate for run in self.runs(side)])

    def cpu(self, side: str) -> float:
        """Median CPU seconds per message."""
        return median([run.cpu_per_message for run in self.runs(side)])

    def loop_cpu(self, side: str) -> float | None:
        """Median CPU seconds per message in the event loop's thread, where known."""
        values = [run.loop_cpu_per_message for run in self.runs(side)]
        known = [value for value in values if value is not None]
        return median(known) if known and len(known) == len(values) else None

    def broker_cpu(self, side: str) -> float | None:
        """Median broker CPU seconds per message, where known."""
        values = [run.broker_cpu_per_message for run in self.runs(side)]
        known = [value for value in values if value is not None]
        return median(known) if known and len(known) == len(values) else None

    def round_ratios(self, side: str, against: str) -> tuple[float, ...]:
        """``side``'s msgs/s over ``against``'s, round by round."""
        return tuple(ratio(round_[side].rate, round_[against].rate) for round_ in self.rounds)

    def ratio_of(self, side: str, against: str) -> float:
        """Median msgs/s over median msgs/s."""
        return ratio(self.rate(side), self.rate(against))

    def lowest_ratio(self, side: str, against: str) -> float:
        return min(self.round_ratios(side, against))

    # The names the rest of the harness has always read.

    @property
    def tower(self) -> float:
        return self.rate(TOWER)

    @property
    def aio_pika(self) -> float:
        return self.rate(AIO_PIKA)

    @property
    def tower_cpu(self) -> float:
        return self.cpu(TOWER)

    @property
    def aio_pika_cpu(self) -> float:
        return self.cpu(AIO_PIKA)

    @property
    def ratio(self) -> float:
        return self.ratio_of(TOWER, AIO_PIKA)


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


def _outgoing(triggers: Sequence[Trigger]) -> list[Outgoing]:
    """The triggers as the publisher reads them from the journal."""
    return [
        Outgoing(
            seq,
            trigger.uuid,
            trigger.routing_key,
            trigger.protocol,
            trigger.metadata.source,
            Submission.of(trigger).body,
            trigger.created_at.timestamp(),
            0,
        )
        for seq, trigger in enumerate(triggers, start=1)
    ]


class _Clock:
    """Times one run: wall clock, this process's CPU, the broker's and the machine's.

    A side calls ``start`` once it is connected and its inputs are built, and
    ``stop`` once the broker has confirmed its last message. The broker's and
    the other processes' CPU come from each thread's scheduler statistics
    (``/proc/<pid>/task/<tid>/schedstat``, in nanoseconds), read just outside
    the window so that reading them does not count as this process's CPU.
    """

    def __init__(self, broker_pid: int | None) -> None:
        self._broker = broker_pid
        self._started: _Sample | None = None
        self._stopped: _Sample | None = None
        self._machine_before: dict[tuple[int, int], int] = {}
        self._machine_after: dict[tuple[int, int], int] = {}

    def start(self) -> None:
        self._machine_before = _runtimes()
        self._started = _Sample.now()

    def stop(self) -> None:
        self._stopped = _Sample.now()
        self._machine_after = _runtimes()

    def stop_later(self) -> Callable[[], None]:
        """Stop now, but keep a way to move the stop to a later moment."""
        self.stop()
        return self.stop

    def round(self, messages: int) -> Round:
        started, stopped = self._started, self._stopped
        if started is None or stopped is None:
            raise BenchError("a publisher run ended without its clock started and stopped")
        seconds = stopped.wall - started.wall
        broker = others = 0
        ours = os.getpid()
        before = self._machine_before
        for task, runtime in self._machine_after.items():
            # A thread that started meanwhile ran only inside the window.
            spent = runtime - before.get(task, 0)
            if task[0] == self._broker:
                broker += spent
            elif task[0] != ours:
                others += spent
        return Round(
            messages,
            seconds,
            stopped.cpu - started.cpu,
            loop_cpu_seconds=stopped.thread - started.thread,
            broker_cpu_seconds=None if self._broker is None else broker / 1e9,
            other_cores=others / 1e9 / seconds if self._machine_after else None,
        )


@attrs.frozen
class _Sample:
    wall: float
    cpu: float
    """This process's CPU time."""
    thread: float
    """The calling thread's CPU time: start and stop are called from the event loop."""

    @classmethod
    def now(cls) -> _Sample:
        return cls(time.perf_counter(), own_cpu_seconds(), time.thread_time())


def _runtimes() -> dict[tuple[int, int], int]:
    """Nanoseconds each thread on the machine has run, by (process, thread)."""
    runtimes = {}
    try:
        processes = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return {}
    for pid in processes:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # Ended meanwhile.
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                    runtimes[int(pid), int(tid)] = int(stat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return runtimes


def _broker_pid() -> int | None:
    """The local RabbitMQ's Erlang VM, if exactly one runs here and /proc shows it."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_bytes().strip() == _BROKER_PROCESS:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found[0] if len(found) == 1 else None


@contextlib.contextmanager
def _collecting_as(name: str) -> Iterator[None]:
    """The collector as ``name`` runs with: tower-trio's as `tower-trio run` sets it.

    aio-pika and the bare loop keep Python's defaults, as their users run them.
    """
    if name not in (TOWER, CLIENT):
        yield
        return
    thresholds = gc.get_threshold()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class _Contest:
    """The four sides, their inputs and queues, ready to run any slice of the triggers."""

    def __init__(
        self, vhost: Vhost, triggers: Sequence[Trigger], settings: Settings, in_flight: int
    ) -> None:
        self._vhost = vhost
        self._triggers = triggers
        self._settings = settings
        self._in_flight = in_flight
        suffix = settings.exchange.rpartition(".")[2]
        # Queues and exchanges are separate namespaces: each queue takes its exchange's name.
        self._exchanges = {
            TOWER: settings.exchange,
            AIO_PIKA: f"bench.publisher.aio-pika.{suffix}",
            CLIENT: f"bench.publisher.client.{suffix}",
            BARE: f"bench.publisher.bare.{suffix}",
        }
        for exchange in self._exchanges.values():
            declare_bound_queue(vhost.url, exchange, exchange)
        self.prepared = [_Prepared.of(trigger) for trigger in triggers]
        self._outgoing = _outgoing(triggers)
        self._broker = _broker_pid()
        self.journal_bytes_per_trigger = 0.0
        """After the last tower-trio run: its journal's size on disk, per trigger."""

    def run(self, name: str, start: int, stop: int) -> Round:
        """Time one run of ``name`` publishing triggers ``start`` to ``stop``."""
        gc.collect()
        with _collecting_as(name):
            return self._run(name, start, stop)

    def _run(self, name: str, start: int, stop: int) -> Round:
        clock = _Clock(self._broker)
        url, exchange, window = (
            self._vhost.url,
            self._exchanges[name],
            self._settings.confirm_window,
        )
        if name == TOWER:
            size = trio.run(_tower_round, self._settings, self._triggers[start:stop], clock)
            self.journal_bytes_per_trigger = size / (stop - start)
        elif name == AIO_PIKA:
            prepared = self.prepared[start:stop]
            asyncio.run(_aio_pika_round(url, exchange, prepared, self._in_flight, clock))
        elif name == CLIENT:
            trio.run(_client_round, url, exchange, self._outgoing[start:stop], window, clock)
        else:
            trio.run(_bare_round, self._vhost, exchange, self._outgoing[start:stop], window, clock)
        return clock.round(stop - start)

    def check_stored(self, name: str, count: int, label: str) -> None:
        """Empty ``name``'s queue, which must hold ``count`` messages."""
        stored = purge_queue(self._vhost.url, self._exchanges[name])
        if stored != count:
            raise BenchError(
                f"{name} {label}: the queue held {stored} messages after {count} were confirmed"
            )

    def round(self, index: int, messages: int) -> dict[str, Round]:
        """Every side publishes ``messages`` triggers in ``SLICES`` runs, taking turns."""
        runs: dict[str, list[Round]] = {name: [] for name in SIDES}
        size = -(-messages // SLICES)
        for number, start in enumerate(range(0, messages, size)):
            # Every side runs every slice, each taking each place in turn: a
            # change in the machine's load hits all of them alike. The queues
            # are emptied only after the round, so the broker holds as many
            # messages as after one run of all of them.
            shift = (index * SLICES + number) % len(SIDES)
            for name in SIDES[shift:] + SIDES[:shift]:
                runs[name].append(self.run(name, start, min(start + size, messages)))
        for name in SIDES:
            self.check_stored(name, messages, f"round {index + 1}")
        return {name: Round.total(runs[name]) for name in SIDES}


def run_publisher_bench(
    vhost: Vhost,
    *,
    messages: int,
    rounds: int,
    in_flight: int,
    tower_window: int | None = None,
    report: Callable[[str], None],
) -> PublisherResult:
    """Run every side once to warm up, then ``rounds`` rounds, checking every message was stored."""
    settings = Settings.from_environ(
        {
            "TOWER_AMQP_URL": vhost.url,
            "TOWER_EXCHANGE": f"bench.publisher.tower.{uuid.uuid4().hex[:8]}",
            # The tower runs as shipped (its default window) unless told otherwise;
            # aio-pika keeps `in_flight` unconfirmed, as the comparison asks.
            **({} if tower_window is None else {"TOWER_CONFIRM_WINDOW": str(tower_window)}),
        }
    )
    contest = _Contest(vhost, make_triggers(messages), settings, in_flight)
    # Everything built so far lives to the end: out of the collector's sight, no
    # side's collections pay for scanning it.
    gc.collect()
    gc.freeze()
    results: list[dict[str, Round]] = []
    try:
        warm_up = min(messages, WARM_UP_MESSAGES)
        for name in SIDES:
            result = contest.run(name, 0, warm_up)
            contest.check_stored(name, warm_up, "warm-up")
            report(f"  warm-up: {name:<34} {_describe(result)}")
        for index in range(rounds):
            results.append(contest.round(index, messages))
            label = f"round {index + 1}"
            for name in SIDES:
                report(f"  {label}: {name:<34} {_describe(results[-1][name])}")
            report(
                f"  {label}: tower-trio / aio-pika "
                f"{ratio(results[-1][TOWER].rate, results[-1][AIO_PIKA].rate):.2f}x, "
                f"/ bare loop {ratio(results[-1][TOWER].rate, results[-1][BARE].rate):.2f}x, "
                f"client / bare loop "
                f"{ratio(results[-1][CLIENT].rate, results[-1][BARE].rate):.2f}x"
            )
        # The journal's size after one run of all of a round's triggers (untimed).
        contest.run(TOWER, 0, messages)
        contest.check_stored(TOWER, messages, "the journal's size run")
    finally:
        gc.unfreeze()
    prepared = contest.prepared
    return PublisherResult(
        messages=messages,
        body_bytes=round(sum(len(item.body) for item in prepared) / len(prepared)),
        in_flight=in_flight,
        tower_window=settings.confirm_window,
        rounds=tuple(results),
        slices=SLICES,
        cores=os.cpu_count() or 0,
        journal_bytes_per_trigger=contest.journal_bytes_per_trigger,
    )


def _describe(result: Round) -> str:
    loop = result.loop_cpu_per_message
    threads = "" if loop is None else f", {loop * 1e6:.0f} in the loop's thread"
    broker = result.broker_cpu_per_message
    machine = "" if broker is None else f", broker {broker * 1e6:.0f} µs/msg"
    if result.other_cores is not None:
        machine += f", others {result.other_cores:.2f} cores"
    return (
        f"{result.rate:>7,.0f} msgs/s ({result.seconds:.3f} s, "
        f"CPU {result.cpu_per_message * 1e6:.0f} µs/msg{threads}{machine})"
    )


async def _tower_round(settings: Settings, triggers: Sequence[Trigger], clock: _Clock) -> int:
    """Publish through the tower; returns the journal's size on disk (database and WAL) after."""
    with tempfile.TemporaryDirectory(prefix="tower-trio-bench-journal-") as data_dir:
        # A fresh journal per round, so that no round starts with a backlog.
        journal = open_journal(Path(data_dir))
        try:
            await _publish_through(
                Publisher(settings, SQLiteStorage(journal)), settings, triggers, clock
            )
            return journal.size_bytes()
        finally:
            journal.close()


async def _publish_through(
    publisher: Publisher, settings: Settings, triggers: Sequence[Trigger], clock: _Clock
) -> None:
    """Feed ``triggers`` to the running publisher; the clock runs until all are confirmed."""
    send_channel, receive_channel = trio.open_memory_channel[Submission](settings.channel_size)
    # Bodies are serialized here, before the clock, as aio-pika's are.
    submissions = [Submission.of(trigger) for trigger in triggers[:-1]]
    last = Submission.of(triggers[-1], wait_published=True)
    submissions.append(last)
    restop: Callable[[], None] | None = None

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await publisher.serve(receive_channel, task_status=task_status)
        if restop is not None:
            restop()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        before = publisher.statistics()
        if not before.connected:
            raise BenchError(f"the tower's publisher could not connect: {before.last_error}")
        clock.start()
        async with send_channel:
            for submission in submissions:
                await send_channel.send(submission)
        await last.wait_settled()
        stop = clock.stop_later()
        # Confirms settle in publish order, so the last settling means all did,
        # unless a nack sent one round again; then the drain is the honest end.
        if publisher.statistics().published != len(triggers):
            restop = stop
    stats = publisher.statistics()
    if stats.published != len(triggers):
        raise BenchError(
            f"the tower's publisher confirmed {stats.published} of {len(triggers)} "
            f"(unroutable {stats.unroutable}, failed {stats.failed}, nacked {stats.nacked})"
        )


async def _client_round(
    url: str, exchange: str, outgoing: Sequence[Outgoing], window: int, clock: _Clock
) -> None:
    """The tower's AMQP client alone: what the publisher sends, as it sends it, no journal."""
    templates = PropertyTemplates()
    async with (
        amqp.open_connection(url) as connection,
        connection.open_channel(confirm=True, window=window) as channel,
    ):
        confirmations = []
        clock.start()
        for item in outgoing:
            confirmations.append(
                await channel.publish(
                    exchange,
                    item.routing_key,
                    item.body,
                    properties=templates(item),
                    mandatory=True,
                )
            )
        # Confirms come in publish order: the last one means all of them.
        await confirmations[-1].wait()
        clock.stop()
    answered = [c.outcome for c in confirmations if c.outcome is not amqp.Outcome.ACK]
    if answered:
        raise BenchError(f"the AMQP client's loop got {len(answered)} answers other than ack")


async def _bare_round(
    vhost: Vhost, exchange: str, outgoing: Sequence[Outgoing], window: int, clock: _Clock
) -> None:
    url = amqp.URL.parse(vhost.url)
    async with open_bare_connection(
        url.host, url.port, url.username, url.password, url.vhost
    ) as connection:
        frames = connection.encode(exchange, outgoing)
        clock.start()
        await connection.publish_all(frames, window)
        clock.stop()


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
    url: str, exchange_name: str, prepared: Sequence[_Prepared], in_flight: int, clock: _Clock
) -> None:
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

        clock.start()
        await asyncio.gather(*(publish_some() for _ in range(in_flight)))
        clock.stop()
