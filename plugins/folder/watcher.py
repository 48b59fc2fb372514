"""Folder watcher: every complete ``*.json`` file dropped in a folder becomes triggers.

A file holds one trigger (a JSON object, as ``POST /triggers`` takes it) or
a JSON array of them. After it is handled the file is moved to
``processed/``, or, if anything in it is invalid, to ``failed/`` with a
``<name>.error.txt`` beside it saying why; nothing from a failed file is
sent. Files are read only once complete: written under another name (a
name starting with ``.`` or not ending in ``.json``) and renamed, or left
unchanged for ``settle`` seconds.

Whoever can write into the folder is trusted with triggers, not with the
tower: only a regular file no larger than ``max_file_bytes`` is read, opened
without following a symbolic link (so a link swapped in after the listing
cannot make the tower read, or publish, a file outside the folder), and a
file that cannot be sent as it is goes to ``failed/`` alone while the files
after it flow.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
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
ERROR_SUFFIX = ".error.txt"
_SUFFIX = ".json"

# The same default as TOWER_MAX_BODY_BYTES: a file is at most what one request may carry.
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
_MAX_FILE_BYTES_SETTING = "PLUGIN_FOLDER_MAX_FILE_BYTES"

# O_NOFOLLOW refuses a symbolic link in place of the listed file; O_NONBLOCK
# keeps a FIFO from blocking the open until a writer comes; O_NOCTTY keeps a
# terminal device from becoming the tower's controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# Errors that say the tower is short of something, not that the file is bad:
# the file stays where it is and is read again at the next look.
_TOWER_SIDE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

# A trigger's idempotency key holds at most 256 characters; a longer name is
# replaced in the key by its digest, leaving room for the signature and index.
_MAX_NAME_IN_KEY = 128

log = logging.getLogger("tower_trio.plugins.folder")
# Logged at DEBUG for each change inotify reports: a file found without one
# was found by a timed look (``rescan``, or polling), a sign inotify misses it.
INOTIFY_EVENT = "inotify reported a change"


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
    max_file_bytes: int = attrs.field(default=DEFAULT_MAX_FILE_BYTES)
    """Largest file read, in bytes (PLUGIN_FOLDER_MAX_FILE_BYTES); a larger one
    goes to ``failed/`` unread."""

    @max_file_bytes.validator
    def _check_max_file_bytes(self, _: attrs.Attribute[int], value: int) -> None:
        if value <= 0:
            raise ValueError(
                f"{_MAX_FILE_BYTES_SETTING} must be a positive number of bytes, not {value}"
            )


class BadFileError(ValueError):
    """A file that cannot be sent as it is; it goes to ``failed/`` with this reason."""


def _signature(inode: int, size: int, mtime_ns: int) -> str:
    return f"{inode}:{size}:{mtime_ns}"


@attrs.frozen
class Seen:
    """What a directory listing says about one candidate file."""

    name: str
    inode: int
    size: int
    mtime_ns: int

    @property
    def signature(self) -> str:
        return _signature(self.inode, self.size, self.mtime_ns)

    @property
    def label(self) -> str:
        """The name as text any log, JSON answer or database accepts.

        A name that is not UTF-8 reaches Python with surrogates, which SQLite
        and JSON encoders refuse; its odd bytes are shown as ``\\xNN`` instead.
        """
        return os.fsencode(self.name).decode("utf-8", "backslashreplace")

    @property
    def key(self) -> str:
        """The prefix of the idempotency keys of the file's triggers."""
        name = self.label
        if len(name) > _MAX_NAME_IN_KEY:
            name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()[:32]
        return f"folder:{name}:{self.signature}"


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
    """The ``*.json`` entries directly in ``folder``, but directories (blocking: run in a thread).

    Symbolic links and other special files are listed too, so that they go
    to ``failed/`` with a reason instead of lying there unexplained; whether
    a file may be read is decided when it is opened (``read_file``), not here.
    """
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.lower().endswith(_SUFFIX):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append(Seen(entry.name, info.st_ino, info.st_size, info.st_mtime_ns))
    return sorted(found, key=lambda f: (f.mtime_ns, f.name))


