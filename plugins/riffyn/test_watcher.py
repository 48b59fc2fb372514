"""The riffyn plugin, as a specification, against a fake Riffyn API served locally."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs
import pytest
import trio
import trio.testing

from tower_trio.testing import MemoryStateBackend, load_plugin, open_plugin, serve_fake_api

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HERE = Path(__file__).parent
watcher: Any = load_plugin(HERE)

API_KEY = "riffyn-test-key"
EXPERIMENT = "exp1"
GROUP = "group1"
ACTIVITY = "act1"
OT2 = "OT-2/v1alpha1"
SPARK = "TecanSpark/v1alpha1/Spark2"


@attrs.define
class FakeRiffyn:
    """Just enough of the Riffyn API: one experiment, one run group, its runs, one activity."""

    runs: dict[str, dict[str, Any]] = attrs.Factory(dict)
    values: dict[str, dict[str, Any]] = attrs.Factory(dict)
    activity: dict[str, Any] = attrs.Factory(
        lambda: {
            "_id": ACTIVITY,
            "name": "Serial Dilution",
            "inputs": [
                {
                    "_id": "in-ot2",
                    "properties": [
                        {"_id": "p-vol", "name": "transfer volume"},
                        {"_id": "p-wl", "name": "measurement wavelength"},
                        {"_id": "p-note", "name": "operator note"},
                    ],
                },
                {"_id": "in-spark", "properties": [{"_id": "p-wl", "name": "wavelength"}]},
            ],
        }
    )
    failures: dict[str, int] = attrs.Factory(dict)
    """Path fragment → HTTP status to answer with, while set."""
    delay: float = 0.0
    experiments: list[str] = attrs.Factory(lambda: [EXPERIMENT])
    requests: list[str] = attrs.Factory(list)
    raw_paths: list[str] = attrs.Factory(list)
    """Each request's path as it came over the wire, percent-escapes and all."""

    def add_run(self, run_id: str, name: str = "run", status: str = "new", **values: Any) -> None:
        self.runs[run_id] = {
            "_id": run_id,
            "name": name,
            "status": status,
            "activityId": ACTIVITY,
            "groupId": GROUP,
            "num": len(self.runs) + 1,
            "inputs": [
                {"resourceName": OT2, "resourceDefId": "in-ot2"},
                {"resourceName": "Buffer A", "resourceDefId": "in-buffer"},
            ],
        }
        self.values[run_id] = {
            f"{ACTIVITY} | input | in-ot2 | p-vol | value": values.get("volume", 50),
            f"{ACTIVITY} | input | in-ot2 | p-wl | value": values.get("wavelength", 600),
            f"{ACTIVITY} | input | in-ot2 | p-note | value": None,
        }

    def set_status(self, run_id: str, status: str) -> None:
        self.runs[run_id]["status"] = status

    def route(self, path: str, query: dict[str, list[str]]) -> Any:
        if path == "/v1/experiments":
            return {"data": [{"_id": experiment} for experiment in self.experiments]}
        if path == f"/v1/experiment/{EXPERIMENT}/run-groups":
            return {"data": [{"_id": GROUP}]}
        if path == f"/v1/experiment/{EXPERIMENT}/run-group/{GROUP}/runs":
            return {"data": list(self.runs.values())}
        if path == f"/v1/process/{EXPERIMENT}/activity/{ACTIVITY}":
            return self.activity
        if path == f"/v1/experiment/{EXPERIMENT}/step/{ACTIVITY}/data/raw":
            run_id = query["rid"][0]
            assert query["rgid"] == [GROUP]
            assert query["rnum"] == [str(self.runs[run_id]["num"])]
            return {"datatables": {run_id: {"datatable": [self.values[run_id]]}}}
        return None

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope["path"]
        self.requests.append(path)
        self.raw_paths.append(scope["raw_path"].decode())
        headers = dict(scope["headers"])
        body: Any
        if path.startswith("/moved/"):
            # The API moved under /v1, on the same server.
            query = scope["query_string"].decode()
            location = "/v1/" + path.removeprefix("/moved/") + (f"?{query}" if query else "")
            await send(
                {
                    "type": "http.response.start",
                    "status": 308,
                    "headers": [(b"location", location.encode())],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if headers.get(b"api-key") != API_KEY.encode():
            status, body = 401, {"error": "bad api key"}
        elif failed := [code for part, code in self.failures.items() if re.search(part, path)]:
            status, body = failed[0], {"error": "injected failure"}
        else:
            await trio.sleep(self.delay)
            found = self.route(path, parse_qs(scope["query_string"].decode()))
            status, body = (200, found) if found is not None else (404, {"error": "not found"})
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@attrs.frozen
class Redirect:
    """A server that sends every request on to the same path at ``target``."""

    target: str

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        location = (self.target + scope["path"]).encode()
        await send(
            {"type": "http.response.start", "status": 307, "headers": [(b"location", location)]}
        )
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def api() -> FakeRiffyn:
    return FakeRiffyn()


@pytest.fixture
async def url(api: FakeRiffyn, nursery: trio.Nursery) -> str:
    base: str = await nursery.start(serve_fake_api, api)
    return base + "/v1"


def config(url: str, **extra: object) -> dict[str, object]:
    return {"api_key": API_KEY, "url": url, "poll_interval": 10.0, "timeout": 5.0, **extra}


class TestRiffyn:
    async def test_a_started_run_becomes_one_trigger_per_device_input(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A run that starts sends one trigger for its OT-2 input; other inputs are ignored."""
        api.add_run("r1", volume=25, wavelength=450)
        async with open_plugin(HERE, config=config(url)) as harness:
            await trio.sleep(15)
            assert harness.sent == []
            api.set_status("r1", "running")
            trigger = await harness.next_trigger()
            await trio.sleep(60)
        assert trigger.api_version == OT2
        assert trigger.protocol == "SerialDilution"
        assert trigger.spec == {"transferVolume": 25, "measurementWavelength": 450}
        assert trigger.metadata.spec == {
            "experimentId": EXPERIMENT,
            "activityId": ACTIVITY,
            "runId": "r1",
        }
        assert trigger.metadata.source == "riffyn"
        assert trigger.key == f"riffyn:r1:0:{OT2}"
        assert harness.unread() == []
        assert harness.item_errors == []

    async def test_inputs_for_two_devices_make_two_triggers(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each distinct apiVersion among a run's inputs gets a trigger of its own."""
        api.add_run("r1", status="running")
        api.runs["r1"]["inputs"].append({"resourceName": SPARK, "resourceDefId": "in-spark"})
        api.values["r1"][f"{ACTIVITY} | input | in-spark | p-wl | value"] = 595
        async with open_plugin(HERE, config=config(url)) as harness:
            ot2, spark = await harness.next_triggers(2)
        assert (ot2.api_version, spark.api_version) == (OT2, SPARK)
        assert spark.spec == {"wavelength": 595}

    async def test_a_stopped_run_is_forgotten_and_triggers_again_when_restarted(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """running → stopped → running sends twice, with distinct idempotency keys."""
        api.add_run("r1", status="running")
        async with open_plugin(HERE, config=config(url)) as harness:
            first = await harness.next_trigger()
            api.set_status("r1", "stopped")
            await trio.sleep(30)
            api.set_status("r1", "running")
            second = await harness.next_trigger()
            api.set_status("r1", "completed")
            await trio.sleep(30)
        assert (first.key, second.key) == (f"riffyn:r1:0:{OT2}", f"riffyn:r1:1:{OT2}")
        assert harness.unread() == []
        assert harness.state["run:r1"] == {"gen": 1, "active": True}

    async def test_a_tower_restart_does_not_trigger_running_runs_again(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Seen runs live in the plugin's state, so a new start of the plugin stays quiet."""
        api.add_run("r1", status="running")
        state = MemoryStateBackend()
        async with open_plugin(HERE, config=config(url), state=state) as harness:
            await harness.next_trigger()
            await harness.wait_for_state("run:r1")
        async with open_plugin(HERE, config=config(url), state=state) as harness:
            await trio.sleep(60)
            api.add_run("r2", status="running")
            trigger = await harness.next_trigger()
        assert trigger.metadata.spec["runId"] == "r2"
        assert harness.unread() == []

    async def test_plate_runs_make_one_trigger_once_every_well_has_started(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Runs named 'name [RxC] i' are gathered; all R*C started → one plate trigger."""
        for well in (1, 2, 3, 4):
            api.add_run(f"w{well}", name=f"Dilution [2x2] {well}", volume=well * 10)
        async with open_plugin(HERE, config=config(url)) as harness:
            for well in (3, 1, 2):
                api.set_status(f"w{well}", "running")
            await trio.sleep(30)
            assert harness.sent == []
            api.set_status("w4", "running")
            plate = await harness.next_trigger()
            await trio.sleep(30)
        assert plate.plate is not None
        assert (plate.plate.rows, plate.plate.columns) == (2, 2)
        assert plate.spec == [
            {"transferVolume": v, "measurementWavelength": 600} for v in (10, 20, 30, 40)
        ]
        assert plate.metadata.spec["runId"] == ["w1", "w2", "w3", "w4"]
        assert harness.unread() == []
        assert not any(key.startswith("plate:") for key in harness.state)

    async def test_stopping_a_well_removes_it_from_the_plate(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A well stopped before the plate is complete must start again before it triggers."""
        for well in (1, 2):
            api.add_run(f"w{well}", name=f"Dilution [1x2] {well}")
        async with open_plugin(HERE, config=config(url)) as harness:
            api.set_status("w1", "running")
            await trio.sleep(30)
            api.set_status("w1", "stopped")
            await trio.sleep(30)
            api.set_status("w2", "running")
            await trio.sleep(30)
            assert harness.sent == []
            api.set_status("w1", "running")
            plate = await harness.next_trigger()
        assert plate.metadata.spec["runId"] == ["w1", "w2"]

    async def test_api_errors_back_off_and_recover(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing API is reported and retried with growing delays; then runs trigger as usual."""
        api.add_run("r1", status="running")
        api.failures["/experiments$"] = 503
        async with open_plugin(HERE, config=config(url)) as harness:
            errors = await harness.wait_for_item_errors(3)
            assert harness.status.state.value == "backing-off"
            del api.failures["/experiments$"]
            trigger = await harness.next_trigger()
        assert all(e.item == "riffyn API" and "503" in e.message for e in errors)
        assert trigger.metadata.spec["runId"] == "r1"
        assert API_KEY not in json.dumps([e.message for e in harness.item_errors])

    async def test_timeouts_are_errors_too(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An API slower than the timeout is reported as a timeout and retried."""
        api.add_run("r1", status="running")
        api.delay = 60
        with trio.fail_after(600):
            async with open_plugin(HERE, config=config(url)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                api.delay = 0
                await harness.next_trigger()
        assert error.message == (
            "RiffynApiError: GET /experiments timed out after 5 s, answer included; "
            "raise PLUGIN_RIFFYN_TIMEOUT if the API is that slow"
        )

    async def test_an_answer_over_the_size_limit_is_an_error_naming_the_setting(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An answer larger than max_response_bytes is not read; the poll backs off."""
        api.add_run("r1", status="running")
        with trio.fail_after(600):
            async with open_plugin(HERE, config=config(url, max_response_bytes=20)) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                assert harness.status.state.value == "backing-off"
        assert error.message == (
            "RiffynApiError: GET /experiments answered more than "
            "PLUGIN_RIFFYN_MAX_RESPONSE_BYTES=20 bytes; raise it if the API's answers "
            "are really that large"
        )
        assert harness.sent == []

    async def test_ids_from_the_api_cannot_change_the_request_path(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Ids are escaped into one path segment each; '..' is refused as an id."""
        api.experiments = ["../admin", "a/b?x=1", "..", EXPERIMENT]
        api.add_run("r1", status="running")
        with trio.fail_after(600):
            async with open_plugin(HERE, config=config(url)) as harness:
                trigger = await harness.next_trigger()
                errors = await harness.wait_for_item_errors(3)
        assert trigger.metadata.spec["runId"] == "r1"
        assert "/v1/experiment/..%2Fadmin/run-groups" in api.raw_paths
        assert "/v1/experiment/a%2Fb%3Fx%3D1/run-groups" in api.raw_paths
        wrong = ("/v1/admin", "/v1/run-groups", "/v1/experiment/a/b")
        assert not any(path.startswith(wrong) for path in api.raw_paths)
        # The fake knows no such experiments: escaped, they are ids it does not have.
        assert [e.item for e in errors] == [
            "experiment ../admin",
            "experiment a/b?x=1",
            "experiment ..",
        ]
        assert all("404" in e.message for e in errors[:2])
        assert errors[2].message == "RiffynDataError: the id '..' cannot be used in a URL path"

    async def test_a_redirect_within_the_api_keeps_the_api_key(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A same-origin redirect is followed with the api-key header (the fake checks it)."""
        api.add_run("r1", status="running")
        moved = url.removesuffix("/v1") + "/moved"
        with trio.fail_after(600):
            async with open_plugin(HERE, config=config(moved)) as harness:
                trigger = await harness.next_trigger()
        assert trigger.metadata.spec["runId"] == "r1"
        assert "/moved/experiments" in api.requests
        assert harness.item_errors == []

    async def test_a_redirect_to_another_host_is_refused_and_it_gets_nothing(
        self,
        api: FakeRiffyn,
        url: str,
        nursery: trio.Nursery,
        autojump_clock: trio.testing.MockClock,
    ) -> None:
        """The api-key never reaches another origin: the poll fails and backs off instead."""
        api.add_run("r1", status="running")
        mover_url: str = await nursery.start(serve_fake_api, Redirect(url.removesuffix("/v1")))
        with trio.fail_after(600):
            async with open_plugin(HERE, config=config(mover_url + "/v1")) as harness:
                (error,) = await harness.wait_for_item_errors(1)
                assert harness.status.state.value == "backing-off"
        assert api.requests == []
        assert "was redirected to another origin" in error.message
        assert API_KEY not in error.message

    async def test_a_broken_run_is_reported_and_the_others_still_trigger(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A run whose data cannot be read is an error for that run only."""
        api.add_run("bad", status="running")
        api.add_run("good", status="running")
        api.failures["data/raw"] = 500
        api.runs["good"]["inputs"] = [{"resourceName": OT2, "resourceDefId": "in-ot2"}]
        del api.failures["data/raw"]
        api.values["bad"] = {}
        api.runs["bad"]["inputs"][0]["resourceDefId"] = "unknown"
        async with open_plugin(HERE, config=config(url)) as harness:
            trigger = await harness.next_trigger()
            (error,) = await harness.wait_for_item_errors(1)
        assert trigger.metadata.spec["runId"] == "good"
        assert error.item == "run bad"
        assert "is not an input of activity" in error.message

    async def test_a_run_whose_data_makes_an_invalid_trigger_sends_nothing(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """No values at all means an empty spec: reported once, never sent."""
        api.add_run("r1", status="running")
        api.values["r1"] = {}
        async with open_plugin(HERE, config=config(url)) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            await trio.sleep(60)
        assert "spec: must not be empty" in error.message
        assert harness.sent == []
        assert len(harness.item_errors) == 1

    async def test_a_wrong_api_key_is_reported(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A 401 is an error the operator sees, without the key in it."""
        async with open_plugin(HERE, config=config(url, api_key="wrong")) as harness:
            (error,) = await harness.wait_for_item_errors(1)
        assert "401" in error.message
        assert "wrong" not in error.message


class TestNames:
    @pytest.mark.parametrize(
        ("text", "pascal", "camel"),
        [
            ("Serial Dilution", "SerialDilution", "serialDilution"),
            ("measurement wavelength", "MeasurementWavelength", "measurementWavelength"),
            ("pH-adjust (2nd)", "PHAdjust2nd", "pHAdjust2nd"),
        ],
    )
    def test_case_conversions(self, text: str, pascal: str, camel: str) -> None:
        """Activity names become PascalCase protocols, property names camelCase spec keys."""
        assert watcher.pascal_case(text) == pascal
        assert watcher.camel_case(text) == camel

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("Dilution [8x12] 5", ("Dilution", 8, 12, 5)),
            ("My plate [2X3]1", ("My plate", 2, 3, 1)),
            ("Dilution 5", None),
            ("[2x2] 1", None),
        ],
    )
    def test_plate_run_names(self, name: str, expected: tuple[str, int, int, int] | None) -> None:
        """'<name> [RxC] <i>' marks well i of an R-by-C plate."""
        well = watcher.PlateWell.parse(name)
        assert (None if well is None else attrs.astuple(well)) == expected
