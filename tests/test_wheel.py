"""The wheel, installed into a fresh virtualenv outside the checkout, is a working tower.

Building and installing take some 20 s (pip fetches the dependencies, from
its cache after the first run), so one wheel and one virtualenv serve the
whole session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from tests._towers import open_tower_process

if TYPE_CHECKING:
    from tests._helpers import Broker

REPO = Path(__file__).parent.parent
BUILTINS = ["example", "folder", "http_poll", "riffyn", "schedule"]


def _run(*argv: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=_clean_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stderr}")
    return result


def _clean_environ(**variables: str) -> dict[str, str]:
    """The environment without the checkout's virtualenv and without tower settings."""
    dropped = ("TOWER_", "PLUGIN_", "PYTHON", "VIRTUAL_ENV")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    environ.update(variables)
    return environ


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "-w", root, cwd=root, timeout=300)
    (wheel,) = root.glob("tower_trio-*.whl")
    _run(sys.executable, "-m", "venv", root / "venv", cwd=root, timeout=120)
    bin_dir = root / "venv" / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=root, timeout=600)
    return bin_dir


# Building the wheel and installing it with its dependencies in a fresh venv
# runs inside the first test's time; the subprocess calls bound each step.
@pytest.mark.timeout(600)
class TestInstalledWheel:
    def test_lists_the_built_in_plugins(self, installed: Path, tmp_path: Path) -> None:
        """`tower-trio plugins` in an empty folder lists every built-in, from site-packages."""
        result = _run(installed / "tower-trio", "plugins", "--json", cwd=tmp_path, timeout=60)
        plugins = {entry["name"]: entry for entry in json.loads(result.stdout)["plugins"]}
        assert sorted(plugins) == BUILTINS
        site = installed.parent / "lib"
        for name, entry in plugins.items():
            origin = Path(entry["origin"])
            assert origin.is_relative_to(site), origin
            assert origin.parts[-3:] == ("tower_trio_builtins", name, "watcher.py")
            assert entry["state"] == "incomplete", entry

    def test_ships_no_plugin_tests(self, installed: Path) -> None:
        """The plugins' tests stay in the repository."""
        (package,) = (installed.parent / "lib").glob("python*/site-packages/tower_trio_builtins")
        assert sorted(p.name for p in package.glob("*/test_*.py")) == []
        assert sorted(p.parent.name for p in package.glob("*/watcher.py")) == BUILTINS

    async def test_runs_a_built_in_plugin(
        self, installed: Path, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """`tower-trio run` starts the example plugin, which publishes a line of its file."""
        queue = await broker.bind("OT-2/v1alpha1")
        inbox = tmp_path / "var" / "inbox.txt"
        inbox.parent.mkdir()
        inbox.write_text('Wash {"n": 1}\n')
        environ = _clean_environ(
            TOWER_AMQP_URL=amqp_url,
            TOWER_EXCHANGE=broker.exchange,
            TOWER_HTTP_PORT="0",
            TOWER_DATA_DIR=str(tmp_path / "data"),
            TOWER_PLUGINS="example",
            PLUGIN_EXAMPLE_PATH=str(inbox),
            PLUGIN_EXAMPLE_SKIP_EXISTING="false",
        )
        command: list[str | Path] = [installed / "tower-trio", "run"]
        async with open_tower_process(environ, command=command, cwd=tmp_path) as tower:
            (message,) = await broker.take(queue, 1)
            with trio.fail_after(30):
                returncode = await tower.terminate()
        assert returncode == 0, tower.log
        assert json.loads(message.body)["protocol"] == "Wash"
        assert '"event": "plugin.started", "plugin": "example"' in tower.log
