"""Fixtures of the console's browser tests: the system Chromium, a tower, the broker.

The browser is Debian's Chromium, driven by Playwright's sync API with its
``executable_path`` (no ``playwright install``). Playwright blocks the test's
thread, so everything trio (the tower's log reader, the TCP relay, the AMQP
consumer) runs in a portal thread (``tests/console/_portal.py``).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests._helpers import Broker
from tests._towers import TowerProcess, Towers, tower_environ
from tests.console._portal import Portal, open_portal
from tests.test_guarantees import Relay
from tower_trio import amqp

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = Path(os.environ.get("TOWER_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = os.environ.get("TOWER_CONSOLE_SCREENSHOTS", "")
"""A folder: the tests save PNGs of the console's main views there (``just screenshots``)."""

TIMEOUT_MS = 5_000
"""Playwright's bound for each action and assertion: every wait is for an event, never a sleep."""

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

PLATE_SCHEMA = {
    "type": "object",
    "properties": {
        "volume": {
            "type": "number",
            "minimum": 1,
            "maximum": 300,
            "multipleOf": 5,
            "description": "microlitres per well",
        },
        "tip": {"enum": ["new", "reuse"]},
        "mix": {"type": "boolean"},
    },
    "required": ["volume"],
}


def write_schemas(directory: Path) -> Path:
    """A schemas folder: PlateTransfer with simple fields, Read with an array (JSON editor)."""
    plate = directory / "OT-2" / "v1alpha1" / "PlateTransfer.json"
    plate.parent.mkdir(parents=True)
    plate.write_text(json.dumps(PLATE_SCHEMA))
    read = directory / "TecanSpark" / "v1alpha1" / "Read.json"
    read.parent.mkdir(parents=True)
    read.write_text(
        json.dumps({"type": "object", "properties": {"wavelengths": {"type": "array"}}})
    )
    return directory


def short_id() -> str:
    return uuid.uuid4().hex[:10]


@attrs.define
class Gate(Relay):
    """A relay to the broker that can be shut (dropping and refusing connections) and reopened."""

    is_open: bool = True

    async def _link(self, client: trio.SocketStream) -> None:
        if not self.is_open:
            await client.aclose()
            return
        await super()._link(client)

    def shut(self) -> None:
        self.is_open = False
        self.cut()

    def reopen(self) -> None:
        self.is_open = True


async def serve_broker(
    amqp_url: str, exchange: str, *, task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED
) -> None:
    """A channel to bind and consume with until cancelled; then the queues and exchange go."""
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel() as channel,
    ):
        broker = Broker(channel, exchange)
        try:
            task_status.started(broker)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for queue in broker.queues:
                    await channel.queue_delete(queue)
                await channel.exchange_delete(exchange)


@attrs.define
class Console:
    """A running ``tower-trio run`` and the test's ways to reach it."""

    portal: Portal
    towers: Towers
    tower: TowerProcess
    broker: Broker
    http: httpx.Client
    inbox: Path

    @property
    def url(self) -> str:
        return self.tower.url

    def bind(self, routing_key: str) -> str:
        return self.portal.run(self.broker.bind, routing_key)

    def take(self, queue: str, count: int) -> list[amqp.Message]:
        return self.portal.run(self.broker.take, queue, count)

    def count(self, queue: str) -> int:
        return self.portal.run(self.broker.count, queue)

    def post(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """POST /triggers as a client would; the 202's JSON."""
        response = self.http.post("/triggers", json=body, **kwargs)
        assert response.status_code == 202, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def portal() -> Iterator[Portal]:
    with open_portal() as portal:
        yield portal


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium; its absence fails the tests with the command that installs it."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"the console's browser tests need Chromium at {CHROMIUM}: install it with "
            "`apt-get install -y chromium` (or set TOWER_TEST_CHROMIUM to its path)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


CONSOLE_INSTANCE = "tower-a"
"""The name of the towers the browser tests start."""


def start_console(
    portal: Portal,
    amqp_url: str,
    data_dir: Path,
    *,
    broker_url: str | None = None,
    **environ: str,
) -> Console:
    """A tower on port 0 with its own exchange, the test schemas and the example plugin."""
    exchange = f"test.console.{short_id()}"
    inbox = data_dir / "inbox.txt"
    variables = {
        "TOWER_AMQP_URL": broker_url or amqp_url,
        "TOWER_EXCHANGE": exchange,
        "TOWER_DATA_DIR": str(data_dir / "data"),
        "TOWER_SCHEMAS_DIR": str(write_schemas(data_dir / "schemas")),
        "TOWER_LOG_FORMAT": "json",
        "TOWER_INSTANCE": CONSOLE_INSTANCE,
        "PLUGIN_EXAMPLE_PATH": str(inbox),
        "PLUGIN_EXAMPLE_INTERVAL": "0.1",
        **environ,
    }
    broker = portal.start(serve_broker, amqp_url, exchange)
    towers = Towers(portal.nursery, tower_environ(**variables))
    tower = portal.run(towers.start)
    http = httpx.Client(base_url=tower.url, timeout=TIMEOUT_MS / 1000)
    return Console(portal, towers, tower, broker, http, inbox)


def stop_console(console: Console) -> None:
    console.http.close()
    codes = console.portal.run(console.towers.terminate_running)
    assert codes == [0], console.towers.logs


@pytest.fixture(scope="module")
def console(
    portal: Portal, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """One tower for the module's tests; each test keeps to a device (apiVersion) of its own."""
    started = start_console(portal, amqp_url, tmp_path_factory.mktemp("console"))
    try:
        yield started
    finally:
        stop_console(started)


@attrs.define
class Problems:
    """What went wrong inside the page: uncaught errors and Content-Security-Policy refusals."""

    found: list[str] = attrs.Factory(list)


def open_page(
    browser: Browser, viewport: dict[str, int], problems: Problems, **options: Any
) -> Page:
    context = browser.new_context(viewport=viewport, **options)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.found.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.found.append(f"console: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    return page


@pytest.fixture
def problems() -> Iterator[Problems]:
    """Fails the test if its pages threw or broke the Content-Security-Policy."""
    found = Problems()
    yield found
    assert found.found == []


@pytest.fixture
def page(chromium: Browser, problems: Problems) -> Iterator[Page]:
    """A fresh browser context at 1280 x 800 in a time zone far from UTC."""
    page = open_page(chromium, DESKTOP, problems, timezone_id="Asia/Kathmandu")
    try:
        yield page
    finally:
        page.context.close()


def screenshot(target: Page | Any, name: str) -> None:
    """Saves ``name``.png into TOWER_CONSOLE_SCREENSHOTS when it is set (``just screenshots``)."""
    if not SCREENSHOTS:
        return
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(folder / f"{name}.png"), animations="disabled")


expect.set_options(timeout=TIMEOUT_MS)
