"""The one nursery: plugins and the HTTP API feed the publisher.

Task tree (every long-lived task is started with ``nursery.start``)::

    run_tower                      signals: 1st → graceful shutdown, 2nd → exit now
    └── serve_tower
        ├── Publisher.serve        owns the broker connection; drains the channel
        ├── serve_http             Hypercorn + Quart-Trio, one send-channel clone
        └── _serve_plugins         one serve_led_plugin task per plugin, a clone each
            └── serve_plugin       while this tower holds the plugin's lease

Shutdown: the HTTP server stops accepting and finishes its requests, the
plugins are cancelled, and the publisher keeps publishing until every
producer has closed its clone and the channel is empty, or until the grace
deadline passes.
"""

from __future__ import annotations

import signal
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._auth import check_exposure
from ._channel import Submission
from ._console import ConsoleSources
from ._http import create_app
from ._leadership import serve_led_plugin
from ._leases import Leases
from ._logging import get_logger, print_summary
from ._metrics import ASGIApp, TowerMetrics, instrument
from ._plugins import ConfiguredPlugin, SkippedPlugin, plugins_report
from ._publisher import Publisher
from ._runtime import PluginState, PluginStatus
from ._schemas import ProtocolSchemas, read_schemas
from ._server import serve_http
from ._status import status_report
from ._storage import Storage
from ._stores import open_leases_from, open_storage_from
from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._config import Settings
    from ._models import FieldError, Trigger

__all__ = ["RunningTower", "run_tower", "serve_tower"]

_log = get_logger(__name__)

EXIT_FORCED = 130


@attrs.frozen
class RunningTower:
    """What ``serve_tower`` reports once everything is up."""

    http_urls: tuple[str, ...]
    publisher: Publisher = attrs.field(repr=False)
    storage: Storage = attrs.field(repr=False)
    plugins: dict[str, PluginStatus] = attrs.field(repr=False)


