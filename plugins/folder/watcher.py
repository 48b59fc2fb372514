"""Folder watcher: every complete ``*.json`` file dropped in a folder becomes triggers.

A file holds one trigger (a JSON object, as ``POST /triggers`` takes it) or
a JSON array of them. After it is handled the file is moved to
``processed/``, or, if anything in it is invalid, to ``failed/`` with a
``<name>.error.txt`` beside it saying why; nothing from a failed file is
sent. Files are read only once complete: written under another name (a
name starting with ``.`` or not ending in ``.json``) and renamed, or left
unchanged for ``settle`` seconds.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import trio
import watchfiles

from tower_trio import InvalidTriggerError, Trigger
from tower_trio.plugin import report_item_error, trigger_from_json

if TYPE_CHECKING:
    from tower_trio.plugin import State

PROCESSED = "processed"
FAILED = "failed"
_SUFFIX = ".json"


@attrs.frozen
class Config:
    path: Path
    """Folder to watch (PLUGIN_FOLDER_PATH); created if missing."""
    poll: bool = False
    """Look every ``interval`` seconds instead of using inotify (PLUGIN_FOLDER_POLL);
    needed on NFS and some container volumes, where inotify misses files."""
    interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Seconds between looks when polling (PLUGIN_FOLDER_INTERVAL)."""
    settle: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    """Seconds a file's size and mtime must stay unchanged before it is read
    (PLUGIN_FOLDER_SETTLE); 0 reads a file as soon as it is seen."""
    rescan: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    """With inotify, also look every ``rescan`` seconds, in case an event was
    lost (PLUGIN_FOLDER_RESCAN)."""


@attrs.frozen
class Seen:
    """What a directory listing says about one candidate file."""

    name: str
    inode: int
    size: int
    mtime_ns: int

    @property
    def signature(self) -> str:
        return f"{self.inode}:{self.size}:{self.mtime_ns}"


@attrs.define
class Settler:
    """Decides when a file has stopped changing: same signature for ``settle`` seconds."""

    settle: float
    _since: dict[str, tuple[str, float]] = attrs.field(factory=dict)

    def ready(self, files: list[Seen], now: float) -> tuple[list[Seen], float | None]:
        """The files settled at ``now``, and how long until the next one may be."""
        settled, wait = [], None
        self._since = {
            f.name: (f.signature, since)
            for f in files
            if (since := self._started(f, now)) is not None
        }
        for file in files:
            _, since = self._since[file.name]
            remaining = since + self.settle - now
            if remaining <= 0:
                settled.append(file)
            else:
                wait = remaining if wait is None else min(wait, remaining)
        return settled, wait

    def _started(self, file: Seen, now: float) -> float:
        previous = self._since.get(file.name)
        if previous is not None and previous[0] == file.signature:
            return previous[1]
        return now

    def forget(self, name: str) -> None:
        self._since.pop(name, None)


def list_candidates(folder: Path) -> list[Seen]:
    """The ``*.json`` regular files directly in ``folder`` (blocking: run in a thread)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.lower().endswith(_SUFFIX):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append(Seen(entry.name, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return sorted(found, key=lambda f: (f.mtime_ns, f.name))


def parse_file(data: bytes, key_prefix: str) -> list[Trigger]:
    """The triggers in a file's bytes; raises ValueError saying everything wrong with it."""
    try:
        wire: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"not valid JSON: {err}") from None
    items = wire if isinstance(wire, list) else [wire]
    if not items:
        raise ValueError("an empty array holds no trigger")
    triggers, problems = [], []
    for index, item in enumerate(items):
        where = f"[{index}] " if isinstance(wire, list) else ""
        try:
            triggers.append(trigger_from_json(item, key=f"{key_prefix}:{index}"))
        except InvalidTriggerError as err:
            problems.append(f"{where}{err}")
    if problems:
        raise ValueError("\n".join(problems))
    return triggers


def move_into(source: Path, folder: Path) -> Path:
    """Move ``source`` into ``folder`` without overwriting (blocking: run in a thread)."""
    target = folder / source.name
    if target.exists():
        target = folder / f"{source.stem}-{uuid.uuid4().hex[:8]}{source.suffix}"
    os.replace(source, target)
    return target


