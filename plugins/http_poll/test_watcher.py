"""The http_poll plugin, as a specification, against a fake JSON API served locally."""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from tests._fakes import JSON_CONTENT, AsgiFake, send_response
from tower_trio import ConfigError, PluginError

# The tower's own view of a plugin (GET /plugins) has no public door; the
# test builds it the way the tower does, from environment variables.
from tower_trio._plugins import discover_plugins, plugins_report, select_plugins
from tower_trio.testing import MemoryStateBackend, load_plugin, open_plugin, serve_fake_api

if TYPE_CHECKING:
    from tests._fakes import Receive, Scope, Send

HERE = Path(__file__).parent
watcher: Any = load_plugin(HERE)

OT2 = "OT-2/v1alpha1"
SPARK = "TecanSpark/v1alpha1/Spark2"
TOKEN = "t0k3n-Secr3t-value"
API_KEY = "k3y-Secr3t-value"
TEMPLATE = json.dumps(
    {
        "apiVersion": "{item.device}",
        "protocol": "Dilute",
        "spec": {"volume": "{item.volume}", "label": "sample {item.id} ({item.volume} µl)"},
    }
)


def sample(sample_id: object, volume: object = 50, device: str = OT2) -> dict[str, Any]:
    return {"id": sample_id, "volume": volume, "device": device}


@attrs.frozen
class Request:
    at: float
    headers: dict[str, str]
    path: str = ""


@attrs.define
class FakeApi(AsgiFake):
    """A JSON API whose answer, status and speed each test sets."""

    body: Any = attrs.Factory(lambda: {"data": {"items": []}})
    raw: bytes | None = None
    """Sent instead of ``body`` when set: an answer that is not JSON."""
    status: int = 200
    delay: float = 0.0
    dribble: float = 0.0
    """Seconds between the bytes of the answer, sent one at a time, when set."""
    redirect: str = ""
    """Where to redirect every request but those for ``/moved-here``, when set."""
    requests: list[Request] = attrs.Factory(list)

    def show(self, *items: Any) -> None:
        self.body = {"data": {"items": list(items)}}

    async def respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        self.requests.append(Request(trio.current_time(), headers, scope["path"]))
        if self.redirect and scope["path"] != "/moved-here":
            await send_response(send, 302, headers=[(b"location", self.redirect.encode())])
            return
        if self.delay:
            await trio.sleep(self.delay)
        payload = self.raw if self.raw is not None else json.dumps(self.body).encode()
        await send(
            {"type": "http.response.start", "status": self.status, "headers": [JSON_CONTENT]}
        )
        if self.dribble:
            for byte in payload:
                await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
                await trio.sleep(self.dribble)
            payload = b""
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def url(api: FakeApi, nursery: trio.Nursery) -> str:
    base: str = await nursery.start(serve_fake_api, api)
    return base + "/samples?status=ready"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def config(url: str, **extra: object) -> dict[str, object]:
    return {
        "url": url,
        "interval": 10.0,
        "timeout": 5.0,
        "items": "data.items",
        "item_id": "id",
        "template": TEMPLATE,
        **extra,
    }


