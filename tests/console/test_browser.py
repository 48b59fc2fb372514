"""The console in a real browser: Debian's Chromium, a real ``tower-trio run``, the real broker.

Each test keeps to a device (apiVersion) of its own on a tower shared by the
module, or starts its own tower when it needs other settings (tokens, a
broker behind a relay it can cut). Every wait is one of Playwright's
auto-waiting assertions, bounded by ``TIMEOUT_MS``; none sleeps.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.console.conftest import (
    CONSOLE_INSTANCE,
    DESKTOP,
    PHONE,
    Console,
    Gate,
    Problems,
    open_page,
    screenshot,
    short_id,
    start_console,
    stop_console,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.console._portal import Portal

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

ZONE = "Asia/Kathmandu"  # the page fixture's time zone: UTC+05:45, far from the tower's UTC

RECORD_STATUSES = """() => {
  // Every status each row of the feed has shown, in order.
  window.statuses = {};
  const seen = (tr) => {
    const list = (window.statuses[tr.dataset.uuid] ??= []);
    if (list.at(-1) !== tr.dataset.status) list.push(tr.dataset.status);
  };
  const tbody = document.querySelector("#triggers tbody");
  new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") seen(record.target);
      for (const node of record.addedNodes) if (node.dataset?.uuid) seen(node);
    }
  }).observe(tbody, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-status"],
  });
}"""


UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((control) => control.getClientRects().length > 0)
  .filter((control) => !(
    control.labels?.length
    || control.getAttribute("aria-label")
    || control.getAttribute("aria-labelledby")
    || (control.tagName === "BUTTON" && control.textContent.trim())
  ))
  .map((control) => control.outerHTML.slice(0, 120))"""
"""The visible controls that have no label, by their HTML."""


def new_device() -> str:
    return f"OT-2/v1alpha1/t-{short_id()}"


