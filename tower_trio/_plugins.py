"""Watcher plugins: discovery, configuration and supervision.

This is the one module that knows where plugins come from: sub-folders of
``TOWER_PLUGINS_DIR`` holding a ``watcher.py``, the built-in plugins an
installed tower-trio ships (the package ``tower_trio_builtins``, laid out
like that folder), and installed packages through the ``tower_trio.plugins``
entry-point group, in that order of precedence. A plugin is

    async def run(send_channel): ...

optionally asking, by parameter name, for ``config``: an instance of the
attrs class ``Config`` in the same module, built from ``PLUGIN_<NAME>_*``,
and for ``state``: its ``tower_trio.plugin.State``, kept in a
``StateBackend`` (the tower's journal; memory in tests). Running a plugin
once is ``_runtime``'s; this module restarts it when it crashes.

One concept, kept whole although past 400 lines: where plugins come from
and how they are kept running.
"""

from __future__ import annotations

import enum
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import types
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._backoff import Backoff
from ._environ import environ_variable, from_environ
from ._errors import PluginError
from ._runtime import (
    MemoryStateBackend,
    Outcome,
    PluginState,
    PluginStatus,
    log_plugin_error,
    run_plugin_once,
)
from ._secrets import REDACTED, is_secret
from ._serialization import format_optional_timestamp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from ._channel import Submission, TriggerSendChannel
    from ._leases import HeldTerm
    from ._models import FieldError, Trigger
    from ._runtime import State, StateBackend

__all__ = [
    "ConfiguredPlugin",
    "DiscoveredPlugin",
    "SkippedPlugin",
    "build_config",
    "discover_plugins",
    "plugins_report",
    "select_plugins",
    "serve_plugin",
]

ENTRY_POINT_GROUP = "tower_trio.plugins"
# Where the wheel puts ./plugins; a checkout has no such package and uses ./plugins.
BUILTINS_PACKAGE = "tower_trio_builtins"
_PARAMETERS = ("send_channel", "config", "state")
_SIGNATURES = (
    "async def run(send_channel), run(send_channel, config), run(send_channel, state) "
    "or run(send_channel, config, state)"
)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# A plugin that ran this long before crashing was healthy; restart it quickly.
_STABLE_AFTER = 60.0


@attrs.frozen
class DiscoveredPlugin:
    name: str
    origin: str
    run: Callable[..., Awaitable[None]]
    config_class: type | None
    wants_config: bool
    wants_state: bool = False
    problem: str | None = None
    """Why this plugin cannot run (it does not import, or its run() is not a
    plugin's); such a plugin is kept so that it stops start-up only when selected."""

    def config_variables(self) -> dict[str, str]:
        """Field name → environment variable, for every field of its Config."""
        if self.config_class is None:
            return {}
        return {
            field.name: environ_variable(self.prefix, field)
            for field in attrs.fields(self.config_class)
        }

    @property
    def prefix(self) -> str:
        """What the names of its variables start with: ``PLUGIN_<NAME>_``."""
        return f"PLUGIN_{self.name.upper()}_"