class TestTriggers:
    async def test_items_become_triggers_through_the_template(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each item makes one trigger: placeholders keep their type, or fill in text."""
        api.show(sample("s1", volume=25), sample("s2", volume=12.5, device=SPARK))
        async with open_plugin(HERE, config=config(url)) as harness:
            first, second = await harness.next_triggers(2)
        assert (first.api_version, first.protocol) == (OT2, "Dilute")
        assert first.spec == {"volume": 25, "label": "sample s1 (25 µl)"}
        assert first.key == "http_poll:s1"
        assert first.metadata.spec == {"itemId": "s1"}
        assert first.metadata.source == "http_poll"
        assert (second.api_version, second.spec) == (
            SPARK,
            {"volume": 12.5, "label": "sample s2 (12.5 µl)"},
        )

    async def test_without_a_template_each_item_is_the_trigger(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With no template and no id path, a trigger-shaped item is sent as it is."""
        api.body = {
            "data": ["oops", {"apiVersion": OT2, "protocol": "Wash", "spec": {"cycles": 3}}]
        }
        settings = config(url, items="$.data[*]", item_id="", template="")
        async with open_plugin(HERE, config=settings) as harness:
            trigger = await harness.next_trigger()
            (error,) = await harness.wait_for_item_errors(1)
        assert error.message == "invalid trigger: $: must be a JSON object"
        assert (trigger.protocol, trigger.spec) == ("Wash", {"cycles": 3})
        assert trigger.key is not None
        assert trigger.key.startswith("http_poll:sha256:")

    async def test_a_template_file_is_read_at_start(
        self, api: FakeApi, url: str, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A template given as a file works like an inline one; its metadata.spec is kept."""
        template = tmp_path / "template.json"
        template.write_text(
            json.dumps(
                {
                    "apiVersion": OT2,
                    "protocol": "Dilute",
                    "spec": {"volumes": "{item.wells[*].volume}"},
                    "metadata": {"spec": {"batch": "{item.batch}"}},
                }
            )
        )
        api.show({"id": 7, "batch": "B-1", "wells": [{"volume": 1}, {"volume": 2}]})
        async with open_plugin(HERE, config=config(url, template=str(template))) as harness:
            trigger = await harness.next_trigger()
        assert trigger.spec == {"volumes": [1, 2]}
        assert trigger.metadata.spec == {"itemId": "7", "batch": "B-1"}
        assert trigger.key == "http_poll:7"

    async def test_a_large_answer_is_read_too(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An answer of hundreds of kilobytes is decoded (off the trio thread) and used."""
        api.show(*(sample(f"s{n}") | {"notes": "x" * 1000} for n in range(300)))
        async with open_plugin(HERE, config=config(url)) as harness:
            triggers = await harness.next_triggers(300)
        assert triggers[-1].key == "http_poll:s299"

    async def test_a_long_or_structured_id_is_kept_short_in_keys(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Ids that are not strings are written as JSON; ids too long for a key are hashed."""
        api.show(sample("x" * 300), {"id": {"run": 4}, "volume": 1, "device": OT2})
        async with open_plugin(HERE, config=config(url)) as harness:
            long, structured = await harness.next_triggers(2)
        assert long.key is not None
        assert long.key.startswith("http_poll:sha256:")
        assert len(long.key) < 100
        assert structured.key == 'http_poll:{"run":4}'


class TestOnce:
    async def test_an_item_seen_before_is_not_sent_again(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Items still listed on later polls stay quiet; only new ones trigger."""
        api.show(sample("s1"), sample("s2"))
        async with open_plugin(HERE, config=config(url)) as harness:
            await harness.next_triggers(2)
            await trio.sleep(100)
            assert harness.unread() == []
            api.show(sample("s1"), sample("s2"), sample("s3"))
            trigger = await harness.next_trigger()
            await trio.sleep(100)
        assert trigger.key == "http_poll:s3"
        assert harness.unread() == []
        assert len(api.requests) > 10

    async def test_a_restart_with_the_same_state_sends_nothing_twice(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The ids sent live in the plugin's state, so a new start sends only new items."""
        api.show(sample("s1"), sample("s2"))
        state = MemoryStateBackend()
        async with open_plugin(HERE, config=config(url), state=state) as harness:
            await harness.next_triggers(2)
            await harness.wait_for_state("seen:s2")
        async with open_plugin(HERE, config=config(url), state=state) as harness:
            await trio.sleep(100)
            api.show(sample("s1"), sample("s2"), sample("s3"))
            trigger = await harness.next_trigger()
            await trio.sleep(100)
        assert trigger.key == "http_poll:s3"
        assert harness.unread() == []

    async def test_without_an_id_path_a_changed_item_triggers_again(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Without an id path an item is known by its content, so a change makes it new."""
        api.show(sample("s1", volume=10))
        async with open_plugin(HERE, config=config(url, item_id="")) as harness:
            first = await harness.next_trigger()
            await trio.sleep(100)
            api.show(sample("s1", volume=20))
            second = await harness.next_trigger()
        assert (first.spec, second.spec) == (
            {"volume": 10, "label": "sample s1 (10 µl)"},
            {"volume": 20, "label": "sample s1 (20 µl)"},
        )
        assert first.key != second.key

    async def test_the_ids_kept_are_bounded_but_listed_items_are_never_forgotten(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Beyond `remember` ids, the oldest no longer listed are dropped and may trigger again."""
        api.show(sample("s1"), sample("s2"), sample("s3"))
        async with open_plugin(HERE, config=config(url, remember=2)) as harness:
            await harness.next_triggers(3)
            await trio.sleep(100)
            assert sorted(harness.state) == ["seen:s1", "seen:s2", "seen:s3"]
            assert harness.unread() == []
            api.show(sample("s3"), sample("s4"))
            await harness.next_trigger()
            await harness.wait_until(lambda: sorted(harness.state) == ["seen:s3", "seen:s4"])
            api.show(sample("s1"))
            again = await harness.next_trigger()
        assert again.key == "http_poll:s1"


class TestAuth:
    async def test_auth_headers_reach_the_api(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The token, the secret headers and the plain headers are all sent."""
        settings = config(
            url,
            token=TOKEN,
            secret_headers=f"X-Api-Key: {API_KEY}",
            headers="X-Lab: bench-3; Accept: application/vnd.lims+json",
        )
        async with open_plugin(HERE, config=settings) as harness:
            await harness.wait_until(lambda: bool(api.requests))
        headers = api.requests[0].headers
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["x-api-key"] == API_KEY
        assert headers["x-lab"] == "bench-3"
        assert headers["accept"] == "application/vnd.lims+json"

    async def test_secrets_never_reach_logs_errors_or_the_report(
        self,
        api: FakeApi,
        url: str,
        autojump_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Token and secret headers are masked in GET /plugins and absent from every line."""
        caplog.set_level(logging.DEBUG)
        environ = {
            "PLUGIN_HTTP_POLL_URL": url,
            "PLUGIN_HTTP_POLL_ITEMS": "data.items",
            "PLUGIN_HTTP_POLL_ITEM_ID": "id",
            "PLUGIN_HTTP_POLL_TEMPLATE": TEMPLATE,
            "PLUGIN_HTTP_POLL_HEADERS": "X-Lab: bench-3",
            "PLUGIN_HTTP_POLL_SECRET_HEADERS": f'{{"X-Api-Key": "{API_KEY}"}}',
            "PLUGIN_HTTP_POLL_TOKEN": TOKEN,
        }
        plugins = discover_plugins(HERE.parent, entry_points=False)
        (plugin,), _ = select_plugins(plugins, ("http_poll",), environ)
        api.status = 401
        api.show(sample("s1"), sample("bad", device="not an apiVersion"))
        async with open_plugin(HERE, config=plugin.config) as harness:
            await harness.wait_for_item_errors(1)
            api.status = 200
            await harness.next_trigger()
            await harness.wait_for_item_errors(2)
        report = plugins_report({"http_poll": harness.status}, [plugin])
        assert report[0]["config"]["token"] == "***"
        assert report[0]["config"]["secret_headers"] == "***"
        assert report[0]["config"]["headers"] == "X-Lab: bench-3"
        assert "401" in harness.item_errors[0].message
        everything = json.dumps(
            [report, [attrs.asdict(e) for e in harness.item_errors], repr(plugin.config)]
        ) + "".join(repr(record.__dict__) for record in caplog.records)
        for secret in (TOKEN, API_KEY):
            assert secret not in everything

    async def test_a_redirect_within_the_api_keeps_the_credentials(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A redirect to the same scheme, host and port is followed, headers and all."""
        api.redirect = "/moved-here"
        api.show(sample("s1"))
        settings = config(url, secret_headers=f"X-Api-Key: {API_KEY}")
        with trio.fail_after(600):
            async with open_plugin(HERE, config=settings) as harness:
                trigger = await harness.next_trigger()
        assert trigger.key == "http_poll:s1"
        assert [request.path for request in api.requests[:2]] == ["/samples", "/moved-here"]
        assert all(request.headers["x-api-key"] == API_KEY for request in api.requests)

    async def test_a_redirect_to_another_host_gets_no_credentials(
        self, api: FakeApi, url: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The poll fails naming the redirect; the other server receives nothing at all."""
        elsewhere = FakeApi()
        elsewhere.show(sample("s1"))
        elsewhere_url: str = await nursery.start(serve_fake_api, elsewhere)
        api.redirect = elsewhere_url + "/moved-here"
        settings = config(url, token=TOKEN, secret_headers=f"X-Api-Key: {API_KEY}")
        with trio.fail_after(600):
            async with open_plugin(HERE, config=settings) as harness:
                errors = await harness.wait_for_item_errors(2)
                assert harness.status.state.value == "backing-off"
        assert elsewhere.requests == []
        assert harness.sent == []
        assert f"was redirected to another origin ({elsewhere_url})" in errors[0].message
        assert "configure the URL the redirect leads to" in errors[0].message
        assert all(TOKEN not in e.message and API_KEY not in e.message for e in errors)

    async def test_a_credential_in_the_shown_headers_is_refused(self) -> None:
        """A header such as Authorization must go in SECRET_HEADERS, which is masked."""
        settings = config("https://lims.example/api", headers=f"Authorization: Bearer {TOKEN}")
        with pytest.raises(PluginError, match="PLUGIN_HTTP_POLL_SECRET_HEADERS") as caught:
            async with open_plugin(HERE, config=settings):
                pass  # pragma: no cover - the configuration is refused first
        assert TOKEN not in str(caught.value)


class TestBadAnswers:
    async def test_http_errors_back_off_and_recover(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An HTTP 500 is reported and retried after growing delays; then items trigger."""
        api.status = 500
        api.show(sample("s1"))
        async with open_plugin(HERE, config=config(url)) as harness:
            errors = await harness.wait_for_item_errors(3)
            assert harness.status.state.value == "backing-off"
            api.status = 200
            trigger = await harness.next_trigger()
            assert harness.status.state.value == "running"
        assert all(e.item == "API" and "HTTP 500" in e.message for e in errors)
        times = [request.at for request in api.requests[:4]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert gaps == sorted(gaps)
        assert gaps[-1] > 2 * 10 * 0.8
        assert trigger.key == "http_poll:s1"

    async def test_timeouts_back_off_and_recover(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An API slower than the timeout is reported as a timeout and tried again."""
        api.delay = 60
        api.show(sample("s1"))
        async with open_plugin(HERE, config=config(url)) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            api.delay = 0
            await harness.next_trigger()
        assert "timed out after 5 s" in error.message

    async def test_an_api_dribbling_its_answer_times_out_as_a_whole(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A byte every 2 s never trips a per-read timeout; the request's 5 s do."""
        api.dribble = 2
        api.show(sample("s1"))
        with trio.fail_after(60):
            async with open_plugin(HERE, config=config(url)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                api.dribble = 0
                await harness.next_trigger()
        assert error.message == (
            f"ApiError: GET {url} timed out after 5 s, answer included; "
            "raise PLUGIN_HTTP_POLL_TIMEOUT if the API is that slow"
        )

    async def test_an_answer_over_the_size_limit_backs_off_naming_the_setting(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Too large an answer is not read; the poll backs off until the answer fits."""
        api.show(*(sample(f"s{n}") for n in range(50)))
        with trio.fail_after(600):
            async with open_plugin(HERE, config=config(url, max_response_bytes=1000)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                assert harness.status.state.value == "backing-off"
                api.show(sample("s1"))
                trigger = await harness.next_trigger()
        assert error.message == (
            f"ApiError: GET {url} answered more than PLUGIN_HTTP_POLL_MAX_RESPONSE_BYTES=1000 "
            "bytes; raise it if the API's answers are really that large"
        )
        assert trigger.key == "http_poll:s1"

    async def test_a_refused_connection_is_reported(
        self, closed_port: int, autojump_clock: trio.testing.MockClock
    ) -> None:
        """No server at the URL is an error of the poll, not of the plugin."""
        settings = config(f"http://127.0.0.1:{closed_port}/samples")
        async with open_plugin(HERE, config=settings) as harness:
            errors = await harness.wait_for_item_errors(2)
            assert not harness.finished
        assert all("ConnectError" in e.message for e in errors)

    async def test_an_answer_that_is_not_json_is_reported(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An HTML error page with status 200 is reported, and polling goes on."""
        api.raw = b"<html>maintenance</html>"
        api.show(sample("s1"))
        async with open_plugin(HERE, config=config(url)) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            api.raw = None
            await harness.next_trigger()
        assert "did not answer JSON" in error.message

    async def test_items_not_where_the_path_says_are_reported(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A wrong items path names where it stopped, and polling goes on."""
        api.body = {"data": {"rows": [sample("s1")]}}
        async with open_plugin(HERE, config=config(url)) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            api.show(sample("s1"))
            await harness.next_trigger()
        assert "PLUGIN_HTTP_POLL_ITEMS=data.items finds no items: $.data has no 'items'" in (
            error.message
        )

    async def test_an_item_making_an_invalid_trigger_is_skipped_and_its_neighbours_sent(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The bad item is reported once, not at every poll; the others are sent."""
        api.show(sample("s1"), sample("s2", device="no device"), sample("s3"))
        async with open_plugin(HERE, config=config(url)) as harness:
            first, third = await harness.next_triggers(2)
            await trio.sleep(100)
        assert (first.key, third.key) == ("http_poll:s1", "http_poll:s3")
        (error,) = harness.item_errors
        assert error.item == "item s2"
        assert "apiVersion" in error.message
        assert "seen:s2" not in harness.state

    async def test_an_item_without_its_id_or_a_templated_field_is_skipped(
        self, api: FakeApi, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Missing data is an error for that item, saying what is missing."""
        api.show(
            {"volume": 1, "device": OT2},
            {"id": "s2", "device": OT2},
            sample("s3"),
            sample(None),
        )
        async with open_plugin(HERE, config=config(url)) as harness:
            trigger = await harness.next_trigger()
            no_id, no_volume, null_id = await harness.wait_for_item_errors(3)
        assert trigger.key == "http_poll:s3"
        assert (no_id.item, no_id.message) == ("item 0", "item has no 'id'")
        assert (null_id.item, null_id.message) == ("item 3", "id is null")
        assert (no_volume.item, no_volume.message) == (
            "item s2",
            "template spec.volume: item has no 'volume'",
        )


DOCUMENT: Any = {
    "data": {
        "items": [{"id": 1}, {"id": 2}],
        "byName": {"a": {"id": 3}, "b": {"id": 4}},
        "odd key": [5],
    }
}
ITEM: Any = {"id": "s1", "volume": 25, "tags": ["a", "b"], "ok": True}


class TestPaths:
    @pytest.mark.parametrize(
        ("path", "items"),
        [
            ("data.items", [{"id": 1}, {"id": 2}]),
            ("$.data.items", [{"id": 1}, {"id": 2}]),
            ("$.data.items[*]", [{"id": 1}, {"id": 2}]),
            ("data.items[*].id", [1, 2]),
            ("data.byName[*]", [{"id": 3}, {"id": 4}]),
            ("data.byName.*.id", [3, 4]),
            ("data['odd key']", [5]),
            ('$["data"]["odd key"]', [5]),
        ],
    )
    def test_items(self, path: str, items: list[Any]) -> None:
        """Member, quoted member, index and wildcard steps, with or without the `$` root."""
        assert watcher.parse_path(path).items(DOCUMENT) == items

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("data.byName", "'data.byName' leads to an object, not a list of items"),
            ("data.items[2]", "$.data.items has no element [2] (it has 2)"),
            ("data.items.id", "$.data.items is a list, not an object"),
            ("data[0]", "$.data is an object, not a list"),
            ("data.missing", "$.data has no 'missing'"),
            ("data..items", "cannot read 'data..items' from '..items'"),
            ("", "a path cannot be empty"),
            ("data.items[0].id[*]", "$.data.items[0].id is a number, not a list or object"),
        ],
    )
    def test_errors_say_where_the_path_stops(self, path: str, message: str) -> None:
        """A path that does not fit the answer names the last place it reached."""
        with pytest.raises(ValueError, match=re.escape(message)):
            watcher.parse_path(path).items(DOCUMENT)


class TestTemplates:
    @pytest.mark.parametrize(
        ("template", "rendered"),
        [
            ({"v": "{item.volume}"}, {"v": 25}),
            ({"v": "{item.tags}"}, {"v": ["a", "b"]}),
            ({"v": "{item}"}, {"v": ITEM}),
            ({"v": "{ item.tags[0] }"}, {"v": "a"}),
            (
                {"v": "{item.id}: {item.volume} µl, {item.tags} {item.ok}"},
                {"v": 's1: 25 µl, ["a","b"] true'},
            ),
            ({"v": "{{literal}} {item.id}"}, {"v": "{literal} s1"}),
            (
                {"v": ["{item.id}", 3, None, {"deep": "{item.volume}"}]},
                {"v": ["s1", 3, None, {"deep": 25}]},
            ),
            (
                {"{item.id}": "keys are taken as they are"},
                {"{item.id}": "keys are taken as they are"},
            ),
        ],
    )
    def test_rendering(self, template: dict[str, Any], rendered: dict[str, Any]) -> None:
        """A string that is one placeholder keeps the value's type; others become text."""
        assert watcher.parse_template(json.dumps(template)).render(ITEM) == rendered

    @pytest.mark.parametrize(
        ("template", "message"),
        [
            ('{"v": "{volume}"}', "template v: 'volume' must start with 'item'"),
            ('{"v": "{item.}"}', "template v: cannot read 'item.'"),
            ('{"v": "a } b"}', "template v: a lone '}'; write }} for a literal brace"),
            ('["not an object"]', "must be a JSON object"),
            ("{", "is not valid JSON"),
        ],
    )
    def test_a_bad_template_is_refused_before_any_item(self, template: str, message: str) -> None:
        """Placeholder and JSON mistakes are found when the template is read."""
        with pytest.raises(ValueError, match=re.escape(message)):
            watcher.parse_template(template)

    async def test_an_unreadable_template_file_stops_the_plugin_saying_what_to_do(
        self, tmp_path: Path
    ) -> None:
        """A missing file is a configuration error naming the variable."""
        with pytest.raises(ConfigError, match=r"PLUGIN_HTTP_POLL_TEMPLATE=.*create it"):
            await watcher.load_template(str(tmp_path / "missing.json"))


class TestConfig:
    @pytest.mark.parametrize(
        ("text", "pairs"),
        [
            ("", []),
            ("X-A: 1; X-B: two words ;", [("X-A", "1"), ("X-B", "two words")]),
            ('{"Cookie": "a=1; b=2"}', [("Cookie", "a=1; b=2")]),
            ("X-Url: https://x.example:8443/", [("X-Url", "https://x.example:8443/")]),
        ],
    )
    def test_header_forms(self, text: str, pairs: list[tuple[str, str]]) -> None:
        """Headers are `Name: value` pairs split by `;`, or a JSON object for values with `;`."""
        assert watcher.parse_headers(text) == pairs

    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            ({"secret_headers": f"Bearer {TOKEN}"}, "SECRET_HEADERS: entry 1 is not 'Name: value'"),
            ({"secret_headers": f"Bad Name: {TOKEN}"}, "entry 1 does not start with a header name"),
            ({"token": f"two {TOKEN}"}, "TOKEN: must be printable ASCII without spaces"),
            (
                {"token": TOKEN, "secret_headers": f"authorization: {TOKEN}"},
                "the header Authorization is given twice",
            ),
            ({"items": "data items"}, "PLUGIN_HTTP_POLL_ITEMS: cannot read"),
            ({"url": "ftp://lims.example"}, "URL: must be an http:// or https:// URL"),
            ({"remember": 0}, "remember"),
            ({"url": "http://[::1"}, "PLUGIN_HTTP_POLL_URL: cannot be read as a URL"),
            ({"secret_headers": "{" + TOKEN}, "SECRET_HEADERS: is not valid JSON"),
            ({"secret_headers": f'{{"X-Key": ["{TOKEN}"]}}'}, "must be a JSON object of strings"),
            ({"headers": "X-Lab: bénch"}, "HEADERS: the value of X-Lab must be printable ASCII"),
            ({"template": '{"v": "{volume}"}'}, "TEMPLATE: template v: 'volume' must start"),
        ],
    )
    def test_bad_settings_are_refused_without_echoing_secrets(
        self, settings: dict[str, object], message: str
    ) -> None:
        """Each setting is checked at start-up; the message names it, never a credential."""
        values: dict[str, Any] = {"url": "https://lims.example/api", **settings}
        with pytest.raises(ValueError, match=re.escape(message)) as caught:
            watcher.Config(**values)
        assert TOKEN not in str(caught.value)