def trigger(device: str, volume: int = 100, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": device, "protocol": "PlateTransfer", "spec": {"volume": volume}, **fields}


def open_console(page: Page, console: Console, path: str = "/console") -> None:
    """Opens the page and waits until it streams and shows its first listing."""
    page.goto(console.url + path)
    expect(page.locator("#stream")).to_have_attribute("data-state", "live")
    expect(page.locator("#triggers")).to_have_attribute("aria-busy", "false")


def row_of(page: Page, uuid: str) -> Locator:
    return page.locator(f'#triggers tbody tr[data-uuid="{uuid}"]')


def rows_of_device(page: Page, device: str) -> Locator:
    return page.locator("#triggers tbody tr").filter(
        has=page.locator("td.device", has_text=re.compile(f"^{re.escape(device)}$"))
    )


class TestFeed:
    def test_a_posted_trigger_appears_live_and_turns_published(
        self, console: Console, page: Page
    ) -> None:
        """A trigger POSTed by a client shows within 2 s without reload, pending then published."""
        device = new_device()
        console.bind(device)
        open_console(page, console)
        page.evaluate(RECORD_STATUSES)
        posted = console.post(trigger(device))
        row = row_of(page, posted["uuid"])
        expect(row).to_be_visible(timeout=2_000)
        expect(row).to_have_attribute("data-status", "published")
        expect(row.locator("td.state")).to_have_text(re.compile("published"))
        assert page.evaluate("uuid => window.statuses[uuid]", posted["uuid"]) == [
            "pending",
            "published",
        ]
        expect(row.locator("td.source")).to_have_text("http")
        expect(row.locator("td.device")).to_have_text(device)
        expect(row.locator("td.protocol")).to_have_text("PlateTransfer")
        # The time is the tower's UTC instant, shown in the browser's own zone.
        created = datetime.fromisoformat(posted["createdAt"].replace("Z", "+00:00"))
        local = created.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
        expect(row.locator("time")).to_have_text(local)
        expect(row.locator("time")).to_have_attribute("datetime", posted["createdAt"])

    def test_a_plugin_trigger_appears_with_its_source(self, console: Console, page: Page) -> None:
        """A line for the example plugin shows as a row whose source is the plugin's name."""
        protocol = f"Line{short_id()}"
        open_console(page, console)
        with console.inbox.open("a") as inbox:
            inbox.write(f'{protocol} {{"volume": 7}}\n')
        row = page.locator("#triggers tbody tr").filter(
            has=page.locator("td.protocol", has_text=protocol)
        )
        expect(row).to_have_count(1)
        expect(row.locator("td.source")).to_have_text("example")

    def test_the_device_filter_hides_other_devices_listed_and_live(
        self, console: Console, page: Page
    ) -> None:
        """Filtering by apiVersion hides other devices' rows, listed and arriving live."""
        mine, other = new_device(), new_device()
        console.post(trigger(mine))
        console.post(trigger(other))
        open_console(page, console)
        expect(rows_of_device(page, other)).to_have_count(1)
        page.get_by_label("Device (apiVersion)").fill(mine)
        page.get_by_role("button", name="Apply filters").click()
        expect(rows_of_device(page, other)).to_have_count(0)
        expect(rows_of_device(page, mine)).to_have_count(1)
        assert "apiVersion=" in page.url
        # Live: the other device's trigger goes out first; once mine shows, it would have too.
        console.post(trigger(other))
        console.post(trigger(mine))
        expect(rows_of_device(page, mine)).to_have_count(2)
        expect(rows_of_device(page, other)).to_have_count(0)
        # The filter is in the URL: a reload keeps it.
        page.reload()
        expect(page.get_by_label("Device (apiVersion)")).to_have_value(mine)
        expect(rows_of_device(page, mine)).to_have_count(2)
        expect(rows_of_device(page, other)).to_have_count(0)

    def test_an_idempotency_key_search_shows_its_trigger(
        self, console: Console, page: Page
    ) -> None:
        """A search for an Idempotency-Key lists the one trigger sent with it."""
        key = f"run-{short_id()}"
        posted = console.post(trigger(new_device()), headers={"Idempotency-Key": key})
        console.post(trigger(new_device()))
        open_console(page, console)
        page.get_by_label("Find by uuid or Idempotency-Key").fill(key)
        page.get_by_role("button", name="Find", exact=True).click()
        expect(page.locator("#triggers tbody tr")).to_have_count(1)
        expect(row_of(page, posted["uuid"])).to_be_visible()

    def test_older_pages_load_until_the_page_holds_500_rows_then_the_oldest_go(
        self, console: Console, page: Page
    ) -> None:
        """ "Load older" pages back by the listing's cursor; past 500 rows the oldest leave."""
        device = new_device()
        bulk = {"apiVersion": device, "protocol": "Bulk"}
        for n in range(501):
            console.post({**bulk, "spec": {"n": n}})
        open_console(page, console, f"/console?apiVersion={quote(device, safe='')}")
        rows = page.locator("#triggers tbody tr")
        more = page.get_by_role("button", name="Load older triggers")
        expect(rows).to_have_count(100)
        for shown in (200, 300, 400, 500):
            more.click()
            expect(rows).to_have_count(shown)
        expect(more).to_be_hidden()
        expect(page.locator("#cap")).to_be_visible()
        oldest_shown = rows.last.get_attribute("data-uuid")
        newest = console.post({**bulk, "spec": {"n": 501}})
        expect(rows.first).to_have_attribute("data-uuid", newest["uuid"])
        expect(rows).to_have_count(500)
        expect(row_of(page, oldest_shown or "")).to_have_count(0)


class TestDetail:
    def test_a_uuid_search_opens_the_detail_and_escape_closes_it(
        self, console: Console, page: Page
    ) -> None:
        """A uuid in the search box opens its detail (linkable); Escape closes it, focus returns."""
        device = new_device()
        console.bind(device)
        posted = console.post(trigger(device, volume=45))
        uuid = posted["uuid"]
        open_console(page, console)
        search = page.get_by_label("Find by uuid or Idempotency-Key")
        dashed = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
        search.fill(dashed)
        search.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(page).to_have_url(re.compile(f"#/triggers/{uuid}$"))
        expect(dialog.locator(".detail-head code.uuid")).to_have_text(uuid)
        expect(dialog.get_by_role("heading", name="PlateTransfer")).to_be_visible()
        body = dialog.get_by_label("The trigger's body as published, JSON")
        expect(body).to_contain_text('"volume": 45')
        expect(body).not_to_contain_text("attempts")
        expect(dialog.locator("dd").filter(has_text="published").first).to_be_visible()
        expect(dialog.get_by_text(console.broker.exchange, exact=True)).to_be_visible()
        expect(dialog.get_by_text(device, exact=True).first).to_be_visible()  # the routing key
        expect(dialog.get_by_text("message_id")).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(search).to_be_focused()
        assert "#/triggers/" not in page.url

    def test_a_plate_trigger_shows_its_wells_column_first(
        self, console: Console, page: Page
    ) -> None:
        """A plate trigger's detail has a rows x columns grid; hover and focus show each spec."""
        specs = [{"volume": 5 * (n + 1)} for n in range(6)]
        posted = console.post(
            {
                "apiVersion": new_device(),
                "protocol": "PlateTransfer",
                "plate": {"rows": 2, "columns": 3},
                "spec": specs,
            }
        )
        # Linked straight to the detail.
        page.goto(f"{console.url}/console#/triggers/{posted['uuid']}")
        dialog = page.get_by_role("dialog")
        wells = dialog.locator("button.well")
        expect(wells).to_have_count(6)
        expect(dialog.locator("table.wells tbody th")).to_have_text(["A", "B"])
        expect(dialog.locator("table.wells thead th")).to_have_text(["1", "2", "3"])
        info = dialog.locator("#d-well-info")
        # Column-first: B1 is well 1, A2 is well 2.
        dialog.locator('button.well[data-well="B1"]').hover()
        expect(info).to_have_text('B1 (well 1): {"volume":10}')
        a1 = dialog.locator('button.well[data-well="A1"]')
        a1.focus()
        expect(info).to_have_text('A1 (well 0): {"volume":5}')
        page.keyboard.press("ArrowRight")
        expect(dialog.locator('button.well[data-well="A2"]')).to_be_focused()
        expect(info).to_have_text('A2 (well 2): {"volume":15}')
        page.keyboard.press("ArrowDown")
        expect(info).to_have_text('B2 (well 3): {"volume":20}')

    def test_retry_of_an_unroutable_trigger_after_binding_delivers_it_once(
        self, console: Console, page: Page
    ) -> None:
        """Unroutable, then a queue is bound and Retry pressed: the queue gets it exactly once."""
        device = new_device()
        posted = console.post(trigger(device))
        uuid = posted["uuid"]
        open_console(page, console)
        row = row_of(page, uuid)
        expect(row).to_have_attribute("data-status", "unroutable")
        row.get_by_role("link").click()
        dialog = page.get_by_role("dialog")
        retry = dialog.get_by_role("button", name="Retry")
        expect(retry).to_be_visible()
        queue = console.bind(device)
        retry.click()
        expect(dialog.locator("#d-outcome")).to_have_attribute("data-outcome", "202")
        expect(dialog.locator("#d-outcome")).to_contain_text("Retried")
        expect(row).to_have_attribute("data-status", "published")
        expect(dialog.locator(".detail-head .status")).to_have_attribute("data-status", "published")
        expect(retry).to_have_count(0)
        (message,) = console.take(queue, 1)
        assert message.properties.message_id == uuid
        assert console.count(queue) == 0
        # Published now: another retry is refused, and nothing more is sent.
        again = console.http.post(f"/triggers/{uuid}/retry")
        assert again.status_code == 409
        record = console.http.get(f"/triggers/{uuid}").json()
        assert record["retries"] == 1
        assert console.count(queue) == 0


class TestSources:
    def test_the_panel_shows_broker_journal_and_plugins_with_words(
        self, console: Console, page: Page
    ) -> None:
        """Broker, journal and plugins show red/amber/green as a word too; skipped ones a reason."""
        open_console(page, console)
        broker = page.locator("#source-broker")
        expect(broker).to_have_attribute("data-health", "green")
        expect(broker.locator(".health")).to_have_text(re.compile("OK"))
        expect(broker.locator(".state")).to_have_text("connected")
        expect(page.locator("#source-journal .health")).to_be_visible()
        example = page.locator("#source-plugin-example")
        expect(example.locator(".state")).to_have_text("running")
        expect(example.locator(".health")).to_have_text(re.compile("OK"))
        skipped = page.locator(".card").filter(has=page.locator(".state", has_text="skipped"))
        expect(skipped.first).to_be_visible()
        for card in skipped.all():
            expect(card.locator("dt", has_text="Reason")).to_be_visible()
            expect(card.locator(".health")).to_have_text(re.compile("Not running"))
        # A plugin nobody asked for is no problem of the tower's.
        expect(page.locator("#overall")).to_have_attribute("data-health", "green")
        # Among replicas, the page says which tower it is.
        expect(page.locator("#overall .text")).to_contain_text(f"Tower {CONSOLE_INSTANCE} ")

    def test_the_broker_going_away_shows_red_then_green_when_it_returns(
        self, portal: Portal, amqp_url: str, chromium: Browser, problems: Problems, tmp_path: Path
    ) -> None:
        """The tower's broker connection cut (at a relay) turns the panel red, and green again."""
        parts = urlsplit(amqp_url)
        gate = Gate((parts.hostname or "127.0.0.1", parts.port or 5672))
        portal.start(gate.serve)
        console = start_console(portal, amqp_url, tmp_path, broker_url=gate.url(amqp_url))
        page = open_page(chromium, DESKTOP, problems)
        try:
            open_console(page, console)
            broker = page.locator("#source-broker")
            expect(broker).to_have_attribute("data-health", "green")
            portal.run_sync(gate.shut)
            expect(broker).to_have_attribute("data-health", "red")
            expect(broker.locator(".health")).to_have_text(re.compile("Problem"))
            expect(broker.locator(".state")).to_have_text("disconnected")
            expect(page.locator("#overall")).to_have_attribute("data-health", "red")
            portal.run_sync(gate.reopen)
            # The tower's reconnect backoff starts at 0.5 s and doubles.
            expect(broker).to_have_attribute("data-health", "green", timeout=15_000)
            expect(broker.locator(".state")).to_have_text("connected")
        finally:
            page.context.close()
            stop_console(console)


class TestSend:
    def test_a_valid_trigger_from_the_form_is_sent_and_appears(
        self, console: Console, page: Page
    ) -> None:
        """The schema's fields make the spec; the sent trigger links to its detail, shows live."""
        device = new_device()
        console.bind(device)
        open_console(page, console)
        page.get_by_label("Protocol to send").select_option(label="PlateTransfer · OT-2/v1alpha1")
        page.get_by_label("apiVersion (device)").fill(device)
        volume = page.get_by_label("volume (required)")
        expect(volume).to_have_attribute("min", "1")
        expect(volume).to_have_attribute("max", "300")
        volume.fill("120")
        page.get_by_label("tip", exact=True).select_option("new")
        page.get_by_label("Wait for the broker").check()
        page.get_by_role("button", name="Send trigger").click()
        result = page.locator("#s-result")
        expect(result).to_have_attribute("data-status", "published")
        link = page.locator("#s-sent-link")
        uuid = (link.get_attribute("href") or "").rpartition("/")[2]
        expect(row_of(page, uuid)).to_have_attribute("data-status", "published")
        expect(row_of(page, uuid).locator("td.source")).to_have_text("http")
        assert console.http.get(f"/triggers/{uuid}").json()["spec"] == {
            "volume": 120,
            "tip": "new",
            "mix": False,
        }
        link.click()
        expect(page.get_by_role("dialog").locator(".detail-head code.uuid")).to_have_text(uuid)

    def test_an_invalid_trigger_shows_the_field_error_and_nothing_is_published(
        self, console: Console, page: Page
    ) -> None:
        """The tower's 422 shows next to the field it names; nothing is stored or published."""
        device = new_device()
        queue = console.bind(device)
        open_console(page, console)
        page.get_by_label("Protocol to send").select_option(label="PlateTransfer · OT-2/v1alpha1")
        page.get_by_label("apiVersion (device)").fill(device)
        volume = page.get_by_label("volume (required)")
        volume.fill("7")  # the schema wants a multiple of 5, which only the tower checks
        with page.expect_response(re.compile(r"/triggers$")) as answer:
            page.get_by_role("button", name="Send trigger").click()
        assert answer.value.status == 422
        error = page.locator('.field-error[data-for="spec.volume"]')
        expect(error).to_contain_text("multiple of 5")
        expect(volume).to_have_attribute("aria-invalid", "true")
        expect(volume).to_be_focused()
        expect(page.get_by_role("alert")).to_contain_text("nothing was sent")
        assert console.http.get("/triggers", params={"apiVersion": device}).json()["items"] == []
        assert console.count(queue) == 0

    def test_the_json_editor_checks_json_before_anything_is_sent(
        self, console: Console, page: Page
    ) -> None:
        """A protocol without simple fields gets a JSON editor; broken JSON is marked, not sent."""
        open_console(page, console)
        page.get_by_label("Protocol to send").select_option(label="Read · TecanSpark/v1alpha1")
        editor = page.get_by_label("Spec (JSON object)")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        editor.fill('{"wavelengths": [450')
        expect(editor).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#s-spec-json-note")).to_contain_text("Not valid JSON")
        page.get_by_role("button", name="Send trigger").click()
        expect(page.get_by_role("alert")).to_contain_text("Not sent")
        assert posts == []
        editor.fill('{"wavelengths": [450]}')
        expect(editor).to_have_attribute("aria-invalid", "false")

    def test_a_plate_trigger_from_the_well_grid(self, console: Console, page: Page) -> None:
        """Wells picked in the grid get the spec; wells the tower refuses are named in the alert."""
        device = new_device()
        open_console(page, console)
        page.get_by_label("Protocol to send").select_option(label="PlateTransfer · OT-2/v1alpha1")
        page.get_by_label("apiVersion (device)").fill(device)
        expect(page.get_by_label("Rows")).to_be_hidden()
        page.get_by_label("This trigger is for a well plate").check()
        page.get_by_label("Rows").fill("2")
        page.get_by_label("Columns").fill("2")
        grid = page.locator("#s-wells")
        expect(grid.locator("button.well")).to_have_count(4)
        grid.locator('button.well[data-well="A1"]').click()
        grid.locator('button.well[data-well="B1"]').click()
        expect(grid.locator('button.well[aria-pressed="true"]')).to_have_count(2)
        page.get_by_label("volume (required)").fill("50")
        page.get_by_role("button", name="Apply to 2 selected wells").click()
        # A2 and B2 are left empty: the schema requires a volume in each well.
        page.get_by_role("button", name="Send trigger").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("A2, B2")
        expect(grid.locator("button.well.invalid")).to_have_count(2)
        page.get_by_role("button", name="Select all wells").click()
        page.get_by_role("button", name="Apply to 4 selected wells").click()
        page.get_by_role("button", name="Send trigger").click()
        link = page.locator("#s-sent-link")
        uuid = (link.get_attribute("href") or "").rpartition("/")[2]
        record = console.http.get(f"/triggers/{uuid}").json()
        assert record["plate"] == {"rows": 2, "columns": 2}
        assert record["spec"] == [{"volume": 50, "mix": False}] * 4


class TestLogin:
    def test_with_tokens_the_page_asks_for_one_and_refuses_a_wrong_one(
        self, portal: Portal, amqp_url: str, chromium: Browser, problems: Problems, tmp_path: Path
    ) -> None:
        """With TOWER_API_TOKENS the console asks for a token, refuses a wrong one, signs out."""
        token = secrets.token_urlsafe(24)
        console = start_console(portal, amqp_url, tmp_path, TOWER_API_TOKENS=token)
        page = open_page(chromium, DESKTOP, problems)
        try:
            page.goto(f"{console.url}/console")
            field = page.get_by_label("API token")
            expect(field).to_be_visible()
            expect(page.locator("#triggers")).to_have_count(0)
            screenshot(page, "login")
            field.fill("not-the-token-at-all")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("not one of the tower's API tokens")
            expect(page.get_by_label("API token")).to_be_visible()
            expect(page.locator("#triggers")).to_have_count(0)
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#stream")).to_have_attribute("data-state", "live")
            # The session sends: POSTs carry the CSRF token.
            page.get_by_label("Protocol to send").select_option(
                label="PlateTransfer · OT-2/v1alpha1"
            )
            page.get_by_label("volume (required)").fill("20")
            page.get_by_role("button", name="Send trigger").click()
            expect(page.locator("#s-sent-link")).to_be_visible()
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_label("API token")).to_be_visible()
            assert console.http.get("/triggers").status_code == 401
        finally:
            page.context.close()
            stop_console(console)


