"""The one exception hierarchy of tower-trio.

Every message says what happened and what to do about it, because these
messages end up in start-up errors, logs and HTTP error bodies that a lab
engineer reads without the source at hand.
"""

from __future__ import annotations


class TowerError(Exception):
    """Base class of every error tower-trio raises on purpose."""


class ConfigError(TowerError):
    """A setting is missing or invalid; the message names the variable."""


class PluginError(TowerError):
    """A plugin cannot be found, imported, configured or called."""


class PublishError(TowerError):
    """A trigger could not be handed to the broker."""


class JournalError(TowerError):
    """The journal cannot be opened or written (read-only or full disk, corruption)."""


class FencedError(JournalError):
    """A plugin's write came from a leadership term that is no longer current.

    Raised by a store shared by several towers when a plugin's state write or
    trigger carries a term its lease no longer has (it expired, or another
    tower took it over): the write is refused so that a stale leader cannot
    overwrite its successor's work. The tower stops that plugin here and
    campaigns for it again; nothing needs fixing unless it repeats, in which
    case this tower's link to PostgreSQL is too slow for ``TOWER_LEASE_TTL``.
    """
