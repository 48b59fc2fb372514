"""The publisher: stored triggers to the broker, with confirms.

The publisher is the one task that touches the broker connection. It runs
the outbox (``tower_trio._outbox``: channel → storage, and back out in
order) and the recording of broker answers (``tower_trio._settlements``),
and delivers::

    Publisher.serve
    ├── Outbox.serve_ingest        channel → storage, one transaction per batch
    ├── Settlements.serve          broker answers → storage, in batches
    ├── Outbox.serve_pruning       settled triggers deleted after TOWER_RETENTION
    ├── Outbox.serve_room_checks   room for one more trigger? (/readyz)
    ├── Replica.serve_heartbeats   with a shared journal: this tower is alive
    ├── Replica.serve_takeovers    with a shared journal: the pending triggers of dead towers
    └── _deliver                   (re)connects, node after node, with capped, jittered backoff
        └── _serve_connection      one connection, one confirm-mode channel
            ├── _publish_pending   every pending trigger, in order, many in flight
            └── _settle_confirms   confirms in publish order → settlements

After a reconnect (or a restart) delivery starts again from the oldest
unconfirmed trigger. With several broker nodes (``tower_trio._nodes``) a
lost connection moves to the next node at once, and what was unconfirmed
is published there. It returns when every source has closed its end of
the channel and storage holds nothing pending. With a journal several
towers share, it publishes only while its heartbeat is sure to be alive
(``tower_trio._replicas``): past that, it closes the connection, and
starts again from the journal once the heartbeat is renewed.

One concept, kept whole although past 400 lines: the broker side of delivery,
whose confirm path reads top to bottom in one class.
"""

from __future__ import annotations

import collections
import platform
import time
from typing import TYPE_CHECKING

import attrs
import trio

from . import amqp
from ._backoff import Backoff
from ._broker_advice import describe_broker_error
from ._errors import JournalError, PublishError
from ._feed import Feed
from ._logging import get_logger
from ._message import PropertyTemplates
from ._nodes import Nodes, node_address
from ._outbox import Outbox
from ._replicas import Replica, ReplicaLapsedError, ReplicaStatistics
from ._settlements import Settlements
from ._storage import Outgoing
from ._version import __version__
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._channel import Submission
    from ._config import Settings
    from ._storage import JournalRecord, Storage

__all__ = ["Publisher", "PublisherStatistics"]

_log = get_logger(__name__)

# Mutation testing (docs/testing.md) runs over the confirm path: what
# publishes and settles each trigger. Connection handling is marked "no
# mutate block", which keeps the run within its hour; the suite still tests
# it like the rest.


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
    """Broker answers not yet written to storage (which still says pending)."""
    cached_bytes: int = 0
    """Bytes of bodies kept in memory to publish without reading the journal."""
    journal_problem: str | None = None
    """Why the journal cannot take another trigger now, if it cannot."""
    journal_room: int | None = None
    """Bytes the journal could still grow by at the last check."""
    node: str | None = None
    """``host:port`` of the broker node connected to; None while disconnected."""
    nodes: tuple[str, ...] = ()
    """``host:port`` of every node of ``TOWER_AMQP_URL``, in order."""
    replica: ReplicaStatistics | None = None
    """This tower among the replicas sharing its journal; None when it is the only writer."""


@attrs.define(eq=False)
class _InFlight:
    outgoing: Outgoing
    attempts: int
    confirmation: amqp.Confirmation
    deadline: float


