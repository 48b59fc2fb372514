"""The folder plugin, as a specification."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from tower_trio import FieldError, InvalidTriggerError, Trigger
from tower_trio.plugin import State
from tower_trio.testing import MemoryStateBackend, load_plugin, open_plugin

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).parent
watcher: Any = load_plugin(HERE)


def trigger(protocol: str = "PlateTransfer", **spec: object) -> dict[str, object]:
    return {"apiVersion": "OT-2/v1alpha1", "protocol": protocol, "spec": spec or {"volume": 100}}


def drop(folder: Path, name: str, content: object) -> Path:
    """Write a file the way a well-behaved client does: a temporary name, then a rename."""
    path = folder / name
    temporary = folder / f".{name}.part"
    if isinstance(content, bytes):
        temporary.write_bytes(content)
    else:
        temporary.write_text(content if isinstance(content, str) else json.dumps(content))
    temporary.rename(path)
    return path


def swap_after_listing(
    monkeypatch: pytest.MonkeyPatch, name: str, swap: Callable[[Path], object]
) -> None:
    """Replace ``name`` once, right after a listing saw it and before it is read.

    The race an attacker with write access to the folder would try, made
    deterministic.
    """
    # Looked up now, not at import: another test may have imported the plugin again.
    module = load_plugin(HERE)
    real = module.list_candidates
    swapped = False

    def listing(folder: Path) -> list[Any]:
        nonlocal swapped
        found: list[Any] = real(folder)
        if not swapped and any(f.name == name for f in found):
            swapped = True
            swap(folder / name)
        return found

    monkeypatch.setattr(module, "list_candidates", listing)


def to_symlink(target: Path) -> Callable[[Path], None]:
    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(target)

    return swap


def to_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


async def release_fifo_later(path: Path, delay: float) -> None:
    """Open a FIFO for writing after ``delay``, so a reader stuck opening it returns.

    A read blocked in a worker thread cannot be cancelled: without this, a
    regression would hang the test instead of failing it.
    """
    await trio.sleep(delay)
    # Nobody waiting on it, or gone (moved to failed/): nothing to release.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def quick(folder: Path, **extra: object) -> dict[str, object]:
    """Polling config for tests on trio's real clock: every file read as soon as it is seen."""
    return {"path": str(folder), "poll": True, "interval": 0.05, "settle": 0.0, **extra}


async def expect_good(harness: Any, folder: Path) -> None:
    """Drop a good file last and wait until it is sent and moved; nothing else may be sent.

    Files are handled one at a time in the order they appear, so once this
    one is through, every file before it has been dealt with.
    """
    drop(folder, "zz-good.json", trigger("Good"))
    await harness.wait_until((folder / "processed" / "zz-good.json").exists)
    assert [t.protocol for t in harness.unread()] == ["Good"]