class TestAccessibility:
    def test_every_control_is_labelled_and_the_keyboard_reaches_the_feed(
        self, console: Console, page: Page
    ) -> None:
        """Every visible control has a label, in each view; the first Tab offers a skip link."""
        open_console(page, console)
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to the trigger feed")
        expect(skip).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#feed")).to_be_focused()
        assert page.evaluate(UNLABELLED) == []
        page.get_by_label("Protocol to send").select_option(label="Read · TecanSpark/v1alpha1")
        expect(page.get_by_label("Spec (JSON object)")).to_be_visible()
        assert page.evaluate(UNLABELLED) == []
        page.get_by_label("Protocol to send").select_option(label="PlateTransfer · OT-2/v1alpha1")
        page.get_by_label("This trigger is for a well plate").check()
        expect(page.locator("#s-wells button.well")).to_have_count(96)
        assert page.evaluate(UNLABELLED) == []
        posted = console.post(
            {
                "apiVersion": new_device(),
                "protocol": "PlateTransfer",
                "plate": {"rows": 1, "columns": 2},
                "spec": [{"volume": 5}, {"volume": 10}],
            }
        )
        page.goto(f"{console.url}/console#/triggers/{posted['uuid']}")
        expect(page.get_by_role("dialog").locator("button.well")).to_have_count(2)
        assert page.evaluate(UNLABELLED) == []


