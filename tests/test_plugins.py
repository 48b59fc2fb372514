"""Plugin discovery, configuration from the environment, and supervision."""

from __future__ import annotations

import itertools
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests._helpers import Broker, accept_all, run_tower, spec_of, tower_settings
from tower_trio import PluginError, Trigger
from tower_trio._backoff import Backoff
from tower_trio._channel import Submission
from tower_trio._journal import SQLiteStorage, open_journal
from tower_trio._plugins import discover_plugins, plugins_report, select_plugins, serve_plugin
from tower_trio._runtime import MemoryStateBackend, PluginState, PluginStatus
from tower_trio._secrets import is_secret
from tower_trio.plugin import State
from tower_trio.testing import open_plugin

REPO = Path(__file__).parent.parent


def write_plugin(root: Path, name: str, source: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    path = folder / "watcher.py"
    path.write_text(textwrap.dedent(source))
    return path


SIMPLE = """
    async def run(send_channel):
        pass
"""

CONFIGURED = """
    from pathlib import Path
    import attrs

    @attrs.frozen
    class Config:
        path: Path
        interval: float = 1.0
        enabled: bool = True
        tags: list[str] = attrs.Factory(list)

    async def run(send_channel, config):
        pass
"""


class TestDiscovery:
    def test_finds_each_folder_with_a_watcher(self, tmp_path: Path) -> None:
        """Every sub-folder holding a watcher.py is a plugin named after the folder."""
        write_plugin(tmp_path, "alpha", SIMPLE)
        write_plugin(tmp_path, "beta", CONFIGURED)
        (tmp_path / "not_a_plugin").mkdir()

        found = discover_plugins(tmp_path, entry_points=False)

        assert sorted(found) == ["alpha", "beta"]
        assert not found["alpha"].wants_config
        assert found["beta"].wants_config
        assert found["beta"].config_variables() == {
            "path": "PLUGIN_BETA_PATH",
            "interval": "PLUGIN_BETA_INTERVAL",
            "enabled": "PLUGIN_BETA_ENABLED",
            "tags": "PLUGIN_BETA_TAGS",
        }

    def test_missing_folder_means_no_plugins(self, tmp_path: Path) -> None:
        """A plugins folder that does not exist is not an error: there are no plugins."""
        assert discover_plugins(tmp_path / "absent", entry_points=False) == {}

    def test_bundled_example_is_discovered(self) -> None:
        """The example plugin shipped in plugins/ is found and asks for its config."""
        found = discover_plugins(REPO / "plugins", entry_points=False)
        assert found["example"].wants_config

    def test_import_error_names_the_file(self, tmp_path: Path) -> None:
        """A plugin that fails to import stops start-up with its file in the message."""
        path = write_plugin(tmp_path, "broken", "import no_such_module_anywhere\n")
        discovered = discover_plugins(tmp_path, entry_points=False)
        with pytest.raises(PluginError, match="cannot import plugin 'broken'") as info:
            select_plugins(discovered, None, {})
        assert str(path) in str(info.value)
        assert "no_such_module_anywhere" in str(info.value)

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            pytest.param(
                "def run(send_channel):\n    pass\n", "must define 'async def run", id="sync"
            ),
            pytest.param("x = 1\n", "must define 'async def run", id="no-run"),
            pytest.param(
                "async def run(channel):\n    pass\n", "run\\(\\) takes channel", id="wrong-name"
            ),
            pytest.param(
                "async def run(send_channel, other):\n    pass\n",
                "may take config",
                id="extra-parameter",
            ),
            pytest.param(
                "async def run(send_channel, config):\n    pass\n",
                "defines no Config class",
                id="config-without-class",
            ),
        ],
    )
    def test_wrong_signature_is_a_clear_error(
        self, tmp_path: Path, source: str, message: str
    ) -> None:
        """A run() the loader cannot call is refused at start-up, saying what it must look like."""
        write_plugin(tmp_path, "odd", source)
        discovered = discover_plugins(tmp_path, entry_points=False)
        with pytest.raises(PluginError, match=message):
            select_plugins(discovered, None, {})

    @pytest.mark.parametrize(
        "source",
        [
            pytest.param("async def run(channel):\n    pass\n", id="wrong-name"),
            pytest.param("import no_such_module_anywhere\n", id="import-error"),
        ],
    )
    def test_broken_plugin_not_selected_is_skipped_with_its_reason(
        self, tmp_path: Path, source: str
    ) -> None:
        """A plugin that cannot run but is left out of TOWER_PLUGINS is skipped, not fatal."""
        write_plugin(tmp_path, "alpha", SIMPLE)
        path = write_plugin(tmp_path, "odd", source)
        selected, skipped = select_plugins(
            discover_plugins(tmp_path, entry_points=False), ("alpha",), {}
        )
        assert [plugin.name for plugin in selected] == ["alpha"]
        ((name, reason),) = [(s.name, s.reason) for s in skipped]
        assert name == "odd"
        assert reason.startswith("not in TOWER_PLUGINS, and it cannot run")
        assert str(path) in reason

    def test_selected_plugin_with_a_wrong_parameter_names_file_and_signatures(
        self, tmp_path: Path
    ) -> None:
        """Naming a plugin whose run() takes `channel` gives its file and every accepted form."""
        path = write_plugin(tmp_path, "odd", "async def run(channel):\n    pass\n")
        discovered = discover_plugins(tmp_path, entry_points=False)
        with pytest.raises(PluginError) as info:
            select_plugins(discovered, ("odd",), {})
        assert str(path) in str(info.value)
        assert "run(send_channel, config, state)" in str(info.value)
        assert "run(send_channel, state)" in str(info.value)


