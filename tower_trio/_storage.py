"""What the tower stores, and the one interface every store implements.

Accepted triggers and their delivery records, idempotency keys, plugin
state, and the lookups the HTTP API serves all go through ``Storage``. The
HTTP API, the plugins and the publisher see only this interface; the SQLite
journal (``tower_trio._journal``) is its implementation, and another store
is added by implementing it and passing the contract tests in
``tests/test_storage.py``.

The writer discipline every implementation keeps: **writes never
interleave.** ``append``, ``settle``, ``pending``, ``pending_count``,
``last_seq``, ``prune``, ``room`` and the plugin-state methods run one at a
time, in the order they were called, each in its own transaction, so a
reader of ``pending`` never sees a row whose answer is being written.
A write, once started, finishes even if its caller is cancelled: a
cancelled caller never leaves a half-written batch. Lookups (``get``,
``page``) may run beside the writer and see only committed data.

Both stores are blocking libraries (sqlite3, psycopg) made into a
``Storage`` the same way, by ``tower_trio._threaded``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import attrs

from ._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._models import Trigger

__all__ = [
    "PRUNE_BATCH",
    "Accepted",
    "Duplicate",
    "Entry",
    "JournalRecord",
    "Membership",
    "Outgoing",
    "PageQuery",
    "Refused",
    "Settlement",
    "Storage",
    "entry_values",
    "new_outgoing",
    "new_record",
    "request_fingerprint",
    "settlement_updates",
]

PRUNE_BATCH = 5000
"""Triggers deleted per transaction when pruning: each holds the writer for a moment only."""

Entry: TypeAlias = "tuple[Trigger, bytes, str | None, str | None]"
"""A trigger to store: the trigger, its body as published, its idempotency key
(namespaced by source) and the fingerprint of the request."""


def request_fingerprint(trigger: Trigger) -> str:
    """A digest of what a client asked for, to tell a retry from a different request.

    Taken from the validated trigger, not the raw request: what the tower
    assigns or overrides (uuid, creation time, source) is left out, and a
    validated trigger always encodes (no lone surrogates, bounded depth).
    """
    asked = {
        "apiVersion": trigger.api_version,
        "protocol": trigger.protocol,
        "plate": None if trigger.plate is None else [trigger.plate.rows, trigger.plate.columns],
        "spec": trigger.spec,
        "metadata": trigger.metadata.spec,
    }
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@attrs.frozen
class Outgoing:
    """A stored trigger as the publisher needs it."""

    seq: int
    uuid: str
    routing_key: str
    protocol: str
    source: str
    body: bytes
    created_at: float
    attempts: int


@attrs.frozen
class JournalRecord:
    """A trigger as published, with its delivery record."""

    seq: int
    uuid: str
    api_version: str
    protocol: str
    source: str
    body: bytes
    status: DeliveryStatus = attrs.field(converter=DeliveryStatus)
    created_at: float
    published_at: float | None
    attempts: int
    last_error: str | None
    retries: int = 0
    """How many times an operator sent it again after it failed or was unroutable."""
    retried_at: float | None = None

    def outgoing(self) -> Outgoing:
        """The trigger as the publisher sends it."""
        return Outgoing(
            self.seq,
            self.uuid,
            self.api_version,
            self.protocol,
            self.source,
            self.body,
            self.created_at,
            self.attempts,
        )


@attrs.frozen
class Accepted:
    outgoing: Outgoing


@attrs.frozen
class Duplicate:
    """The idempotency key (or the uuid) was stored before: here is the first trigger."""

    record: JournalRecord
    same_request: bool


@attrs.frozen
class Refused:
    """The store refused this trigger alone (a stale leadership term): it was not stored."""

    reason: str


@attrs.frozen
class Settlement:
    """The broker's answer for one trigger, or a retry that keeps it pending."""

    seq: int
    status: DeliveryStatus = attrs.field(converter=DeliveryStatus)
    attempts: int
    last_error: str | None
    at: float


