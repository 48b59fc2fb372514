"""What travels from the sources (HTTP, plugins) to the publisher.

Sources hand over ``Submission``s on one bounded trio memory channel. A
plugin sees a ``TriggerSendChannel`` instead: it sends plain ``Trigger``s,
and the channel stamps them with the plugin's name on their way in, so a
plugin cannot forget, or fake, where its triggers come from.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs
import trio

from ._models import Trigger
from ._serialization import dump_trigger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DeliveryStatus", "Submission", "TriggerSendChannel"]


class DeliveryStatus(enum.Enum):
    PENDING = "pending"
    PUBLISHED = "published"
    UNROUTABLE = "unroutable"
    FAILED = "failed"


@attrs.define(eq=False)
class Submission:
    """One trigger on its way to the broker, and how its delivery went."""

    trigger: Trigger
    body: bytes
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_error: str | None = None
    withdrawn: bool = False
    """Set by a source that gave up waiting, so that a trigger nobody awaits any
    more is not published after its sender was told it failed."""
    _settled: trio.Event | None = None

    @classmethod
    def of(cls, trigger: Trigger, *, awaited: bool = False) -> Submission:
        return cls(trigger, dump_trigger(trigger), settled=trio.Event() if awaited else None)

    @property
    def settled(self) -> bool:
        return self.status is not DeliveryStatus.PENDING

    def settle(self, status: DeliveryStatus, error: str | None = None) -> None:
        self.status = status
        self.last_error = error
        if self._settled is not None:
            self._settled.set()

    async def wait_settled(self) -> DeliveryStatus:
        if self._settled is None:
            raise RuntimeError("this submission was not created with awaited=True")
        await self._settled.wait()
        return self.status


class TriggerSendChannel(trio.abc.SendChannel[Trigger]):
    """The send side a plugin gets: ``await send_channel.send(trigger)``."""

    def __init__(
        self,
        inner: trio.MemorySendChannel[Submission],
        source: str,
        on_send: Callable[[Trigger], None] | None = None,
    ) -> None:
        self._inner = inner
        self._source = source
        self._on_send = on_send

    def _submission(self, trigger: Trigger) -> Submission:
        if not isinstance(trigger, Trigger):
            raise TypeError(
                f"plugins send tower_trio.Trigger objects, not {type(trigger).__name__}; "
                "build one with Trigger(api_version=..., protocol=..., spec=...)"
            )
        return Submission.of(trigger.with_source(self._source))

    def _sent(self, trigger: Trigger) -> None:
        if self._on_send is not None:
            self._on_send(trigger)

    def send_nowait(self, value: Trigger) -> None:
        self._inner.send_nowait(self._submission(value))
        self._sent(value)

    async def send(self, value: Trigger) -> None:
        await self._inner.send(self._submission(value))
        self._sent(value)

    def clone(self) -> TriggerSendChannel:
        return TriggerSendChannel(self._inner.clone(), self._source, self._on_send)

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        self._inner.close()
        await trio.lowlevel.checkpoint()
