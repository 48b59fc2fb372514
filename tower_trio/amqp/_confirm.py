"""Publisher confirms: one :class:`Confirmation` per published message.

The broker confirms each message of a channel in confirm mode exactly once,
with Basic.Ack or Basic.Nack, and may cover every outstanding message up to a
delivery tag with one ``multiple`` frame. Delivery tags count up from 1 per
channel, so the outstanding confirmations are kept in a dict keyed by tag
plus the lowest tag that may still be outstanding; a ``multiple`` frame then
walks each tag once over the life of the channel.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

import attrs
import trio

from ._errors import AMQPError


class Outcome(enum.Enum):
    """How the broker answered a published message."""

    #: The broker took responsibility for the message (routed, or dropped as
    #: unroutable without ``mandatory``).
    ACK = "ack"
    #: The broker could not take the message; publish it again.
    NACK = "nack"
    #: The message was published with ``mandatory`` and no queue took it.
    RETURNED = "returned"
    #: The channel is not in confirm mode: the broker was never asked.
    UNCONFIRMED = "unconfirmed"


@attrs.frozen
class Returned:
    """What Basic.Return said about an unroutable mandatory message."""

    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str


@attrs.define(eq=False)
class Confirmation:
    """The pending or final answer of the broker to one published message.

    ``delivery_tag`` is 0 on channels without confirm mode, whose
    confirmations are resolved at once with :attr:`Outcome.UNCONFIRMED`.
    """

    delivery_tag: int
    outcome: Outcome | None = None
    returned: Returned | None = None
    _error: AMQPError | None = attrs.field(default=None, init=False, repr=False)
    # Created only when somebody waits, so that the usual path (a publisher
    # that collects outcomes with callbacks, or not at all) costs no Event.
    _event: trio.Event | None = attrs.field(default=None, init=False, repr=False)
    _callbacks: list[Callable[[Confirmation], object]] | None = attrs.field(
        default=None, init=False, repr=False
    )
    # Set for mandatory messages, to find them again when Basic.Return comes.
    _message_id: str | None = attrs.field(default=None, init=False, repr=False)

    @property
    def done(self) -> bool:
        """Whether the outcome is known or the confirmation failed."""
        return self.outcome is not None or self._error is not None

    @property
    def error(self) -> AMQPError | None:
        """Why no outcome will come (channel or connection closed), if so."""
        return self._error

    async def wait(self) -> Outcome:
        """Wait for the broker's answer and return it.

        Raises :class:`ChannelClosedError`, :class:`ConnectionLostError` or
        :class:`ConnectionClosedError` if the channel or the connection went
        away before the answer came; the message may or may not have arrived.
        """
        if self.done:
            await trio.lowlevel.checkpoint()
        else:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        if self._error is not None:
            raise self._error._fresh()
        assert self.outcome is not None
        return self.outcome

    def add_done_callback(self, callback: Callable[[Confirmation], object]) -> None:
        """Call ``callback(self)`` once this confirmation is done.

        Runs at once if it is already done, otherwise inside the connection's
        reader task: the callback must be quick, must not block and must not
        raise (an exception would tear the connection down).
        """
        if self.done:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def _finish(self) -> None:
        if self._event is not None:
            self._event.set()
        if self._callbacks is not None:
            callbacks, self._callbacks = self._callbacks, None
            for callback in callbacks:
                callback(self)

    def _resolve(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._finish()

    def _fail(self, error: AMQPError) -> None:
        self._error = error
        self._finish()


class PendingConfirms:
    """The unconfirmed messages of one channel in confirm mode."""

    def __init__(self) -> None:
        self._by_tag: dict[int, Confirmation] = {}
        self._next_tag = 1
        self._lowest = 1
        # Basic.Return carries no delivery tag: mandatory messages are matched
        # by message_id, oldest first when one id is in flight several times.
        self._mandatory: dict[str, deque[Confirmation]] = {}

    def __len__(self) -> int:
        return len(self._by_tag)

    @property
    def next_tag(self) -> int:
        """The delivery tag the next published message will get."""
        return self._next_tag

    def add(self, mandatory_id: str | None = None) -> Confirmation:
        """Track the message being published now."""
        tag = self._next_tag
        self._next_tag = tag + 1
        confirmation = Confirmation(tag)
        self._by_tag[tag] = confirmation
        if mandatory_id is not None:
            confirmation._message_id = mandatory_id
            waiting = self._mandatory.get(mandatory_id)
            if waiting is None:
                self._mandatory[mandatory_id] = deque((confirmation,))
            else:
                waiting.append(confirmation)
        return confirmation

    def settle(self, delivery_tag: int, multiple: bool, *, ack: bool) -> int:
        """Apply a Basic.Ack or Basic.Nack; return how many messages it settled."""
        by_tag = self._by_tag
        settled: list[Confirmation] = []
        if multiple:
            # Tag 0 with multiple means "everything outstanding".
            last = delivery_tag or self._next_tag - 1
            for tag in range(self._lowest, last + 1):
                confirmation = by_tag.pop(tag, None)
                if confirmation is not None:
                    settled.append(confirmation)
            self._lowest = max(self._lowest, last + 1)
        else:
            confirmation = by_tag.pop(delivery_tag, None)
            if confirmation is not None:
                settled.append(confirmation)
            while self._lowest < self._next_tag and self._lowest not in by_tag:
                self._lowest += 1
        for confirmation in settled:
            if confirmation._message_id is not None:
                self._forget_mandatory(confirmation._message_id, confirmation)
            if not ack:
                confirmation._resolve(Outcome.NACK)
            elif confirmation.returned is not None:
                confirmation._resolve(Outcome.RETURNED)
            else:
                confirmation._resolve(Outcome.ACK)
        return len(settled)

    def returned(self, message_id: str | None, returned: Returned) -> bool:
        """Attach a Basic.Return to its message; False if none matches."""
        if message_id is None:
            return False
        for confirmation in self._mandatory.get(message_id, ()):
            if confirmation.returned is None:
                confirmation.returned = returned
                return True
        return False

    def fail_all(self, error: AMQPError) -> None:
        """Fail every outstanding confirmation: no answer will come."""
        pending = list(self._by_tag.values())
        self._by_tag.clear()
        self._mandatory.clear()
        for confirmation in pending:
            confirmation._fail(error)

    def _forget_mandatory(self, message_id: str, confirmation: Confirmation) -> None:
        waiting = self._mandatory.get(message_id)
        if waiting is not None:
            waiting.remove(confirmation)
            if not waiting:
                del self._mandatory[message_id]