class TestBuiltins:
    @pytest.fixture
    def site(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """A site-packages holding the built-ins as the wheel installs them."""
        site = tmp_path / "site"
        write_plugin(site / "tower_trio_builtins", "alpha", SIMPLE)
        write_plugin(site / "tower_trio_builtins", "beta", SIMPLE)
        monkeypatch.syspath_prepend(str(site))
        return site

    def test_installed_builtins_are_found(self, site: Path, tmp_path: Path) -> None:
        """An installed tower finds the built-ins shipped in tower_trio_builtins."""
        found = discover_plugins(tmp_path / "no-plugins")
        assert found["alpha"].origin == str(site / "tower_trio_builtins" / "alpha" / "watcher.py")
        assert found["beta"].problem is None

    def test_a_folder_plugin_hides_the_builtin_of_the_same_name(
        self, site: Path, tmp_path: Path
    ) -> None:
        """A plugin in TOWER_PLUGINS_DIR is used instead of the built-in, and listed once."""
        local = write_plugin(tmp_path / "plugins", "alpha", SIMPLE)
        found = discover_plugins(tmp_path / "plugins")
        assert found["alpha"].origin == str(local)
        assert found["beta"].origin.startswith(str(site))

    def test_builtins_are_left_out_without_entry_points(self, site: Path, tmp_path: Path) -> None:
        """entry_points=False keeps discovery to the folder, as tests need."""
        assert discover_plugins(tmp_path / "no-plugins", entry_points=False) == {}


class TestConfiguration:
    @pytest.fixture
    def discovered(self, tmp_path: Path) -> dict[str, object]:
        write_plugin(tmp_path, "simple", SIMPLE)
        write_plugin(tmp_path, "configured", CONFIGURED)
        return discover_plugins(tmp_path, entry_points=False)  # type: ignore[return-value]

    def test_config_is_built_from_plugin_variables(self, discovered: dict) -> None:  # type: ignore[type-arg]
        """PLUGIN_<NAME>_<FIELD> variables are parsed into the declared field types."""
        environ = {
            "PLUGIN_CONFIGURED_PATH": "/srv/inbox",
            "PLUGIN_CONFIGURED_INTERVAL": "2.5",
            "PLUGIN_CONFIGURED_ENABLED": "false",
            "PLUGIN_CONFIGURED_TAGS": "a, b",
        }
        selected, skipped = select_plugins(discovered, ("configured",), environ)
        assert skipped == []
        config = selected[0].config
        assert config.path == Path("/srv/inbox")
        assert config.interval == 2.5
        assert config.enabled is False
        assert config.tags == ["a", "b"]

    def test_unnamed_plugin_with_missing_config_is_skipped(self, discovered: dict) -> None:  # type: ignore[type-arg]
        """Without TOWER_PLUGINS, a plugin missing a variable is skipped, naming it."""
        selected, skipped = select_plugins(discovered, None, {})
        assert [p.name for p in selected] == ["simple"]
        assert [s.name for s in skipped] == ["configured"]
        assert "PLUGIN_CONFIGURED_PATH is not set" in skipped[0].reason

    def test_named_plugin_with_missing_config_stops_start_up(self, discovered: dict) -> None:  # type: ignore[type-arg]
        """A plugin named in TOWER_PLUGINS must be fully configured."""
        with pytest.raises(PluginError, match="PLUGIN_CONFIGURED_PATH is not set"):
            select_plugins(discovered, ("configured",), {})

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            ("PLUGIN_CONFIGURED_INTERVAL", "soon", "must be a number"),
            ("PLUGIN_CONFIGURED_ENABLED", "perhaps", "must be true or false"),
        ],
    )
    def test_invalid_value_names_the_variable(
        self,
        discovered: dict,  # type: ignore[type-arg]
        variable: str,
        value: str,
        message: str,
    ) -> None:
        """An invalid value stops start-up even for an unnamed plugin, naming the variable."""
        environ = {"PLUGIN_CONFIGURED_PATH": "/x", variable: value}
        with pytest.raises(PluginError, match=f"{variable}='{value}' is invalid: {message}"):
            select_plugins(discovered, None, environ)

    def test_unknown_plugin_name_lists_the_available_ones(self, discovered: dict) -> None:  # type: ignore[type-arg]
        """Naming a plugin that does not exist says which ones do."""
        with pytest.raises(PluginError, match=r"names nope.*available: configured, simple"):
            select_plugins(discovered, ("nope",), {})


