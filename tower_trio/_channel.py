"""What travels from the sources (HTTP, plugins) to the publisher.

Sources hand over ``Submission``s on one bounded trio memory channel. A
plugin sees a ``TriggerSendChannel`` instead: it sends plain ``Trigger``s,
and the channel stamps them with the plugin's name on their way in, so a
plugin cannot forget, or fake, where its triggers come from.

A submission reports twice: once when the journal has it on disk (or
refused it), and, if its source waits for that, when the broker confirmed.
A plugin's ``send`` returns only after the first report: once it returns,
the trigger is on disk, so the plugin may mark its source item done; if
the journal refused it, ``send`` raises and the item stays to be retried.
When several towers share the journal, the channel also stamps each trigger
with the leadership term its plugin runs under, which the store checks, and
a send cancelled before its trigger is stored leaves nothing behind it: the
trigger is withdrawn, or left for the tower to wait for before it lets the
lease go.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import JournalError
from ._models import FieldError, InvalidTriggerError, Trigger
from ._serialization import dump_trigger
from ._storage import JournalRecord
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._leases import HeldTerm

__all__ = ["Intake", "Submission", "TriggerSendChannel"]


class Intake(enum.Enum):
    """What the journal did with a submission."""

    WAITING = "waiting"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@attrs.define(eq=False)
class Submission:
    """One trigger on its way to the journal and the broker."""

    trigger: Trigger
    body: bytes
    key: str | None = None
    """Idempotency key, namespaced by source (``http:…``, ``plugin:<name>:…``)."""
    fingerprint: str | None = None
    """Digest of the request, to tell a retry (same key, same request) from a conflict."""
    intake: Intake = Intake.WAITING
    status: DeliveryStatus = DeliveryStatus.PENDING
    error: str | None = None
    duplicate: JournalRecord | None = None
    """For a DUPLICATE: the stored record of the first trigger with this key."""
    same_request: bool = False
    withdrawn: bool = False
    """Set by a source that stopped waiting before the journal took it: a trigger
    whose sender was told it failed is not stored (and published) behind its back."""
    taken: bool = False
    """Set by the publisher when the submission joins a journal batch. From then
    on withdrawing is too late: the source must wait for the commit's outcome."""
    _committed: trio.Event = attrs.field(factory=trio.Event)
    _settled: trio.Event | None = None

    @classmethod
    def of(
        cls,
        trigger: Trigger,
        *,
        key: str | None = None,
        fingerprint: str | None = None,
        wait_published: bool = False,
    ) -> Submission:
        return cls(
            trigger,
            dump_trigger(trigger),
            key,
            fingerprint,
            settled=trio.Event() if wait_published else None,
        )

    @property
    def wants_settlement(self) -> bool:
        return self._settled is not None

    @property
    def settled(self) -> bool:
        """Whether the broker's answer (or the journal's refusal) has come."""
        return self._settled is not None and self._settled.is_set()

    # -- reported by the publisher -------------------------------------------

    def accepted(self) -> None:
        self.intake = Intake.ACCEPTED
        self._committed.set()

    def rejected(self, error: str) -> None:
        self.intake = Intake.REJECTED
        self.error = error
        self._committed.set()
        self.settle(DeliveryStatus.FAILED, error)

    def duplicate_of(self, record: JournalRecord, *, same_request: bool) -> None:
        self.intake = Intake.DUPLICATE
        self.duplicate = record
        self.same_request = same_request
        self._committed.set()

    def settle(self, status: DeliveryStatus, error: str | None = None) -> None:
        self.status = status
        self.error = error
        if self._settled is not None:
            self._settled.set()

    def take(self) -> bool:
        """Claim the submission for a journal batch; False if its source withdrew it.

        Synchronous, like ``withdraw``: between the two there is no checkpoint,
        so exactly one of them wins.
        """
        if self.withdrawn:
            return False
        self.taken = True
        return True

    def withdraw(self) -> bool:
        """Give up on a submission the journal has not taken; False if it was taken."""
        if self.taken:
            return False
        self.withdrawn = True
        return True

    # -- awaited by the source -------------------------------------------------

    async def wait_committed(self) -> Intake:
        await self._committed.wait()
        return self.intake

    async def wait_settled(self) -> DeliveryStatus:
        if self._settled is None:
            raise RuntimeError("this submission was not created with wait_published=True")
        await self._settled.wait()
        return self.status


class TriggerSendChannel(trio.abc.SendChannel[Trigger]):
    """The send side a plugin gets: ``await send_channel.send(trigger)``."""

    def __init__(
        self,
        inner: trio.MemorySendChannel[Submission],
        source: str,
        on_send: Callable[[Trigger], None] | None = None,
        check: Callable[[Trigger], Sequence[FieldError]] | None = None,
        *,
        held: HeldTerm | None = None,
    ) -> None:
        self._inner = inner
        self._source = source
        self._on_send = on_send
        self._check = check
        self._held = held

    def _submission(self, trigger: Trigger) -> Submission:
        if not isinstance(trigger, Trigger):
            raise TypeError(
                f"plugins send tower_trio.Trigger objects, not {type(trigger).__name__}; "
                "build one with Trigger(api_version=..., protocol=..., spec=...)"
            )
        if self._check is not None and (errors := self._check(trigger)):
            # Raised to the plugin, in its own task: a robot never sees this trigger.
            raise InvalidTriggerError(errors)
        key = None if trigger.key is None else f"plugin:{self._source}:{trigger.key}"
        term = None if self._held is None else self._held.term
        return Submission.of(trigger.with_source(self._source, term=term), key=key)

    def _sent(self, trigger: Trigger) -> None:
        if self._on_send is not None:
            self._on_send(trigger)

    def send_nowait(self, value: Trigger) -> None:
        """Queue ``value`` without waiting for the journal (nor telling if it refused).

        Prefer ``send`` whenever the plugin marks a source item done afterwards.
        """
        self._inner.send_nowait(self._submission(value))
        self._sent(value)

    async def send(self, value: Trigger) -> None:
        """Hand ``value`` over; returns once the journal has it on disk.

        Raises ``JournalError`` if the journal could not store it: the trigger
        will not be published, so the plugin must not mark its item done.
        A duplicate (same key or uuid as a stored trigger) is stored already.
        """
        submission = self._submission(value)
        await self._inner.send(submission)
        if await self._wait_committed(submission) is Intake.REJECTED:
            if self._held is not None:
                # Perhaps a stale leadership term: whoever runs the plugin checks its lease.
                self._held.refused()
            raise JournalError(
                f"the journal could not store trigger {value.uuid}, so it will not be "
                f"published: {submission.error}; the plugin should retry this item later"
            )
        self._sent(value)

    async def _wait_committed(self, submission: Submission) -> Intake:
        if self._held is None:
            return await submission.wait_committed()
        try:
            return await submission.wait_committed()
        except trio.Cancelled:
            # A leader being stopped, whose lease may be released next: its
            # trigger must not reach the journal after that, under a term that
            # is over (it would be refused with the batch it is in). Not taken
            # yet, it is withdrawn; taken, the release waits for its batch.
            if not submission.withdraw():
                self._held.unsettled.append(submission.wait_committed)
            raise

    def clone(self) -> TriggerSendChannel:
        return TriggerSendChannel(
            self._inner.clone(),
            self._source,
            self._on_send,
            self._check,
            held=self._held,
        )

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        self._inner.close()
        await trio.lowlevel.checkpoint()
