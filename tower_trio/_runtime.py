"""Running one plugin once: what the tower's supervisor and the test harness share.

``run_plugin_once`` loads the plugin's ``State``, binds the plugin context
the helpers of ``tower_trio.plugin`` report to, opens the plugin's send
channel, calls ``run`` and says how it ended: finished, crashed (to be
restarted, or not, by the caller) or failed (it sent something that is not
a Trigger). The supervisor (``_plugins.serve_plugin``) adds restarts and
backoff around it; ``tower_trio.testing`` adds only test doubles. Both
therefore apply the same checks, including the protocol schemas.
"""

from __future__ import annotations

import contextvars
import copy
import enum
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._channel import Submission, TriggerSendChannel
from ._errors import FencedError
from ._leases import HeldTerm, Leader
from ._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._models import FieldError, Trigger

__all__ = [
    "MemoryStateBackend",
    "Outcome",
    "PluginContext",
    "PluginState",
    "PluginStatus",
    "RunResult",
    "RunnablePlugin",
    "State",
    "StateBackend",
    "current_context",
    "log_plugin_error",
    "run_plugin_once",
]

_log = get_logger(__name__)


class PluginState(enum.Enum):
    """Where a plugin is in its life, as ``GET /plugins`` and the metrics show it."""

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing-off"
    """Waiting to be restarted after a crash, or inside ``poll`` after a failed check."""
    FINISHED = "finished"
    """``run()`` returned; a finished plugin is not restarted."""
    FAILED = "failed"
    """``run()`` ended because it sent something that is not a Trigger; not restarted
    until the tower is, as a restart would repeat the bug and re-send what it sent."""
    STANDBY = "standby"
    """Another tower sharing the journal leads this plugin (or none does yet, and
    this one is campaigning): it runs here only while this tower holds its lease."""


@attrs.define
class PluginStatus:
    name: str
    state: PluginState = PluginState.STARTING
    restarts: int = 0
    triggers_sent: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_trigger_at: float | None = None
    errors: int = 0
    """Bad items reported with ``tower_trio.plugin.report_item_error``."""
    leader: Leader | None = None
    """Who holds the plugin's lease, as this tower last learnt (None: no one)."""

    def count_sent(self, trigger: Trigger) -> None:
        self.triggers_sent += 1
        self.last_trigger_at = trigger.created_at.timestamp()

    def record_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def count_item_error(self, item: str, message: str) -> None:
        self.errors += 1
        self.record_error(f"{item}: {message}")


# -- state ---------------------------------------------------------------------


class StateBackend(Protocol):
    """Where plugin state is kept: the tower's journal, or memory in tests.

    Each backend decides how it waits: one that blocks (SQLite) runs its
    work in a worker thread, one in memory runs inline.
    """

    async def load_plugin_state(self, plugin: str) -> dict[str, Any]:
        """Every key and value saved for ``plugin``."""
        ...

    async def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        """Save one value durably; ``None`` deletes the key.

        ``term`` is the leadership term the plugin runs under (None: not led
        through leases); a store shared by several towers raises
        ``FencedError`` when it is not the plugin's current term.
        """
        ...


class MemoryStateBackend:
    """A ``StateBackend`` in a dict: for tests, and for a tower without a journal.

    Share one between two harness runs to test what a plugin does after a
    restart. Its methods never wait, which keeps tests under
    ``autojump_clock`` deterministic.
    """

    def __init__(self, initial: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._plugins: dict[str, dict[str, Any]] = {
            plugin: copy.deepcopy(dict(values)) for plugin, values in (initial or {}).items()
        }

    async def load_plugin_state(self, plugin: str) -> dict[str, Any]:
        return self.snapshot(plugin)

    async def save_plugin_state(
        self, plugin: str, key: str, value: Any | None, *, term: int | None = None
    ) -> None:
        values = self._plugins.setdefault(plugin, {})
        if value is None:
            values.pop(key, None)
        else:
            values[key] = copy.deepcopy(value)

    def snapshot(self, plugin: str) -> dict[str, Any]:
        """A copy of what ``plugin`` has saved."""
        return copy.deepcopy(self._plugins.get(plugin, {}))


def _json_copy(key: str, value: object) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"state[{key!r}] must be JSON-serialisable (dict, list, str, number, bool): {err}"
        ) from None


