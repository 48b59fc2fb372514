"""``tower-trio run`` as a real process: start-up errors, signals, draining."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from tests._helpers import spec_of
from tests._towers import open_tower_process
from tower_trio import amqp
from tower_trio._journal import FILE_NAME as JOURNAL_FILE
from tower_trio._serialization import load_trigger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.subprocess

TRIGGERS_IN_CHANNEL = 400


def tower_environ(data_dir: Path, **variables: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOWER_", "PLUGIN_"))}
    environ["TOWER_HTTP_PORT"] = "0"
    environ["TOWER_DATA_DIR"] = str(data_dir)
    environ.update(variables)
    return environ


def run_cli(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tower_trio", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestStartUpErrors:
    @pytest.mark.parametrize(
        ("variables", "message"),
        [
            pytest.param(
                {"TOWER_HTTP_PORT": "eighty"},
                "TOWER_HTTP_PORT='eighty' is invalid: is not a number",
                id="port",
            ),
            pytest.param(
                {"TOWER_PUBLISH_TIMEOUT": "-1"},
                "TOWER_PUBLISH_TIMEOUT='-1' is invalid: must be a positive number of seconds",
                id="timeout",
            ),
            pytest.param(
                {"TOWER_AMQP_URL": "http://localhost/"},
                "TOWER_AMQP_URL is invalid",
                id="url-scheme",
            ),
            pytest.param(
                {"TOWER_AMQP_URL": "amqp://rabbit-1/,http://lab:s3cret@rabbit-2/"},
                "TOWER_AMQP_URL (URL 2 of 2) is invalid",
                id="url-scheme-second-node",
            ),
            pytest.param(
                {"TOWER_PLUGINS": "example"},
                "PLUGIN_EXAMPLE_PATH is not set; the example plugin needs it",
                id="plugin-config",
            ),
            pytest.param(
                {"TOWER_PLUGINS": "nope"},
                "TOWER_PLUGINS names nope, which is not installed",
                id="plugin-name",
            ),
        ],
    )
    def test_bad_setting_is_one_line_naming_the_variable(
        self, variables: dict[str, str], message: str, tmp_path: Path
    ) -> None:
        """A bad setting exits 2 with one line naming it, and no traceback."""
        result = run_cli("run", environ=tower_environ(tmp_path, **variables))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("tower-trio: error: ")
        assert message in lines[0]

    @pytest.mark.parametrize("password", ["s3cret/pw-tail", "s3cret?pw-tail", "s3cret#pw-tail"])
    def test_url_error_never_shows_the_password(self, password: str, tmp_path: Path) -> None:
        """A password with an unencoded delimiter is refused without showing any piece of it."""
        url = f"amqp://lab:{password}@rabbit:5672/%2F"
        result = run_cli("run", environ=tower_environ(tmp_path, TOWER_AMQP_URL=url))
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("tower-trio: error: TOWER_AMQP_URL is invalid: ")
        for piece in (password, "s3cret", "pw-tail"):
            assert piece not in line

    @pytest.mark.parametrize(
        "unusable",
        [
            pytest.param("under-a-file", id="under-a-file"),
            pytest.param("is-a-file", id="is-a-file"),
            pytest.param("not-a-database", id="not-a-database"),
            pytest.param("proc", id="in-proc"),
        ],
    )
    def test_unusable_data_dir_is_one_line(self, unusable: str, tmp_path: Path) -> None:
        """A data dir that cannot hold the journal exits 2 with one line naming TOWER_DATA_DIR."""
        (tmp_path / "file").write_text("not a folder")
        data_dir = {
            "under-a-file": tmp_path / "file" / "sub",
            "is-a-file": tmp_path / "file",
            "not-a-database": tmp_path / "data",
            # Not even root can make a folder in /proc.
            "proc": Path("/proc/tower-trio-data"),
        }[unusable]
        if unusable == "not-a-database":
            data_dir.mkdir()
            (data_dir / JOURNAL_FILE).write_bytes(b"not an SQLite database" * 100)
        result = run_cli("run", environ=tower_environ(data_dir))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("tower-trio: error: cannot open the journal ")
        assert "TOWER_DATA_DIR" in lines[0]

    def test_plugin_that_cannot_import_names_its_file(self, tmp_path: Path) -> None:
        """A plugin with a syntax error stops start-up with its path in the message."""
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "watcher.py").write_text("async def run(send_channel:\n")
        result = run_cli(
            "run", environ=tower_environ(tmp_path / "data", TOWER_PLUGINS_DIR=str(tmp_path))
        )
        assert result.returncode == 2
        assert str(tmp_path / "bad" / "watcher.py") in result.stderr
        assert "Traceback" not in result.stderr


# Queues every trigger with send_nowait (no checkpoint, so the publisher has
# not run yet) and then signals its own process: at SIGTERM time the whole
# batch is still in the channel.
BURST_PLUGIN = f"""
import os
import signal