@attrs.frozen
class PageQuery:
    """One page of a listing: newest first, at most ``limit``, each filter optional."""

    limit: int
    status: DeliveryStatus | None = None
    api_version: str | None = None
    protocol: str | None = None
    source: str | None = None
    key: str | None = None
    """An idempotency key as stored (namespaced by source, e.g. ``http:<key>``)."""
    before: int | None = None
    """A seq: only triggers stored before it (the cursor of the next page)."""
    max_bytes: int | None = None
    """The page ends before its bodies would exceed this, holding one record at least."""

    def equal_to(self) -> list[tuple[str, str]]:
        """The filters given, as (column, value) pairs every store matches exactly."""
        given = (
            ("status", None if self.status is None else str(self.status)),
            ("api_version", self.api_version),
            ("protocol", self.protocol),
            ("source", self.source),
            ("idem_key", self.key),
        )
        return [(column, value) for column, value in given if value is not None]


class Membership(Protocol):
    """A store several towers share: which of them are alive, and who publishes what.

    Each trigger is stored with an owner, the instance that stored it, and
    ``Storage.pending`` hands out only this instance's. An instance stays a
    member by renewing its heartbeat; the rows of one whose heartbeat
    expired are taken over by a live one. Times are the database's, so
    towers on different machines need not agree on the time of day.
    """

    @property
    def instance(self) -> str:
        """This tower's name (``TOWER_INSTANCE``), the owner of what it stores."""
        ...

    async def heartbeat(self, ttl: float) -> bool:
        """Keep this instance alive for ``ttl`` more seconds of the database's clock.

        False when its heartbeat had expired (or was taken) before this call:
        it is a member again from now on, but others may have taken over some
        of its triggers, so whatever it holds in memory about them is stale.
        """
        ...

    async def take_over(self, limit: int) -> list[tuple[Outgoing, str | None]]:
        """Make this instance the owner of up to ``limit`` pending triggers of dead ones.

        Dead: whose heartbeat expired, or who never had one. Returns each
        trigger with its previous owner, oldest first; concurrent callers
        never get the same trigger.
        """
        ...

    async def leave(self) -> None:
        """End this instance's heartbeat now, so that others take over what it leaves."""
        ...


class Storage(Protocol):
    """Where the tower keeps what it accepted; see the module docstring for the rules."""

    @property
    def location(self) -> str:
        """Where the data lives, for logs and the start-up summary (no secrets)."""
        ...

    @property
    def membership(self) -> Membership | None:
        """The instances sharing the store, or None when this tower is its only writer."""
        ...

    async def append(self, entries: Sequence[Entry]) -> list[Accepted | Duplicate | Refused]:
        """Store a batch in one transaction, all or nothing; one result per entry, in order.

        A trigger whose idempotency key, or uuid, is already stored (or
        appears earlier in the batch) is a ``Duplicate`` of the first. A
        plugin's trigger from a leadership term that is over is ``Refused``
        and not stored, and the rest of the batch is stored as usual.
        Raises ``JournalError`` when nothing could be stored.
        """
        ...

    async def settle(self, settlements: Iterable[Settlement]) -> None:
        """Record the broker's answers (and retries) for a batch of triggers."""
        ...

    async def retry(self, uuid: str) -> tuple[JournalRecord, Outgoing | None] | None:
        """Make a failed or unroutable trigger pending again, its attempts from zero.

        Returns None for an unknown uuid, else the record after the call and
        the trigger to publish when it changed (None when it was not failed
        or unroutable: a repeated call queues nothing twice). ``retries``
        counts the calls that changed it; ``retried_at`` is the latest. In a
        shared store, this instance becomes its owner.
        """
        ...

    async def pending(self, after_seq: int, up_to_seq: int, limit: int) -> list[Outgoing]:
        """Unsettled triggers with ``after_seq < seq <= up_to_seq``, oldest first.

        In a shared store (``membership``), only this instance's.
        """
        ...

    async def pending_count(self) -> int:
        """Unsettled triggers (in a shared store, this instance's)."""
        ...

    async def last_seq(self) -> int:
        """The highest seq ever stored (0 for an empty store)."""
        ...

    async def prune(self, retention: float) -> int:
        """Delete settled triggers older than ``retention`` seconds; returns how many."""
        ...

    async def room(self) -> int:
        """Bytes the store can still grow by."""
        ...

    async def get(self, uuid: str) -> JournalRecord | None: ...

    async def page(self, query: PageQuery) -> tuple[list[JournalRecord], bool]:
        """The records ``query`` asks for, and whether more may follow."""
        ...

    async def load_plugin_state(self, plugin: str) -> dict[str, Any]:
        """Every key and value saved for ``plugin``."""
        ...

    async def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        """Save one value durably; ``None`` deletes the key.

        ``term`` is the leadership term the plugin writes under. A store
        shared by several towers raises ``FencedError`` (and writes nothing)
        unless it is the plugin's live term, held by this tower; a store of
        one tower accepts any. The same goes for triggers carrying a
        ``term`` in ``append``: a batch holding a stale one is refused whole.
        """
        ...

    def close(self) -> None:
        """Release the store's connections; nothing is called after this."""
        ...


