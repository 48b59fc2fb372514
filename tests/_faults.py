"""Helpers for the fault-injection tests: load, plugin feed, tally.

The tests drive real ``tower-trio run`` processes against the real broker.
Steps are sequenced on signals (log lines, the load's progress, process
exits), never on sleeps; the one clock is the load's steady rate.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from tower_trio import amqp
from tower_trio._serialization import load_trigger

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

API_VERSION = "OT-2/v1alpha1"
PLUGIN = "faults"
CLIENTS = 8
PLUGIN_EVERY = 3
"""Every third job of a load is a trigger sent by the plugin, the others are POSTs."""
RATE = 200.0
"""Jobs started per second, across all clients."""

# The plugin reads job numbers, one a line, from a TCP feed served by the test
# and sends one trigger per number. Each (re)connection gets every number
# released so far, as a watcher re-reads its source after a restart; the key
# lets the tower drop the ones it already holds.
PLUGIN_SOURCE = f"""
import attrs
import trio

from tower_trio import Trigger


@attrs.frozen
class Config:
    port: int


async def run(send_channel, config):
    stream = await trio.open_tcp_stream("127.0.0.1", config.port)
    async with stream:
        unread = b""
        async for chunk in stream:
            *lines, unread = (unread + chunk).split(b"\\n")
            for line in lines:
                job = int(line)
                await send_channel.send(
                    Trigger(
                        api_version={API_VERSION!r},
                        protocol="PlateTransfer",
                        spec={{"job": job}},
                        key=f"job-{{job}}",
                    )
                )
    await trio.sleep_forever()