@attrs.frozen
class Content:
    """A file's bytes and the signature of the file they were read from."""

    signature: str
    data: bytes


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _too_large(max_bytes: int, size: int | None = None) -> BadFileError:
    what = f"is {size} bytes" if size is not None else "grew while it was read"
    return BadFileError(
        f"{what}, over the limit of {max_bytes} bytes ({_MAX_FILE_BYTES_SETTING}); "
        "split it into smaller files or raise the limit"
    )


def _unreadable(err: OSError) -> BadFileError:
    reason = f"cannot be read: {err.strerror or err}"
    if err.errno in (errno.EACCES, errno.EPERM):
        reason += "; let the tower's user read it, then drop it again"
    return BadFileError(reason)


def read_file(path: Path, max_bytes: int) -> Content:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` (blocking: run in a thread).

    Raises ``BadFileError`` for a symbolic link, anything but a regular file,
    a file over ``max_bytes`` or one the tower may not read;
    ``FileNotFoundError`` if it is gone; another ``OSError`` for trouble on
    the tower's side (no file descriptor left).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BadFileError(
                "is a symbolic link, which the folder plugin never follows (its target "
                "was not read); drop the file itself"
            ) from None
        if err.errno == errno.ENXIO:
            raise BadFileError(
                "is a socket or a device, not a regular file; drop a JSON file"
            ) from None
        if err.errno in _TOWER_SIDE:
            raise
        raise _unreadable(err) from None
    try:
        # Checked on the opened file, so what is read is what was checked.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadFileError(f"is {_kind(info.st_mode)}, not a regular file; drop a JSON file")
        if info.st_size > max_bytes:
            raise _too_large(max_bytes, info.st_size)
        with open(fd, "rb", closefd=False) as file:
            # One byte more than allowed tells a file that grew since the check.
            data = file.read(max_bytes + 1)
    except OSError as err:
        if err.errno in _TOWER_SIDE:
            raise
        raise _unreadable(err) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return Content(_signature(info.st_ino, info.st_size, info.st_mtime_ns), data)


def parse_file(data: bytes, key_prefix: str) -> list[Trigger]:
    """The triggers in a file's bytes; raises BadFileError saying everything wrong with it."""
    try:
        wire: Any = json.loads(data)
    except UnicodeDecodeError as err:
        raise BadFileError(f"is not UTF-8 text: {err}; save it as UTF-8") from None
    except ValueError as err:
        raise BadFileError(f"not valid JSON: {err}") from None
    except RecursionError:
        # json.loads recurses once per level: a file of "[[[[…" must fail alone,
        # not take the plugin down with it.
        raise BadFileError(
            "not valid JSON for a trigger: nested too deeply to read; "
            "a trigger nests only a few levels"
        ) from None
    items = wire if isinstance(wire, list) else [wire]
    if not items:
        raise BadFileError("an empty array holds no trigger")
    triggers, problems = [], []
    for index, item in enumerate(items):
        where = f"[{index}] " if isinstance(wire, list) else ""
        try:
            triggers.append(trigger_from_json(item, key=f"{key_prefix}:{index}"))
        except InvalidTriggerError as err:
            problems.append(f"{where}{err}")
    if problems:
        raise BadFileError("\n".join(problems))
    return triggers


def load_file(file: Seen, folder: Path, max_bytes: int) -> list[Trigger] | None:
    """The triggers in ``file``, or None if it changed since it was listed (blocking).

    Parsing runs here too, in the thread, so that a large file does not
    hold up the event loop.
    """
    content = read_file(folder / file.name, max_bytes)
    if content.signature != file.signature:
        # Another file took its place, or it was rewritten: the keys are made
        # from the listed signature, so look at it again rather than send it.
        return None
    return parse_file(content.data, file.key)


def move_into(source: Path, folder: Path, *, beside: str = "") -> Path:
    """Move ``source`` into ``folder`` without overwriting (blocking: run in a thread).

    ``beside``: a suffix for a companion file that must not exist either.
    A rename moves a symbolic link itself, never its target.
    """
    target = folder / source.name

    def taken(path: Path) -> bool:
        return os.path.lexists(path) or bool(beside and os.path.lexists(f"{path}{beside}"))

    if taken(target):
        target = folder / f"{source.stem}-{uuid.uuid4().hex[:8]}{source.suffix}"
    os.replace(source, target)
    return target


def fail_file(source: Path, folder: Path, reason: str) -> Path:
    """Move ``source`` into ``failed/`` with the reason beside it (blocking)."""
    target = move_into(source, folder, beside=ERROR_SUFFIX)
    note = os.open(
        f"{target}{ERROR_SUFFIX}",
        # A link planted under the note's name is refused, not written through.
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
    )
    with os.fdopen(note, "w", encoding="utf-8", errors="backslashreplace") as file:
        file.write(reason + "\n")
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
            async for changes in watchfiles.awatch(
                folder,
                watch_filter=is_candidate,
                stop_event=stop,
                recursive=False,
                debounce=500,
                # watchfiles' thread wakes every `step` to check for events and
                # the stop event, taking the GIL each time: at its default of
                # 50 ms, ten idle folders cost 0.08 s of CPU per 10 s; at 500
                # ms, a tenth of that, for at most half a second more latency.
                # No timeout: a return to trio every 5 s costs a thread each.
                step=500,
                rust_timeout=0,
            ):
                log.debug(INOTIFY_EVENT, extra={"files": len(changes)})
                wakeup.set()
    except Exception as err:
        report_item_error("inotify", f"{err}; falling back to polling")
        wakeup.watching = False
        wakeup.set()


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config, state: State) -> None:
    folder = Path(config.path)
    for sub in (folder, folder / PROCESSED, folder / FAILED):
        await trio.Path(sub).mkdir(parents=True, exist_ok=True)
    max_bytes = config.max_file_bytes
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
                if not await _handle(file, folder, send_channel, state, max_bytes):
                    given_up[file.name] = file.signature
                settler.forget(file.name)
            longest = config.rescan if wakeup.watching else config.interval
            await wakeup.wait(longest if wait is None else min(longest, wait))


async def _handle(
    file: Seen,
    folder: Path,
    send_channel: trio.abc.SendChannel[Trigger],
    state: State,
    max_bytes: int,
) -> bool:
    """Send one file's triggers and move it away; False to leave it until it changes."""
    path = folder / file.name
    marker = f"sent:{file.label}"
    if await state.get(marker) != file.signature:
        try:
            triggers = await trio.to_thread.run_sync(load_file, file, folder, max_bytes)
        except FileNotFoundError:
            return True
        except BadFileError as err:
            return await _fail(file, folder, str(err))
        except OSError as err:
            report_item_error(file.label, f"cannot read it now: {err.strerror or err}")
            return True
        if triggers is None:
            return True
        for index, trigger in enumerate(triggers):
            try:
                await send_channel.send(trigger)
            except InvalidTriggerError as err:
                # Refused on the way out (a protocol's schema): the file goes to
                # failed/ instead of crashing the plugin on it at every restart.
                where = f"[{index}] " if len(triggers) > 1 else ""
                before = (
                    f"\nthe {index} trigger(s) before it in this file were sent; "
                    "remove them before dropping the file again"
                    if index
                    else ""
                )
                return await _fail(file, folder, f"{where}{err}{before}")
        # Recorded before the move: if the tower stops in between, the file is
        # moved after the restart instead of being sent again.
        await state.set(marker, file.signature)
    try:
        await trio.to_thread.run_sync(move_into, path, folder / PROCESSED)
    except FileNotFoundError:
        pass
    except OSError as err:
        report_item_error(
            file.label, f"sent, but cannot move it to {PROCESSED}/: {err.strerror or err}"
        )
        return False
    await state.delete(marker)
    return True


async def _fail(file: Seen, folder: Path, reason: str) -> bool:
    """Report a bad file and move it to ``failed/``; False if it could not be moved."""
    report_item_error(file.label, reason.replace("\n", "; "))
    try:
        await trio.to_thread.run_sync(fail_file, folder / file.name, folder / FAILED, reason)
    except OSError as err:
        report_item_error(file.label, f"cannot move it to {FAILED}/: {err.strerror or err}")
        return False
    return True