class State:
    """A plugin's own persistent key-value store (cursors, seen IDs, last-fire times).

    Ask for it with a ``state`` parameter: ``async def run(send_channel, state)``.
    Values are JSON (dicts, lists, strings, numbers, booleans) and are stored
    as copies, so changing a dict after ``set`` does not change the store.
    Reads come from memory; ``set`` and ``delete`` return once the value is
    durable (in the tower's journal), so a plugin can record "sent" right
    after sending and trust it after a restart.
    """

    def __init__(
        self,
        plugin: str,
        backend: StateBackend,
        values: Mapping[str, Any],
        *,
        held: HeldTerm | None = None,
    ) -> None:
        self._plugin = plugin
        self._backend = backend
        self._values = dict(values)
        self._lock = trio.Lock()
        self._held = held

    @classmethod
    async def load(
        cls,
        plugin: str,
        backend: StateBackend,
        *,
        held: HeldTerm | None = None,
    ) -> State:
        """The plugin's state as last saved; its writes are made under ``held``'s term."""
        values = await backend.load_plugin_state(plugin)
        return cls(plugin, backend, values, held=held)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (a copy), or ``default``."""
        await trio.lowlevel.checkpoint()
        if key not in self._values:
            return default
        return _json_copy(key, self._values[key])

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``; ``None`` deletes the key."""
        if not isinstance(key, str) or not key:
            raise TypeError(f"state keys are non-empty strings, not {key!r}")
        stored = None if value is None else _json_copy(key, value)
        async with self._lock:
            # Saved before it is visible, so memory never claims what the journal lacks.
            term = None if self._held is None else self._held.term
            try:
                await self._backend.save_plugin_state(self._plugin, key, stored, term=term)
            except FencedError:
                # Told here, not left to the plugin: it may catch and retry errors.
                if self._held is not None:
                    self._held.fenced()
                raise
            if stored is None:
                self._values.pop(key, None)
            else:
                self._values[key] = stored

    async def delete(self, key: str) -> None:
        """Forget ``key``; forgetting a missing key is not an error."""
        await self.set(key, None)

    def keys(self) -> list[str]:
        """Every stored key, sorted."""
        return sorted(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:
        return f"<State of {self._plugin!r}: {len(self._values)} keys>"


# -- the context the helpers report to -------------------------------------------


@attrs.frozen
class PluginContext:
    """What the running plugin's helpers report to; bound by ``run_plugin_once``."""

    name: str
    item_failed: Callable[[str, str], None]
    backing_off: Callable[[bool], None]
    redact: Callable[[str], str]
    wall_clock: Callable[[], datetime] | None = None


_context: contextvars.ContextVar[PluginContext | None] = contextvars.ContextVar(
    "tower_trio_plugin", default=None
)


def current_context() -> PluginContext | None:
    """The context of the plugin running in this task (or the task that started it)."""
    return _context.get()


# -- running ---------------------------------------------------------------------


class RunnablePlugin(Protocol):
    """A plugin ready to run: found, loaded and configured (``_plugins.ConfiguredPlugin``)."""

    @property
    def name(self) -> str: ...

    @property
    def wants_state(self) -> bool: ...

    async def invoke(self, send_channel: TriggerSendChannel, state: State | None) -> None: ...

    def redact(self, text: str) -> str: ...


class Outcome(enum.Enum):
    FINISHED = "finished"
    CRASHED = "crashed"
    FAILED = "failed"


@attrs.frozen
class RunResult:
    """How one run ended; ``error`` is what ended a crashed or failed one."""

    outcome: Outcome
    error: Exception | None = None
    message: str = ""
    """``error`` as one line, its secrets replaced by ``***``."""


async def run_plugin_once(
    plugin: RunnablePlugin,
    send_channel: trio.MemorySendChannel[Submission],
    status: PluginStatus,
    *,
    state_backend: StateBackend,
    check: Callable[[Trigger], Sequence[FieldError]] | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    on_send: Callable[[Trigger], None] | None = None,
    on_item_error: Callable[[str, str], None] | None = None,
    held: HeldTerm | None = None,
) -> RunResult:
    """Run ``plugin`` until its ``run()`` returns or raises, and record how it ended.

    ``send_channel`` is cloned, not closed. ``check`` refuses triggers (the
    protocol schemas); ``wall_clock`` is what ``utc_now()`` reads. ``status``
    counts what the plugin sends and reports, then ``on_send`` and
    ``on_item_error`` hear of it too. ``held`` is the leadership term the
    run holds (None: a tower alone on its journal), carried by its state
    writes and triggers, and told what the store refused. Cancellation
    passes through untouched.
    """

    def sent(trigger: Trigger) -> None:
        status.count_sent(trigger)
        if on_send is not None:
            on_send(trigger)

    def item_failed(item: str, message: str) -> None:
        status.count_item_error(item, message)
        if on_item_error is not None:
            on_item_error(item, message)

    def backing_off(active: bool) -> None:
        status.state = PluginState.BACKING_OFF if active else PluginState.RUNNING

    context = PluginContext(plugin.name, item_failed, backing_off, plugin.redact, wall_clock)
    status.state = PluginState.RUNNING
    _log.info("plugin.started", plugin=plugin.name, restarts=status.restarts)
    misuse: list[TypeError] = []
    token = _context.set(context)
    try:
        state = None
        if plugin.wants_state:
            state = await State.load(plugin.name, state_backend, held=held)
        async with _PluginSendChannel(
            send_channel.clone(),
            plugin.name,
            sent,
            check,
            misuse=misuse,
            held=held,
        ) as plugin_channel:
            await plugin.invoke(plugin_channel, state)
    except Exception as err:
        message = plugin.redact(f"{type(err).__name__}: {err}")
        status.record_error(message)
        if not _caused_by(err, misuse):
            return RunResult(Outcome.CRASHED, err, message)
        status.state = PluginState.FAILED
        log_plugin_error(
            "plugin.failed",
            plugin,
            err,
            message,
            fix="send tower_trio.Trigger objects; the plugin stays stopped until its code "
            "is fixed and the tower restarted",
        )
        return RunResult(Outcome.FAILED, err, message)
    finally:
        _context.reset(token)
    status.state = PluginState.FINISHED
    _log.info("plugin.finished", plugin=plugin.name, triggers_sent=status.triggers_sent)
    return RunResult(Outcome.FINISHED)


class _PluginSendChannel(TriggerSendChannel):
    """A plugin's send channel that remembers the values it refused as not Triggers."""

    def __init__(
        self,
        inner: trio.MemorySendChannel[Submission],
        source: str,
        on_send: Callable[[Trigger], None] | None,
        check: Callable[[Trigger], Sequence[FieldError]] | None,
        *,
        misuse: list[TypeError],
        held: HeldTerm | None = None,
    ) -> None:
        super().__init__(inner, source, on_send, check, held=held)
        self._misuse = misuse

    def _submission(self, trigger: Trigger) -> Submission:
        try:
            return super()._submission(trigger)
        except TypeError as err:
            self._misuse.append(err)
            raise

    def clone(self) -> _PluginSendChannel:
        return _PluginSendChannel(
            self._inner.clone(),
            self._source,
            self._on_send,
            self._check,
            misuse=self._misuse,
            held=self._held,
        )


def _caused_by(err: BaseException, misuse: list[TypeError]) -> bool:
    """Whether ``err`` is, or was raised while handling, a value the channel refused."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if any(current is refused for refused in misuse):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend((current.__cause__, current.__context__))
    return False


class _RedactedError(Exception):
    """Stands in for a crash whose message held a secret, so the traceback can be logged."""


def log_plugin_error(
    event: str, plugin: RunnablePlugin, err: Exception, message: str, **fields: str
) -> None:
    """Log a plugin's crash with its traceback, its secrets masked."""
    shown: Exception = err
    if plugin.redact(str(err)) != str(err):
        # The frames show source lines, not values; only the message (and any
        # chained cause, dropped here) can carry the secret itself.
        shown = _RedactedError(message).with_traceback(err.__traceback__)
    _log.exception(event, exc_info=shown, plugin=plugin.name, error=message, **fields)