async def serve_tower(
    settings: Settings,
    plugins: Sequence[ConfiguredPlugin] = (),
    *,
    shutdown: trio.Event,
    skipped: Sequence[SkippedPlugin] = (),
    schemas: ProtocolSchemas | None = None,
    task_status: trio.TaskStatus[RunningTower] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the tower until ``shutdown`` is set and the publisher has drained.

    ``schemas`` default to those of ``TOWER_SCHEMAS_DIR``, read here.
    """
    check_exposure(settings)
    if schemas is None:
        schemas = await read_schemas(settings)
    storage = await open_storage_from(settings)
    leases = open_leases_from(settings)
    try:
        await _serve_with_storage(
            settings,
            plugins,
            _Journal(storage, leases),
            shutdown=shutdown,
            skipped=skipped,
            schemas=schemas,
            task_status=task_status,
        )
    finally:
        leases.close()
        storage.close()


@attrs.frozen
class _Journal:
    """The store, and the plugin leases kept in it."""

    storage: Storage
    leases: Leases


async def _serve_with_storage(
    settings: Settings,
    plugins: Sequence[ConfiguredPlugin],
    journal: _Journal,
    *,
    shutdown: trio.Event,
    skipped: Sequence[SkippedPlugin],
    schemas: ProtocolSchemas,
    task_status: trio.TaskStatus[RunningTower],
) -> None:
    storage = journal.storage
    publisher = Publisher(settings, storage)
    statuses = {plugin.name: PluginStatus(plugin.name) for plugin in plugins}
    draining = False

    def readiness() -> list[str]:
        reasons = []
        if draining:
            reasons.append("shutting down")
        stats = publisher.statistics()
        if not stats.connected:
            reasons.append(f"broker not connected: {stats.last_error or 'connecting'}")
        elif stats.blocked:
            reasons.append("broker has blocked publishing (connection.blocked)")
        if stats.journal_problem is not None:
            reasons.append(f"journal cannot take more triggers: {stats.journal_problem}")
        if stats.replica is not None and stats.replica.problem is not None:
            reasons.append(f"journal unreachable: {stats.replica.problem}")
        reasons.extend(
            f"plugin {name} has not started"
            for name, status in statuses.items()
            if status.state is PluginState.STARTING
        )
        return reasons

    send_channel, receive_channel = trio.open_memory_channel[Submission](settings.channel_size)
    metrics = TowerMetrics(
        publisher.statistics,
        statuses,
        lambda: receive_channel.statistics().current_buffer_used,
        instance=settings.instance,
    )
    publisher.on_published = metrics.observe_published

    def console_status() -> dict[str, Any]:
        return status_report(
            settings,
            publisher.statistics(),
            readiness(),
            plugins_report(statuses, plugins),
            skipped,
            broker_url=publisher.redacted_url(),
        )

    def make_app(send_channel: trio.MemorySendChannel[Submission]) -> ASGIApp:
        app = create_app(
            settings,
            send_channel,
            publisher.settlements,
            readiness,
            draining=lambda: draining,
            plugins_view=lambda: plugins_report(statuses, plugins),
            schemas=schemas,
            retry=publisher.retry,
            console=ConsoleSources(publisher.feed, console_status, settings.exchange),
        )
        return instrument(app, metrics, token=settings.metrics_token)

    async with trio.open_nursery() as nursery:
        publisher_scope = trio.CancelScope()
        await nursery.start(_run_in_scope, publisher_scope, publisher.serve, receive_channel)
        plugins_scope = trio.CancelScope()
        http_shutdown = trio.Event()
        with send_channel:
            http_urls = await nursery.start(
                serve_http, settings, make_app, send_channel.clone(), http_shutdown
            )
            await nursery.start(
                partial(_serve_plugins, check=schemas.check, ttl=settings.lease_ttl),
                plugins,
                send_channel,
                statuses,
                journal,
                plugins_scope,
            )
        _log.info(
            "tower.started",
            version=__version__,
            instance=settings.instance,
            http=",".join(http_urls),
            broker=publisher.nodes.redacted(),
            exchange=settings.exchange,
            journal=storage.location,
            plugins=",".join(statuses) or "none",
        )
        for skip in skipped:
            _log.warning("plugin.skipped", plugin=skip.name, reason=skip.reason)
        print_summary(
            f"tower-trio {__version__}",
            _summary_rows(
                settings, http_urls, publisher, storage, statuses=statuses, skipped=skipped
            ),
        )
        task_status.started(RunningTower(tuple(http_urls), publisher, storage, statuses))

        await shutdown.wait()
        draining = True
        _log.info("tower.stopping", grace=f"{settings.shutdown_grace:g}s")
        http_shutdown.set()
        plugins_scope.cancel()
        publisher_scope.deadline = trio.current_time() + settings.shutdown_grace
    _log.info("tower.stopped", **attrs.asdict(publisher.statistics()))


def _summary_rows(
    settings: Settings,
    http_urls: Sequence[str],
    publisher: Publisher,
    storage: Storage,
    *,
    statuses: dict[str, PluginStatus],
    skipped: Sequence[SkippedPlugin],
) -> list[tuple[str, str]]:
    """The start-up screen: what runs where, and what was left out and why."""
    rows = [
        ("instance", settings.instance),
        ("HTTP API", ", ".join(http_urls)),
        ("auth", "bearer tokens" if settings.api_tokens else "off (no TOWER_API_TOKENS)"),
        ("broker", ", ".join(url.redacted() for url in publisher.nodes.urls)),
        ("exchange", settings.exchange),
        ("journal", storage.location),
    ]
    rows.extend((f"plugin {name}", status.state.value) for name, status in statuses.items())
    # The first clause names the missing variable; the rest is for the log line.
    rows.extend(
        (f"plugin {skip.name}", f"skipped: {skip.reason.split(';')[0]}") for skip in skipped
    )
    if not statuses and not skipped:
        rows.append(("plugins", "none"))
    return rows


async def _run_in_scope(
    scope: trio.CancelScope,
    serve: object,
    *args: object,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await serve(*args, task_status=task_status)  # type: ignore[operator]


async def _serve_plugins(
    plugins: Sequence[ConfiguredPlugin],
    send_channel: trio.MemorySendChannel[Submission],
    statuses: dict[str, PluginStatus],
    journal: _Journal,
    scope: trio.CancelScope,
    *,
    ttl: float,
    check: Callable[[Trigger], Sequence[FieldError]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            for plugin in plugins:
                await nursery.start(
                    partial(
                        serve_led_plugin,
                        plugin,
                        send_channel.clone(),
                        statuses[plugin.name],
                        journal.leases,
                        ttl=ttl,
                        state_backend=journal.storage,
                        check=check,
                    )
                )
            task_status.started()


async def run_tower(
    settings: Settings,
    plugins: Sequence[ConfiguredPlugin] = (),
    skipped: Sequence[SkippedPlugin] = (),
) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code.

    The first signal drains gracefully (exit 0); a second one stops at once.
    """
    # Checked before any nursery, so a bad setting is one line, not a traceback.
    check_exposure(settings)
    schemas = await read_schemas(settings)
    shutdown = trio.Event()
    forced = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                nonlocal forced
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not shutdown.is_set():
                        _log.info("shutdown.requested", signal=name)
                        shutdown.set()
                    else:
                        _log.warning("shutdown.forced", signal=name)
                        forced = True
                        nursery.cancel_scope.cancel()

            async def tower(*, task_status: trio.TaskStatus[RunningTower]) -> None:
                await serve_tower(
                    settings,
                    plugins,
                    shutdown=shutdown,
                    skipped=skipped,
                    schemas=schemas,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            await nursery.start(tower)
    return EXIT_FORCED if forced else 0
