"""Watcher plugins: discovery, configuration and supervision.

This is the one module that knows where plugins come from: sub-folders of
``TOWER_PLUGINS_DIR`` holding a ``watcher.py``, and installed packages
through the ``tower_trio.plugins`` entry-point group. A plugin is

    async def run(send_channel): ...

optionally asking, by parameter name, for ``config``: an instance of the
attrs class ``Config`` in the same module, built from ``PLUGIN_<NAME>_*``.
"""

from __future__ import annotations

import enum
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import time
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._backoff import Backoff
from ._channel import Submission, TriggerSendChannel
from ._errors import PluginError
from ._logging import get_logger
from ._serialization import structure_env_value

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ._models import Trigger

__all__ = [
    "ConfiguredPlugin",
    "DiscoveredPlugin",
    "PluginState",
    "PluginStatus",
    "SkippedPlugin",
    "discover_plugins",
    "select_plugins",
    "serve_plugin",
]

_log = get_logger(__name__)

ENTRY_POINT_GROUP = "tower_trio.plugins"
_PARAMETERS = ("send_channel", "config")
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

    def config_variables(self) -> dict[str, str]:
        """Field name → environment variable, for every field of its Config."""
        if self.config_class is None:
            return {}
        prefix = f"PLUGIN_{self.name.upper()}_"
        return {
            field.name: prefix + field.name.upper() for field in attrs.fields(self.config_class)
        }


@attrs.frozen
class ConfiguredPlugin:
    plugin: DiscoveredPlugin
    config: Any

    @property
    def name(self) -> str:
        return self.plugin.name

    async def invoke(self, send_channel: TriggerSendChannel) -> None:
        if self.plugin.wants_config:
            await self.plugin.run(send_channel, config=self.config)
        else:
            await self.plugin.run(send_channel)


@attrs.frozen
class SkippedPlugin:
    name: str
    reason: str


class PluginState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing-off"
    FINISHED = "finished"
    FAILED = "failed"


@attrs.define
class PluginStatus:
    name: str
    state: PluginState = PluginState.STARTING
    restarts: int = 0
    triggers_sent: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_trigger_at: float | None = None

    def count_sent(self, trigger: Trigger) -> None:
        self.triggers_sent += 1
        self.last_trigger_at = trigger.created_at.timestamp()


def discover_plugins(
    plugins_dir: Path, *, entry_points: bool = True
) -> dict[str, DiscoveredPlugin]:
    """Every plugin found in ``plugins_dir`` and in installed packages.

    Raises PluginError naming the file of a plugin that cannot be imported
    or whose ``run`` is not a valid plugin entry point.
    """
    found: dict[str, DiscoveredPlugin] = {}
    if plugins_dir.is_dir():
        for watcher in sorted(plugins_dir.glob("*/watcher.py")):
            name = watcher.parent.name
            if not _NAME.fullmatch(name):
                continue
            module = _import_file(name, watcher)
            found[name] = _inspect_module(name, str(watcher), module)
    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in found:
                raise PluginError(
                    f"plugin {entry_point.name!r} is both in {plugins_dir} and installed "
                    f"as {entry_point.value}; rename one of them"
                )
            try:
                loaded = entry_point.load()
            except Exception as err:
                raise PluginError(
                    f"cannot load plugin {entry_point.name!r} from {entry_point.value}: {err}"
                ) from err
            source = loaded if isinstance(loaded, types.ModuleType) else inspect.getmodule(loaded)
            if source is None:
                raise PluginError(
                    f"plugin {entry_point.name!r}: {entry_point.value} is not a module"
                )
            found[entry_point.name] = _inspect_module(entry_point.name, entry_point.value, source)
    return found


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
        raise PluginError(f"plugin {name!r} ({origin}) must define 'async def run(send_channel)'")
    parameters = inspect.signature(run).parameters
    unknown = [p for p in parameters if p not in _PARAMETERS]
    if "send_channel" not in parameters or unknown:
        raise PluginError(
            f"plugin {name!r} ({origin}): run() takes {', '.join(parameters) or 'nothing'}; "
            f"it must take send_channel and may take config "
            f"(like 'async def run(send_channel, config)')"
        )
    config_class = getattr(module, "Config", None)
    if config_class is not None and not attrs.has(config_class):
        raise PluginError(f"plugin {name!r} ({origin}): Config must be an attrs class")
    wants_config = "config" in parameters
    if wants_config and config_class is None:
        raise PluginError(f"plugin {name!r} ({origin}) asks for config but defines no Config class")
    if config_class is not None:
        attrs.resolve_types(config_class)
    return DiscoveredPlugin(name, origin, run, config_class, wants_config)


