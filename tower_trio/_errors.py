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
