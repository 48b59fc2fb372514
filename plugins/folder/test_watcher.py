"""The folder plugin, as a specification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tower_trio.testing import MemoryStateBackend, load_plugin, open_plugin

HERE = Path(__file__).parent
watcher: Any = load_plugin(HERE)


def trigger(protocol: str = "PlateTransfer", **spec: object) -> dict[str, object]:
    return {"apiVersion": "OT-2/v1alpha1", "protocol": protocol, "spec": spec or {"volume": 100}}


def drop(folder: Path, name: str, content: object) -> Path:
    """Write a file the way a well-behaved client does: a temporary name, then a rename."""
    path = folder / name
    temporary = folder / f".{name}.part"
    temporary.write_text(content if isinstance(content, str) else json.dumps(content))
    temporary.rename(path)
    return path


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
        ],
    )
    async def test_an_invalid_file_goes_to_failed_with_the_reason(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock, content: str, reason: str
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
        assert (tmp_path / "failed" / "bad.json").read_text() == content
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

    async def test_inotify_sees_a_new_file_without_polling(self, tmp_path: Path) -> None:
        """With inotify (the default), a dropped file is sent at once, long before a rescan."""
        config = {"path": str(tmp_path), "settle": 0.0, "rescan": 3600.0}
        drop(tmp_path, "early.json", trigger("Early"))
        with trio.fail_after(10):
            async with open_plugin(HERE, config=config) as harness:
                # The watcher task starts before the first scan finishes, so by the
                # time the first file is sent the folder is being watched.
                assert (await harness.next_trigger()).protocol == "Early"
                drop(tmp_path, "late.json", trigger("Late"))
                assert (await harness.next_trigger()).protocol == "Late"


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