class Publisher:
    """Publishes stored triggers to the exchange, routed by apiVersion."""

    def __init__(self, settings: Settings, storage: Storage) -> None:  # pragma: no mutate block
        self._settings = settings
        self._nodes = Nodes(settings.broker_urls())
        self._node: amqp.URL | None = None
        self._last_node: amqp.URL | None = None
        self._exchange = settings.exchange
        self.feed = Feed()
        """What happens to triggers, for the console's live view."""
        self.outbox = Outbox(settings, storage, self.feed)
        self.settlements = Settlements(storage, self.feed)
        """The broker's answers, and the lookups that see them before storage does."""
        membership = storage.membership
        self.replica = (
            None
            if membership is None
            else Replica(
                membership,
                settings.replica_ttl,
                forget=self.outbox.forget,
                take=self.outbox.taken_over,
            )
        )
        """This tower among the replicas of a shared journal, if it is one."""
        self._generation = 0
        self._storage = storage
        self.on_published: Callable[[float], None] | None = None
        """Called with the seconds from acceptance to confirm of each published trigger."""
        self._connection: amqp.Connection | None = None
        self._started = False
        self._reconnect_backoff = Backoff(initial=0.5, cap=30.0)
        self._inflight: collections.deque[_InFlight] = collections.deque()
        self._inflight_changed = trio.Event()
        self._retries_waiting = 0
        self._delivering_done = False
        self._nack_backoff = Backoff(initial=0.5, cap=30.0)
        self._properties = PropertyTemplates()
        self._published = self._unroutable = self._failed = self._nacked = 0
        self._attempts = 0
        self._connections = 0
        self._last_error: str | None = None

    @property
    def nodes(self) -> Nodes:
        return self._nodes

    def redacted_url(self) -> str:
        """The URL of the node connected to, or all of them while disconnected; no password."""
        node = self._node
        return self._nodes.redacted() if node is None else node.redacted()

    def statistics(self) -> PublisherStatistics:  # pragma: no mutate block
        connection = self._connection
        return PublisherStatistics(
            connected=connection is not None,
            blocked=connection is not None and connection.blocked,
            pending=self.outbox.pending,
            published=self._published,
            attempts=self._attempts,
            unroutable=self._unroutable,
            failed=self._failed,
            nacked=self._nacked,
            duplicates=self.outbox.duplicates,
            reconnects=max(0, self._connections - 1),
            unconfirmed=len(self._inflight),
            last_error=self._last_error,
            unrecorded=self.settlements.unrecorded(),
            cached_bytes=self.outbox.cached_bytes,
            journal_problem=self.outbox.problem,
            journal_room=self.outbox.room,
            node=None if self._node is None else node_address(self._node),
            nodes=self._nodes.addresses,
            replica=None if self.replica is None else self.replica.statistics(),
        )

    def unrecorded(self) -> int:
        """Triggers the broker settled whose record is not in storage yet."""
        return self.settlements.unrecorded()

    async def retry(self, uuid: str) -> tuple[JournalRecord, bool] | None:
        """Send a failed or unroutable trigger again; None if there is no such trigger.

        Returns its record and whether it was queued now (False: it was not
        failed or unroutable, and nothing is queued twice). Raises
        ``JournalError`` when storage cannot take the change.
        """
        # The broker's last answer is written first, so that it cannot land
        # on top of the retry and settle the trigger again.
        await self.settlements.flush()
        result = await self._storage.retry(uuid)
        if result is None:
            return None
        record, outgoing = result
        if outgoing is not None:
            assert record.retried_at is not None  # set by every retry that changed it
            self.outbox.retried(outgoing, record.retries, record.retried_at)
        return self.settlements.current(record), outgoing is not None

    async def serve(
        self,
        receive_channel: trio.MemoryReceiveChannel[Submission],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:  # pragma: no mutate block
        """Run until the sources are done and nothing is pending.

        Reports started once storage is read and the first connection
        attempt is over, whether it succeeded or not: the tower serves (and
        reports not ready) while the broker is away.
        """
        outbox, settlements, replica = self.outbox, self.settlements, self.replica
        await outbox.load()
        try:
            async with trio.open_nursery() as nursery:
                if replica is not None:
                    await nursery.start(replica.serve_heartbeats)
                    await nursery.start(replica.serve_takeovers)
                nursery.start_soon(outbox.serve_ingest, receive_channel)
                nursery.start_soon(settlements.serve)
                nursery.start_soon(outbox.serve_pruning)
                nursery.start_soon(outbox.serve_room_checks)
                await self._deliver(task_status)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await settlements.flush()
                except JournalError as err:
                    _log.error("journal.write_failed", error=err, settlements=len(settlements))
                if replica is not None:
                    # Publishing is over and the answers are written: what is
                    # left pending goes to the other towers now, not after the ttl.
                    await replica.leave()
            unrecorded = settlements.unrecorded()
            if outbox.pending or unrecorded:
                # Storage's own count: triggers the broker took but whose
                # record could not be written are pending there, and go out
                # again at the next start.
                _log.warning(
                    "publisher.stopped_with_pending",
                    pending=outbox.pending + unrecorded,
                    unconfirmed=outbox.pending,
                    unrecorded=unrecorded,
                    note="kept in the journal; published at the next start",
                )

    # -- storage → broker ------------------------------------------------------------

    async def _deliver(self, task_status: trio.TaskStatus[None]) -> None:  # pragma: no mutate block
        backoff = self._reconnect_backoff
        nodes = self._nodes
        while True:
            replica = self.replica
            if replica is not None and not replica.live_in(self._generation):
                self._report_started(task_status)
                if not await self._wait_live():
                    return
            url = nodes.next
            lapsed = False
            try:
                await self._serve_connection(url, task_status)
                return
            except* ReplicaLapsedError as group:
                lapsed = True
                _log.warning(
                    "publisher.paused",
                    reason=str(_first_leaf(group)),
                    pending=self.outbox.pending,
                    unconfirmed=len(self._inflight),
                )
            except* (amqp.AMQPError, PublishError, OSError) as group:
                error = _first_leaf(group)
                self._last_error = self._describe(error, url)
                log = _log.error if _is_permanent(error) else _log.warning
                log(
                    "broker.disconnected",
                    error=self._last_error,
                    pending=self.outbox.pending,
                    url=url.redacted(),
                    node=node_address(url),
                )
            finally:
                self._connection = None
                self._node = None
                self._inflight.clear()
                self._retries_waiting = 0
            if lapsed:
                # The broker is fine: connect again as soon as this tower may publish.
                continue
            # Started once every node was tried: a dead first node must not
            # make the tower report "not connected" while the second answers.
            round_over = nodes.failed()
            if round_over:
                self._report_started(task_status)
            if self.outbox.drained:
                self._report_started(task_status)
                return
            if not round_over:
                # Another node may answer now: fail over without waiting.
                _log.info("broker.reconnecting", delay="0.00s", node=node_address(nodes.next))
                continue
            delay = backoff.next_delay()
            _log.info("broker.reconnecting", delay=f"{delay:.2f}s", node=node_address(nodes.next))
            with trio.move_on_after(delay):
                # A shutdown with nothing left to publish need not wait for the broker.
                while not self.outbox.drained:
                    await self.outbox.wait_for_work()
                return

    async def _wait_live(self) -> bool:  # pragma: no mutate block
        """Wait until this tower may publish again; False if it is done first (shutting down)."""
        replica = self.replica
        assert replica is not None
        self._last_error = (
            "not publishing: this tower's heartbeat in the journal may have expired "
            f"({replica.problem or 'not renewed in time'})"
        )
        while not replica.live:
            if self.outbox.drained:
                return False
            with trio.move_on_after(replica.every):
                await replica.wait_live()
        self._generation = replica.generation
        try:
            # Some of what was pending here may have been taken over meanwhile.
            await self.settlements.flush()
            await self.outbox.recount()
        except JournalError as err:
            _log.error("journal.write_failed", error=err, settlements=len(self.settlements))
        _log.info("publisher.resumed", pending=self.outbox.pending)
        return True

    def _report_started(
        self, task_status: trio.TaskStatus[None]
    ) -> None:  # pragma: no mutate block
        if not self._started:
            self._started = True
            task_status.started()

    def _describe(self, error: BaseException, url: amqp.URL) -> str:  # pragma: no mutate block
        described = describe_broker_error(error)
        address = node_address(url)
        if len(self._nodes.urls) == 1 or address in described:
            return described
        # With several nodes, /readyz and the status say which one failed.
        return f"node {address}: {described}"

    async def _serve_connection(
        self, url: amqp.URL, task_status: trio.TaskStatus[None]
    ) -> None:  # pragma: no mutate block
        async with (
            amqp.open_connection(
                url,
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
            self._nodes.connected()
            self._last_error = None
            self._node = url
            if self._last_node is not None and self._last_node != url:
                _log.warning(
                    "broker.failed_over",
                    from_node=node_address(self._last_node),
                    to_node=node_address(url),
                    pending=self.outbox.pending,
                )
            self._last_node = url
            _log.info(
                "broker.connected",
                url=url.redacted(),
                node=node_address(url),
                exchange=self._exchange,
                frame_max=connection.frame_max,
                heartbeat=connection.heartbeat,
                pending=self.outbox.pending,
            )
            self._report_started(task_status)
            self._delivering_done = False
            async with trio.open_nursery() as watching:
                if self.replica is not None:
                    watching.start_soon(self._stop_when_lapsed, self.replica, self._generation)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._settle_confirms, channel, nursery)
                    await self._publish_pending(channel)
                watching.cancel_scope.cancel()
        _log.info("publisher.drained", published=self._published)

    async def _stop_when_lapsed(
        self, replica: Replica, generation: int
    ) -> None:  # pragma: no mutate block
        await replica.wait_lapsed(generation)
        raise self._lapsed(replica)

    def _lapsed(self, replica: Replica) -> ReplicaLapsedError:  # pragma: no mutate block
        return ReplicaLapsedError(
            f"this tower could not renew its heartbeat in the journal within "
            f"{replica.ttl:g} s (TOWER_REPLICA_TTL) ({replica.problem or 'no answer'}); "
            "it stopped publishing so that another replica may take its triggers over; "
            "check that PostgreSQL is reachable from this tower"
        )

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
        skip = await self.settlements.settled_but_unrecorded()
        cursor = 0
        while (batch := await self.outbox.next_batch(cursor)) is not None:
            rows, cursor = batch
            for outgoing in rows:
                if outgoing.seq not in skip:
                    await self._publish(channel, outgoing, outgoing.attempts + 1)
        self._delivering_done = True
        self._inflight_changed.set()

    async def _publish(self, channel: amqp.Channel, outgoing: Outgoing, attempts: int) -> None:
        replica = self.replica
        if replica is not None and not replica.live_in(self._generation):
            # Checked before every message: past this point another tower may own it.
            raise self._lapsed(replica)
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
                self.settlements.record(
                    outgoing, DeliveryStatus.PENDING, flight.attempts, "nacked by the broker"
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
            assert returned is not None  # RETURNED is resolved only with its Basic.Return
            reason = f"{returned.reply_code} {returned.reply_text}"
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
        self.settlements.record(outgoing, status, attempts, error)
        if (waiter := self.outbox.settled(outgoing)) is not None:
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
