"""A harness to test one watcher plugin, the way the tower runs it.

::

    async def test_a_new_file_becomes_a_trigger(tmp_path, autojump_clock):
        async with open_plugin(PLUGIN_DIR, config={"path": str(tmp_path)}) as harness:
            (tmp_path / "a.json").write_text(...)
            trigger = await harness.next_trigger()
        assert trigger.protocol == "PlateTransfer"

The plugin runs in the test's trio run with an unbounded in-memory channel
(it never waits on a publisher), its config given as a dict, its state in a
``MemoryStateBackend`` (pass the same one to a second ``open_plugin`` to
test a restart), and ``tower_trio.plugin.utc_now()`` tied to trio's clock,
so pytest-trio's ``autojump_clock`` fast-forwards schedules and polls. A
plugin that raises fails the test: the harness does not restart it.

Everything else is the tower's own code: the plugin is run once by the
function the tower's supervisor calls, so its triggers are checked against
the protocol schemas (``schemas_dir``, like ``TOWER_SCHEMAS_DIR``; none by
default, as in a tower without that variable) and refused in the same words.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from ._channel import Submission
from ._errors import PluginError
from ._models import Trigger
from ._plugins import ConfiguredPlugin, DiscoveredPlugin, _inspect_module, build_config
from ._runtime import MemoryStateBackend, PluginStatus, run_plugin_once
from ._schemas import ProtocolSchemas, load_schemas

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable, Mapping


__all__ = [
    "ItemError",
    "MemoryStateBackend",
    "PluginHarness",
    "load_plugin",
    "open_plugin",
    "serve_fake_api",
]


@attrs.frozen
class ItemError:
    """One bad item a plugin reported with ``report_item_error``."""

    item: str
    message: str


@attrs.define(eq=False)
class PluginHarness:
    """What a running plugin has done so far, and ways to wait for more."""

    name: str
    state_backend: MemoryStateBackend
    status: PluginStatus
    sent: list[Trigger] = attrs.Factory(list)
    """Every trigger sent so far, ``metadata.source`` stamped as in the tower."""
    item_errors: list[ItemError] = attrs.Factory(list)
    _read: int = 0
    _changed: trio.Event = attrs.Factory(trio.Event)
    _finished: bool = False

    @property
    def state(self) -> dict[str, Any]:
        """A copy of the plugin's saved state."""
        return self.state_backend.snapshot(self.name)

    @property
    def finished(self) -> bool:
        """Whether the plugin's run() has returned."""
        return self._finished

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait(self, ready: Callable[[], bool], what: str) -> None:
        while not ready():
            if self._finished:
                raise AssertionError(f"the plugin finished before {what}")
            await self._changed.wait()

    async def next_trigger(self) -> Trigger:
        """The next trigger not yet returned by ``next_trigger(s)``, waiting for it."""
        (trigger,) = await self.next_triggers(1)
        return trigger

    async def next_triggers(self, count: int) -> list[Trigger]:
        """The next ``count`` triggers, waiting until the plugin has sent them."""
        wanted = self._read + count
        await self._wait(lambda: len(self.sent) >= wanted, f"sending {wanted} triggers")
        batch = self.sent[self._read : wanted]
        self._read = wanted
        return batch

    def unread(self) -> list[Trigger]:
        """The triggers sent but not yet returned by ``next_trigger(s)``; marks them read."""
        batch = self.sent[self._read :]
        self._read = len(self.sent)
        return batch

    async def wait_for_item_errors(self, count: int) -> list[ItemError]:
        """The first ``count`` reported item errors, waiting for them."""
        await self._wait(lambda: len(self.item_errors) >= count, f"reporting {count} errors")
        return self.item_errors[:count]

    async def wait_for_state(self, key: str) -> Any:
        """The value of ``key`` in the plugin's state, waiting until it is set."""
        await self.wait_until(lambda: key in self.state)
        return self.state[key]

    async def wait_until(self, condition: Callable[[], bool], *, every: float = 0.1) -> None:
        """Wait until ``condition()`` is true, checking every ``every`` seconds of trio time.

        For effects the harness cannot observe directly (a file moved, a key
        deleted); under ``autojump_clock`` the checks cost no real time.
        """
        while not condition():
            if self._finished:
                raise AssertionError("the plugin finished before the condition held")
            await trio.sleep(every)


