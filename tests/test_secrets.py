"""Which values are secret: one declared rule, read by logs, GET /plugins, `config` and the CLI."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import attrs
import pytest

from tests.test_cli_commands import restore_logging  # noqa: F401 (a fixture)
from tower_trio._cli import _secrets, main
from tower_trio._config import Settings
from tower_trio._logging import configure_logging, get_logger
from tower_trio._plugins import discover_plugins, select_plugins
from tower_trio._secrets import SECRET, is_secret
from tower_trio.plugin import secret

REPO_PLUGINS = Path(__file__).parent.parent / "plugins"

LAB = """
    import attrs
    from tower_trio.plugin import secret

    @attrs.frozen
    class Config:
        passphrase_for_door: str = secret()
        api_token: str = ""
        token_url: str = attrs.field(default="", metadata={"tower_trio.secret": False})
        url: str = "https://lims.example"

    async def run(send_channel, config):
        pass
"""
VALUES = {
    "passphrase_for_door": "open-sesame-9",
    "api_token": "tok-unmarked-7",
    "token_url": "https://auth.example/token",
    "url": "https://lims.example/v2",
}
EXPECTED = {"passphrase_for_door": True, "api_token": True, "token_url": False, "url": False}


def _environ(tmp_path: Path) -> dict[str, str]:
    plugins = tmp_path / "plugins"
    (plugins / "lab").mkdir(parents=True)
    (plugins / "lab" / "watcher.py").write_text(textwrap.dedent(LAB))
    environ = {f"PLUGIN_LAB_{name.upper()}": value for name, value in VALUES.items()}
    return {**environ, "TOWER_PLUGINS_DIR": str(plugins), "TOWER_DATA_DIR": str(tmp_path)}


class TestTheRule:
    def test_the_mark_decides_before_the_name(self) -> None:
        """A marked field is what its mark says, whatever its name; an unmarked one, its name."""

        @attrs.frozen
        class Config:
            door: str = secret()
            token_url: str = attrs.field(default="", metadata={SECRET: False})
            password: str = ""
            url: str = ""

        fields = attrs.fields_dict(Config)
        assert {name: is_secret(field) for name, field in fields.items()} == {
            "door": True,
            "token_url": False,
            "password": True,
            "url": False,
        }

    def test_secret_keeps_field_options_and_hides_the_repr(self) -> None:
        """secret() passes attrs.field's options on and leaves the value out of repr()."""

        @attrs.frozen
        class Config:
            key: str = secret(default="k-1", validator=attrs.validators.min_len(3))

        assert Config().key == "k-1"
        assert "k-1" not in repr(Config())
        with pytest.raises(ValueError, match="Length of 'key'"):
            Config(key="k")

    def test_every_setting_declares_itself(self) -> None:
        """Each TOWER_* setting is marked, and exactly the tokens are secret."""
        fields = attrs.fields(Settings)
        assert all(SECRET in field.metadata for field in fields)
        assert {f.name for f in fields if is_secret(f)} == {
            "api_tokens",
            "metrics_token",
            "probe_token",
        }

    @pytest.mark.parametrize(
        ("plugin", "field"),
        [("riffyn", "api_key"), ("http_poll", "token"), ("http_poll", "secret_headers")],
    )
    def test_built_in_secrets_are_marked(self, plugin: str, field: str) -> None:
        """The bundled plugins mark their secrets rather than rely on the names."""
        config = discover_plugins(REPO_PLUGINS, entry_points=False)[plugin].config_class
        assert config is not None
        assert attrs.fields_dict(config)[field].metadata[SECRET] is True


@pytest.mark.usefixtures("restore_logging")
class TestEveryPlaceAgrees:
    async def test_get_plugins_config_cli_and_logs(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A value is masked in the report, `config`, redaction and the logs exactly if secret."""
        environ = _environ(tmp_path)
        discovered = discover_plugins(tmp_path / "plugins", entry_points=False)
        (plugin,), _ = select_plugins(discovered, ("lab",), environ)

        report = plugin.public_config()
        redacted = plugin.redact(" ".join(VALUES.values()))
        assert main(["config", "--json"], environ) == 0
        shown = json.loads(capsys.readouterr().out)
        stream = io.StringIO()
        urls = Settings.from_environ(environ).broker_urls()
        configure_logging(
            "INFO", "json", secrets=_secrets(urls, discovered.values(), environ), stream=stream
        )
        get_logger("tower_trio.test").info("values", text=" ".join(VALUES.values()))
        logged = stream.getvalue()

        masked = {
            name: {
                "GET /plugins": report[name] == "***",
                "config": shown[f"PLUGIN_LAB_{name.upper()}"]["value"] == "***",
                "redact": value not in redacted,
                "logs": value not in logged,
            }
            for name, value in VALUES.items()
        }
        assert masked == {
            name: dict.fromkeys(("GET /plugins", "config", "redact", "logs"), secret)
            for name, secret in EXPECTED.items()
        }

    def test_a_log_field_named_like_a_secret_is_masked(self) -> None:
        """A log line's field has only a name: the same fallback decides for it."""
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        get_logger("tower_trio.test").info("x", api_token="tok-9", routing_key="OT-2/v1")
        line = json.loads(stream.getvalue())
        assert (line["api_token"], line["routing_key"]) == ("***", "OT-2/v1")

    def test_every_broker_node_password_is_masked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With several broker URLs, each one's password is kept out of the logs and `config`."""
        environ = {"TOWER_AMQP_URL": "amqp://a:first-pw-1@rabbit-1/,amqp://b:second%2Cpw@rabbit-2/"}
        stream = io.StringIO()
        urls = Settings.from_environ(environ).broker_urls()
        configure_logging("INFO", "json", secrets=_secrets(urls, [], environ), stream=stream)
        get_logger("tower_trio.test").info("x", text="first-pw-1 second,pw second%2Cpw")
        assert main(["config", "--json"], environ) == 0
        shown = json.loads(capsys.readouterr().out)["TOWER_AMQP_URL"]["value"]
        assert "first-pw-1" not in stream.getvalue()
        assert "second" not in stream.getvalue()
        assert shown == "amqp://a:***@rabbit-1:5672/%2F,amqp://b:***@rabbit-2:5672/%2F"
