"""The ``tower-trio`` subcommands, the log renderer and the start-up summary."""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import os
import re
import sys
import textwrap
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests._helpers import VALID, Broker, Tower, run_tower, tower_settings, unused_port
from tests._rabbitmq import rabbitmqctl
from tests._towers import open_tower_process
from tower_trio._auth import Tokens
from tower_trio._cli import _parser, _Progress, _tune_collector, main
from tower_trio._logging import configure_logging, get_logger, print_summary
from tower_trio._openapi import openapi_document
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

# A plugin that does everything a careless plugin could do with its API key:
# logs it through the standard library, in a message and as an extra field,
# and crashes with it in the exception.
LEAKY_PLUGIN = """
import logging

import attrs
import trio

log = logging.getLogger("acme.lims")


@attrs.frozen
class Config:
    api_key: str
    url: str = "https://lims.example"


async def run(send_channel, config):
    log.warning("logging in with %s", config.api_key, extra={"api_key": config.api_key})
    log.info("retrying", extra={"detail": f"key={config.api_key}"})
    raise RuntimeError(f"login refused for key {config.api_key}")
"""

CONFIGURED_PLUGIN = """
import attrs


@attrs.frozen
class Config:
    api_key: str
    interval: float = 5.0


async def run(send_channel, config):
    pass
"""


