"""What happened to triggers, as it happens, for whoever watches (the console).

The outbox reports each stored trigger and the settlements each broker
answer; every subscriber gets them in order, in a buffer of its own with a
fixed bound. A subscriber that falls behind by more than that loses the
oldest and is told so (``lost``), so that it reloads what it shows from
storage instead of showing a gap: a slow browser costs its own buffer,
never the tower's memory or the publisher's time.

With nobody watching, reporting an event costs one truth test.
"""

from __future__ import annotations

import collections
import contextlib
from typing import TYPE_CHECKING

import attrs
import trio

from ._storage import Outgoing
from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["Change", "Feed", "Subscription"]

BUFFER = 1024
"""Events a subscriber may fall behind by before it loses them."""


@attrs.frozen
class Change:
    """A trigger was stored, or its delivery status changed."""

    outgoing: Outgoing
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    at: float
    retries: int | None = None
    """Set when an operator retried it: how many times so far."""


class Subscription:
    """One subscriber's events, oldest first."""

    def __init__(self, size: int) -> None:
        self._events: collections.deque[Change] = collections.deque(maxlen=size)
        self._arrived = trio.Event()
        self.lost = False
        """Events were dropped since the last ``take``: what was shown is stale."""

    def put(self, change: Change) -> None:
        if len(self._events) == self._events.maxlen:
            self.lost = True
        self._events.append(change)
        self._arrived.set()

    async def take(self) -> tuple[list[Change], bool]:
        """Every event waiting (waiting for one), and whether some were lost before them."""
        while not self._events and not self.lost:
            self._arrived = trio.Event()
            await self._arrived.wait()
        events, lost = list(self._events), self.lost
        self._events.clear()
        self.lost = False
        return events, lost


class Feed:
    """Hands each change to every subscriber; see the module docstring."""

    def __init__(self, buffer: int = BUFFER) -> None:
        self._buffer = buffer
        self._subscriptions: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def report(self, change: Change) -> None:
        for subscription in self._subscriptions:
            subscription.put(change)

    @property
    def watched(self) -> bool:
        """Whether anyone subscribes: callers skip building a change nobody reads."""
        return bool(self._subscriptions)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the ``with`` block; unsubscribed however the block ends."""
        subscription = Subscription(self._buffer)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
