"""The publisher: the one task that owns the broker connection.

It takes submissions from the memory channel, publishes them with
``mandatory`` on a confirm-mode channel, many in flight at once (RabbitMQ
calls publish-and-wait an anti-pattern), and settles each submission when
its confirm comes. When the connection fails it reconnects with capped,
jittered backoff and republishes, oldest first, everything it took from the
channel that was not yet confirmed. It returns once every producer has
closed its end of the channel and everything taken has been settled.
"""

from __future__ import annotations

import collections
import platform
from typing import TYPE_CHECKING

import attrs
import trio

from . import amqp
from ._backoff import Backoff
from ._channel import DeliveryStatus, Submission
from ._logging import get_logger
from ._version import __version__

if TYPE_CHECKING:
    from ._config import Settings

__all__ = ["Publisher", "PublisherStatistics"]

_log = get_logger(__name__)

APP_ID = "tower-trio"


@attrs.frozen
class PublisherStatistics:
    connected: bool
    blocked: bool
    published: int
    unroutable: int
    failed: int
    nacked: int
    reconnects: int
    unconfirmed: int
    last_error: str | None


class Publisher:
    """Publishes triggers to the exchange, routed by their apiVersion."""

    def __init__(self, settings: Settings) -> None:
        self._url = amqp.URL.parse(settings.amqp_url)
        self._exchange = settings.exchange
        self._window = settings.confirm_window
        self._max_attempts = settings.max_attempts
        self._connection: amqp.Connection | None = None
        # Everything taken from the channel and not settled, in the order it
        # was taken: after a connection failure this is the republish queue.
        self._unsettled: dict[Submission, None] = {}
        self._requeued: collections.deque[Submission] = collections.deque()
        self._inflight: collections.deque[tuple[Submission, amqp.Confirmation]] = (
            collections.deque()
        )
        self._inflight_changed = trio.Event()
        self._input_done = False
        # Per connection: everything taken so far has been handed to the broker.
        self._all_published = False
        self._retries_waiting = 0
        self._published = self._unroutable = self._failed = self._nacked = 0
        self._connections = 0
        self._last_error: str | None = None
        self._nack_backoff = Backoff(initial=0.5, cap=30.0)

    @property
    def url(self) -> amqp.URL:
        return self._url

    def statistics(self) -> PublisherStatistics:
        connection = self._connection
        return PublisherStatistics(
            connected=connection is not None,
            blocked=connection is not None and connection.blocked,
            published=self._published,
            unroutable=self._unroutable,
            failed=self._failed,
            nacked=self._nacked,
            reconnects=max(0, self._connections - 1),
            unconfirmed=len(self._inflight),
            last_error=self._last_error,
        )

    async def serve(
        self,
        receive_channel: trio.MemoryReceiveChannel[Submission],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish until the channel is closed and drained.

        Reports started after the first connection attempt, whether it
        succeeded or not: the tower serves (and reports not ready) while the
        broker is away, and the publisher keeps trying.
        """
        backoff = Backoff(initial=0.5, cap=30.0)
        started = False
        try:
            async with receive_channel:
                while True:
                    try:
                        await self._serve_connection(receive_channel, task_status, started)
                        return
                    except* (amqp.AMQPError, OSError) as group:
                        error = _first_leaf(group)
                        self._last_error = str(error)
                        self._requeue_unsettled()
                        _log.warning(
                            "broker.disconnected",
                            error=error,
                            unconfirmed=len(self._requeued),
                            url=self._url.redacted(),
                        )
                    finally:
                        self._connection = None
                    if not started:
                        started = True
                        task_status.started()
                    delay = backoff.next_delay()
                    _log.info("broker.reconnecting", delay=f"{delay:.2f}s")
                    if await self._wait_to_reconnect(delay, receive_channel):
                        return
        finally:
            if self._unsettled:
                _log.error("publisher.stopped_with_unpublished", count=len(self._unsettled))

    async def _wait_to_reconnect(
        self, delay: float, receive_channel: trio.MemoryReceiveChannel[Submission]
    ) -> bool:
        """Wait ``delay``; True if meanwhile the sources closed with nothing left to publish.

        Without this, a tower shutting down while the broker is away would
        wait out its whole grace period even with nothing to deliver. At most
        one submission is taken per wait, so the channel still applies
        back-pressure to the sources.
        """
        with trio.move_on_after(delay):
            if not self._input_done:
                try:
                    submission = await receive_channel.receive()
                except trio.EndOfChannel:
                    self._input_done = True
                else:
                    self._unsettled[submission] = None
                    self._requeued.append(submission)
            if self._input_done and all(s.withdrawn for s in self._unsettled):
                return True
            await trio.sleep_forever()
        return False

    async def _serve_connection(
        self,
        receive_channel: trio.MemoryReceiveChannel[Submission],
        task_status: trio.TaskStatus[None],
        started: bool,
    ) -> None:
        async with (
            amqp.open_connection(self._url, client_properties=_client_properties()) as connection,
            connection.open_channel(confirm=True, window=self._window) as channel,
        ):
            await channel.exchange_declare(self._exchange, "topic", durable=True)
            self._connection = connection
            self._connections += 1
            _log.info(
                "broker.connected",
                url=self._url.redacted(),
                exchange=self._exchange,
                frame_max=connection.frame_max,
                heartbeat=connection.heartbeat,
            )
            if not started:
                task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._settle_confirms, channel, nursery)
                await self._publish_all(channel, receive_channel)
        _log.info("publisher.drained", published=self._published)

    async def _publish_all(
        self,
        channel: amqp.Channel,
        receive_channel: trio.MemoryReceiveChannel[Submission],
    ) -> None:
        self._all_published = False
        while self._requeued:
            await self._publish(channel, self._requeued.popleft())
        async for submission in receive_channel:
            self._unsettled[submission] = None
            await self._publish(channel, submission)
        self._input_done = self._all_published = True
        self._inflight_changed.set()

    async def _publish(self, channel: amqp.Channel, submission: Submission) -> None:
        if submission.withdrawn:
            # Its sender stopped waiting and was told it failed; publishing it
            # now would make a duplicate when the sender retries.
            del self._unsettled[submission]
            return
        trigger = submission.trigger
        submission.attempts += 1
        confirmation = await channel.publish(
            self._exchange,
            trigger.routing_key,
            submission.body,
            properties=amqp.Properties(
                content_type="application/json",
                delivery_mode=2,
                message_id=trigger.uuid,
                type=trigger.protocol,
                app_id=APP_ID,
                timestamp=trigger.created_at,
                headers={"protocol": trigger.protocol, "source": trigger.metadata.source},
            ),
            mandatory=True,
        )
        self._inflight.append((submission, confirmation))
        self._inflight_changed.set()

    async def _settle_confirms(self, channel: amqp.Channel, nursery: trio.Nursery) -> None:
        # Confirms are awaited in publish order; a multiple-ack settles a whole
        # run of them, so waiting on the oldest costs nothing extra.
        while True:
            if not self._inflight:
                if self._all_published and not self._retries_waiting:
                    return
                self._inflight_changed = trio.Event()
                await self._inflight_changed.wait()
                continue
            submission, confirmation = self._inflight[0]
            outcome = await confirmation.wait()
            self._inflight.popleft()
            if outcome is amqp.Outcome.NACK:
                self._nacked += 1
                if submission.attempts < self._max_attempts:
                    self._retries_waiting += 1
                    nursery.start_soon(self._republish_later, channel, submission)
                    continue
                self._failed += 1
                _log.error(
                    "trigger.failed",
                    **_trigger_fields(submission),
                    attempts=submission.attempts,
                    reason="the broker refused it (basic.nack)",
                )
                self._settle(submission, DeliveryStatus.FAILED, "refused by the broker (nack)")
            elif outcome is amqp.Outcome.RETURNED:
                self._unroutable += 1
                returned = confirmation.returned
                reason = f"{returned.reply_code} {returned.reply_text}" if returned else "returned"
                _log.warning(
                    "trigger.unroutable",
                    **_trigger_fields(submission),
                    routing_key=submission.trigger.routing_key,
                    reason=reason,
                    hint="no queue is bound to the exchange for this apiVersion",
                )
                self._settle(submission, DeliveryStatus.UNROUTABLE, f"unroutable: {reason}")
            else:
                self._published += 1
                self._nack_backoff.reset()
                self._settle(submission, DeliveryStatus.PUBLISHED)

    async def _republish_later(self, channel: amqp.Channel, submission: Submission) -> None:
        try:
            await trio.sleep(self._nack_backoff.next_delay())
            await self._publish(channel, submission)
        finally:
            self._retries_waiting -= 1
            self._inflight_changed.set()

    def _settle(
        self, submission: Submission, status: DeliveryStatus, error: str | None = None
    ) -> None:
        self._unsettled.pop(submission, None)
        submission.settle(status, error)

    def _requeue_unsettled(self) -> None:
        self._inflight.clear()
        self._retries_waiting = 0
        self._requeued = collections.deque(self._unsettled)


def _trigger_fields(submission: Submission) -> dict[str, str]:
    trigger = submission.trigger
    return {
        "uuid": trigger.uuid,
        "api_version": trigger.api_version,
        "protocol": trigger.protocol,
        "source": trigger.metadata.source,
    }


def _client_properties() -> dict[str, str]:
    return {
        "product": "tower-trio",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "connection_name": f"tower-trio publisher on {platform.node()}",
    }


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