def build_config(plugin: DiscoveredPlugin, environ: Mapping[str, str]) -> Any:
    """The plugin's Config from ``PLUGIN_<NAME>_*``; raises PluginError naming the variable.

    A missing variable raises ``_MissingSetting`` (a PluginError), so that a
    plugin nobody asked for can be skipped rather than stop the tower.
    """
    if plugin.config_class is None:
        return None
    values = {}
    variables = plugin.config_variables()
    for field in attrs.fields(plugin.config_class):
        variable = variables[field.name]
        raw = environ.get(variable)
        if raw is None:
            if field.default is attrs.NOTHING:
                raise _MissingSetting(
                    f"{variable} is not set; the {plugin.name} plugin needs it ({field.name})"
                )
            continue
        try:
            values[field.name] = structure_env_value(raw, field.type)
        except (ValueError, TypeError) as err:
            raise PluginError(f"{variable}={raw!r} is invalid: {err}") from err
    try:
        return plugin.config_class(**values)
    except (ValueError, TypeError) as err:
        raise PluginError(f"the {plugin.name} plugin's configuration is invalid: {err}") from err


class _MissingSetting(PluginError):
    pass


def select_plugins(
    discovered: Mapping[str, DiscoveredPlugin],
    wanted: tuple[str, ...] | None,
    environ: Mapping[str, str],
) -> tuple[list[ConfiguredPlugin], list[SkippedPlugin]]:
    """The plugins to run, and those left out with the reason.

    Named plugins must exist and be fully configured; when none are named,
    a plugin whose configuration is incomplete is skipped, not fatal.
    """
    if wanted is not None:
        unknown = [name for name in wanted if name not in discovered]
        if unknown:
            raise PluginError(
                f"TOWER_PLUGINS names {', '.join(unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not installed; "
                f"available: {', '.join(sorted(discovered)) or 'none'}"
            )
        return [
            ConfiguredPlugin(discovered[n], build_config(discovered[n], environ)) for n in wanted
        ], []
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
    backoff: Backoff | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one plugin, restarting it with backoff whenever it raises.

    A plugin that returns is finished. Cancellation is never caught: it is
    how the supervisor stops plugins.
    """
    backoff = backoff or Backoff(initial=1.0, cap=60.0)
    async with send_channel:
        task_status.started()
        while True:
            status.state = PluginState.RUNNING
            _log.info("plugin.started", plugin=plugin.name, restarts=status.restarts)
            started_at = trio.current_time()
            try:
                async with TriggerSendChannel(
                    send_channel.clone(), plugin.name, status.count_sent
                ) as plugin_channel:
                    await plugin.invoke(plugin_channel)
            except Exception as err:
                if trio.current_time() - started_at > _STABLE_AFTER:
                    backoff.reset()
                delay = backoff.next_delay()
                status.state = PluginState.BACKING_OFF
                status.last_error = f"{type(err).__name__}: {err}"
                status.last_error_at = time.time()
                _log.exception(
                    "plugin.crashed",
                    plugin=plugin.name,
                    error=status.last_error,
                    restart_in=f"{delay:.1f}s",
                )
                await trio.sleep(delay)
                status.restarts += 1
                continue
            status.state = PluginState.FINISHED
            _log.info("plugin.finished", plugin=plugin.name, triggers_sent=status.triggers_sent)
            return
