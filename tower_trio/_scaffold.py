"""``just new-plugin NAME``: a new plugin folder with a watcher, a README and a test."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ._errors import PluginError

__all__ = ["scaffold"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")

_INIT = '''"""The {name} watcher plugin.

A package only so that type checkers and pytest tell apart the modules that
every plugin names alike (watcher.py, test_watcher.py).
"""
'''

_WATCHER = '''"""{title}: what it watches and when it sends a trigger (say it here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from tower_trio import Trigger
from tower_trio.plugin import poll

if TYPE_CHECKING:
    import trio

    from tower_trio.plugin import State


@attrs.frozen
class Config:
    api_version: str
    """apiVersion of the triggers it sends (PLUGIN_{upper}_API_VERSION). Required and
    without a default, so that the tower skips this plugin until someone chooses
    which devices it talks to: an experiment must not reach a lab's robot."""
    interval: float = 10.0
    """Seconds between looks at the source (PLUGIN_{upper}_INTERVAL)."""


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config, state: State) -> None:
    async def check() -> None:
        # Look at the source here; blocking calls go through trio.to_thread.run_sync.
        count = await state.get("checks", 0) + 1
        await state.set("checks", count)
        if count == 1:
            await send_channel.send(
                Trigger(api_version=config.api_version, protocol="Hello", spec={{"check": count}})
            )

    await poll(check, interval=config.interval, what="{name} source")
'''

_TEST = '''"""The {name} plugin, as a specification."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tower_trio.testing import open_plugin

HERE = Path(__file__).parent


class Test{title}:
    async def test_first_check_sends_a_trigger(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The first look at the source sends one trigger, later looks none."""
        config = {{"api_version": "Test/v1", "interval": "5"}}
        async with open_plugin(HERE, config=config) as harness:
            trigger = await harness.next_trigger()
            await trio.sleep(60)
        assert trigger.protocol == "Hello"
        assert harness.unread() == []
'''

_README = """# {name}

What this plugin watches, and which triggers it sends when.

## Configuration

| Variable | Default | Meaning |
| --- | --- | --- |
| `PLUGIN_{upper}_API_VERSION` | (required) | apiVersion it sends to; unset, it is skipped. |
| `PLUGIN_{upper}_INTERVAL` | `10.0` | Seconds between looks at the source. |

## Behaviour

- When it sends a trigger, and what the trigger holds.
- What it keeps in its state, and what happens after a restart.
- What it does with bad data from the source.
"""


def scaffold(name: str, plugins_dir: Path) -> Path:
    """Create ``plugins_dir/name`` with a working plugin to edit; returns the folder."""
    if not _NAME.fullmatch(name):
        raise PluginError(
            f"{name!r} is not a plugin name: use lower case letters, digits and '_', "
            "starting with a letter (like 'plate_reader')"
        )
    folder = plugins_dir / name
    if folder.exists():
        raise PluginError(f"{folder} already exists; choose another name or remove it")
    title = "".join(part.capitalize() for part in name.split("_"))
    fields = {"name": name, "upper": name.upper(), "title": title}
    folder.mkdir(parents=True)
    for file, template in (
        ("__init__.py", _INIT),
        ("watcher.py", _WATCHER),
        ("test_watcher.py", _TEST),
        ("README.md", _README),
    ):
        (folder / file).write_text(template.format(**fields), encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tower_trio._scaffold NAME", file=sys.stderr)
        return 2
    try:
        folder = scaffold(args[0], Path("plugins"))
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"created {folder}/: edit watcher.py, README.md and test_watcher.py, then `just test`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
