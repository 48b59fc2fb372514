"""The tower at a glance, for the console's sources panel.

Each part (the broker connection, the journal, every plugin) gets a
``health`` of green, amber or red, and the whole takes the worst of them:
red when triggers cannot go out or come in, amber when they may soon not,
or a part needs a look. A plugin that was skipped (not asked for, or not
configured) is ``off`` and leaves the whole as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import Settings
    from ._plugins import SkippedPlugin
    from ._publisher import PublisherStatistics

__all__ = ["status_report"]

_RANK = {"green": 0, "amber": 1, "red": 2}
_PLUGIN_HEALTH = {
    "running": "green",
    "finished": "green",
    "starting": "amber",
    "backing-off": "amber",
    "failed": "red",
    # Another tower runs it. Amber only while no tower leads it (_plugin_health).
    "standby": "green",
}
_LOW_ROOM = 10
"""Room for fewer than this many of the largest triggers is amber."""


def _plugin_health(plugin: dict[str, Any]) -> str:
    if plugin["state"] == "standby" and plugin.get("leader") is None:
        return "amber"
    return _PLUGIN_HEALTH.get(plugin["state"], "amber")


def status_report(
    settings: Settings,
    stats: PublisherStatistics,
    reasons: Sequence[str],
    plugins: Sequence[dict[str, Any]],
    skipped: Sequence[SkippedPlugin],
    *,
    broker_url: str,
) -> dict[str, Any]:
    """The status JSON of the console (``GET /console/api/status``; docs/console.md)."""
    if not stats.connected:
        broker = ("disconnected", "red")
    elif stats.blocked:
        broker = ("blocked", "amber")
    else:
        broker = ("connected", "green")
    room, most = stats.journal_room, settings.journal_max_bytes
    if stats.journal_problem is not None or (stats.replica and not stats.replica.live):
        journal_health = "red"
    elif room is not None and room < _LOW_ROOM * 2 * settings.max_body_bytes:
        journal_health = "amber"
    else:
        journal_health = "green"
    panel = [{**plugin, "reason": None, "health": _plugin_health(plugin)} for plugin in plugins]
    panel.extend(
        {
            "name": skip.name,
            "state": "skipped",
            "restarts": 0,
            "triggersSent": 0,
            "errors": 0,
            "lastError": None,
            "lastTriggerAt": None,
            "leader": None,
            "reason": skip.reason,
            # Not asked for (left out of TOWER_PLUGINS, or not configured):
            # shown with its reason, but nothing is wrong with the tower.
            "health": "off",
        }
        for skip in skipped
    )
    healths = [broker[1], journal_health, *(p["health"] for p in panel if p["health"] != "off")]
    return {
        "version": __version__,
        "instance": settings.instance,
        "ready": not reasons,
        "reasons": list(reasons),
        "health": max(healths, key=_RANK.__getitem__),
        "broker": {
            "state": broker[0],
            "health": broker[1],
            "url": broker_url,
            "node": stats.node,
            "nodes": list(stats.nodes),
            "exchange": settings.exchange,
            "reconnects": stats.reconnects,
            "unconfirmed": stats.unconfirmed,
            "lastError": stats.last_error,
        },
        "journal": {
            "health": journal_health,
            "pending": stats.pending,
            "room": room,
            "maxBytes": most,
            "bytes": None if most is None or room is None else max(0, most - room),
            "problem": stats.journal_problem,
            # Only with a journal several towers share (docs/replicas.md).
            "replica": None
            if stats.replica is None
            else {
                "live": stats.replica.live,
                "takenOver": stats.replica.taken_over,
                "lapses": stats.replica.lapses,
                "problem": stats.replica.problem,
            },
        },
        "plugins": panel,
    }
