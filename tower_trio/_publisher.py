"""The publisher: journal first, then the broker, with confirms.

The publisher owns the journal's writer and the broker connection. Its
tasks:

- ``_ingest``: takes batches from the memory channel and commits each
  batch to the journal in one transaction (group commit), then tells the
  sources their triggers are on disk. It runs whether or not the broker is
  there, so the tower keeps accepting while RabbitMQ is away.
- ``_deliver``: (re)connects with capped, jittered backoff, and publishes
  every pending journal row in order, many in flight at once on a
  confirm-mode channel. After a reconnect (or a restart) it starts again
  from the oldest unconfirmed row. A copy of recently committed rows, up
  to ``TOWER_CACHE_MAX_BYTES``, is kept in memory so that the usual path
  never reads them back from disk.
- ``_record``: writes the broker's answers back to the journal in batches.
- ``_prune``: deletes settled rows older than the retention period.
- ``_watch_room``: checks that the journal has room for another trigger,
  so that ``/readyz`` says so before a write fails.

It returns when every source has closed its end of the channel and the
journal holds nothing pending.
"""

from __future__ import annotations

import collections
import platform
import struct
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs
import trio

from . import amqp
from ._backoff import Backoff
from ._broker_advice import describe_broker_error
from ._errors import JournalError, PublishError
from ._journal import Accepted, JournalRecord, Outgoing, Settlement
from ._logging import get_logger
from ._version import __version__
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._channel import Submission
    from ._config import Settings
    from ._journal import Journal

__all__ = ["Publisher", "PublisherStatistics"]

_log = get_logger(__name__)

APP_ID = "tower-trio"
_BATCH = 512
_PRUNE_EVERY = 3600.0
_ROOM_EVERY = 5.0

# Mutation testing (docs/testing.md) runs over the confirm path: what takes,
# journals, publishes and settles each trigger. Connection handling,
# housekeeping and message encoding are marked "no mutate block", which keeps
# the run within its hour; the suite still tests them like the rest.


class ConfirmTimeoutError(PublishError):
    """The broker did not confirm a message in time; the connection is presumed dead."""


@attrs.frozen
class PublisherStatistics:
    connected: bool
    blocked: bool
    pending: int
    published: int
    attempts: int
    unroutable: int
    failed: int
    nacked: int
    duplicates: int
    reconnects: int
    unconfirmed: int
    last_error: str | None
    unrecorded: int = 0
    """Broker answers not yet written to the journal (which still says pending)."""
    cached_bytes: int = 0
    """Bytes of bodies kept in memory to publish without reading the journal."""
    journal_problem: str | None = None
    """Why the journal cannot take another trigger now, if it cannot."""


@attrs.define(eq=False)
class _InFlight:
    outgoing: Outgoing
    attempts: int
    confirmation: amqp.Confirmation
    deadline: float