import trio

from tower_trio import Trigger


async def run(send_channel):
    for n in range({TRIGGERS_IN_CHANNEL}):
        send_channel.send_nowait(
            Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={{"n": n}})
        )
    os.kill(os.getpid(), signal.SIGTERM)
    await trio.sleep_forever()
"""


@pytest.fixture
async def bound_queue(amqp_url: str, unique: str) -> AsyncIterator[tuple[str, str]]:
    exchange = f"test.shutdown.{unique}"
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel() as channel,
    ):
        await channel.exchange_declare(exchange, "topic", durable=True)
        queue = (await channel.queue_declare(f"test.shutdown.{unique}", durable=True)).name
        await channel.queue_bind(queue, exchange, "OT-2/v1alpha1")
        try:
            yield exchange, queue
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await channel.queue_delete(queue)
                await channel.exchange_delete(exchange)


class TestShutdown:
    async def test_sigterm_drains_the_channel_and_exits_zero(
        self, amqp_url: str, bound_queue: tuple[str, str], tmp_path: Path
    ) -> None:
        """Triggers in the channel at SIGTERM all reach the queue; exit 0, no error lines."""
        exchange, queue = bound_queue
        (tmp_path / "burst").mkdir()
        (tmp_path / "burst" / "watcher.py").write_text(textwrap.dedent(BURST_PLUGIN))
        environ = tower_environ(
            tmp_path / "data",
            TOWER_AMQP_URL=amqp_url,
            TOWER_EXCHANGE=exchange,
            TOWER_PLUGINS_DIR=str(tmp_path),
            TOWER_CHANNEL_SIZE=str(TRIGGERS_IN_CHANNEL),
        )

        result = await trio.run_process(
            [sys.executable, "-m", "tower_trio", "run"],
            env=environ,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

        log = result.stderr.decode()
        assert result.returncode == 0, log
        assert '"event": "shutdown.requested", "signal": "SIGTERM"' in log
        assert '"event": "tower.stopped"' in log
        assert '"level": "error"' not in log
        # Without TOWER_API_TOKENS the tower says so once; nothing else may warn.
        warnings = [line for line in log.splitlines() if '"level": "warning"' in line]
        assert [line for line in warnings if '"http.auth_off"' not in line] == []
        assert "Traceback" not in log
        async with (
            amqp.open_connection(amqp_url) as connection,
            connection.open_channel() as channel,
        ):
            messages = []
            while (message := await channel.basic_get(queue)) is not None:
                messages.append(message)
        assert sorted(spec_of(load_trigger(m.body))["n"] for m in messages) == list(
            range(TRIGGERS_IN_CHANNEL)
        )

    async def test_second_signal_stops_at_once(self, tmp_path: Path) -> None:
        """With the broker away the drain cannot finish; a second SIGTERM exits 130 at once."""
        (tmp_path / "burst").mkdir()
        (tmp_path / "burst" / "watcher.py").write_text(textwrap.dedent(BURST_PLUGIN))
        environ = tower_environ(
            tmp_path / "data",
            TOWER_AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F",
            TOWER_PLUGINS_DIR=str(tmp_path),
            TOWER_CHANNEL_SIZE=str(TRIGGERS_IN_CHANNEL),
            TOWER_SHUTDOWN_GRACE="300",
        )
        async with open_tower_process(environ) as tower:
            with trio.fail_after(30):
                await tower.wait_for("tower.stopping")
                returncode = await tower.terminate()
        assert returncode == 130, tower.log
        assert '"event": "shutdown.forced"' in tower.log
