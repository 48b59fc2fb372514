"""The one place that opens the store the settings choose (``TOWER_JOURNAL_URL``).

The supervisor asks for "the tower's storage" and gets a ``Storage``: the
SQLite journal in ``TOWER_DATA_DIR`` (or the file the URL names), or the
PostgreSQL journal, and the plugin leases that go with it. psycopg is
imported only when a PostgreSQL URL is given, so a tower without the
``postgres`` extra never needs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._journal import open_storage
from ._leases import SoleLeases

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import Settings
    from ._leases import Leases
    from ._storage import Storage

__all__ = ["open_leases_from", "open_storage_from"]


async def open_storage_from(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> Storage:
    """The store ``settings`` choose, opened (created and migrated if need be)."""
    target = settings.journal_url
    if target is None:
        return await open_storage(
            settings.data_dir, max_bytes=settings.journal_max_bytes, clock=clock
        )
    if isinstance(target, Path):
        return await open_storage(
            target.parent, max_bytes=settings.journal_max_bytes, clock=clock, file_name=target.name
        )
    # Imported here: psycopg is an optional dependency, and this is the only way to it.
    from ._postgres import open_postgres_storage  # noqa: PLC0415

    return await open_postgres_storage(
        target,
        instance=settings.instance,
        ttl=settings.replica_ttl,
        max_bytes=settings.journal_max_bytes,
        clock=clock,
        # A transaction cut off mid-way holds its row locks (a plugin's lease,
        # triggers being taken over) no longer than either TTL.
        idle_in_transaction=min(settings.replica_ttl, settings.lease_ttl),
    )


def open_leases_from(settings: Settings) -> Leases:
    """The plugin leases of the journal ``settings`` choose.

    Only a PostgreSQL journal can be shared by several towers; on SQLite
    this tower leads every plugin.
    """
    target = settings.journal_url
    if target is None or isinstance(target, Path):
        return SoleLeases(settings.instance)
    from ._postgres_leases import PostgresLeases  # noqa: PLC0415

    # A lease call that has not answered within a third of the TTL is given
    # up: by then, waiting longer risks the lease more than asking again.
    return PostgresLeases(target, settings.instance, timeout=settings.lease_ttl / 3)