class Publisher:
    """Journals triggers, then publishes them to the exchange, routed by apiVersion."""

    def __init__(self, settings: Settings, journal: Journal) -> None:  # pragma: no mutate block
        self._settings = settings
        self._journal = journal
        self._url = amqp.URL.parse(settings.amqp_url)
        self._exchange = settings.exchange
        self._connection: amqp.Connection | None = None
        self._started = False
        self._reconnect_backoff = Backoff(initial=0.5, cap=30.0)
        self.on_published: Callable[[float], None] | None = None
        """Called with the seconds from acceptance to confirm of each published trigger."""

        self._last_committed = 0  # highest journal seq committed so far
        self._pending = 0  # journal rows not yet settled
        self._ingest_done = False
        self._recent: collections.deque[Outgoing] = collections.deque()
        self._recent_bytes = 0
        self._journal_problem: str | None = None
        self._room_check = trio.Event()
        self._waiters: dict[int, Submission] = {}
        self._work = trio.Event()  # something new to publish, or the ingest ended

        self._inflight: collections.deque[_InFlight] = collections.deque()
        self._inflight_changed = trio.Event()
        self._retries_waiting = 0
        self._delivering_done = False
        self._nack_backoff = Backoff(initial=0.5, cap=30.0)
        self._properties = PropertyTemplates()

        # Broker answers not yet in the journal, by seq (a later answer for the
        # same row replaces an earlier one), and the batch being written now.
        self._settlements: dict[int, Settlement] = {}
        self._recording: dict[int, Settlement] = {}
        self._settlements_waiting = trio.Event()
        self._flush_lock = trio.Lock()

        self._published = self._unroutable = self._failed = self._nacked = 0
        self._attempts = 0
        self._duplicates = 0
        self._connections = 0
        self._last_error: str | None = None

    def current(self, record: JournalRecord) -> JournalRecord:
        """``record`` with the broker's answer that the journal has not recorded yet.

        Settlements are written in batches, so a lookup right after a confirm
        would otherwise show a trigger as pending that a client was already
        told is published.
        """
        settlement = self._settlements.get(record.seq) or self._recording.get(record.seq)
        if settlement is None:
            return record
        return attrs.evolve(
            record,
            status=settlement.status,
            attempts=settlement.attempts,
            last_error=settlement.last_error,
            published_at=settlement.at if settlement.status == "published" else None,
        )

    @property
    def url(self) -> amqp.URL:
        return self._url

    def statistics(self) -> PublisherStatistics:  # pragma: no mutate block
        connection = self._connection
        return PublisherStatistics(
            connected=connection is not None,
            blocked=connection is not None and connection.blocked,
            pending=self._pending,
            published=self._published,
            attempts=self._attempts,
            unroutable=self._unroutable,
            failed=self._failed,
            nacked=self._nacked,
            duplicates=self._duplicates,
            reconnects=max(0, self._connections - 1),
            unconfirmed=len(self._inflight),
            last_error=self._last_error,
            unrecorded=self.unrecorded(),
            cached_bytes=self._recent_bytes,
            journal_problem=self._journal_problem,
        )

    def unrecorded(self) -> int:
        """Triggers the broker settled whose record is not in the journal yet."""
        answers = self._settlements | self._recording
        return sum(1 for settlement in answers.values() if settlement.status != "pending")

    async def serve(
        self,
        receive_channel: trio.MemoryReceiveChannel[Submission],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:  # pragma: no mutate block
        """Run until the sources are done and nothing is pending.

        Reports started once the journal is read and the first connection
        attempt is over, whether it succeeded or not: the tower serves (and
        reports not ready) while the broker is away.
        """
        journal = self._journal
        self._last_committed = await journal.write(journal.last_seq)
        self._pending = await journal.write(journal.pending_count)
        if self._pending:
            _log.info("journal.backlog", pending=self._pending, path=journal.path)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ingest, receive_channel)
                nursery.start_soon(self._record)
                nursery.start_soon(self._prune)
                nursery.start_soon(self._watch_room)
                await self._deliver(task_status)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self._flush_settlements()
                except JournalError as err:
                    _log.error(
                        "journal.write_failed", error=err, settlements=len(self._settlements)
                    )
            if self._pending or self.unrecorded():
                # The journal's own count: triggers the broker took but whose
                # record could not be written are pending there, and go out
                # again at the next start.
                _log.warning(
                    "publisher.stopped_with_pending",
                    pending=self._pending + self.unrecorded(),
                    unconfirmed=self._pending,
                    unrecorded=self.unrecorded(),
                    note="kept in the journal; published at the next start",
                )

    # -- channel → journal ---------------------------------------------------------

    async def _ingest(self, receive_channel: trio.MemoryReceiveChannel[Submission]) -> None:
        journal = self._journal
        async with receive_channel:
            while True:
                try:
                    batch = [await receive_channel.receive()]
                except trio.EndOfChannel:
                    break
                while len(batch) < _BATCH:
                    try:
                        batch.append(receive_channel.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                # A source that gave up waiting before this point was told
                # "not stored"; from here on it waits for the outcome instead.
                batch = [s for s in batch if s.take()]
                entries = [(s.trigger, s.body, s.key, s.fingerprint) for s in batch]
                try:
                    results = await journal.write(journal.append, entries)
                except JournalError as err:
                    _log.error("journal.write_failed", error=err, triggers=len(batch))
                    self._journal_problem = f"the last write failed: {err}"
                    self._room_check.set()
                    for submission in batch:
                        submission.rejected(str(err))
                    continue
                for submission, result in zip(batch, results, strict=True):
                    if isinstance(result, Accepted):
                        self._accepted(submission, result.outgoing)
                    else:
                        self._duplicates += 1
                        _log.info(
                            "trigger.duplicate",
                            key=submission.key,
                            first_uuid=result.record.uuid,
                            same_request=result.same_request,
                        )
                        submission.duplicate_of(result.record, same_request=result.same_request)
                self._work.set()
        self._ingest_done = True
        self._work.set()

    def _accepted(self, submission: Submission, outgoing: Outgoing) -> None:
        self._last_committed = outgoing.seq
        self._pending += 1
        if submission.wants_settlement:
            self._waiters[outgoing.seq] = submission
        size = len(outgoing.body)
        if self._recent_bytes + size <= self._settings.cache_max_bytes:
            self._recent.append(outgoing)
            self._recent_bytes += size
        submission.accepted()

    # -- journal → broker ------------------------------------------------------------

    async def _deliver(self, task_status: trio.TaskStatus[None]) -> None:  # pragma: no mutate block
        backoff = self._reconnect_backoff
        while True:
            try:
                await self._serve_connection(task_status)
                return
            except* (amqp.AMQPError, PublishError, OSError) as group:
                error = _first_leaf(group)
                self._last_error = describe_broker_error(error)
                log = _log.error if _is_permanent(error) else _log.warning
                log(
                    "broker.disconnected",
                    error=self._last_error,
                    pending=self._pending,
                    url=self._url.redacted(),
                )
            finally:
                self._connection = None
                self._inflight.clear()
                self._retries_waiting = 0
            self._report_started(task_status)
            if self._ingest_done and not self._pending:
                return
            delay = backoff.next_delay()
            _log.info("broker.reconnecting", delay=f"{delay:.2f}s")
            with trio.move_on_after(delay):
                # A shutdown with nothing left to publish need not wait for the broker.
                while not (self._ingest_done and not self._pending):
                    self._work = trio.Event()
                    await self._work.wait()
                return

    def _report_started(
        self, task_status: trio.TaskStatus[None]
    ) -> None:  # pragma: no mutate block
        if not self._started:
            self._started = True
            task_status.started()

    async def _serve_connection(
        self, task_status: trio.TaskStatus[None]
    ) -> None:  # pragma: no mutate block
        async with (
            amqp.open_connection(
                self._url,
                # Read at every connection, so that a renewed certificate is taken up.
                ssl_context=await trio.to_thread.run_sync(self._settings.amqp_ssl_context),
                client_properties=_client_properties(),
            ) as connection,
            connection.open_channel(confirm=True, window=self._settings.confirm_window) as channel,
        ):
            await self._declare(channel)
            self._connection = connection
            self._connections += 1
            # A healthy connection starts the next outage's backoff from the beginning.
            self._reconnect_backoff.reset()
            self._last_error = None
            _log.info(
                "broker.connected",
                url=self._url.redacted(),
                exchange=self._exchange,
                frame_max=connection.frame_max,
                heartbeat=connection.heartbeat,
                pending=self._pending,
            )
            self._report_started(task_status)
            self._delivering_done = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._settle_confirms, channel, nursery)
                await self._publish_pending(channel)
        _log.info("publisher.drained", published=self._published)

    async def _declare(self, channel: amqp.Channel) -> None:  # pragma: no mutate block
        arguments = None
        alternate = self._settings.unroutable_exchange
        if alternate:
            await channel.exchange_declare(alternate, "fanout", durable=True)
            arguments = {"alternate-exchange": alternate}
        await channel.exchange_declare(self._exchange, "topic", durable=True, arguments=arguments)

    async def _publish_pending(self, channel: amqp.Channel) -> None:
        # Every pending row with seq > cursor is published once per connection,
        # in order; a reconnect starts again from the oldest.
        skip = await self._settled_but_unrecorded()
        cursor = 0
        while (batch := await self._next_batch(cursor)) is not None:
            rows, cursor = batch
            for outgoing in rows:
                if outgoing.seq not in skip:
                    await self._publish(channel, outgoing, outgoing.attempts + 1)
        self._delivering_done = True
        self._inflight_changed.set()

    async def _settled_but_unrecorded(self) -> set[int]:
        """Rows the broker settled whose record could not be written yet.

        The journal still says they are pending; they must not go out again.
        Flushing first (under the lock the recorder also takes) makes every
        other row's status in the journal current before it is read.
        """
        try:
            await self._flush_settlements()
        except JournalError as err:
            _log.error("journal.write_failed", error=err, settlements=len(self._settlements))
        return {s.seq for s in self._settlements.values() if s.status != "pending"}

    async def _next_batch(self, cursor: int) -> tuple[list[Outgoing], int] | None:
        """The next pending rows after ``cursor`` and the new cursor.

        None once the sources are done and everything has been published.
        """
        while True:
            # Rows join the cache in seq order, each above every row committed
            # before it, and the journal is read only up to the row before the
            # cache's head: the cursor never passes that head.
            recent = self._recent
            if recent and recent[0].seq == cursor + 1:
                rows: list[Outgoing] = []
                while recent and recent[0].seq == cursor + len(rows) + 1 and len(rows) < _BATCH:
                    rows.append(recent.popleft())
                    self._recent_bytes -= len(rows[-1].body)
                return rows, rows[-1].seq
            if cursor < self._last_committed:
                # Rows not kept in memory (after a restart, a reconnect, or while
                # the broker was away): read them back from the journal.
                up_to = recent[0].seq - 1 if recent else self._last_committed
                rows = await self._journal.write(self._journal.pending, cursor, up_to, _BATCH)
                return rows, (up_to if len(rows) < _BATCH else rows[-1].seq)
            if self._ingest_done:
                return None
            self._work = trio.Event()
            await self._work.wait()

    async def _publish(self, channel: amqp.Channel, outgoing: Outgoing, attempts: int) -> None:
        confirmation = await channel.publish(
            self._exchange,
            outgoing.routing_key,
            outgoing.body,
            properties=self._properties(outgoing),
            mandatory=True,
        )
        self._attempts += 1
        deadline = trio.current_time() + self._settings.confirm_timeout
        self._inflight.append(_InFlight(outgoing, attempts, confirmation, deadline))
        self._inflight_changed.set()

    async def _settle_confirms(self, channel: amqp.Channel, nursery: trio.Nursery) -> None:
        # Confirms are awaited in publish order; one multiple-ack settles a whole
        # run of them, so waiting on the oldest costs nothing extra.
        while True:
            if not self._inflight:
                if self._delivering_done and not self._retries_waiting:
                    return
                self._inflight_changed = trio.Event()
                await self._inflight_changed.wait()
                continue
            flight = self._inflight[0]
            if not flight.confirmation.done:
                with trio.move_on_at(flight.deadline):
                    await flight.confirmation.wait()
                if not flight.confirmation.done:
                    raise ConfirmTimeoutError(
                        f"the broker did not confirm trigger {flight.outgoing.uuid} within "
                        f"{self._settings.confirm_timeout:g} s (TOWER_CONFIRM_TIMEOUT); "
                        "reconnecting to publish it again"
                    )
            # Settle every answered message at the head without yielding to
            # the scheduler in between: one ack often answers hundreds.
            while self._inflight and (flight := self._inflight[0]).confirmation.done:
                outcome = flight.confirmation.outcome
                if outcome is None:
                    # Done without an answer: the channel or connection failed,
                    # and waiting raises why.
                    outcome = await flight.confirmation.wait()
                self._inflight.popleft()
                self._settle(flight, outcome, channel, nursery)

    def _settle(
        self,
        flight: _InFlight,
        outcome: amqp.Outcome,
        channel: amqp.Channel,
        nursery: trio.Nursery,
    ) -> None:
        outgoing = flight.outgoing
        if outcome is amqp.Outcome.NACK:
            self._nacked += 1
            if flight.attempts < self._settings.max_attempts:
                self._record_settlement(
                    outgoing, "pending", flight.attempts, "nacked by the broker"
                )
                self._retries_waiting += 1
                nursery.start_soon(self._republish_later, channel, outgoing, flight.attempts + 1)
                return
            self._failed += 1
            _log.error(
                "trigger.failed",
                **_trigger_fields(outgoing),
                attempts=flight.attempts,
                reason="nacked",
            )
            self._finish(outgoing, DeliveryStatus.FAILED, flight.attempts, "nacked by the broker")
        elif outcome is amqp.Outcome.RETURNED:
            self._unroutable += 1
            returned = flight.confirmation.returned
            reason = f"{returned.reply_code} {returned.reply_text}" if returned else "returned"
            _log.warning(
                "trigger.unroutable",
                **_trigger_fields(outgoing),
                routing_key=outgoing.routing_key,
                reason=reason,
                hint="no queue is bound to the exchange with this apiVersion",
            )
            self._finish(outgoing, DeliveryStatus.UNROUTABLE, flight.attempts, reason)
        else:
            self._published += 1
            self._nack_backoff.reset()
            if self.on_published is not None:
                self.on_published(time.time() - outgoing.created_at)
            self._finish(outgoing, DeliveryStatus.PUBLISHED, flight.attempts, None)

    def _finish(
        self, outgoing: Outgoing, status: DeliveryStatus, attempts: int, error: str | None
    ) -> None:
        self._pending -= 1
        self._record_settlement(outgoing, status.value, attempts, error)
        if (waiter := self._waiters.pop(outgoing.seq, None)) is not None:
            waiter.settle(status, error)

    async def _republish_later(
        self, channel: amqp.Channel, outgoing: Outgoing, attempts: int
    ) -> None:
        try:
            await trio.sleep(self._nack_backoff.next_delay())
            await self._publish(channel, outgoing, attempts)
        finally:
            self._retries_waiting -= 1
            self._inflight_changed.set()

    # -- broker's answers → journal --------------------------------------------------

    def _record_settlement(
        self, outgoing: Outgoing, status: str, attempts: int, error: str | None
    ) -> None:
        self._settlements[outgoing.seq] = Settlement(
            outgoing.seq, status, attempts, error, time.time()
        )
        self._settlements_waiting.set()

    async def _record(self) -> None:
        backoff = Backoff(initial=0.5, cap=10.0)
        while True:
            if not self._settlements:
                self._settlements_waiting = trio.Event()
                await self._settlements_waiting.wait()
                continue
            try:
                await self._flush_settlements()
            except JournalError as err:
                # The triggers are out; only their records wait. Retrying keeps
                # a full disk from turning into duplicates after a restart.
                _log.error("journal.write_failed", error=err, settlements=len(self._settlements))
                await trio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    async def _flush_settlements(self) -> None:
        async with self._flush_lock:
            self._recording, self._settlements = self._settlements, {}
            if not self._recording:
                return
            try:
                await self._journal.write(self._journal.settle, list(self._recording.values()))
            except BaseException:
                self._settlements = self._recording | self._settlements
                raise
            finally:
                self._recording = {}

    async def _prune(self) -> None:  # pragma: no mutate block
        retention = self._settings.retention
        while True:
            try:
                deleted = await self._journal.write(self._journal.prune, retention)
            except JournalError as err:
                _log.error("journal.prune_failed", error=err)
            else:
                if deleted:
                    _log.info("journal.pruned", deleted=deleted)
            await trio.sleep(min(_PRUNE_EVERY, retention / 10))

    async def _watch_room(self) -> None:  # pragma: no mutate block
        # Room for one more trigger of the largest size: below that, the
        # next write may fail, and a load balancer should look elsewhere.
        needed = 2 * self._settings.max_body_bytes
        while True:
            try:
                room = await self._journal.write(self._journal.room)
            except (OSError, JournalError) as err:
                self._journal_problem = f"cannot check its free space: {err}"
            else:
                self._journal_problem = (
                    None
                    if room >= needed
                    else f"it has room for {room} more bytes, less than {needed} "
                    "(TOWER_JOURNAL_MAX_BYTES or the disk); settled triggers are pruned "
                    "after TOWER_RETENTION"
                )
            self._room_check = trio.Event()
            with trio.move_on_after(_ROOM_EVERY):
                await self._room_check.wait()