def outside(tmp_path: Path) -> tuple[Path, Path]:
    """A watched folder, and a secret trigger file beside it, outside the folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(trigger("Secret")))
    return folder, secret


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def polling(folder: Path, **extra: object) -> dict[str, object]:
    return {"path": str(folder), "poll": True, "interval": 0.5, "settle": 1.0, **extra}


class TestFolder:
    async def test_files_present_at_start_up_are_processed(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A file already waiting when the plugin starts is sent and moved to processed/."""
        drop(tmp_path, "a.json", trigger(volume=5))
        async with open_plugin(HERE, config=polling(tmp_path)) as harness:
            sent = await harness.next_trigger()
            await harness.wait_until(lambda: not (tmp_path / "a.json").exists())
        assert sent.protocol == "PlateTransfer"
        assert sent.spec == {"volume": 5}
        assert sent.metadata.source == "folder"
        assert sent.key is not None
        assert sent.key.startswith("folder:a.json:")
        assert not (tmp_path / "a.json").exists()
        assert json.loads((tmp_path / "processed" / "a.json").read_text()) == trigger(volume=5)

    async def test_an_array_becomes_one_trigger_per_element(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A JSON array of triggers sends each of them, in order, with distinct keys."""
        drop(tmp_path, "batch.json", [trigger("A"), trigger("B"), trigger("C")])
        async with open_plugin(HERE, config=polling(tmp_path)) as harness:
            sent = await harness.next_triggers(3)
        assert [t.protocol for t in sent] == ["A", "B", "C"]
        assert len({t.key for t in sent}) == 3

    async def test_new_files_are_picked_up_in_order(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Files dropped while the plugin runs are sent one after the other."""
        async with open_plugin(HERE, config=polling(tmp_path)) as harness:
            drop(tmp_path, "first.json", trigger("First"))
            assert (await harness.next_trigger()).protocol == "First"
            drop(tmp_path, "second.json", trigger("Second"))
            assert (await harness.next_trigger()).protocol == "Second"
            await harness.wait_until(lambda: len(names(tmp_path / "processed")) == 2)
        assert names(tmp_path / "processed") == ["first.json", "second.json"]

    async def test_other_files_are_left_alone(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Temporary names, hidden files and other suffixes are never read."""
        (tmp_path / "notes.txt").write_text("not a trigger")
        (tmp_path / ".hidden.json").write_text("{")
        (tmp_path / "upload.json.part").write_text("{")
        drop(tmp_path, "real.json", trigger())
        async with open_plugin(HERE, config=polling(tmp_path)) as harness:
            await harness.next_trigger()
            await trio.sleep(5)
        assert harness.item_errors == []
        assert names(tmp_path) == [
            ".hidden.json",
            "failed",
            "notes.txt",
            "processed",
            "upload.json.part",
        ]

    async def test_a_file_still_being_written_waits_until_it_settles(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A file written in place is read only after it stopped changing for `settle` seconds."""
        body = json.dumps(trigger())
        path = tmp_path / "slow.json"
        path.write_text(body[:10])
        async with open_plugin(HERE, config=polling(tmp_path, settle=2.0)) as harness:
            await trio.sleep(1.5)
            assert harness.sent == []
            assert path.exists()
            path.write_text(body)
            written_at = trio.current_time()
            await harness.next_trigger()
        assert trio.current_time() - written_at >= 2.0
        assert names(tmp_path / "failed") == []

    @pytest.mark.parametrize(
        ("content", "reason"),
        [
            pytest.param("{not json", "not valid JSON", id="not-json"),
            pytest.param("[]", "an empty array holds no trigger", id="empty-array"),
            pytest.param(
                json.dumps({"apiVersion": "OT-2/v1alpha1", "protocol": "P"}),
                "spec: is required",
                id="missing-spec",
            ),
            pytest.param(
                json.dumps([trigger("Good"), {**trigger(), "protocol": "no spaces allowed"}]),
                "[1] invalid trigger: protocol",
                id="one-bad-element",
            ),
            pytest.param("[" * 100_000, "nested too deeply", id="nested-too-deep"),
            pytest.param(
                '{"apiVersion": "OT-2/v1alpha1", "protocol": "Caf\xe9", "spec": {}}'.encode(
                    "latin-1"
                ),
                "is not UTF-8 text",
                id="not-utf-8",
            ),
        ],
    )
    async def test_an_invalid_file_goes_to_failed_with_the_reason(
        self,
        tmp_path: Path,
        autojump_clock: trio.testing.MockClock,
        content: str | bytes,
        reason: str,
    ) -> None:
        """Nothing of an invalid file is sent; it moves to failed/ with a .error.txt saying why."""
        drop(tmp_path, "bad.json", content)
        drop(tmp_path, "good.json", trigger("Good"))
        async with open_plugin(HERE, config=polling(tmp_path)) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            sent = await harness.next_trigger()
            await trio.sleep(5)
        assert [t.protocol for t in [sent, *harness.unread()]] == ["Good"]
        assert error.item == "bad.json"
        assert reason in error.message
        assert harness.status.errors == 1
        raw = content if isinstance(content, bytes) else content.encode()
        assert (tmp_path / "failed" / "bad.json").read_bytes() == raw
        assert reason in (tmp_path / "failed" / "bad.json.error.txt").read_text()

    async def test_same_name_again_is_processed_again(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A new file under a name already processed is a new event, kept beside the old one."""
        async with open_plugin(HERE, config=polling(tmp_path)) as harness:
            drop(tmp_path, "run.json", trigger())
            first = await harness.next_trigger()
            await harness.wait_until(lambda: not (tmp_path / "run.json").exists())
            drop(tmp_path, "run.json", trigger())
            second = await harness.next_trigger()
            await harness.wait_until(lambda: len(names(tmp_path / "processed")) == 2)
        assert first.key != second.key
        assert len(names(tmp_path / "processed")) == 2

    async def test_a_file_sent_before_a_restart_is_not_sent_again(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """If the tower stopped between sending a file and moving it, a restart only moves it."""
        path = drop(tmp_path, "a.json", trigger())
        seen = watcher.list_candidates(tmp_path)[0]
        state = MemoryStateBackend({"folder": {"sent:a.json": seen.signature}})
        async with open_plugin(HERE, config=polling(tmp_path), state=state) as harness:
            await harness.wait_until(lambda: harness.state == {})
        assert harness.sent == []
        assert not path.exists()
        assert (tmp_path / "processed" / "a.json").exists()

    async def test_inotify_sees_a_new_file_without_polling(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With inotify (the default), a dropped file is found by inotify, not by a timed look."""
        # Timed looks, a rescan or the polling that replaces a failed inotify,
        # come an hour apart: only an inotify event can bring late.json in time.
        config = {"path": str(tmp_path), "settle": 0.0, "rescan": 3600.0, "interval": 3600.0}
        drop(tmp_path, "early.json", trigger("Early"))
        with caplog.at_level(logging.DEBUG, logger=watcher.log.name), trio.fail_after(10):
            async with open_plugin(HERE, config=config) as harness:
                # The watcher task starts before the first scan finishes: by the
                # time the first file is sent, inotify is watching or has failed.
                assert (await harness.next_trigger()).protocol == "Early"
                assert harness.item_errors == []
                drop(tmp_path, "late.json", trigger("Late"))
                assert (await harness.next_trigger()).protocol == "Late"
        assert harness.item_errors == []
        logged = [r.getMessage() for r in caplog.records if r.name == watcher.log.name]
        assert watcher.INOTIFY_EVENT in logged


class TestHostileFiles:
    """On trio's real clock, so that ``fail_after`` bounds each test in seconds.

    (``autojump_clock`` jumps to the nearest deadline whenever the plugin
    waits on a worker thread, which would fire any ``fail_after`` at once.)
    """

    async def test_a_file_over_the_size_limit_goes_to_failed_unread(self, tmp_path: Path) -> None:
        """A file larger than max_file_bytes is not sent; its reason names the limit and setting."""
        big = json.dumps(trigger("Big", notes="x" * 500))
        drop(tmp_path, "big.json", big)
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(tmp_path, max_file_bytes="200")) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                await expect_good(harness, tmp_path)
        assert error.item == "big.json"
        assert f"is {len(big)} bytes, over the limit of 200 bytes" in error.message
        assert "PLUGIN_FOLDER_MAX_FILE_BYTES" in error.message
        assert (tmp_path / "failed" / "big.json").read_text() == big
        note = (tmp_path / "failed" / "big.json.error.txt").read_text()
        assert "PLUGIN_FOLDER_MAX_FILE_BYTES" in note

    def test_the_size_limit_defaults_to_one_mebibyte(self, tmp_path: Path) -> None:
        """Unset, max_file_bytes is 1 MiB, the default size of a request body."""
        assert watcher.Config(path=tmp_path).max_file_bytes == 1024 * 1024

    def test_a_limit_of_zero_is_refused_naming_the_setting(self, tmp_path: Path) -> None:
        """max_file_bytes must be positive, and the error names the variable to fix."""
        with pytest.raises(ValueError, match="PLUGIN_FOLDER_MAX_FILE_BYTES must be a positive"):
            watcher.Config(path=tmp_path, max_file_bytes=0)

    async def test_a_symlink_swapped_in_after_the_listing_is_never_read(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file replaced by a link to a secret before the read goes to failed/, target unread."""
        folder, secret = outside(tmp_path)
        drop(folder, "a.json", trigger("Decoy"))
        swap_after_listing(monkeypatch, "a.json", to_symlink(secret))
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(folder)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                await expect_good(harness, folder)
        assert error.item == "a.json"
        assert "is a symbolic link" in error.message
        assert (folder / "failed" / "a.json").is_symlink()
        assert "symbolic link" in (folder / "failed" / "a.json.error.txt").read_text()
        assert json.loads(secret.read_text()) == trigger("Secret")

    async def test_a_symlink_dropped_in_the_folder_goes_to_failed(self, tmp_path: Path) -> None:
        """A link in the folder is moved itself, never its target, and says why."""
        folder, secret = outside(tmp_path)
        (folder / "link.json").symlink_to(secret)
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(folder)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                await expect_good(harness, folder)
        assert error.item == "link.json"
        assert "is a symbolic link" in error.message
        assert (folder / "failed" / "link.json").is_symlink()
        assert json.loads(secret.read_text()) == trigger("Secret")

    async def test_a_fifo_swapped_in_after_the_listing_does_not_block_the_plugin(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A FIFO in place of a listed file goes to failed/ at once, and later files flow."""
        path = drop(tmp_path, "a.json", trigger("Decoy"))
        swap_after_listing(monkeypatch, "a.json", to_fifo)
        async with trio.open_nursery() as rescue:
            rescue.start_soon(release_fifo_later, path, 15)
            with trio.fail_after(10):
                async with open_plugin(HERE, config=quick(tmp_path)) as harness:
                    (error,) = await harness.wait_for_item_errors(1)
                    await expect_good(harness, tmp_path)
            rescue.cancel_scope.cancel()
        assert error.item == "a.json"
        assert "is a FIFO (named pipe), not a regular file" in error.message
        assert (tmp_path / "failed" / "a.json").is_fifo()

    async def test_a_fifo_dropped_in_the_folder_goes_to_failed(self, tmp_path: Path) -> None:
        """A FIFO named like a trigger file is never waited on: it goes to failed/."""
        path = tmp_path / "pipe.json"
        os.mkfifo(path)
        async with trio.open_nursery() as rescue:
            rescue.start_soon(release_fifo_later, path, 15)
            with trio.fail_after(10):
                async with open_plugin(HERE, config=quick(tmp_path)) as harness:
                    (error,) = await harness.wait_for_item_errors(1)
                    await expect_good(harness, tmp_path)
            rescue.cancel_scope.cancel()
        assert "FIFO" in error.message
        assert (tmp_path / "failed" / "pipe.json").is_fifo()

    async def test_a_file_replaced_after_the_listing_is_sent_under_its_own_signature(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file swapped for another before the read is looked at again, not keyed as the first."""
        drop(tmp_path, "a.json", trigger("First"))
        swap_after_listing(
            monkeypatch, "a.json", lambda path: drop(path.parent, path.name, trigger("Second"))
        )
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(tmp_path)) as harness:
                sent = await harness.next_trigger()
                await expect_good(harness, tmp_path)
        assert sent.protocol == "Second"
        info = (tmp_path / "processed" / "a.json").stat()
        assert sent.key == f"folder:a.json:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:0"

    async def test_a_symlink_planted_as_the_error_note_is_not_written_through(
        self, tmp_path: Path
    ) -> None:
        """A link in failed/ under the note's name cannot make the plugin overwrite its target."""
        folder, secret = outside(tmp_path)
        (folder / "failed").mkdir()
        (folder / "failed" / "bad.json.error.txt").symlink_to(secret)
        drop(folder, "bad.json", "{not json")
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(folder)) as harness:
                await harness.wait_for_item_errors(1)
                await expect_good(harness, folder)
        assert json.loads(secret.read_text()) == trigger("Secret")
        (moved,) = (folder / "failed").glob("bad-*.json")
        assert moved.read_text() == "{not json"
        assert "not valid JSON" in moved.with_name(moved.name + ".error.txt").read_text()

    async def test_a_name_that_is_not_utf8_is_sent_with_a_storable_key(
        self, tmp_path: Path
    ) -> None:
        """A file named in Latin-1 is sent; its key holds only text a database can store."""
        name = os.fsdecode(b"caf\xe9.json")
        drop(tmp_path, name, trigger("Cafe"))
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(tmp_path)) as harness:
                sent = await harness.next_trigger()
                await expect_good(harness, tmp_path)
        assert sent.protocol == "Cafe"
        assert sent.key is not None
        assert sent.key.startswith("folder:caf\\xe9.json:")
        sent.key.encode("utf-8")  # SQLite refuses lone surrogates
        assert harness.state == {}
        assert (tmp_path / "processed" / name).exists()

    async def test_a_bad_file_with_a_name_that_is_not_utf8_is_reported_readably(
        self, tmp_path: Path
    ) -> None:
        """The error of a badly named bad file names it in text any log or JSON answer holds."""
        name = os.fsdecode(b"caf\xe9.json")
        drop(tmp_path, name, "{not json")
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(tmp_path)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                await expect_good(harness, tmp_path)
        assert error.item == "caf\\xe9.json"
        assert harness.status.last_error is not None
        harness.status.last_error.encode("utf-8")
        assert (tmp_path / "failed" / name).exists()

    async def test_a_long_name_still_fits_the_idempotency_key(self, tmp_path: Path) -> None:
        """A file with a name near the filesystem's limit is sent, its key within 256 characters."""
        name = "n" * 240 + ".json"
        drop(tmp_path, name, trigger("Long"))
        with trio.fail_after(10):
            async with open_plugin(HERE, config=quick(tmp_path)) as harness:
                sent = await harness.next_trigger()
                await expect_good(harness, tmp_path)
        assert harness.item_errors == []
        assert sent.protocol == "Long"
        assert sent.key is not None
        assert sent.key.startswith("folder:sha256:")
        assert len(sent.key) <= 256


class RefusingChannel(trio.abc.SendChannel[Trigger]):
    """Refuses triggers of one protocol, as the tower does when a protocol's schema rejects them."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.sent: list[Trigger] = []
        self._changed = trio.Event()

    async def send(self, value: Trigger) -> None:
        await trio.lowlevel.checkpoint()
        if value.protocol == self.refused:
            raise InvalidTriggerError([FieldError("spec.volume", "must be at most 10")])
        self.sent.append(value)
        self._changed.set()
        self._changed = trio.Event()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_for(self, protocol: str) -> None:
        while protocol not in [t.protocol for t in self.sent]:
            await self._changed.wait()


class TestRefusedOnTheWayOut:
    async def run_until_good(self, folder: Path, channel: RefusingChannel) -> None:
        """Run the plugin until a good file, dropped last, is sent."""
        drop(folder, "z-good.json", trigger("Good"))
        config = watcher.Config(path=folder, poll=True, interval=0.05, settle=0.0)
        state = State("folder", MemoryStateBackend(), {})
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watcher.run, channel, config, state)
                await channel.wait_for("Good")
                nursery.cancel_scope.cancel()

    async def test_a_file_whose_trigger_the_tower_refuses_goes_to_failed(
        self, tmp_path: Path
    ) -> None:
        """A trigger refused by send() fails its file alone; the plugin goes on with the next."""
        drop(tmp_path, "a.json", trigger("Refused", volume=500))
        channel = RefusingChannel("Refused")
        await self.run_until_good(tmp_path, channel)
        assert [t.protocol for t in channel.sent] == ["Good"]
        assert (tmp_path / "failed" / "a.json").exists()
        note = (tmp_path / "failed" / "a.json.error.txt").read_text()
        assert "spec.volume: must be at most 10" in note
        assert "were sent" not in note

    async def test_the_reason_says_which_triggers_of_the_file_were_sent(
        self, tmp_path: Path
    ) -> None:
        """When a later trigger of an array is refused, the note says those before it went out."""
        drop(tmp_path, "a.json", [trigger("Early"), trigger("Refused"), trigger("Late")])
        channel = RefusingChannel("Refused")
        await self.run_until_good(tmp_path, channel)
        assert [t.protocol for t in channel.sent] == ["Early", "Good"]
        note = (tmp_path / "failed" / "a.json.error.txt").read_text()
        assert note.startswith("[1] invalid trigger: spec.volume")
        assert "the 1 trigger(s) before it in this file were sent" in note


class TestReadFile:
    def test_a_symlink_is_refused_without_reading_its_target(self, tmp_path: Path) -> None:
        """Read directly, a link raises BadFileError: O_NOFOLLOW, not the listing, is the guard."""
        folder, secret = outside(tmp_path)
        (folder / "a.json").symlink_to(secret)
        with pytest.raises(watcher.BadFileError, match="is a symbolic link"):
            watcher.read_file(folder / "a.json", 1024)

    async def test_a_fifo_is_refused_without_waiting_for_a_writer(self, tmp_path: Path) -> None:
        """Read directly, a FIFO raises BadFileError at once instead of blocking on open."""
        path = tmp_path / "a.json"
        os.mkfifo(path)
        async with trio.open_nursery() as rescue:
            rescue.start_soon(release_fifo_later, path, 5)
            # The read runs in a thread no deadline interrupts: check the deadline
            # was not reached rather than rely on it raising.
            with trio.move_on_after(2) as deadline:
                with pytest.raises(watcher.BadFileError, match="FIFO"):
                    await trio.to_thread.run_sync(watcher.read_file, path, 1024)
            rescue.cancel_scope.cancel()
        assert not deadline.cancel_called

    def test_a_large_file_is_refused_by_its_size_before_reading(self, tmp_path: Path) -> None:
        """A sparse file of 1 GiB is refused by fstat, naming the setting, without reading it."""
        path = tmp_path / "big.json"
        with path.open("wb") as file:
            file.truncate(1024**3)
        with pytest.raises(watcher.BadFileError, match="PLUGIN_FOLDER_MAX_FILE_BYTES"):
            watcher.read_file(path, 1024)

    def test_a_file_within_the_limit_is_read_whole(self, tmp_path: Path) -> None:
        """A file of exactly the limit is read, with the signature of the opened file."""
        path = tmp_path / "a.json"
        path.write_bytes(b"x" * 1024)
        content = watcher.read_file(path, 1024)
        info = path.stat()
        assert content.data == b"x" * 1024
        assert content.signature == f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


class TestSettler:
    def seen(self, name: str, size: int) -> Any:
        return watcher.Seen(name, inode=1, size=size, mtime_ns=size)

    def test_a_file_is_ready_once_unchanged_for_the_settle_time(self) -> None:
        """Seen at t=0 and unchanged, a file is ready at t=settle, with the wait before that."""
        settler = watcher.Settler(2.0)
        assert settler.ready([self.seen("a", 1)], 0.0) == ([], 2.0)
        assert settler.ready([self.seen("a", 1)], 1.5) == ([], 0.5)
        ready, wait = settler.ready([self.seen("a", 1)], 2.0)
        assert [f.name for f in ready] == ["a"]
        assert wait is None

    def test_a_change_restarts_the_wait(self) -> None:
        """A file that grew is timed again from when it was seen changed."""
        settler = watcher.Settler(2.0)
        settler.ready([self.seen("a", 1)], 0.0)
        assert settler.ready([self.seen("a", 2)], 1.5) == ([], 2.0)
        assert settler.ready([self.seen("a", 2)], 3.0) == ([], 0.5)

    def test_zero_settle_reads_at_once(self) -> None:
        """With settle 0, every file seen is ready."""
        ready, _ = watcher.Settler(0.0).ready([self.seen("a", 1), self.seen("b", 1)], 0.0)
        assert [f.name for f in ready] == ["a", "b"]