class TestLayout:
    def test_the_main_views_at_desktop_and_phone_widths(
        self, portal: Portal, amqp_url: str, chromium: Browser, problems: Problems, tmp_path: Path
    ) -> None:
        """At 1280 and 390 px the page fits its width; on a phone each trigger is a stacked block.

        With TOWER_CONSOLE_SCREENSHOTS set (``just screenshots``), the views are saved as PNGs.
        """
        console = start_console(
            portal,
            amqp_url,
            tmp_path,
            PLUGIN_EXAMPLE_API_VERSION="OT-2/v1alpha1/robot-2",
        )
        page = open_page(chromium, DESKTOP, problems, timezone_id="Europe/Amsterdam")
        try:
            for device in ("OT-2/v1alpha1/robot-1", "OT-2/v1alpha1/robot-2"):
                console.bind(device)
            plate = console.post(
                {
                    "apiVersion": "OT-2/v1alpha1/robot-1",
                    "protocol": "PlateTransfer",
                    "plate": {"rows": 8, "columns": 12},
                    "spec": [{"volume": 5 * (1 + n % 12)} for n in range(96)],
                },
                params={"wait": "published"},
            )
            console.post(
                {"apiVersion": "TecanSpark/v1alpha1/Spark2", "protocol": "Read", "spec": {}}
            )
            for volume in (50, 100, 150):
                console.post(trigger("OT-2/v1alpha1/robot-2", volume), params={"wait": "published"})
            with console.inbox.open("a") as inbox:
                inbox.write('PlateTransfer {"volume": 25}\n')
            open_console(page, console)
            expect(page.locator("#triggers tbody tr")).to_have_count(6)
            expect(page.locator('#triggers tbody tr[data-status="unroutable"]')).to_have_count(1)
            expect(page.locator("#source-plugin-example .state")).to_have_text("running")
            assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
            screenshot(page, "feed")
            screenshot(page.locator("#sources"), "sources")
            page.get_by_label("Protocol to send").select_option(
                label="PlateTransfer · OT-2/v1alpha1"
            )
            page.get_by_label("volume (required)").fill("7")
            page.get_by_role("button", name="Send trigger").click()
            expect(page.locator('.field-error[data-for="spec.volume"]')).to_be_visible()
            screenshot(page.locator("#send"), "send-form")
            page.goto(f"{console.url}/console#/triggers/{plate['uuid']}")
            dialog = page.get_by_role("dialog")
            expect(dialog.locator("button.well")).to_have_count(96)
            dialog.locator('button.well[data-well="C4"]').focus()
            expect(dialog.locator("#d-well-info")).to_contain_text("C4 (well 26)")
            dialog.locator(".detail-head").scroll_into_view_if_needed()
            screenshot(page, "detail-plate")

            phone = open_page(chromium, PHONE, problems, timezone_id="Europe/Amsterdam")
            try:
                open_console(phone, console)
                rows = phone.locator("#triggers tbody tr")
                expect(rows).to_have_count(6)
                cell = rows.first.locator("td").first
                assert cell.evaluate("td => getComputedStyle(td).display") == "grid"
                assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
                # The filters start folded away, so the feed comes first.
                expect(phone.locator("#finder")).not_to_have_attribute("open", "")
                expect(rows.first).to_be_in_viewport()
                screenshot(phone, "feed-phone")
            finally:
                phone.context.close()
        finally:
            page.context.close()
            stop_console(console)
