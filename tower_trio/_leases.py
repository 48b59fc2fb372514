"""Leases: which tower runs which plugin, when several share one journal.

A lease names a plugin's leader (a tower's ``TOWER_INSTANCE``) and its
*term*, a number that only grows: each change of holder starts a new term.
A tower runs a plugin only while it holds that plugin's lease
(``tower_trio._leadership``), and a store shared by several towers accepts
a plugin's state writes and triggers only under the term it currently holds
(fencing). ``Leases`` is what a store offers for that; the PostgreSQL
journal keeps them in its ``leases`` table, judged by the database's clock
(``tower_trio._postgres_leases``). A tower alone on its journal (SQLite)
leads every plugin, always in the first term: ``SoleLeases``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

__all__ = ["SOLE_TERM", "HeldTerm", "Leader", "Leases", "SoleLeases"]

SOLE_TERM = 1
"""The term of every plugin of a tower alone on its journal."""


@attrs.frozen
class Leader:
    """Who holds a plugin's lease, and in which term."""

    instance: str
    term: int


@attrs.define(eq=False)
class HeldTerm:
    """A term of a lease as one run of its plugin holds it.

    The run's state writes and triggers carry ``term``; its channel and
    state report back what the store refused, and the channel leaves here
    the triggers a cancelled send left in a batch being written, which the
    tower waits for before it releases the lease.
    """

    term: int
    on_refused: Callable[[], None] | None = None
    """A trigger of the run was refused (the term may be over, or not)."""
    on_fenced: Callable[[], None] | None = None
    """A state write of the run was refused: the term is over."""
    unsettled: list[Callable[[], Awaitable[object]]] = attrs.Factory(list)

    def refused(self) -> None:
        if self.on_refused is not None:
            self.on_refused()

    def fenced(self) -> None:
        if self.on_fenced is not None:
            self.on_fenced()

    async def settle(self) -> None:
        """Wait until every trigger left in a batch has its answer."""
        while self.unsettled:
            await self.unsettled.pop()()


class Leases(Protocol):
    """Campaigning for, renewing and releasing this tower's leases on plugins."""

    @property
    def instance(self) -> str:
        """The tower that campaigns (``TOWER_INSTANCE``)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other towers may hold leases (False: this tower leads everything)."""
        ...

    async def campaign(self, plugin: str, ttl: float) -> Leader | None:
        """Take the lease on ``plugin`` for ``ttl`` seconds if it is free or ours.

        Taking it when it was free or expired starts a new term; renewing it
        keeps the term. Returns the holder afterwards (this tower or
        another), None if no one holds it. Raises ``JournalError`` when the
        store cannot be asked.
        """
        ...

    async def release(self, plugin: str, term: int) -> None:
        """Give up the lease of ``term`` at once, so that a successor need not wait."""
        ...

    def close(self) -> None:
        """Drop the connections; nothing is called after this."""
        ...


@attrs.define
class SoleLeases:
    """The leases of a tower alone on its journal: it holds each, in the first term."""

    instance: str
    shared: bool = attrs.field(default=False, init=False)

    async def campaign(self, plugin: str, ttl: float) -> Leader | None:
        await trio.lowlevel.checkpoint()
        return Leader(self.instance, SOLE_TERM)

    async def release(self, plugin: str, term: int) -> None:
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        pass