@attrs.frozen
class ConfiguredPlugin:
    plugin: DiscoveredPlugin
    config: Any

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def wants_state(self) -> bool:
        return self.plugin.wants_state

    async def invoke(self, send_channel: TriggerSendChannel, state: State | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if self.plugin.wants_config:
            kwargs["config"] = self.config
        if self.plugin.wants_state:
            if state is None:
                raise PluginError(f"plugin {self.name!r} asks for state but none was given")
            kwargs["state"] = state
        await self.plugin.run(send_channel, **kwargs)

    def secret_values(self) -> list[str]:
        """The text of every configured value of a secret field."""
        if self.config is None or not attrs.has(type(self.config)):
            return []
        return [
            str(value)
            for field in attrs.fields(type(self.config))
            if is_secret(field) and (value := getattr(self.config, field.name)) not in (None, "")
        ]

    def redact(self, text: str) -> str:
        """``text`` with every secret configuration value replaced by ``***``."""
        for secret in self.secret_values():
            text = text.replace(secret, REDACTED)
        return text

    def public_config(self) -> dict[str, Any]:
        """The configuration as JSON, secrets replaced by ``***``."""
        if self.config is None or not attrs.has(type(self.config)):
            return {}
        return {
            field.name: REDACTED
            if is_secret(field)
            else _jsonable(getattr(self.config, field.name))
            for field in attrs.fields(type(self.config))
        }


def _jsonable(value: object) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


@attrs.frozen
class SkippedPlugin:
    name: str
    reason: str


def plugins_report(
    statuses: Mapping[str, PluginStatus], plugins: Sequence[ConfiguredPlugin]
) -> list[dict[str, Any]]:
    """What ``GET /plugins`` shows: each plugin's health, counters and (redacted) config."""
    report = []
    for plugin in plugins:
        status = statuses.get(plugin.name) or PluginStatus(plugin.name)
        last_error = None
        if status.last_error is not None:
            last_error = {
                "message": plugin.redact(status.last_error),
                "at": format_optional_timestamp(status.last_error_at),
            }
        report.append(
            {
                "name": plugin.name,
                "state": status.state.value,
                "restarts": status.restarts,
                "triggersSent": status.triggers_sent,
                "errors": status.errors,
                "lastError": last_error,
                "lastTriggerAt": format_optional_timestamp(status.last_trigger_at),
                "leader": None
                if status.leader is None
                else {"instance": status.leader.instance, "term": status.leader.term},
                "config": plugin.public_config(),
            }
        )
    return report


def discover_plugins(
    plugins_dir: Path, *, entry_points: bool = True
) -> dict[str, DiscoveredPlugin]:
    """Every plugin in ``plugins_dir``, then (``entry_points``) every installed one.

    A name found in ``plugins_dir`` hides a built-in of the same name, so a
    checkout runs the plugins being edited. A plugin that cannot be imported
    or whose ``run`` the loader cannot call is returned with its ``problem``:
    ``select_plugins`` refuses it only if it is selected.
    """
    found: dict[str, DiscoveredPlugin] = {}
    folders = [plugins_dir, *(builtin_plugin_dirs() if entry_points else [])]
    for folder in folders:
        if not folder.is_dir():
            continue
        for watcher in sorted(folder.glob("*/watcher.py")):
            name = watcher.parent.name
            if _NAME.fullmatch(name) and name not in found:
                found[name] = _discover_file(name, watcher)
    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in found:
                found[entry_point.name] = _broken(
                    entry_point.name,
                    entry_point.value,
                    f"plugin {entry_point.name!r} is both in {found[entry_point.name].origin} "
                    f"and installed as {entry_point.value}; rename one of them",
                )
                continue
            found[entry_point.name] = _discover_entry_point(entry_point)
    return found


def builtin_plugin_dirs() -> list[Path]:
    """The folders holding the plugins that come with an installed tower-trio."""
    spec = importlib.util.find_spec(BUILTINS_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _discover_file(name: str, watcher: Path) -> DiscoveredPlugin:
    try:
        return _inspect_module(name, str(watcher), _import_file(name, watcher))
    except PluginError as err:
        return _broken(name, str(watcher), str(err))


def _discover_entry_point(entry_point: importlib.metadata.EntryPoint) -> DiscoveredPlugin:
    name, origin = entry_point.name, entry_point.value
    try:
        loaded = entry_point.load()
    except Exception as err:
        return _broken(name, origin, f"cannot load plugin {name!r} from {origin}: {err}")
    source = loaded if isinstance(loaded, types.ModuleType) else inspect.getmodule(loaded)
    if source is None:
        return _broken(name, origin, f"plugin {name!r}: {origin} is not a module")
    try:
        return _inspect_module(name, origin, source)
    except PluginError as err:
        return _broken(name, origin, str(err))


def _broken(name: str, origin: str, problem: str) -> DiscoveredPlugin:
    async def cannot_run(send_channel: object) -> None:
        raise PluginError(problem)

    return DiscoveredPlugin(name, origin, cannot_run, None, False, problem=problem)


def _import_file(name: str, path: Path) -> types.ModuleType:
    module_name = f"tower_trio_plugins.{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin {name!r} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise PluginError(
            f"cannot import plugin {name!r} from {path}: {type(err).__name__}: {err}"
        ) from err
    return module


def _inspect_module(name: str, origin: str, module: types.ModuleType) -> DiscoveredPlugin:
    run = getattr(module, "run", None)
    if run is None or not inspect.iscoroutinefunction(run):
        raise PluginError(
            f"plugin {name!r} ({origin}) must define 'async def run(send_channel)'; "
            f"the accepted signatures are {_SIGNATURES}"
        )
    parameters = inspect.signature(run).parameters
    unknown = [p for p in parameters if p not in _PARAMETERS]
    if "send_channel" not in parameters or unknown:
        raise PluginError(
            f"plugin {name!r} ({origin}): run() takes {', '.join(parameters) or 'nothing'}; "
            f"it must take send_channel and may take config and state, by those names, "
            f"in any order: {_SIGNATURES}"
        )
    config_class = getattr(module, "Config", None)
    if config_class is not None and not attrs.has(config_class):
        raise PluginError(f"plugin {name!r} ({origin}): Config must be an attrs class")
    wants_config = "config" in parameters
    if wants_config and config_class is None:
        raise PluginError(f"plugin {name!r} ({origin}) asks for config but defines no Config class")
    if config_class is not None:
        attrs.resolve_types(config_class)
    return DiscoveredPlugin(
        name, origin, run, config_class, wants_config, wants_state="state" in parameters
    )


def build_config(plugin: DiscoveredPlugin, environ: Mapping[str, object]) -> Any:
    """The plugin's Config from ``PLUGIN_<NAME>_*``; raises PluginError naming the variable.

    A missing variable raises ``_MissingSetting`` (a PluginError), so that a
    plugin nobody asked for can be skipped rather than stop the tower.
    """
    if plugin.problem is not None:
        raise PluginError(plugin.problem)
    if plugin.config_class is None:
        return None
    return from_environ(
        plugin.config_class,
        plugin.prefix,
        environ,
        owner=f"the {plugin.name} plugin",
        error=PluginError,
        missing=_MissingSetting,
    )


class _MissingSetting(PluginError):
    pass


def select_plugins(
    discovered: Mapping[str, DiscoveredPlugin],
    wanted: tuple[str, ...] | None,
    environ: Mapping[str, str],
) -> tuple[list[ConfiguredPlugin], list[SkippedPlugin]]:
    """The plugins to run, and those left out with the reason.

    Named plugins must exist, load and be fully configured; when none are
    named, a plugin whose configuration is incomplete is skipped, not fatal,
    but one that cannot run is refused. A plugin that cannot run and is not
    named is skipped: someone else's broken plugin must not stop this tower.
    """
    if wanted is not None:
        unknown = [name for name in wanted if name not in discovered]
        if unknown:
            raise PluginError(
                f"TOWER_PLUGINS names {', '.join(unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not installed; "
                f"available: {', '.join(sorted(discovered)) or 'none'}"
            )
        broken = [
            SkippedPlugin(name, f"not in TOWER_PLUGINS, and it cannot run: {plugin.problem}")
            for name, plugin in discovered.items()
            if name not in wanted and plugin.problem is not None
        ]
        return [
            ConfiguredPlugin(discovered[n], build_config(discovered[n], environ)) for n in wanted
        ], broken
    selected, skipped = [], []
    for name, plugin in discovered.items():
        try:
            selected.append(ConfiguredPlugin(plugin, build_config(plugin, environ)))
        except _MissingSetting as err:
            skipped.append(SkippedPlugin(name, str(err)))
    return selected, skipped


async def serve_plugin(
    plugin: ConfiguredPlugin,
    send_channel: trio.MemorySendChannel[Submission],
    status: PluginStatus,
    *,
    state_backend: StateBackend | None = None,
    check: Callable[[Trigger], Sequence[FieldError]] | None = None,
    backoff: Backoff | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    held: HeldTerm | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one plugin, restarting it with backoff whenever it raises.

    A plugin that returns is finished. One that crashes because it sent
    something that is not a Trigger is failed, not restarted: that is a bug
    in its code, which a restart would repeat, re-sending every trigger it
    sent before the bad value each time. Cancellation is never caught: it is
    how the supervisor stops plugins. Its state is (re)loaded from
    ``state_backend`` at every start; without one it lives in memory and is
    lost when the tower stops. ``held`` is the leadership term it runs
    under (``run_plugin_once``).
    """
    backoff = backoff or Backoff(initial=1.0, cap=60.0)
    state_backend = state_backend if state_backend is not None else MemoryStateBackend()
    with send_channel:
        task_status.started()
        while True:
            started_at = trio.current_time()
            ended = await run_plugin_once(
                plugin,
                send_channel,
                status,
                state_backend=state_backend,
                check=check,
                wall_clock=wall_clock,
                held=held,
            )
            if ended.outcome is not Outcome.CRASHED or ended.error is None:
                return
            if trio.current_time() - started_at > _STABLE_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            status.state = PluginState.BACKING_OFF
            log_plugin_error(
                "plugin.crashed", plugin, ended.error, ended.message, restart_in=f"{delay:.1f}s"
            )
            await trio.sleep(delay)
            status.restarts += 1
