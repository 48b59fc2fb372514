"""This tower among replicas on one shared journal: its heartbeat, and the triggers of the dead.

Several towers may share one PostgreSQL journal. Each publishes only the
triggers it stored (their owner), and keeps itself alive in the journal
with a heartbeat every fifth of ``TOWER_REPLICA_TTL``, judged by the
database's clock. ``serve_heartbeats`` keeps a local deadline: publishing
is allowed (``live``) until the ttl, less a fifth for safety, after the
last heartbeat that succeeded was *sent*, which is before the database
could have let it expire. A tower that cannot renew in time therefore
stops publishing before anyone may take its triggers over.

``serve_takeovers`` makes this tower the owner of pending triggers whose
owner's heartbeat expired, a batch at a time (``SKIP LOCKED``: two towers
never take the same one), and hands them to the outbox like triggers an
operator retried. A tower that finds its own heartbeat expired (a takeover
may have happened) forgets what it held in memory about its pending
triggers and starts again from the journal: ``generation`` counts these
fresh starts. See docs/replicas.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import JournalError, PublishError
from ._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._storage import Membership, Outgoing

__all__ = ["TAKEOVER_BATCH", "Replica", "ReplicaLapsedError", "ReplicaStatistics"]

_log = get_logger(__name__)

TAKEOVER_BATCH = 512
"""Triggers taken over per transaction; more are taken at once, batch after batch."""


class ReplicaLapsedError(PublishError):
    """The tower's heartbeat in the journal may have expired: it must not publish now."""


@attrs.frozen
class ReplicaStatistics:
    live: bool
    """Whether this tower may publish: its heartbeat cannot have expired yet."""
    problem: str | None
    """Why the last heartbeat failed, if it did."""
    taken_over: int
    """Pending triggers of dead towers this one took over."""
    lapses: int
    """Times this tower found its heartbeat expired and joined again."""


class Replica:
    """One tower's membership among replicas; see the module docstring."""

    def __init__(
        self,
        membership: Membership,
        ttl: float,
        *,
        forget: Callable[[], None],
        take: Callable[[list[Outgoing]], None],
    ) -> None:  # pragma: no mutate block
        self._membership = membership
        self.ttl = ttl
        self.every = ttl / 5
        """Seconds between heartbeats, and between looks for triggers to take over."""
        self._safety = ttl / 5
        self._forget = forget
        self._take = take
        self._deadline = -math.inf
        self._changed = trio.Event()
        self.generation = 0
        """Counts fresh starts: what was handed out in an earlier one may be someone else's."""
        self.problem: str | None = None
        self.taken_over = 0
        self.lapses = 0

    @property
    def instance(self) -> str:
        return self._membership.instance

    @property
    def live(self) -> bool:
        """Whether this tower may publish now."""
        return trio.current_time() < self._deadline

    def live_in(self, generation: int) -> bool:
        """Whether this tower may publish what it was handed in ``generation``."""
        return generation == self.generation and self.live

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(self.live, self.problem, self.taken_over, self.lapses)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_live(self) -> None:
        """Return once this tower may publish."""
        while not self.live:
            await self._changed.wait()

    async def wait_lapsed(self, generation: int) -> None:
        """Return once this tower may no longer publish what it was handed in ``generation``."""
        while self.live_in(generation):
            with trio.move_on_at(self._deadline):
                await self._changed.wait()

    async def serve_heartbeats(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew the heartbeat every ``every`` seconds; started after the first attempt."""
        started = False
        while True:
            sent = trio.current_time()
            try:
                renewed = await self._membership.heartbeat(self.ttl)
            except JournalError as err:
                if self.problem is None:
                    _log.warning(
                        "replica.heartbeat_failed",
                        instance=self.instance,
                        error=err,
                        publishing_until=f"{max(0.0, self._deadline - sent):.1f}s",
                    )
                self.problem = f"cannot renew its heartbeat: {err}"
            else:
                if not renewed:
                    self._rejoin()
                elif self.problem is not None:
                    _log.info("replica.heartbeat_renewed", instance=self.instance)
                self.problem = None
                self._deadline = sent + self.ttl - self._safety
                self._notify()
            if not started:
                started = True
                task_status.started()
            await trio.sleep_until(sent + self.every)

    async def leave(self) -> None:
        """Stop publishing and end the heartbeat, so that others take over what is left here."""
        self._deadline = -math.inf
        self._notify()
        try:
            await self._membership.leave()
        except JournalError as err:
            _log.warning(
                "replica.leave_failed",
                instance=self.instance,
                error=err,
                note=f"others take its pending triggers when it expires ({self.ttl:g} s)",
            )
        else:
            _log.info("replica.left", instance=self.instance)

    def _rejoin(self) -> None:
        # Others may have taken over what was pending here: forget it all
        # before publishing again, and read back what is still ours.
        self.lapses += 1
        self.generation += 1
        self._forget()
        _log.warning(
            "replica.rejoined",
            instance=self.instance,
            note="its heartbeat had expired; pending triggers are read again from the journal",
        )

    async def serve_takeovers(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Take over the pending triggers of towers whose heartbeat expired, as they expire."""
        task_status.started()
        while True:
            taken: list[tuple[Outgoing, str | None]] = []
            if self.live:
                generation = self.generation
                try:
                    taken = await self._membership.take_over(TAKEOVER_BATCH)
                except JournalError as err:
                    _log.warning("replica.takeover_failed", instance=self.instance, error=err)
                if taken:
                    self._took(taken, generation)
            if len(taken) < TAKEOVER_BATCH:
                await trio.sleep(self.every)

    def _took(self, taken: list[tuple[Outgoing, str | None]], generation: int) -> None:
        self.taken_over += len(taken)
        owners: dict[str | None, int] = {}
        for _, owner in taken:
            owners[owner] = owners.get(owner, 0) + 1
        for owner, count in owners.items():
            _log.warning(
                "replica.took_over",
                instance=self.instance,
                triggers=count,
                previous_owner=owner or "(none)",
            )
        # After a fresh start they are read back from the journal with the rest.
        if generation == self.generation:
            self._take([outgoing for outgoing, _ in taken])