def fail_file(source: Path, folder: Path, reason: str) -> Path:
    """Move ``source`` into ``failed/`` with the reason beside it (blocking)."""
    target = move_into(source, folder)
    target.with_name(target.name + ".error.txt").write_text(reason + "\n", encoding="utf-8")
    return target


@attrs.define
class _Wakeup:
    """Set by the inotify task when the folder changes; the scan loop waits on it."""

    watching: bool
    _event: trio.Event = attrs.field(factory=trio.Event)

    def set(self) -> None:
        self._event.set()

    async def wait(self, at_most: float) -> None:
        with trio.move_on_after(at_most):
            await self._event.wait()
        self._event = trio.Event()


async def _watch(folder: Path, wakeup: _Wakeup) -> None:
    def is_candidate(_: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        return not name.startswith(".") and name.lower().endswith(_SUFFIX)

    stop = anyio.Event()
    try:
        async with trio.open_nursery() as nursery:

            async def stop_on_cancel() -> None:
                # awatch's thread only notices cancellation through its stop event;
                # without this, shutdown would wait for the watcher's own timeout.
                try:
                    await trio.sleep_forever()
                finally:
                    stop.set()

            nursery.start_soon(stop_on_cancel)
            async for _ in watchfiles.awatch(
                folder,
                watch_filter=is_candidate,
                stop_event=stop,
                recursive=False,
                debounce=500,
            ):
                wakeup.set()
    except Exception as err:
        report_item_error("inotify", f"{err}; falling back to polling")
        wakeup.watching = False
        wakeup.set()


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config, state: State) -> None:
    folder = Path(config.path)
    for sub in (folder, folder / PROCESSED, folder / FAILED):
        await trio.Path(sub).mkdir(parents=True, exist_ok=True)
    wakeup = _Wakeup(watching=not config.poll)
    settler = Settler(config.settle)
    given_up: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        if wakeup.watching:
            nursery.start_soon(_watch, folder, wakeup)
        while True:
            files = await trio.to_thread.run_sync(list_candidates, folder)
            given_up = {f.name: f.signature for f in files if given_up.get(f.name) == f.signature}
            pending = [f for f in files if f.name not in given_up]
            settled, wait = settler.ready(pending, trio.current_time())
            for file in settled:
                if not await _handle(file, folder, send_channel, state):
                    given_up[file.name] = file.signature
                settler.forget(file.name)
            longest = config.rescan if wakeup.watching else config.interval
            await wakeup.wait(longest if wait is None else min(longest, wait))


async def _handle(
    file: Seen, folder: Path, send_channel: trio.abc.SendChannel[Trigger], state: State
) -> bool:
    """Send one file's triggers and move it away; False if it could not be moved."""
    path = folder / file.name
    marker = f"sent:{file.name}"
    key = f"folder:{file.name}:{file.signature}"
    if await state.get(marker) != file.signature:
        try:
            data = await trio.Path(path).read_bytes()
        except FileNotFoundError:
            return True
        except OSError as err:
            report_item_error(file.name, f"cannot read it: {err}")
            return False
        try:
            triggers = parse_file(data, key)
        except ValueError as err:
            report_item_error(file.name, str(err).replace("\n", "; "))
            try:
                await trio.to_thread.run_sync(fail_file, path, folder / FAILED, str(err))
            except OSError as move_err:
                report_item_error(file.name, f"cannot move it to {FAILED}/: {move_err}")
                return False
            return True
        for trigger in triggers:
            await send_channel.send(trigger)
        # Recorded before the move: if the tower stops in between, the file is
        # moved after the restart instead of being sent again.
        await state.set(marker, file.signature)
    try:
        await trio.to_thread.run_sync(move_into, path, folder / PROCESSED)
    except FileNotFoundError:
        pass
    except OSError as err:
        report_item_error(file.name, f"sent, but cannot move it to {PROCESSED}/: {err}")
        return False
    await state.delete(marker)
    return True