def load_plugin(plugin: types.ModuleType | str | os.PathLike[str]) -> types.ModuleType:
    """A plugin's module, from the module itself, its folder or its ``watcher.py``.

    A folder is imported once per test session, as the tower imports it, so
    that a test can use the same module's helpers and ``Config``.
    """
    if isinstance(plugin, types.ModuleType):
        return plugin
    path = Path(plugin)
    if path.is_dir():
        path = path / "watcher.py"
    if not path.is_file():
        raise PluginError(f"no plugin at {path}; pass a plugin folder or its watcher.py")
    name = path.parent.name
    module_name = f"tower_trio_plugins.{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path.resolve()):
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    if spec is None or spec.loader is None:  # pragma: no cover - only for odd loaders
        raise PluginError(f"cannot import plugin {name!r} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _plugin_name(module: types.ModuleType) -> str:
    file = getattr(module, "__file__", None)
    if file and Path(file).name == "watcher.py":
        return Path(file).parent.name
    return module.__name__.rpartition(".")[2]


def _build_config(plugin: DiscoveredPlugin, config: Mapping[str, Any] | object | None) -> Any:
    if plugin.config_class is None:
        if config:
            raise PluginError(f"plugin {plugin.name!r} defines no Config, but config was given")
        return None
    if config is None:
        config = {}
    if isinstance(config, plugin.config_class):
        return config
    if not isinstance(config, dict):
        raise PluginError(f"config must be a dict or a {plugin.config_class.__name__}")
    variables = plugin.config_variables()
    unknown = sorted(set(config) - set(variables))
    if unknown:
        raise PluginError(
            f"{plugin.name} has no config field {', '.join(unknown)}; "
            f"its fields are {', '.join(variables)}"
        )
    # Read as the tower reads PLUGIN_* variables, strings parsed alike.
    return build_config(plugin, {variables[name]: value for name, value in config.items()})


@asynccontextmanager
async def open_plugin(
    plugin: types.ModuleType | str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | object | None = None,
    state: MemoryStateBackend | None = None,
    start_time: datetime | None = None,
    schemas_dir: str | os.PathLike[str] | None = None,
    schemas_strict: bool = False,
) -> AsyncIterator[PluginHarness]:
    """Run one plugin for the duration of the ``async with`` block.

    ``config``: field name → value (strings are parsed like ``PLUGIN_*``
    variables), or a ``Config`` instance. ``state``: its state backend
    (default: a fresh one). ``start_time``: what ``utc_now()`` says when the
    plugin starts (default: now); it then advances with trio's clock.
    ``schemas_dir`` and ``schemas_strict``: the protocol schemas its triggers
    must match, as ``TOWER_SCHEMAS_DIR`` and ``TOWER_SCHEMAS_STRICT`` give
    them to the tower (default: none, as in a tower without those
    variables); a trigger that breaks one makes ``send`` raise
    ``InvalidTriggerError``, as in the tower.
    """
    module = load_plugin(plugin)
    name = _plugin_name(module)
    discovered = _inspect_module(name, getattr(module, "__file__", name), module)
    configured = ConfiguredPlugin(discovered, _build_config(discovered, config))
    schemas = _load_schemas(schemas_dir, schemas_strict)
    backend = state if state is not None else MemoryStateBackend()
    harness = PluginHarness(name, backend, PluginStatus(name))
    started_wall = start_time or datetime.now(UTC)
    started_trio = trio.current_time()

    def wall_clock() -> datetime:
        return started_wall + timedelta(seconds=trio.current_time() - started_trio)

    def item_failed(item: str, message: str) -> None:
        harness.item_errors.append(ItemError(item, message))
        harness._notify()

    def sent(trigger: Trigger) -> None:
        # Called once the plugin's send has returned, as the tower counts it.
        harness.sent.append(trigger.with_source(name))
        harness._notify()

    send, receive = trio.open_memory_channel[Submission](math.inf)

    async def collect() -> None:
        async with receive:
            async for submission in receive:
                # The harness stands in for the journal: every trigger is stored.
                submission.accepted()

    async def run() -> None:
        async with send:
            ended = await run_plugin_once(
                configured,
                send,
                harness.status,
                state_backend=backend,
                check=schemas.check,
                wall_clock=wall_clock,
                on_send=sent,
                on_item_error=item_failed,
            )
        if ended.error is not None:
            # No restarts here: what ended the plugin fails the test.
            raise ended.error
        harness._finished = True
        harness._notify()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        nursery.start_soon(run)
        try:
            yield harness
        finally:
            nursery.cancel_scope.cancel()


def _load_schemas(directory: str | os.PathLike[str] | None, strict: bool) -> ProtocolSchemas:
    # Read on the trio thread: a test's few small files, and no worker thread
    # for autojump_clock to jump the clock over.
    return load_schemas(None if directory is None else Path(directory), strict=strict)


async def serve_fake_api(
    app: Any,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI ``app`` on a free local port until cancelled.

    ``url = await nursery.start(serve_fake_api, app)`` returns once the port
    is bound, as ``http://127.0.0.1:<port>``: a fake of the API a plugin
    polls, without sleeping for readiness.
    """
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(partial(hypercorn.trio.serve, app, config))
        task_status.started(urls[0])