def cli_environ(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The process environment without TOWER_*/PLUGIN_* variables, plus ``variables``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOWER_", "PLUGIN_"))}
    environ["TOWER_DATA_DIR"] = str(tmp_path / "data")
    environ["TOWER_PLUGINS_DIR"] = str(tmp_path / "no-plugins")
    environ.update(variables)
    return environ


async def cli(*argv: str, environ: dict[str, str]) -> int:
    """Run ``main`` in a thread: it blocks on HTTP, and the tower under test is in this loop."""
    return await trio.to_thread.run_sync(partial(main, list(argv), environ))


async def run_into_closed_pipe(
    *argv: str, environ: dict[str, str], buffered: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run the command into a pipe whose reader has closed already, as `| head -0` leaves it.

    Buffered (Python's default for a pipe), output that is not flushed by the
    command meets the closed pipe only when it ends; unbuffered, at once.
    """
    environ = {k: v for k, v in environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        environ["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with trio.fail_after(30):
            return await trio.run_process(
                [sys.executable, "-m", "tower_trio", *argv],
                stdout=write_end,
                capture_stderr=True,
                env=environ,
                check=False,
            )
    finally:
        os.close(write_end)


def write_plugin(plugins_dir: Path, name: str, source: str) -> None:
    (plugins_dir / name).mkdir(parents=True)
    (plugins_dir / name / "watcher.py").write_text(textwrap.dedent(source))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was after a test that configures logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
async def tower(amqp_url: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Tower]:
    async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path / "data")) as tower:
        yield tower


@pytest.mark.usefixtures("restore_logging")
class TestLogRenderer:
    def test_json_lines_have_time_level_logger_event_then_fields(self) -> None:
        """Off a terminal, each event is one JSON object with its fields in call order."""
        stream = io.StringIO()
        configure_logging("INFO", "auto", stream=stream)
        get_logger("tower_trio.test").info("broker.connected", attempt=2, url="amqp://h/")
        (line,) = json_lines(stream.getvalue())
        assert list(line) == ["timestamp", "level", "logger", "event", "attempt", "url"]
        assert line["level"] == "info"
        assert line["logger"] == "tower_trio.test"
        assert line["event"] == "broker.connected"
        assert line["attempt"] == 2
        assert line["timestamp"].endswith("Z")

    def test_console_is_key_value(self) -> None:
        """The console format shows the event and its fields as key=value."""
        stream = io.StringIO()
        configure_logging("INFO", "console", stream=stream)
        get_logger("tower_trio.test").warning("plugin.skipped", plugin="lims")
        line = stream.getvalue()
        assert "plugin.skipped" in line
        assert "plugin=lims" in line
        assert "warning" in line

    def test_auto_is_console_on_a_terminal(self) -> None:
        """On a terminal the default format is the readable one, not JSON."""
        stream = _Terminal()
        configure_logging("INFO", "auto", stream=stream)
        get_logger("tower_trio.test").info("tower.started")
        assert not stream.getvalue().startswith("{")
        assert "tower.started" in stream.getvalue()

    def test_standard_library_records_get_the_same_shape(self) -> None:
        """Hypercorn's and plugins' records are rendered like ours, extras as fields."""
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        logging.getLogger("hypercorn.error").info("Running on %s", "http://127.0.0.1:1")
        logging.getLogger("acme.plugin").warning("odd row", extra={"row": 7})
        first, second = json_lines(stream.getvalue())
        assert first["event"] == "Running on http://127.0.0.1:1"
        assert first["logger"] == "hypercorn.error"
        assert second == {**second, "event": "odd row", "level": "warning", "row": 7}

    def test_trigger_field_carries_its_identity(self) -> None:
        """A trigger passed as trigger= becomes uuid, api_version, protocol and source."""
        from tower_trio._serialization import trigger_from_wire  # noqa: PLC0415

        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        trigger = trigger_from_wire(VALID, source="http")
        get_logger("tower_trio.test").info("trigger.accepted", trigger=trigger)
        (line,) = json_lines(stream.getvalue())
        assert line["uuid"] == trigger.uuid
        assert line["api_version"] == "OT-2/v1alpha1"
        assert line["protocol"] == "PlateTransfer"
        assert line["source"] == "http"

    def test_level_is_honoured(self) -> None:
        """Below the configured level nothing is written, ours or the standard library's."""
        stream = io.StringIO()
        configure_logging("WARNING", "json", stream=stream)
        get_logger("tower_trio.test").info("quiet")
        logging.getLogger("acme").info("quiet too")
        get_logger("tower_trio.test").error("loud")
        assert [line["event"] for line in json_lines(stream.getvalue())] == ["loud"]

    @pytest.mark.parametrize("log_format", ["json", "console"])
    def test_secrets_are_masked_everywhere(self, log_format: str) -> None:
        """Known secrets, secret-named fields and URL passwords never reach a line."""
        stream = io.StringIO()
        configure_logging("INFO", log_format, secrets=["hunter2-pw"], stream=stream)
        log = get_logger("tower_trio.test")
        log.info(
            "connecting",
            url="amqp://lab:hunter2-pw@rabbit/%2F",
            other="https://u:pa55word@lims.example/",
            api_token="tok-123",
            nested={"password": "x-pw", "note": "hunter2-pw"},
            routing_key="OT-2/v1alpha1",
        )
        try:
            raise RuntimeError("refused hunter2-pw")
        except RuntimeError as err:
            log.exception("failed", error=err)
        text = stream.getvalue()
        for secret in ("hunter2-pw", "pa55word", "tok-123", "x-pw"):
            assert secret not in text
        assert "RuntimeError: refused ***" in text
        assert "OT-2/v1alpha1" in text


@pytest.mark.usefixtures("restore_logging")
class TestStartUpSummary:
    def test_no_summary_off_a_terminal(self) -> None:
        """Off a terminal the log lines are the summary; no box is printed."""
        stream = io.StringIO()
        configure_logging("INFO", "auto", stream=stream)
        assert not print_summary("tower-trio", [("broker", "amqp://h/")])
        assert stream.getvalue() == ""

    async def test_tower_prints_one_screen_on_a_terminal(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Started on a terminal, the tower shows version, address, broker without password."""
        stream = _Terminal()
        configure_logging("INFO", "auto", stream=stream)
        settings = tower_settings(amqp_url, broker.exchange, tmp_path)
        async with run_tower(settings) as tower:
            text = stream.getvalue()
        box = text[text.index("┌") :]
        assert "tower-trio " in box
        assert tower.running.http_urls[0] in box
        assert "amqp://guest:***@" in box
        assert broker.exchange in box
        assert str(tmp_path) in box
        assert re.search(r"auth\s+off \(no TOWER_API_TOKENS\)", box)
        assert re.search(r"plugins\s+none", box)
        assert len(box.splitlines()) < 25


@pytest.fixture
def broker_user(amqp_vhost: str) -> Iterator[tuple[str, str]]:
    """A broker user with a distinctive password, removed afterwards."""
    name = f"tower-test-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    rabbitmqctl("add_user", name, password)
    try:
        rabbitmqctl("set_permissions", "-p", amqp_vhost, name, ".*", ".*", ".*")
        yield name, password
    finally:
        rabbitmqctl("delete_user", name)


class TestNoSecretInLogs:
    @pytest.mark.subprocess
    async def test_run_never_logs_the_broker_password_or_a_plugin_key(
        self,
        amqp_vhost: str,
        broker_user: tuple[str, str],
        broker: Broker,
        tmp_path: Path,
    ) -> None:
        """A real tower with a broker password and a leaky plugin's api_key logs neither."""
        user, password = broker_user
        api_key = f"key-{uuid.uuid4().hex}"
        write_plugin(tmp_path / "plugins", "lims", LEAKY_PLUGIN)
        host = os.environ.get("TOWER_TEST_AMQP_HOST", "127.0.0.1:5672")
        environ = cli_environ(
            tmp_path,
            TOWER_AMQP_URL=f"amqp://{user}:{password}@{host}/{amqp_vhost}",
            TOWER_EXCHANGE=broker.exchange,
            TOWER_HTTP_PORT="0",
            TOWER_PLUGINS_DIR=str(tmp_path / "plugins"),
            TOWER_LOG_LEVEL="DEBUG",
            PLUGIN_LIMS_API_KEY=api_key,
        )
        async with open_tower_process(environ) as tower:
            with trio.fail_after(30):
                # Connected to the broker, and the plugin has leaked and crashed once.
                await tower.wait_for("broker.connected")
                await tower.wait_for("plugin.crashed")
                returncode = await tower.terminate()
        text = tower.log
        assert returncode == 0, text
        lines = json_lines(text)
        assert any(line["event"] == "logging in with ***" for line in lines)
        assert any(line["event"] == "plugin.crashed" for line in lines)
        assert password not in text
        assert api_key not in text

    async def test_config_and_plugins_commands_mask_secrets(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`config` and `plugins` show where secrets are set, never their values."""
        write_plugin(tmp_path / "plugins", "lims", LEAKY_PLUGIN)
        environ = cli_environ(
            tmp_path,
            TOWER_AMQP_URL="amqp://lab:s3cret-pw@rabbit:5672/%2F",
            TOWER_PLUGINS_DIR=str(tmp_path / "plugins"),
            TOWER_API_TOKENS="tok-one-0123456789abcdef,tok-two-0123456789abcdef",
            PLUGIN_LIMS_API_KEY="lims-k3y",
        )
        assert await cli("config", environ=environ) == 0
        assert await cli("config", "--json", environ=environ) == 0
        assert await cli("plugins", "--json", environ=environ) == 0
        out = capsys.readouterr().out
        for secret in ("s3cret-pw", "tok-one", "tok-two", "lims-k3y"):
            assert secret not in out
        assert "amqp://lab:***@rabbit:5672/%2F" in out


class TestSend:
    async def test_prints_the_uuid_of_a_published_trigger(
        self, tower: Tower, broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--wait sends with ?wait=published; the printed uuid is the trigger in the queue."""
        queue = await broker.bind("OT-2/v1alpha1")
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        url = tower.running.http_urls[0]
        code = await cli("send", str(tmp_path / "t.json"), "--wait", "--url", url, environ={})
        assert code == 0
        (printed,) = capsys.readouterr().out.split()
        (message,) = await broker.take(queue, 1)
        assert json.loads(message.body)["uuid"] == printed

    async def test_arrays_and_many_files_in_order_with_progress(
        self, tower: Tower, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every trigger of every file is sent in order, with a progress line on request."""
        paths = []
        for n in range(3):
            path = tmp_path / f"batch{n}.json"
            path.write_text(json.dumps([{**VALID, "spec": {"n": n, "i": i}} for i in range(4)]))
            paths.append(str(path))
        url = tower.running.http_urls[0]
        assert await cli("send", *paths, "--progress", "--url", url, environ={}) == 0
        captured = capsys.readouterr()
        uuids = captured.out.split()
        assert len(uuids) == 12
        assert captured.err.splitlines()[-1] == "sent 12/12"
        for expected, printed in enumerate(uuids):
            body = (await tower.client.get(f"/triggers/{printed}")).json()
            assert body["spec"] == {"n": expected // 4, "i": expected % 4}

    async def test_reads_standard_input(
        self, tower: Tower, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`-` reads the trigger from standard input."""
        stdin = io.TextIOWrapper(io.BytesIO(json.dumps(VALID).encode()))
        monkeypatch.setattr(sys, "stdin", stdin)
        assert await cli("send", "-", "--url", tower.running.http_urls[0], environ={}) == 0
        assert len(capsys.readouterr().out.split()) == 1

    async def test_idempotency_key_gives_the_same_uuid_twice(
        self, tower: Tower, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Sending again with the same key returns the first trigger instead of a new one."""
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        argv = ("send", str(tmp_path / "t.json"), "--idempotency-key", "run-42")
        url = tower.running.http_urls[0]
        assert await cli(*argv, "--url", url, environ={}) == 0
        assert await cli(*argv, "--url", url, environ={}) == 0
        first, second = capsys.readouterr().out.split()
        assert first == second

    async def test_rejected_trigger_is_one_line_and_exit_one(
        self, tower: Tower, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A trigger the tower refuses is reported with the tower's reasons; the rest still go."""
        (tmp_path / "t.json").write_text(json.dumps([{**VALID, "spec": 5}, VALID]))
        url = tower.running.http_urls[0]
        assert await cli("send", str(tmp_path / "t.json"), "--url", url, environ={}) == 1
        captured = capsys.readouterr()
        assert len(captured.out.split()) == 1
        assert captured.err.strip() == (
            f"tower-trio: error: {tmp_path / 't.json'}[0]: 422 invalid trigger: "
            "spec: must be a JSON object of protocol parameters"
        )

    async def test_unroutable_with_wait_is_a_failure(
        self, tower: Tower, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With --wait, a trigger no queue is bound for is named and the exit is 1."""
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        url = tower.running.http_urls[0]
        code = await cli("send", str(tmp_path / "t.json"), "--wait", "--url", url, environ={})
        assert code == 1
        assert "was unroutable" in capsys.readouterr().err

    async def test_token_comes_from_tower_token(
        self,
        amqp_url: str,
        broker: Broker,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A tower with API tokens takes the one in TOWER_TOKEN and refuses a missing one."""
        token = "cli-test-token-0123456789abcdef"
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path / "data", api_tokens=Tokens.of([token])
        )
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        async with run_tower(settings) as tower:
            argv = ("send", str(tmp_path / "t.json"), "--url", tower.running.http_urls[0])
            assert await cli(*argv, environ={}) == 1
            assert capsys.readouterr().err.startswith(
                f"tower-trio: error: {tmp_path / 't.json'}: 401"
            )
            assert await cli(*argv, environ={"TOWER_TOKEN": token}) == 0
            assert len(capsys.readouterr().out.split()) == 1

    async def test_unreachable_tower_exits_three(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Nothing listening at the address: one line, exit 3, no traceback."""
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        environ = cli_environ(tmp_path, TOWER_HTTP_PORT=str(unused_port()))
        assert await cli("send", str(tmp_path / "t.json"), environ=environ) == 3
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("tower-trio: error: cannot reach the tower at http://127.0.0.1:")


class TestErrorLines:
    async def test_send_reports_each_failure_as_an_error_line(
        self, tower: Tower, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every per-trigger and per-file failure of `send` is one `tower-trio: error:` line."""
        (tmp_path / "batch.json").write_text(json.dumps([{**VALID, "spec": 5}, VALID]))
        (tmp_path / "broken.json").write_text("{")
        files = [str(tmp_path / name) for name in ("batch.json", "broken.json", "missing.json")]
        url = tower.running.http_urls[0]
        assert await cli("send", *files, "--no-progress", "--url", url, environ={}) == 1
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 3, lines
        assert all(line.startswith("tower-trio: error: ") for line in lines), lines
        assert f"tower-trio: error: {files[0]}[0]: 422 invalid trigger" in lines[-1]

    async def test_send_unroutable_is_an_error_line(
        self, tower: Tower, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A trigger --wait saw unroutable is reported as a `tower-trio: error:` line."""
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        url = tower.running.http_urls[0]
        code = await cli("send", str(tmp_path / "t.json"), "--wait", "--url", url, environ={})
        assert code == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"tower-trio: error: {tmp_path / 't.json'}: ")
        assert line.endswith(" was unroutable")

    def test_error_line_leaves_the_progress_line_on_a_terminal(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal, an error line starts on a line of its own, after the progress line."""
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        progress = _Progress(3, terminal, enabled=True)
        progress.step(ok=True)
        progress.error("t.json[1]: 422 invalid trigger: spec: must not be empty")
        last = terminal.getvalue().split("\n")[-2]
        assert last == "tower-trio: error: t.json[1]: 422 invalid trigger: spec: must not be empty"

    async def test_triggers_errors_are_error_lines(
        self, tower: Tower, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`triggers get` of an unknown uuid and a bad --limit are `tower-trio: error:` lines."""
        url = tower.running.http_urls[0]
        assert await cli("triggers", "get", "0" * 32, "--url", url, environ={}) == 1
        assert await cli("triggers", "list", "--limit", "0", "--url", url, environ={}) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 2, lines
        assert all(line.startswith("tower-trio: error: ") for line in lines), lines

    def test_validate_reports_on_stdout_only(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`validate` prints its report on stdout as documented; stderr stays empty."""
        (tmp_path / "bad.json").write_text(json.dumps({**VALID, "spec": 5}))
        assert main(["validate", str(tmp_path / "bad.json")], {}) == 1
        captured = capsys.readouterr()
        assert captured.err == ""
        assert (
            captured.out
            == f"{tmp_path / 'bad.json'}: spec: must be a JSON object of protocol parameters\n"
        )


@pytest.mark.subprocess
class TestClosedStdout:
    async def test_send_stops_quietly(self, tower: Tower, tmp_path: Path) -> None:
        """`send | head -0` exits 141 without a word on stderr and sends nothing more."""
        (tmp_path / "t.json").write_text(
            json.dumps([{**VALID, "spec": {"n": n}} for n in range(3)])
        )
        argv = ("send", str(tmp_path / "t.json"), "--url", tower.running.http_urls[0])
        result = await run_into_closed_pipe(*argv, environ=cli_environ(tmp_path))
        assert (result.returncode, result.stderr.decode()) == (141, "")
        # The first trigger went before its uuid could be printed; the rest stayed home.
        listed = (await tower.client.get("/triggers")).json()
        assert len(listed["items"]) == 1

    @pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
    async def test_triggers_get_exits_quietly(
        self, buffered: bool, tower: Tower, tmp_path: Path
    ) -> None:
        """`triggers get UUID | head -0` exits 141 without a word on stderr."""
        posted = (await tower.client.post("/triggers", json=VALID)).json()
        argv = ("triggers", "get", posted["uuid"], "--url", tower.running.http_urls[0])
        result = await run_into_closed_pipe(*argv, environ=cli_environ(tmp_path), buffered=buffered)
        assert (result.returncode, result.stderr.decode()) == (141, "")

    @pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
    async def test_config_exits_quietly(self, buffered: bool, tmp_path: Path) -> None:
        """`config | head -0`, an offline command, also ends quietly with 141."""
        environ = cli_environ(tmp_path)
        result = await run_into_closed_pipe("config", environ=environ, buffered=buffered)
        assert (result.returncode, result.stderr.decode()) == (141, "")

    @pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
    async def test_help_exits_quietly(self, buffered: bool, tmp_path: Path) -> None:
        """`--help | head -0` prints nothing on stderr."""
        environ = cli_environ(tmp_path)
        result = await run_into_closed_pipe("--help", environ=environ, buffered=buffered)
        assert result.stderr.decode() == ""
        # Unbuffered, argparse's own write fails and argparse ignores it (exit 0);
        # buffered, the text meets the closed pipe in main's flush (141).
        assert result.returncode == (141 if buffered else 0)


class TestValidate:
    def test_valid_files_exit_zero(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Valid files, single or arrays, are reported ok."""
        (tmp_path / "one.json").write_text(json.dumps(VALID))
        (tmp_path / "two.json").write_text(json.dumps([VALID, VALID]))
        code = main(["validate", str(tmp_path / "one.json"), str(tmp_path / "two.json")], {})
        assert code == 0
        assert capsys.readouterr().out.splitlines() == [
            f"{tmp_path / 'one.json'}: ok",
            f"{tmp_path / 'two.json'}: ok (2 triggers)",
        ]

    def test_every_reason_of_every_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Invalid triggers, broken JSON and missing files each get their reasons; exit 1."""
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([VALID, {"protocol": "P", "spec": 5}]))
        broken = tmp_path / "broken.json"
        broken.write_text("{")
        missing = tmp_path / "missing.json"
        code = main(["validate", str(bad), str(broken), str(missing)], {})
        assert code == 1
        out = capsys.readouterr().out.splitlines()
        assert f"{bad}[1]: apiVersion: is required" in out
        assert f"{bad}[1]: spec: must be a JSON object of protocol parameters" in out
        assert not any(line.startswith(f"{bad}[0]") for line in out)
        assert any(line.startswith(f"{broken}: malformed JSON: ") for line in out)
        assert f"{missing}: cannot read: No such file or directory" in out

    def test_body_limit_applies(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A trigger larger than TOWER_MAX_BODY_BYTES is refused, as the API would."""
        (tmp_path / "big.json").write_text(json.dumps(VALID))
        assert main(["validate", str(tmp_path / "big.json")], {"TOWER_MAX_BODY_BYTES": "10"}) == 1
        assert "larger than 10 bytes (TOWER_MAX_BODY_BYTES)" in capsys.readouterr().out

    def test_protocol_schemas_apply(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With TOWER_SCHEMAS_DIR, a spec that breaks its protocol's schema is refused."""
        schema_dir = tmp_path / "schemas" / "OT-2" / "v1alpha1"
        schema_dir.mkdir(parents=True)
        (schema_dir / "PlateTransfer.json").write_text(
            json.dumps({"type": "object", "required": ["source"]})
        )
        (tmp_path / "t.json").write_text(json.dumps(VALID))
        environ = {"TOWER_SCHEMAS_DIR": str(tmp_path / "schemas")}
        assert main(["validate", str(tmp_path / "t.json")], environ) == 1
        (line,) = capsys.readouterr().out.splitlines()
        assert line.startswith(f"{tmp_path / 't.json'}: spec")
        assert "'source' is a required property" in line


class TestTriggers:
    async def test_get_prints_the_trigger_with_its_status(
        self, tower: Tower, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`triggers get` prints the journal's record as JSON."""
        posted = (await tower.client.post("/triggers", json=VALID)).json()
        url = tower.running.http_urls[0]
        assert await cli("triggers", "get", posted["uuid"], "--url", url, environ={}) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["uuid"] == posted["uuid"]
        assert "status" in shown

    async def test_get_unknown_uuid_exits_one(
        self, tower: Tower, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown uuid is the tower's 404 on one line, exit 1."""
        url = tower.running.http_urls[0]
        assert await cli("triggers", "get", "0" * 32, "--url", url, environ={}) == 1
        assert capsys.readouterr().err.startswith("tower-trio: error: 404 no such trigger")

    async def test_list_filters_and_prints_one_line_each(
        self, tower: Tower, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`triggers list` filters by protocol and prints one line (or JSON object) per trigger."""
        for protocol in ("PlateTransfer", "Mix", "Mix"):
            await tower.client.post("/triggers", json={**VALID, "protocol": protocol})
        url = tower.running.http_urls[0]
        assert await cli("triggers", "list", "--protocol", "Mix", "--url", url, environ={}) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2
        assert all(" Mix " in line and line.endswith("http") for line in lines)
        argv = ("triggers", "list", "--json", "--limit", "1", "--url", url)
        assert await cli(*argv, environ={}) == 0
        (line,) = capsys.readouterr().out.splitlines()
        assert json.loads(line)["protocol"] == "Mix"

    async def test_every_status_the_cli_offers_is_one_the_api_accepts(
        self, tower: Tower, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`triggers list --status` offers exactly the statuses GET /triggers filters by."""
        offered = _status_choices()
        document = openapi_document()
        (parameter,) = [
            p for p in document["paths"]["/triggers"]["get"]["parameters"] if p["name"] == "status"
        ]
        assert sorted(offered) == sorted(s.value for s in DeliveryStatus)
        assert sorted(offered) == sorted(parameter["schema"]["enum"])
        url = tower.running.http_urls[0]
        for status in offered:
            assert await cli("triggers", "list", "--status", status, "--url", url, environ={}) == 0
        capsys.readouterr()


def _status_choices() -> list[str]:
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    triggers = commands.choices["triggers"]
    (lookups,) = [a for a in triggers._actions if isinstance(a, argparse._SubParsersAction)]
    (status,) = [a for a in lookups.choices["list"]._actions if a.dest == "status"]
    return list(status.choices or ())


class TestPlugins:
    def test_lists_state_and_variables(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each plugin shows whether its config is complete and the variables it reads."""
        write_plugin(tmp_path / "plugins", "lims", CONFIGURED_PLUGIN)
        environ = {"TOWER_PLUGINS_DIR": str(tmp_path / "plugins")}
        assert main(["plugins"], environ) == 0
        out = capsys.readouterr().out
        assert "lims: incomplete, does not run" in out
        assert "PLUGIN_LIMS_API_KEY is not set; the lims plugin needs it" in out
        assert "PLUGIN_LIMS_API_KEY  required, not set" in out
        assert "PLUGIN_LIMS_INTERVAL  optional, not set" in out

        assert main(["plugins", "--json"], {**environ, "PLUGIN_LIMS_API_KEY": "k"}) == 0
        # An installed tower-trio lists its built-in plugins too.
        (entry,) = [
            p for p in json.loads(capsys.readouterr().out)["plugins"] if p["name"] == "lims"
        ]
        assert entry["state"] == "ready"
        assert entry["runs"] is True

    @pytest.mark.parametrize(
        "variables",
        [
            pytest.param({"TOWER_PLUGINS": "lims"}, id="named-incomplete"),
            pytest.param({"TOWER_PLUGINS": "nope"}, id="not-installed"),
            pytest.param(
                {"PLUGIN_LIMS_API_KEY": "k", "PLUGIN_LIMS_INTERVAL": "often"}, id="invalid"
            ),
        ],
    )
    def test_exit_one_when_run_would_refuse(
        self, variables: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exit 1 whenever `run` would refuse to start because of its plugins."""
        write_plugin(tmp_path / "plugins", "lims", CONFIGURED_PLUGIN)
        environ = {"TOWER_PLUGINS_DIR": str(tmp_path / "plugins"), **variables}
        assert main(["plugins"], environ) == 1
        capsys.readouterr()

    def test_broken_plugin_is_listed_with_its_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A plugin that cannot be imported is listed as invalid naming its file; exit 1."""
        write_plugin(tmp_path / "plugins", "bad", "async def run(:\n")
        assert main(["plugins"], {"TOWER_PLUGINS_DIR": str(tmp_path / "plugins")}) == 1
        out = capsys.readouterr().out
        assert "bad: invalid, does not run" in out
        assert (
            f"cannot import plugin 'bad' from {tmp_path / 'plugins' / 'bad' / 'watcher.py'}" in out
        )

    def test_broken_plugin_left_out_does_not_stop_the_others(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With TOWER_PLUGINS naming others, a plugin whose run() takes `channel` is let be."""
        write_plugin(tmp_path / "plugins", "bad", "async def run(channel):\n    pass\n")
        write_plugin(tmp_path / "plugins", "lims", CONFIGURED_PLUGIN)
        environ = {
            "TOWER_PLUGINS_DIR": str(tmp_path / "plugins"),
            "TOWER_PLUGINS": "lims",
            "PLUGIN_LIMS_API_KEY": "k",
        }
        assert main(["plugins"], environ) == 0
        out = capsys.readouterr().out
        assert "bad: invalid, does not run" in out
        assert "run(send_channel, config, state)" in out


class TestConfig:
    def test_shows_values_and_where_they_come_from(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each setting is shown with its value and whether it is a default."""
        assert main(["config", "--json"], {"TOWER_HTTP_PORT": "9001"}) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["TOWER_HTTP_PORT"] == {"value": "9001", "source": "environment"}
        assert shown["TOWER_EXCHANGE"] == {"value": "tower.triggers", "source": "default"}
        assert shown["TOWER_AMQP_URL"]["value"] == "amqp://guest:***@localhost:5672/%2F"

    @pytest.mark.parametrize(
        "password",
        ["s3cret/pw-tail", "s3cret?pw-tail", "s3cret#pw-tail", "s3cret@pw-tail", "4567/s3cret"],
    )
    def test_url_password_never_shown(
        self, password: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The broker password is not shown, whole or in pieces, even when the URL is invalid."""
        environ = {"TOWER_AMQP_URL": f"amqp://lab:{password}@rabbit:5672/%2F"}
        assert main(["config"], environ) == 0
        assert main(["config", "--json"], environ) == 0
        out = capsys.readouterr().out
        pieces = {piece for piece in re.split(r"[/?#@]", password) if len(piece) >= 3}
        for piece in {password, *pieces}:
            assert piece not in out
        shown = json.loads(out[out.index("{") :])["TOWER_AMQP_URL"]["value"]
        if "@" in password:
            assert shown == "amqp://lab:***@rabbit:5672/%2F"
        else:
            assert shown.startswith("(invalid URL, not shown: invalid AMQP URL: ")
            assert "percent-encode" in shown

    def test_bad_setting_exits_two(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid setting is the one-line configuration error, exit 2."""
        assert main(["config"], {"TOWER_HTTP_PORT": "eighty"}) == 2
        assert capsys.readouterr().err == (
            "tower-trio: error: TOWER_HTTP_PORT='eighty' is invalid: is not a number\n"
        )


class TestUsage:
    @pytest.mark.parametrize(
        "argv",
        [
            ["--help"],
            ["run", "--help"],
            ["send", "--help"],
            ["validate", "--help"],
            ["plugins", "--help"],
            ["config", "--help"],
            ["triggers", "--help"],
            ["triggers", "get", "--help"],
            ["triggers", "list", "--help"],
        ],
        ids=" ".join,
    )
    def test_every_command_has_help(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every subcommand explains itself with --help and exits 0."""
        with pytest.raises(SystemExit) as excinfo:
            main(argv, {})
        assert excinfo.value.code == 0
        assert capsys.readouterr().out.startswith("usage: tower-trio")

    def test_usage_error_exits_two(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing argument is a usage error: exit 2."""
        with pytest.raises(SystemExit) as excinfo:
            main(["send"], {})
        assert excinfo.value.code == 2
        assert "the following arguments are required: FILE" in capsys.readouterr().err


class TestCollector:
    def test_run_freezes_start_up_and_collects_less_often(self) -> None:
        """`run` leaves start-up objects to no collection and the youngest generation to fewer."""
        thresholds = gc.get_threshold()
        try:
            _tune_collector()
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold()[0] >= 5 * thresholds[0]
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