def message_properties(outgoing: Outgoing) -> amqp.Properties:  # pragma: no mutate block
    """The AMQP properties a trigger is published with."""
    return amqp.Properties(
        content_type="application/json",
        delivery_mode=amqp.PERSISTENT,
        message_id=outgoing.uuid,
        type=outgoing.protocol,
        app_id=APP_ID,
        timestamp=_utc(outgoing.created_at),
        headers={"protocol": outgoing.protocol, "source": outgoing.source},
    )


_UUID_LENGTH = 32
_PLACEHOLDER = "\x00" * _UUID_LENGTH  # no protocol name or source can contain it
_TEMPLATES_KEPT = 1024


class PropertyTemplates:  # pragma: no mutate block
    """``message_properties``, encoded from a template per protocol and source.

    Only the message id and the timestamp change from one trigger to the
    next, so the rest is encoded once: this halves the cost of a publish.
    """

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def __call__(self, outgoing: Outgoing) -> amqp.Properties | amqp.EncodedProperties:
        if len(outgoing.uuid) != _UUID_LENGTH:
            return message_properties(outgoing)
        key = (outgoing.protocol, outgoing.source)
        parts = self._templates.get(key)
        if parts is None:
            if len(self._templates) >= _TEMPLATES_KEPT:
                self._templates.clear()
            parts = self._templates[key] = _template(outgoing)
        head, tail = parts
        data = (
            head + outgoing.uuid.encode() + _TIMESTAMP.pack(max(0, int(outgoing.created_at))) + tail
        )
        return amqp.EncodedProperties(data, message_id=outgoing.uuid)


