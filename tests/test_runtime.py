"""One plugin runtime: the tower's supervisor and the test harness run a plugin the same way."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio
import trio.testing

from tests._helpers import accept_all
from tests.test_cli_commands import restore_logging  # noqa: F401 (a fixture)
from tests.test_plugins import CONFIGURED, write_plugin
from tower_trio import PluginError
from tower_trio._backoff import Backoff
from tower_trio._channel import Submission
from tower_trio._logging import configure_logging
from tower_trio._plugins import discover_plugins, select_plugins, serve_plugin
from tower_trio._runtime import PluginState, PluginStatus
from tower_trio._schemas import load_schemas
from tower_trio.testing import open_plugin

SCHEMAS = Path(__file__).parent.parent / "docs" / "schemas"

BREAKS_THE_SCHEMA = """
    from tower_trio import Trigger
    from tower_trio.plugin import report_item_error

    async def run(send_channel):
        transfer = Trigger(
            api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"volume": -3}
        )
        try:
            await send_channel.send(transfer)
        except Exception as err:
            report_item_error("transfer", err)
"""

LEAKS_ITS_KEY = """
    import attrs
    from tower_trio.plugin import secret

    @attrs.frozen
    class Config:
        door: str = secret()

    async def run(send_channel, config):
        raise RuntimeError(f"the door refused {config.door}")
"""


class TestSchemas:
    async def test_tower_and_harness_refuse_alike(self, tmp_path: Path) -> None:
        """A trigger breaking its protocol's schema is refused in both, with the same error."""
        folder = write_plugin(tmp_path, "breaker", BREAKS_THE_SCHEMA).parent
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, receive = trio.open_memory_channel[Submission](10)
        tower = PluginStatus("breaker")
        received: list[Submission] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_all, receive, received)
                await serve_plugin(plugin, send, tower, check=load_schemas(SCHEMAS).check)
            async with open_plugin(folder, schemas_dir=SCHEMAS) as harness:
                (refused,) = await harness.wait_for_item_errors(1)

        assert refused.message.startswith("InvalidTriggerError: invalid trigger: spec.volume: ")
        assert tower.last_error == f"transfer: {refused.message}"
        assert harness.status.last_error == tower.last_error
        assert (received, harness.sent) == ([], [])

    async def test_harness_without_schemas_is_a_tower_without_them(self, tmp_path: Path) -> None:
        """By default the harness checks no schema, as a tower without TOWER_SCHEMAS_DIR."""
        folder = write_plugin(tmp_path, "breaker", BREAKS_THE_SCHEMA).parent
        with trio.fail_after(10):
            async with open_plugin(folder) as harness:
                trigger = await harness.next_trigger()
        assert trigger.spec == {"volume": -3}
        assert harness.item_errors == []

    async def test_strict_harness_refuses_protocols_without_a_schema(self, tmp_path: Path) -> None:
        """schemas_strict=True refuses an unknown protocol, as TOWER_SCHEMAS_STRICT=true does."""
        source = BREAKS_THE_SCHEMA.replace('"PlateTransfer"', '"Unlisted"')
        folder = write_plugin(tmp_path, "breaker", source).parent
        with trio.fail_after(10):
            async with open_plugin(folder, schemas_dir=SCHEMAS, schemas_strict=True) as harness:
                (refused,) = await harness.wait_for_item_errors(1)
        assert "protocol: has no schema for OT-2/v1alpha1" in refused.message


class TestSharedRun:
    async def test_a_non_trigger_fails_the_plugin_in_the_harness_too(self, tmp_path: Path) -> None:
        """The harness marks a plugin that sent a dict as failed, as the tower does, and raises."""
        folder = write_plugin(
            tmp_path,
            "sloppy",
            """
            async def run(send_channel):
                await send_channel.send({"protocol": "Oops"})
            """,
        ).parent
        with pytest.RaisesGroup(pytest.RaisesExc(TypeError, match="not dict")):
            async with open_plugin(folder) as harness:
                await trio.sleep_forever()
        assert harness.status.state is PluginState.FAILED
        assert harness.status.last_error is not None
        assert "send tower_trio.Trigger objects, not dict" in harness.status.last_error


class TestConfigWording:
    @pytest.mark.parametrize(
        ("given", "message"),
        [
            ({"path": "/x", "interval": "soon"}, "PLUGIN_TIMED_INTERVAL='soon' is invalid: "),
            ({}, "PLUGIN_TIMED_PATH is not set; the timed plugin needs it (path)"),
        ],
    )
    async def test_harness_and_tower_word_a_bad_config_alike(
        self, tmp_path: Path, given: dict[str, str], message: str
    ) -> None:
        """A bad or missing value gets the tower's message, naming the variable, in the harness."""
        folder = write_plugin(tmp_path, "timed", CONFIGURED).parent
        environ = {f"PLUGIN_TIMED_{name.upper()}": value for name, value in given.items()}
        with pytest.raises(PluginError) as in_the_tower:
            select_plugins(discover_plugins(tmp_path, entry_points=False), ("timed",), environ)
        with pytest.raises(PluginError) as in_the_harness:
            async with open_plugin(folder, config=given):
                pass  # pragma: no cover
        assert str(in_the_harness.value) == str(in_the_tower.value)
        assert str(in_the_tower.value).startswith(message)

    async def test_harness_takes_python_values_as_they_are(self, tmp_path: Path) -> None:
        """A value that is not a string is not parsed again."""
        folder = write_plugin(tmp_path, "timed", CONFIGURED).parent
        async with open_plugin(folder, config={"path": Path("/x"), "interval": 2}):
            pass


class TestCrashLog:
    @pytest.mark.usefixtures("restore_logging")
    async def test_crash_is_one_json_line_with_traceback_and_no_secret(
        self,
        tmp_path: Path,
        autojump_clock: trio.testing.MockClock,
    ) -> None:
        """A crash logs plugin.crashed through the tower's logger, traceback included, masked."""
        write_plugin(tmp_path, "door", LEAKS_ITS_KEY)
        environ = {"PLUGIN_DOOR_DOOR": "open-sesame-9"}
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, environ)
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        send, _receive = trio.open_memory_channel[Submission](1)
        backoff = Backoff(initial=1.0, cap=1.0, jitter=0.0)
        with trio.move_on_after(0.5):
            await serve_plugin(plugin, send, PluginStatus("door"), backoff=backoff)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        (crash,) = [line for line in lines if line["event"] == "plugin.crashed"]
        assert crash["level"] == "error"
        assert crash["logger"].startswith("tower_trio.")
        assert crash["plugin"] == "door"
        assert crash["error"] == "RuntimeError: the door refused ***"
        assert crash["restart_in"] == "1.0s"
        assert "Traceback (most recent call last)" in crash["exception"]
        assert "the door refused ***" in crash["exception"]
        assert "open-sesame-9" not in stream.getvalue()
