"""Leadership: each plugin runs on exactly one of the towers sharing a journal.

``serve_led_plugin`` campaigns for the plugin's lease (``tower_trio._leases``)
every third of ``TOWER_LEASE_TTL``, runs the plugin (``serve_plugin``) while
this tower holds it, renews it as often, and releases it on the way out, so
that on a rolling restart a successor takes over at once.

Local safety: the plugin runs inside a cancel scope whose deadline is the
moment the last successful renewal was *sent* plus the TTL, less a margin.
The database set the lease's expiry by its own clock when it received the
renewal, after it was sent, so this deadline falls before the expiry: a
tower that cannot reach PostgreSQL stops its plugins before any other tower
could start them. Fencing (the store refusing writes of a stale term)
covers what local safety cannot: a process paused past its deadline, or a
trigger still queued from a run that was stopped.

On a journal of its own (SQLite) a tower leads every plugin in the first
term, and the plugin simply runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from ._channel import Submission
from ._errors import JournalError
from ._leases import HeldTerm, Leases
from ._logging import get_logger
from ._plugins import serve_plugin
from ._runtime import PluginState, PluginStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._leases import Leader
    from ._models import FieldError, Trigger
    from ._plugins import ConfiguredPlugin
    from ._runtime import StateBackend

__all__ = ["MARGIN", "serve_led_plugin"]

_log = get_logger(__name__)

MARGIN = 0.2
"""The share of the TTL a leader keeps in hand: it stops its plugin this long
before its lease could expire, for clocks that run at slightly different
rates and for the cancellation itself."""
_RELEASE_WITHIN = 2.0


async def serve_led_plugin(
    plugin: ConfiguredPlugin,
    send_channel: trio.MemorySendChannel[Submission],
    status: PluginStatus,
    leases: Leases,
    *,
    ttl: float,
    state_backend: StateBackend,
    check: Callable[[Trigger], Sequence[FieldError]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``plugin`` whenever this tower holds its lease; see the module docstring."""
    serve = partial(serve_plugin, plugin, state_backend=state_backend, check=check)
    with send_channel:
        if not leases.shared:
            # Alone on its journal: shown as leader, but with nothing to fence.
            status.leader = await leases.campaign(plugin.name, ttl)
            await serve(send_channel.clone(), status, task_status=task_status)
            return
        status.state = PluginState.STANDBY
        task_status.started()
        candidate = _Candidate(plugin.name, serve, send_channel, status, leases, ttl)
        await candidate.campaign_for_ever()


@attrs.define
class _Candidate:
    """One plugin's campaign on this tower."""

    name: str
    serve: Callable[..., Awaitable[None]]
    send_channel: trio.MemorySendChannel[Submission]
    status: PluginStatus
    leases: Leases
    ttl: float

    async def campaign_for_ever(self) -> None:
        held: HeldTerm | None = None
        try:
            while True:
                sent_at = trio.current_time()
                leader = await self._campaign()
                self.status.leader = leader
                if leader is None or leader.instance != self.leases.instance:
                    await trio.sleep(self.ttl / 3)
                    continue
                held = HeldTerm(leader.term)
                _log.info("lease.won", plugin=self.name, term=leader.term)
                await self._lead(leader, held, sent_at)
                held = None
                self.status.state = PluginState.STANDBY
                _log.warning("lease.lost", plugin=self.name, term=leader.term)
                # Straight back to campaigning: the lease may be free, or still ours.
        finally:
            if held is not None:
                await self._release(held)

    async def _campaign(self) -> Leader | None:
        try:
            return await self.leases.campaign(self.name, self.ttl)
        except JournalError as err:
            _log.warning("lease.unknown", plugin=self.name, error=err)
            return None

    async def _release(self, held: HeldTerm) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_WITHIN):
            # A trigger of the run still in a batch commits (or not) under the
            # term before it ends: released first, it would be refused.
            await held.settle()
            try:
                await self.leases.release(self.name, held.term)
                _log.info("lease.released", plugin=self.name, term=held.term)
            except JournalError as err:
                _log.warning("lease.release_failed", plugin=self.name, error=err)
        self.status.leader = None

    async def _lead(self, leader: Leader, held: HeldTerm, sent_at: float) -> None:
        """Run the plugin and renew the lease until it is lost or runs out locally."""
        keep = self.ttl * (1 - MARGIN)
        check_now = trio.Event()
        fenced_at: list[float] = []

        def refused() -> None:
            # A trigger of this run was refused: perhaps the term is stale; ask now.
            check_now.set()

        def fenced() -> None:
            # The store says this term is over: stop at once, then campaign again.
            _log.warning("lease.fenced", plugin=self.name, term=leader.term)
            fenced_at.append(trio.current_time())
            lease_scope.cancel()

        held.on_refused, held.on_fenced = refused, fenced

        with trio.CancelScope(deadline=sent_at + keep) as lease_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        self.serve,
                        self.send_channel.clone(),
                        self.status,
                        held=held,
                    )
                )
                while True:
                    with trio.move_on_after(self.ttl / 3):
                        await check_now.wait()
                    check_now = trio.Event()
                    sent_at = trio.current_time()
                    try:
                        renewed = await self.leases.campaign(self.name, self.ttl)
                    except JournalError as err:
                        # The deadline stays: if this goes on, the plugin stops in time.
                        _log.warning("lease.renew_failed", plugin=self.name, error=err)
                        continue
                    self.status.leader = renewed
                    if renewed != leader:
                        nursery.cancel_scope.cancel()
                        return
                    lease_scope.deadline = sent_at + keep
        if lease_scope.cancelled_caught and not fenced_at:
            _log.warning("lease.expired_locally", plugin=self.name, term=leader.term)