"""


def is_plugin_job(job: int) -> bool:
    return job % PLUGIN_EVERY == 0


async def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` and return its output; a failure names the command."""
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        raise RuntimeError("rabbitmqctl is not on PATH; the fault tests drive the local RabbitMQ")
    result = await trio.run_process(
        [executable, "-q", *args], capture_stdout=True, capture_stderr=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"rabbitmqctl {' '.join(args)} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode(errors="replace")


@attrs.define(eq=False)
class Feed:
    """The test plugin's event source: job numbers over TCP.

    Every connection first gets every job released so far, as a watcher
    re-reads its source after a restart; the stream ends once the test has
    released its last job.
    """

    port: int = 0
    connections: int = 0
    _released: list[int] = attrs.Factory(list)
    _finished: bool = False
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def released(self) -> frozenset[int]:
        return frozenset(self._released)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def release(self, job: int) -> None:
        self._released.append(job)
        self._notify()

    def finish(self) -> None:
        self._finished = True
        self._notify()

    async def wait_connections(self, count: int) -> None:
        while self.connections < count:
            await self._changed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self._notify()
        sent = 0
        try:
            async with stream:
                while True:
                    if sent < len(self._released):
                        batch = self._released[sent:]
                        sent += len(batch)
                        await stream.send_all("".join(f"{job}\n" for job in batch).encode())
                    elif self._finished:
                        return
                    else:
                        await self._changed.wait()
        except trio.BrokenResourceError:
            # The tower was killed; its successor connects again and gets everything.
            return


@attrs.define(eq=False)
class Target:
    """Where the HTTP clients post; it moves when the tower restarts on another port."""

    url: str
    outage: bool = False
    """Set while the tower is deliberately down: failed requests are then expected."""
    _moved: trio.Event = attrs.Factory(trio.Event)

    def begin_outage(self) -> None:
        self.outage = True

    def move(self, url: str) -> None:
        self.url = url
        self.outage = False
        self._moved.set()
        self._moved = trio.Event()

    async def wait_moved_from(self, url: str) -> None:
        while self.url == url:
            await self._moved.wait()


@attrs.define(eq=False)
class Answers:
    """What the HTTP clients were told, per job."""

    accepted: dict[int, str] = attrs.Factory(dict)
    """Job → uuid of each trigger answered 202."""
    statuses: Counter[str] = attrs.Factory(Counter)
    """The ``status`` field of the 202 bodies (pending or published)."""
    refused: dict[int, str] = attrs.Factory(dict)
    """Job → status line and body of every answer other than 202."""
    cut: set[int] = attrs.Factory(set)
    """Jobs whose request was sent but never answered (the tower died meanwhile)."""


@attrs.frozen
class Step:
    """A fault (or a wait) injected into a load, ordered by the load's progress."""

    at: int
    """The step starts once this many jobs are done."""
    hold: int
    """Job number the load may not start before the step has finished."""
    action: Callable[[], Awaitable[None]]


@attrs.define(eq=False)
class Load:
    """Jobs 0..size-1 taken in order by concurrent workers at a steady rate, with holds."""

    size: int
    rate: float
    """Jobs started per second, across all workers."""
    done: int = 0
    _next: int = 0
    _next_start: float = 0.0
    _holds: dict[int, trio.Event] = attrs.Factory(dict)
    _progress: trio.Event = attrs.Factory(trio.Event)

    def hold(self, job: int) -> trio.Event:
        return self._holds.setdefault(job, trio.Event())

    async def take(self) -> int | None:
        while self._next < self.size:
            hold = self._holds.get(self._next)
            if hold is not None and not hold.is_set():
                await hold.wait()
                continue
            job = self._next
            self._next += 1
            # A steady rate rather than full speed: rabbitmqctl takes about half a
            # second to act, and a load run flat out would be over (or parked at
            # its next hold, with nothing in flight) by the time the fault lands.
            start = max(trio.current_time(), self._next_start)
            self._next_start = start + 1 / self.rate
            await trio.sleep_until(start)
            return job
        return None

    def complete(self) -> None:
        self.done += 1
        self._progress.set()
        self._progress = trio.Event()

    async def wait_done(self, count: int) -> None:
        while self.done < count:
            await self._progress.wait()


class _Body(httpx.AsyncByteStream):
    """A request body whose iterator is an object rather than an async generator.

    httpx iterates its own request bodies with an async generator; when the
    tower dies in the middle of a request, that generator is dropped before it
    is exhausted and trio warns about it (encode/httpx#3686), which the suite
    turns into an error.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


async def post_to_a_tower_that_may_die(
    client: httpx.AsyncClient, path: str, trigger: dict[str, Any]
) -> httpx.Response:
    """POST ``trigger`` as JSON with a body that leaves nothing to warn about if cut off."""
    body = json.dumps(trigger).encode()
    request = client.build_request(
        "POST", path, content=body, headers={"content-type": "application/json"}
    )
    request.stream = _Body(body)
    return await client.send(request)


async def _post(client: httpx.AsyncClient, target: Target, job: int, answers: Answers) -> None:
    trigger = {"apiVersion": API_VERSION, "protocol": "PlateTransfer", "spec": {"job": job}}
    body = json.dumps(trigger).encode()
    while True:
        url = target.url
        request = client.build_request(
            "POST", f"{url}/triggers", content=body, headers={"content-type": "application/json"}
        )
        request.stream = _Body(body)
        try:
            response = await client.send(request)
        except httpx.TransportError as err:
            if not target.outage and target.url == url:
                raise AssertionError(f"the tower stopped answering: {err!r}") from err
            if isinstance(err, httpx.ConnectError):
                # Nothing was sent, so sending it to the restarted tower cannot duplicate it.
                await target.wait_moved_from(url)
                continue
            answers.cut.add(job)
            return
        break
    if response.status_code != 202:
        answers.refused[job] = f"{response.status_code} {response.text}"
        return
    answer: dict[str, Any] = response.json()
    answers.accepted[job] = answer["uuid"]
    answers.statuses[answer["status"]] += 1


async def _work(load: Load, target: Target, feed: Feed, answers: Answers) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        while (job := await load.take()) is not None:
            if is_plugin_job(job):
                feed.release(job)
            else:
                await _post(client, target, job, answers)
            load.complete()


async def run_load(
    size: int, target: Target, feed: Feed, answers: Answers, steps: Sequence[Step]
) -> None:
    """Send ``size`` jobs from several concurrent clients, running ``steps`` on the way."""
    load = Load(size, RATE)
    for step in steps:
        assert step.at < step.hold <= size, step
        load.hold(step.hold)
    async with trio.open_nursery() as nursery:
        for _ in range(CLIENTS):
            nursery.start_soon(_work, load, target, feed, answers)
        for step in steps:
            await load.wait_done(step.at)
            await step.action()
            load.hold(step.hold).set()
    feed.finish()


@attrs.frozen
class Delivery:
    message_id: str | None
    uuid: str
    job: int
    source: str


def _delivery(message: amqp.Message) -> Delivery:
    trigger = load_trigger(message.body)
    assert isinstance(trigger.spec, dict)
    return Delivery(
        message.properties.message_id, trigger.uuid, trigger.spec["job"], trigger.metadata.source
    )


async def consume_until_seen(
    amqp_url: str, queue: str, jobs: Iterable[int], deliveries: list[Delivery]
) -> None:
    """Consume (and ack) into ``deliveries`` until every job in ``jobs`` has been seen once."""
    missing = set(jobs)
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel() as channel,
    ):
        await channel.basic_qos(256)
        async with channel.consume(queue) as messages:
            async for message in messages:
                delivery = _delivery(message)
                deliveries.append(delivery)
                # Acked one by one: whatever the consumer had prefetched but not
                # read goes back to the queue when the channel closes.
                await channel.basic_ack(message.delivery_tag)
                missing.discard(delivery.job)
                if not missing:
                    return


async def drain(amqp_url: str, queue: str, deliveries: list[Delivery]) -> None:
    """Take everything left in ``queue`` into ``deliveries``."""
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel() as channel,
    ):
        while (message := await channel.basic_get(queue)) is not None:
            deliveries.append(_delivery(message))


@attrs.frozen
class Tally:
    """What reached the queue, against what the tower accepted."""

    answers: Answers
    released: frozenset[int]
    deliveries: Sequence[Delivery]

    @property
    def expected(self) -> set[int]:
        return set(self.answers.accepted) | self.released

    def _uuids_by_job(self) -> Mapping[int, set[str]]:
        uuids: defaultdict[int, set[str]] = defaultdict(set)
        for delivery in self.deliveries:
            uuids[delivery.job].add(delivery.uuid)
        return uuids

    @property
    def lost(self) -> list[int]:
        return sorted(self.expected - {d.job for d in self.deliveries})

    @property
    def duplicates(self) -> int:
        """Messages beyond the first with the same message_id."""
        return len(self.deliveries) - len({d.message_id for d in self.deliveries})

    @property
    def mislabelled(self) -> list[Delivery]:
        """Messages whose message_id is not the uuid of the trigger they carry."""
        return [d for d in self.deliveries if d.message_id != d.uuid]

    @property
    def wrong_uuid(self) -> dict[int, tuple[str, set[str]]]:
        """202'd jobs that arrived under any uuid other than the one in the answer."""
        uuids = self._uuids_by_job()
        return {
            job: (uuid, uuids[job])
            for job, uuid in self.answers.accepted.items()
            if uuids[job] - {uuid}
        }

    @property
    def resent(self) -> dict[int, set[str]]:
        """Plugin jobs that arrived as more than one trigger (different uuids)."""
        return {
            job: uuids
            for job, uuids in self._uuids_by_job().items()
            if is_plugin_job(job) and len(uuids) > 1
        }

    @property
    def unexpected(self) -> list[int]:
        sent = self.expected | self.answers.cut
        return sorted({d.job for d in self.deliveries} - sent)

    def summary(self) -> str:
        cut_arrived = self.answers.cut & {d.job for d in self.deliveries}
        return (
            f"{len(self.answers.accepted)} POSTs answered 202 "
            f"({dict(self.answers.statuses)}), {len(self.answers.refused)} refused, "
            f"{len(self.answers.cut)} cut ({len(cut_arrived)} of them arrived), "
            f"{len(self.released)} plugin triggers; "
            f"{len(self.deliveries)} messages, {self.duplicates} duplicates by message_id, "
            f"{len(self.lost)} lost, {len(self.resent)} plugin triggers re-sent with a new uuid"
        )