def _trigger(n: int = 1) -> Trigger:
    return Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"n": n})


class TestSupervision:
    async def test_crashing_plugin_is_restarted_with_backoff(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plugin that raises is restarted after a growing delay and keeps its counters."""
        write_plugin(
            tmp_path,
            "flaky",
            """
            import trio
            from tower_trio import Trigger
            starts = []

            async def run(send_channel):
                starts.append(trio.current_time())
                await send_channel.send(
                    Trigger(api_version="OT-2/v1alpha1", protocol="P", spec={"run": len(starts)})
                )
                if len(starts) < 4:
                    raise RuntimeError("source went away")
            """,
        )
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, receive = trio.open_memory_channel[Submission](10)
        status = PluginStatus("flaky")
        backoff = Backoff(initial=1.0, cap=60.0, jitter=0.0)
        received: list[Submission] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_all, receive, received)
            await serve_plugin(plugin, send, status, backoff=backoff)

        module = plugin.plugin.run.__globals__
        starts = module["starts"]
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert gaps == pytest.approx([1.0, 2.0, 4.0])
        assert status.state is PluginState.FINISHED
        assert status.restarts == 3
        assert status.triggers_sent == 4
        assert status.last_error == "RuntimeError: source went away"
        assert [s.trigger.spec for s in received] == [{"run": n} for n in (1, 2, 3, 4)]
        assert {s.trigger.metadata.source for s in received} == {"flaky"}

    async def test_one_crashing_plugin_leaves_the_others_alone(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """While one plugin crash-loops, a healthy one keeps sending on schedule."""
        write_plugin(
            tmp_path,
            "crasher",
            """
            async def run(send_channel):
                raise ValueError("always")
            """,
        )
        write_plugin(
            tmp_path,
            "steady",
            """
            import trio
            from tower_trio import Trigger

            async def run(send_channel):
                for n in range(10):
                    await trio.sleep(10)
                    await send_channel.send(
                        Trigger(api_version="OT-2/v1alpha1", protocol="Tick", spec={"n": n})
                    )
            """,
        )
        plugins, _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, receive = trio.open_memory_channel[Submission](100)
        statuses = {p.name: PluginStatus(p.name) for p in plugins}
        async with trio.open_nursery() as nursery, send:
            for plugin in plugins:
                await nursery.start(serve_plugin, plugin, send.clone(), statuses[plugin.name])
            ticks = []
            for _ in range(10):
                submission = await receive.receive()
                submission.accepted()
                ticks.append((spec_of(submission.trigger)["n"], trio.current_time()))
            while statuses["steady"].state is not PluginState.FINISHED:
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert [n for n, _ in ticks] == list(range(10))
        assert [t for _, t in ticks] == pytest.approx([10.0 * (n + 1) for n in range(10)])
        assert statuses["crasher"].restarts >= 3
        assert statuses["steady"].state is PluginState.FINISHED

    async def test_cancellation_is_not_mistaken_for_a_crash(self, tmp_path: Path) -> None:
        """Cancelling a running plugin stops it without a restart or an error recorded."""
        write_plugin(
            tmp_path,
            "sleeper",
            """
            import trio

            async def run(send_channel):
                await trio.sleep_forever()
            """,
        )
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, receive = trio.open_memory_channel[Submission](1)
        status = PluginStatus("sleeper")
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_plugin, plugin, send, status)
            nursery.cancel_scope.cancel()
        assert status.restarts == 0
        assert status.last_error is None
        with pytest.raises(trio.EndOfChannel):
            receive.receive_nowait()

    async def test_sending_something_else_than_a_trigger_fails_the_plugin(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plugin that sends a dict is stopped as failed, once, instead of restarted."""
        write_plugin(tmp_path, "sloppy", SLOPPY)
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, receive = trio.open_memory_channel[Submission](10)
        status = PluginStatus("sloppy")
        received: list[Submission] = []
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_all, receive, received)
                await serve_plugin(plugin, send, status)
        assert status.state is PluginState.FAILED
        assert status.restarts == 0
        assert status.last_error is not None
        assert "send tower_trio.Trigger objects, not dict" in status.last_error
        assert [s.trigger.protocol for s in received] == ["Before"]

    async def test_a_caught_bad_value_does_not_fail_the_plugin(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Only a bad value that ends run() fails the plugin; other crashes still restart it."""
        write_plugin(
            tmp_path,
            "careful",
            """
            starts = []

            async def run(send_channel):
                starts.append(1)
                try:
                    await send_channel.send({"not": "a trigger"})
                except TypeError:
                    pass
                if len(starts) < 2:
                    raise RuntimeError("source went away")
            """,
        )
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, _receive = trio.open_memory_channel[Submission](1)
        status = PluginStatus("careful")
        with trio.fail_after(600):
            await serve_plugin(plugin, send, status)
        assert status.state is PluginState.FINISHED
        assert status.restarts == 1

    async def test_a_bad_value_never_duplicates_what_was_journaled(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """In the tower, the trigger sent before a dict is journaled and published once."""
        write_plugin(tmp_path / "plugins", "sloppy", SLOPPY)
        plugins, _ = select_plugins(
            discover_plugins(tmp_path / "plugins", entry_points=False), None, {}
        )
        queue = await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path / "data")
        with trio.fail_after(20):
            async with run_tower(settings, plugins) as tower:
                status = tower.running.plugins["sloppy"]
                # Long enough for the first restart (1 s) had the plugin been restarted.
                # The status is the tower's plain attrs object: there is no event to await.
                while status.state is not PluginState.FAILED and status.restarts < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                listed = await tower.client.get("/triggers", params={"source": "sloppy"})
                shown = await tower.client.get("/plugins")
        assert status.state is PluginState.FAILED
        assert status.restarts == 0
        assert [item["protocol"] for item in listed.json()["items"]] == ["Before"]
        (report,) = [p for p in shown.json()["plugins"] if p["name"] == "sloppy"]
        assert report["state"] == "failed"
        assert "not dict" in report["lastError"]["message"]
        (message,) = await broker.take(queue, 1)
        assert json.loads(message.body)["protocol"] == "Before"
        assert await broker.count(queue) == 0


SLOPPY = """
    from tower_trio import Trigger

    async def run(send_channel):
        await send_channel.send(Trigger(api_version="OT-2/v1alpha1", protocol="Before", spec={}))
        await send_channel.send({"apiVersion": "OT-2/v1alpha1", "protocol": "Oops"})
"""


STATEFUL = """
    from tower_trio import Trigger

    async def run(send_channel, state):
        runs = await state.get("runs", 0) + 1
        await state.set("runs", runs)
        await send_channel.send(
            Trigger(api_version="OT-2/v1alpha1", protocol="Count", spec={"runs": runs})
        )
        if runs < 3:
            raise RuntimeError("again")
"""


class TestState:
    async def test_values_are_written_through_and_copied(self) -> None:
        """set() saves to the backend at once, and later changes to the value do not leak in."""
        backend = MemoryStateBackend()
        state = await State.load("p", backend)
        seen = {"ids": [1]}
        await state.set("seen", seen)
        seen["ids"].append(2)
        assert backend.snapshot("p") == {"seen": {"ids": [1]}}
        assert await state.get("seen") == {"ids": [1]}
        assert await state.get("missing", "default") == "default"
        assert state.keys() == ["seen"]
        assert "seen" in state

    async def test_delete_and_none_forget_a_key(self) -> None:
        """delete() and set(key, None) both remove the key from memory and the backend."""
        backend = MemoryStateBackend({"p": {"a": 1, "b": 2}})
        state = await State.load("p", backend)
        await state.delete("a")
        await state.set("b", None)
        await state.delete("never-there")
        assert state.keys() == []
        assert backend.snapshot("p") == {}

    async def test_values_must_be_json(self) -> None:
        """A value JSON cannot hold is refused with the key in the message."""
        state = await State.load("p", MemoryStateBackend())
        with pytest.raises(TypeError, match=r"state\['when'\] must be JSON-serialisable"):
            await state.set("when", object())
        with pytest.raises(TypeError, match="non-empty strings"):
            await state.set("", 1)

    async def test_the_journal_is_called_in_a_thread(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The tower's journal backend blocks off the trio thread, and what it saves lasts."""
        trio_thread = threading.get_ident()
        calls: list[int] = []
        journal = open_journal(tmp_path)
        try:
            for name in ("load_plugin_state", "save_plugin_state"):
                blocking = getattr(journal, name)

                def noted(*args: object, blocking: Any = blocking, **kwargs: object) -> Any:
                    calls.append(threading.get_ident())
                    return blocking(*args, **kwargs)

                monkeypatch.setattr(journal, name, noted)
            state = await State.load("p", SQLiteStorage(journal))
            await state.set("k", 1)
            again = await State.load("p", SQLiteStorage(journal))
        finally:
            journal.close()
        assert await again.get("k") == 1
        assert len(calls) == 3
        assert trio_thread not in calls

    async def test_state_survives_restarts(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plugin asking for state gets what it saved before it crashed."""
        write_plugin(tmp_path, "counter", STATEFUL)
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        send, receive = trio.open_memory_channel[Submission](10)
        backend = MemoryStateBackend()
        received: list[Submission] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_all, receive, received)
            await serve_plugin(plugin, send, PluginStatus("counter"), state_backend=backend)
        assert [spec_of(s.trigger) for s in received] == [{"runs": n} for n in (1, 2, 3)]
        assert backend.snapshot("counter") == {"runs": 3}


SECRET_CONFIG = """
    import attrs
    from tower_trio import Trigger
    from tower_trio.plugin import report_item_error

    @attrs.frozen
    class Config:
        url: str
        api_key: str
        password: str = ""
        interval: float = 10.0

    async def run(send_channel, config):
        report_item_error("run 7", f"rejected key {config.api_key}")
        raise RuntimeError(f"login failed with {config.api_key}")
"""


class TestReport:
    async def test_report_shows_counters_and_hides_secrets(
        self,
        tmp_path: Path,
        autojump_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """GET /plugins data: state, counters, last error with time, config with secrets masked."""
        write_plugin(tmp_path, "lims", SECRET_CONFIG)
        environ = {"PLUGIN_LIMS_URL": "https://lims.example", "PLUGIN_LIMS_API_KEY": "s3cr3t-v4lue"}
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, environ)
        send, _receive = trio.open_memory_channel[Submission](1)
        status = PluginStatus("lims")
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_plugin, plugin, send, status)
            # The first restart comes after at most 1 s, the second after 1.6 s more.
            await trio.sleep(1.5)
            nursery.cancel_scope.cancel()

        (report,) = plugins_report({"lims": status}, [plugin])
        assert report["name"] == "lims"
        assert report["state"] == "backing-off"
        assert report["restarts"] == 1
        assert report["triggersSent"] == 0
        assert report["errors"] >= 1
        assert report["lastTriggerAt"] is None
        assert report["lastError"]["message"] == "RuntimeError: login failed with ***"
        assert report["lastError"]["at"].endswith("Z")
        assert report["config"] == {
            "url": "https://lims.example",
            "api_key": "***",
            "password": "***",
            "interval": 10.0,
        }
        assert "s3cr3t-v4lue" not in caplog.text
        assert "s3cr3t-v4lue" not in json.dumps(report)

    def test_plugin_without_status_or_config_is_starting(self, tmp_path: Path) -> None:
        """A plugin not yet started reports 'starting' and an empty config."""
        write_plugin(tmp_path, "plain", SIMPLE)
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        (report,) = plugins_report({}, [plugin])
        assert report["state"] == "starting"
        assert report["config"] == {}
        assert report["lastError"] is None

    @pytest.mark.parametrize(
        ("name", "secret"),
        [
            ("api_key", True),
            ("TOKEN", True),
            ("db_password", True),
            ("client_secret", True),
            ("access_key", True),
            ("url", False),
            ("interval", False),
            ("license_key", True),
            ("signing-key", True),
            ("passphrase", True),
            ("routing_key", False),
            ("idempotency_key", False),
            ("key", False),
            ("key_file", False),
        ],
    )
    def test_secret_field_names(self, name: str, secret: bool) -> None:
        """An unmarked name is a secret if it says password, token or secret, or ends in a key."""
        assert is_secret(name) is secret


class TestHarness:
    async def test_collects_what_a_plugin_sends(self, tmp_path: Path) -> None:
        """The harness runs a plugin with a config dict and returns its triggers in order."""
        path = write_plugin(
            tmp_path,
            "twice",
            """
            import attrs
            from tower_trio import Trigger

            @attrs.frozen
            class Config:
                count: int

            async def run(send_channel, config):
                for n in range(config.count):
                    await send_channel.send(
                        Trigger(api_version="OT-2/v1alpha1", protocol="P", spec={"n": n})
                    )
            """,
        )
        async with open_plugin(path.parent, config={"count": "2"}) as harness:
            first, second = await harness.next_triggers(2)
        assert [spec_of(first), spec_of(second)] == [{"n": 0}, {"n": 1}]
        assert first.metadata.source == "twice"
        assert harness.status.triggers_sent == 2

    async def test_waiting_for_more_than_a_finished_plugin_sent_fails(self, tmp_path: Path) -> None:
        """Waiting for a trigger a finished plugin will never send fails at once."""
        path = write_plugin(tmp_path, "idle", SIMPLE)
        async with open_plugin(path) as harness:
            with pytest.raises(AssertionError, match="finished before sending 1 triggers"):
                await harness.next_trigger()
        assert harness.finished

    async def test_unknown_config_field_is_refused(self, tmp_path: Path) -> None:
        """A config dict naming a field the plugin does not have lists the real fields."""
        path = write_plugin(tmp_path, "configured", CONFIGURED)
        with pytest.raises(PluginError, match="no config field nope; its fields are path"):
            async with open_plugin(path, config={"nope": 1}):
                pass  # pragma: no cover
