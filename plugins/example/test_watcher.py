"""The example plugin, as a specification."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tower_trio.testing import open_plugin

HERE = Path(__file__).parent


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


class TestExample:
    async def test_each_line_is_a_trigger(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each complete line is sent in order; bad and blank lines are skipped."""
        inbox = tmp_path / "inbox.txt"
        inbox.write_text('PlateTransfer {"volume": 100}\nnot a trigger\n\nWash {"n": 2}\n')
        config = {"path": str(inbox), "skip_existing": "false"}
        async with open_plugin(HERE, config=config) as harness:
            first, second = await harness.next_triggers(2)
            append(inbox, 'Dry {"minutes": 5}\nHalf {"n"')
            third = await harness.next_trigger()
            await trio.sleep(10)
        assert (first.protocol, first.spec) == ("PlateTransfer", {"volume": 100})
        assert [second.protocol, third.protocol] == ["Wash", "Dry"]
        assert harness.unread() == []

    async def test_creates_the_folder_of_its_file(self, tmp_path: Path) -> None:
        """A file whose folder does not exist yet is created with its folder, not a crash loop."""
        inbox = tmp_path / "var" / "inbox.txt"
        # Real time: the plugin waits on worker threads, which a virtual clock
        # would race past. Existing lines count, so no start-up offset can skip ours.
        config = {"path": str(inbox), "interval": "0.05", "skip_existing": "false"}
        with trio.fail_after(10):
            async with open_plugin(HERE, config=config) as harness:
                await harness.wait_until(inbox.exists, every=0.01)
                append(inbox, 'Wash {"n": 1}\n')
                trigger = await harness.next_trigger()
        assert trigger.protocol == "Wash"