def entry_values(
    trigger: Trigger, body: bytes, key: str | None, fingerprint: str | None
) -> tuple[Any, ...]:
    """What a store inserts for one entry, in this order.

    uuid, api_version, protocol, source, body, created_at (seconds since the
    epoch), idempotency key, fingerprint.
    """
    return (
        trigger.uuid,
        trigger.api_version,
        trigger.protocol,
        trigger.metadata.source,
        body,
        trigger.created_at.timestamp(),
        key,
        fingerprint,
    )


def new_outgoing(seq: int, values: tuple[Any, ...]) -> Outgoing:
    """What the publisher sends of a trigger just stored with ``values`` as ``seq``.

    Built straight from the values: the batch's worker thread builds one per
    trigger, and a ``JournalRecord`` on the way costs a third of that again.
    """
    uuid, api_version, protocol, source, body, created_at, _, _ = values
    return Outgoing(seq, uuid, api_version, protocol, source, body, created_at, 0)


def new_record(seq: int, values: tuple[Any, ...]) -> JournalRecord:
    """The record of a trigger just stored with ``values`` (``entry_values``) as ``seq``."""
    uuid, api_version, protocol, source, body, created_at, _, _ = values
    return JournalRecord(
        seq, uuid, api_version, protocol, source, body, "pending", created_at, None, 0, None
    )


def settlement_updates(settlements: Iterable[Settlement]) -> list[tuple[Any, ...]]:
    """The ranged updates that record ``settlements``, one per run of alike answers.

    Each is (status, attempts, last error, published at or None, settled at
    or None, first seq, last seq); a run's time is its latest answer's.
    Confirms arrive for runs of consecutive triggers with the same outcome
    (one multiple-ack covers a whole run), so a store writes each run as one
    ranged update rather than one per trigger.
    """
    updates = []
    for run in _runs(settlements):
        first, last = run[0], run[-1]
        at = max(s.at for s in run)
        updates.append(
            (
                str(first.status),
                first.attempts,
                first.last_error,
                at if first.status is DeliveryStatus.PUBLISHED else None,
                at if first.status.settled else None,
                first.seq,
                last.seq,
            )
        )
    return updates


def _runs(settlements: Iterable[Settlement]) -> list[list[Settlement]]:
    """Consecutive seqs with the same outcome, grouped, in seq order."""
    runs: list[list[Settlement]] = []
    for settlement in sorted(settlements, key=lambda s: s.seq):
        if runs:
            previous = runs[-1][-1]
            if (
                settlement.seq == previous.seq + 1
                and settlement.status == previous.status
                and settlement.attempts == previous.attempts
                and settlement.last_error == previous.last_error
            ):
                runs[-1].append(settlement)
                continue
        runs.append([settlement])
    return runs