_TIMESTAMP = struct.Struct(">Q")


def _template(outgoing: Outgoing) -> tuple[bytes, bytes]:  # pragma: no mutate block
    """The encoded properties around the message id and timestamp fields."""
    sample = attrs.evolve(outgoing, uuid=_PLACEHOLDER, created_at=0.0)
    encoded = message_properties(sample).encode()
    marker = bytes([_UUID_LENGTH]) + _PLACEHOLDER.encode()
    at = encoded.index(marker) + 1
    return encoded[:at], encoded[at + _UUID_LENGTH + _TIMESTAMP.size :]


def _utc(timestamp: float) -> datetime:  # pragma: no mutate block
    return datetime.fromtimestamp(timestamp, UTC)


def _is_permanent(error: BaseException) -> bool:  # pragma: no mutate block
    # Configuration problems a retry will not fix: said at error level, though
    # still retried (with backoff) in case the operator fixes the broker side.
    return isinstance(
        error,
        amqp.AuthenticationError | amqp.AccessRefusedError | amqp.TLSError | amqp.AMQPConfigError,
    )


def _trigger_fields(outgoing: Outgoing) -> dict[str, str]:
    return {
        "uuid": outgoing.uuid,
        "api_version": outgoing.routing_key,
        "protocol": outgoing.protocol,
        "source": outgoing.source,
    }


def _client_properties() -> dict[str, str]:  # pragma: no mutate block
    return {
        "product": "tower-trio",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "information": "trio-native AMQP 0-9-1 client of tower-trio",
        "connection_name": f"tower-trio publisher on {platform.node()}",
    }


def _first_leaf(
    group: BaseExceptionGroup[BaseException],
) -> BaseException:  # pragma: no mutate block
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
