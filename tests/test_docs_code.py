"""Every code block in the docs that is meant to run does run.

Python blocks are, by their first line or the HTML comment just above them:
- ``# plugins/<name>/watcher.py``: a plugin, loaded and run under the test
  harness against a fake of the API it polls;
- ``# plugins/<name>/test_watcher.py``: a plugin's test, run with pytest next
  to the plugin ``just new-plugin <name>`` makes;
- ``<!-- fragment -->`` above the fence: a piece of a program (a signature,
  one statement), not run;
- anything else: a program, run with the broker URL pointed at the test's
  own virtual host.
Shell blocks are checked with ``bash -n``, and every ``just`` recipe and
``tower-trio`` command they name must exist.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from tests._fakes import complete_lifespan, send_json
from tower_trio import amqp
from tower_trio._cli import _parser
from tower_trio._scaffold import scaffold
from tower_trio.testing import open_plugin, serve_fake_api

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).parent.parent
# Pages whose snippets are tested where they are written.
TESTED_ELSEWHERE = {"message-format.md", "migrating-from-ulas.md"}
FRAGMENT = "<!-- fragment -->"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
_FENCE = re.compile(r"^```(\w*)\s*$")


@attrs.frozen
class Block:
    page: str
    line: int
    language: str
    code: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0] if self.code else ""


def _pages() -> list[Path]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [page for page in pages if page.name not in TESTED_ELSEWHERE]


def _blocks() -> list[Block]:
    blocks = []
    for page in _pages():
        lines = page.read_text().splitlines()
        start: int | None = None
        language = ""
        for number, line in enumerate(lines):
            fence = _FENCE.match(line.strip())
            if fence is None:
                continue
            if start is None:
                start, language = number, fence.group(1)
                continue
            indented = textwrap.dedent("\n".join(lines[start + 1 : number]))
            previous = lines[start - 1].strip() if start > 0 else ""
            blocks.append(
                Block(
                    str(page.relative_to(REPO)),
                    start + 1,
                    language,
                    indented,
                    fragment=previous == FRAGMENT,
                )
            )
            start = None
    return blocks


def _of(kind: str) -> list[Any]:
    chosen = [block for block in _blocks() if _kind(block) == kind]
    return [pytest.param(block, id=block.id) for block in chosen]


def _kind(block: Block) -> str:
    if block.language in ("console", "sh", "bash", "shell"):
        return "shell"
    if block.language != "python" or block.fragment:
        return "other"
    if re.fullmatch(r"# plugins/\w+/watcher\.py", block.first_line):
        return "plugin"
    if re.match(r"# plugins/\w+/test_\w+\.py", block.first_line):
        return "plugin-test"
    return "program"


# -- plugins ---------------------------------------------------------------------------


async def _events_api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A fake event source: GET answers with a JSON list of one event."""
    if scope["type"] == "lifespan":
        await complete_lifespan(receive, send)
        return
    await send_json(send, 200, [{"volume": 100}])


# Each plugin example with the config it runs with, given the fake API's URL.
PLUGIN_CONFIGS: dict[str, Callable[[str], dict[str, str]]] = {
    "inbox": lambda url: {"url": f"{url}/events", "interval": "5"},
}


class TestPluginExamples:
    @pytest.mark.parametrize("block", _of("plugin"))
    async def test_runs_and_sends(
        self, block: Block, tmp_path: Path, nursery: trio.Nursery
    ) -> None:
        """A plugin example loads as a plugin and sends a trigger from its fake source."""
        name = block.first_line.split("/")[1]
        watcher = tmp_path / name / "watcher.py"
        watcher.parent.mkdir()
        watcher.write_text(block.code + "\n")
        url = await nursery.start(serve_fake_api, _events_api)
        with trio.fail_after(10):
            async with open_plugin(watcher, config=PLUGIN_CONFIGS[name](url)) as harness:
                trigger = await harness.next_trigger()
        assert trigger.metadata.source == name

    @pytest.mark.parametrize("block", _of("plugin-test"))
    @pytest.mark.subprocess
    def test_plugin_test_passes(self, block: Block, tmp_path: Path) -> None:
        """A plugin test example passes next to the plugin `just new-plugin` makes."""
        name = block.first_line.split("/")[1]
        folder = scaffold(name, tmp_path)
        (folder / "test_docs_example.py").write_text(block.code + "\n")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-c",
                str(REPO / "pyproject.toml"),
                "--rootdir",
                str(tmp_path),
                str(folder / "test_docs_example.py"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 passed" in result.stdout


# -- programs ---------------------------------------------------------------------------


class TestPrograms:
    @pytest.mark.parametrize("block", _of("program"))
    @pytest.mark.subprocess
    async def test_runs(self, block: Block, amqp_url: str, tmp_path: Path) -> None:
        """A complete program runs to the end without an error, against the test's broker."""
        async with (
            amqp.open_connection(amqp_url) as connection,
            connection.open_channel() as channel,
        ):
            # What the tower declares on start, which the tutorial's device binds to.
            await channel.exchange_declare("tower.triggers", "topic", durable=True)
        script = tmp_path / "program.py"
        script.write_text(block.code.replace(DEFAULT_URL, amqp_url) + "\n")
        environ = {"TOWER_AMQP_URL": amqp_url}
        result = await _run_python(script, environ, cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()

    def test_every_python_block_is_run_or_marked_a_fragment(self) -> None:
        """A python block that does not compile is marked as a fragment, so none is skipped."""
        unmarked = []
        for block in _blocks():
            if block.language == "python" and not block.fragment:
                try:
                    compile(block.code, block.id, "exec")
                except SyntaxError:
                    unmarked.append(block.id)
        assert unmarked == []


async def _run_python(
    script: Path, environ: dict[str, str], *, cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")} | environ
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, str(script)],
            cwd=cwd,
            env=full,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


# -- shell ------------------------------------------------------------------------------


def _commands(block: Block) -> list[str]:
    """The command lines of a console block: after `$ ` when it shows a session."""
    lines = block.code.splitlines()
    session = any(line.startswith("$ ") for line in lines)
    commands: list[str] = []
    continued = False
    for line in lines:
        if continued:
            commands[-1] += "\n" + line
        elif line.startswith("$ "):
            commands.append(line[2:])
        elif not session and line.strip():
            commands.append(line)
        else:
            continue
        continued = line.endswith("\\")
    return commands


def _recipes() -> set[str]:
    listed = subprocess.run(
        ["just", "--justfile", str(REPO / "justfile"), "--summary"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return set(listed.stdout.split())


def _subcommands() -> set[str]:
    parser = _parser()
    return {
        name
        for action in parser._actions
        if action.choices and not isinstance(action.choices, list)
        for name in action.choices
    }


@pytest.mark.subprocess
class TestShellBlocks:
    @pytest.mark.parametrize("block", _of("shell"))
    def test_commands_parse_and_exist(self, block: Block) -> None:
        """Each command is valid shell, and names only recipes and subcommands that exist."""
        for command in _commands(block):
            checked = subprocess.run(
                ["bash", "-n"],
                input=command,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            assert checked.returncode == 0, f"{command!r}: {checked.stderr}"
            words = shlex.split(command.replace("\\\n", " "), comments=True)
            for word, following in itertools.pairwise(words):
                if word == "just" and not following.startswith("-"):
                    assert following in _recipes(), f"no recipe {following!r}: {command!r}"
                if word.endswith("tower-trio") and not following.startswith("-"):
                    assert following in _subcommands(), f"no command {following!r}: {command!r}"
