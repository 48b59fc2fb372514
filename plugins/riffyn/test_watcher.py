"""The riffyn plugin, as a specification, against a fake Riffyn API served locally."""

from __future__ import annotations

import json
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs
import pytest
import trio
import trio.testing

from tests._fakes import AsgiFake, send_json, send_response
from tower_trio.testing import (
    MemoryStateBackend,
    PluginHarness,
    load_plugin,
    open_plugin,
    serve_fake_api,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests._fakes import Receive, Scope, Send
    from tower_trio import Trigger

HERE = Path(__file__).parent
watcher: Any = load_plugin(HERE)

API_KEY = "riffyn-test-key"
EXPERIMENT = "exp1"
GROUP = "group1"
ACTIVITY = "act1"
OT2 = "OT-2/v1alpha1"
SPARK = "TecanSpark/v1alpha1/Spark2"


@attrs.define
class FakeRiffyn(AsgiFake):
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
    failures_left: dict[str, int] = attrs.Factory(dict)
    """Path fragment → how many more requests to it fail with a 500."""
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

    async def respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        self.requests.append(path)
        self.raw_paths.append(scope["raw_path"].decode())
        headers = dict(scope["headers"])
        body: Any
        if path.startswith("/moved/"):
            # The API moved under /v1, on the same server.
            query = scope["query_string"].decode()
            location = "/v1/" + path.removeprefix("/moved/") + (f"?{query}" if query else "")
            await send_response(send, 308, headers=[(b"location", location.encode())])
            return
        if headers.get(b"api-key") != API_KEY.encode():
            status, body = 401, {"error": "bad api key"}
        elif failed := [code for part, code in self.failures.items() if re.search(part, path)]:
            status, body = failed[0], {"error": "injected failure"}
        elif flaky := [p for p, left in self.failures_left.items() if left and re.search(p, path)]:
            self.failures_left[flaky[0]] -= 1
            status, body = 500, {"error": "injected failure"}
        else:
            await trio.sleep(self.delay)
            found = self.route(path, parse_qs(scope["query_string"].decode()))
            status, body = (200, found) if found is not None else (404, {"error": "not found"})
        await send_json(send, status, body)


@attrs.frozen
class Redirect(AsgiFake):
    """A server that sends every request on to the same path at ``target``."""

    target: str

    async def respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        location = (self.target + scope["path"]).encode()
        await send_response(send, 307, headers=[(b"location", location)])


@pytest.fixture
def api() -> FakeRiffyn:
    return FakeRiffyn()


@pytest.fixture
async def url(api: FakeRiffyn, nursery: trio.Nursery) -> str:
    base: str = await nursery.start(serve_fake_api, api)
    return base + "/v1"


def config(url: str, **extra: object) -> dict[str, object]:
    return {"api_key": API_KEY, "url": url, "poll_interval": 10.0, "timeout": 5.0, **extra}


def run_id(trigger: Trigger) -> Any:
    """The run a single (not plate) trigger came from."""
    assert isinstance(trigger.metadata.spec, dict)
    return trigger.metadata.spec["runId"]


def well_run_ids(trigger: Trigger) -> list[Any]:
    """The run of each well of a plate trigger, in well order."""
    assert isinstance(trigger.metadata.spec, list)
    return [well["runId"] for well in trigger.metadata.spec]


@asynccontextmanager
async def running(
    url: str, state: MemoryStateBackend | None = None, **extra: object
) -> AsyncIterator[PluginHarness]:
    """The plugin against ``url``, for at most an hour of trio time."""
    # Under autojump_clock an hour costs nothing, and a wait that would hang
    # (a trigger never sent) fails the test at once instead.
    with trio.fail_after(3600):
        async with open_plugin(HERE, config=config(url, **extra), state=state) as harness:
            yield harness


class TestRiffyn:
    async def test_a_started_run_becomes_one_trigger_per_device_input(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A run that starts sends one trigger for its OT-2 input; other inputs are ignored."""
        api.add_run("r1", volume=25, wavelength=450)
        async with running(url) as harness:
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
        async with running(url) as harness:
            ot2, spark = await harness.next_triggers(2)
        assert (ot2.api_version, spark.api_version) == (OT2, SPARK)
        assert spark.spec == {"wavelength": 595}

    async def test_a_stopped_run_is_forgotten_and_triggers_again_when_restarted(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """running → stopped → running sends twice, with distinct idempotency keys."""
        api.add_run("r1", status="running")
        async with running(url) as harness:
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
        async with running(url, state=state) as harness:
            await harness.next_trigger()
            await harness.wait_for_state("run:r1")
        async with running(url, state=state) as harness:
            await trio.sleep(60)
            api.add_run("r2", status="running")
            trigger = await harness.next_trigger()
        assert run_id(trigger) == "r2"
        assert harness.unread() == []

    async def test_plate_runs_make_one_trigger_once_every_well_has_started(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Runs named 'name [RxC] i' are gathered; all R*C started → one plate trigger."""
        for well in (1, 2, 3, 4):
            api.add_run(f"w{well}", name=f"Dilution [2x2] {well}", volume=well * 10)
        async with running(url) as harness:
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
        assert plate.metadata.spec == [
            {"experimentId": EXPERIMENT, "activityId": ACTIVITY, "runId": f"w{well}"}
            for well in (1, 2, 3, 4)
        ]
        assert harness.unread() == []
        assert not any(key.startswith("plate:") for key in harness.state)

    async def test_stopping_a_well_removes_it_from_the_plate(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A well stopped before the plate is complete must start again before it triggers."""
        for well in (1, 2):
            api.add_run(f"w{well}", name=f"Dilution [1x2] {well}")
        async with running(url) as harness:
            api.set_status("w1", "running")
            await trio.sleep(30)
            api.set_status("w1", "stopped")
            await trio.sleep(30)
            api.set_status("w2", "running")
            await trio.sleep(30)
            assert harness.sent == []
            api.set_status("w1", "running")
            plate = await harness.next_trigger()
        assert well_run_ids(plate) == ["w1", "w2"]

    async def test_api_errors_back_off_and_recover(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing API is reported and retried with growing delays; then runs trigger as usual."""
        api.add_run("r1", status="running")
        api.failures["/experiments$"] = 503
        async with running(url) as harness:
            errors = await harness.wait_for_item_errors(3)
            assert harness.status.state.value == "backing-off"
            del api.failures["/experiments$"]
            trigger = await harness.next_trigger()
        assert all(e.item == "riffyn API" and "503" in e.message for e in errors)
        assert run_id(trigger) == "r1"
        assert API_KEY not in json.dumps([e.message for e in harness.item_errors])

    async def test_timeouts_are_errors_too(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An API slower than the timeout is reported as a timeout and retried."""
        api.add_run("r1", status="running")
        api.delay = 60
        with trio.fail_after(600):
            async with running(url) as harness:
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
            async with running(url, max_response_bytes=20) as harness:
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
            async with running(url) as harness:
                trigger = await harness.next_trigger()
                errors = await harness.wait_for_item_errors(3)
        assert run_id(trigger) == "r1"
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
            async with running(moved) as harness:
                trigger = await harness.next_trigger()
        assert run_id(trigger) == "r1"
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
            async with running(mover_url + "/v1") as harness:
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
        async with running(url) as harness:
            trigger = await harness.next_trigger()
            (error,) = await harness.wait_for_item_errors(1)
        assert run_id(trigger) == "good"
        assert error.item == "run bad"
        assert "is not an input of activity" in error.message

    async def test_a_device_input_without_values_still_gets_its_trigger(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two device inputs, one without values: both trigger, that one with spec {}."""
        api.add_run("r1", status="running")
        api.runs["r1"]["inputs"].append({"resourceName": SPARK, "resourceDefId": "in-spark"})
        async with running(url) as harness:
            ot2, spark = await harness.next_triggers(2)
            await trio.sleep(60)
        assert (ot2.api_version, spark.api_version) == (OT2, SPARK)
        assert ot2.spec == {"transferVolume": 50, "measurementWavelength": 600}
        assert spark.spec == {}
        assert spark.metadata.spec == ot2.metadata.spec
        assert harness.unread() == []
        assert harness.item_errors == []
        assert harness.state["run:r1"] == {"gen": 0, "active": True}

    async def test_one_devices_bad_value_does_not_drop_the_other_devices_trigger(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An invalid trigger for one apiVersion is reported; the run's others are sent."""
        api.add_run("r1", status="running")
        api.runs["r1"]["inputs"].append({"resourceName": SPARK, "resourceDefId": "in-spark"})
        api.values["r1"][f"{ACTIVITY} | input | in-spark | p-wl | value"] = float("nan")
        async with running(url) as harness:
            ot2 = await harness.next_trigger()
            (error,) = await harness.wait_for_item_errors(1)
            await trio.sleep(60)
        assert ot2.api_version == OT2
        assert harness.unread() == []
        assert error.item == f"run r1 ({SPARK})"
        assert error.message == (
            "invalid trigger: spec.wavelength: holds NaN or Infinity, "
            "which JSON cannot carry; fix the activity or the run's values in Riffyn, "
            "then stop and start the run"
        )
        assert len(harness.item_errors) == 1

    @pytest.mark.parametrize("endpoint", ["/process/", "/data/raw$"])
    async def test_a_run_whose_data_fails_to_load_is_retried_and_triggers_once(
        self, api: FakeRiffyn, url: str, endpoint: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A 500 on the run's activity or data: reported, retried next poll, sent once."""
        api.add_run("r1", status="running")
        api.failures_left[endpoint] = 1
        async with running(url) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            assert harness.sent == []
            assert "run:r1" not in harness.state
            trigger = await harness.next_trigger()
            await trio.sleep(60)
        assert error.item == "run r1"
        assert "500" in error.message
        assert run_id(trigger) == "r1"
        assert harness.unread() == []
        assert len(harness.item_errors) == 1
        assert harness.state["run:r1"] == {"gen": 0, "active": True}

    async def test_an_activity_name_that_names_no_protocol_is_reported_once(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """'pH-adjust (2nd)' maps to 'Ph-Adjust(2Nd)', as the original did: refused, not sent."""
        api.activity["name"] = "pH-adjust (2nd)"
        api.add_run("r1", status="running")
        async with running(url) as harness:
            (error,) = await harness.wait_for_item_errors(1)
            await trio.sleep(60)
        assert error.item == f"run r1 ({OT2})"
        assert error.message.startswith("invalid trigger: protocol: must start with a letter")
        assert error.message.endswith(
            "; fix the activity or the run's values in Riffyn, then stop and start the run"
        )
        assert harness.sent == []
        assert len(harness.item_errors) == 1

    async def test_names_are_mapped_as_the_original_plugin_mapped_them(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Activity 'PLATE TRANSFER' → PlateTransfer; 'OD', 'FP1 Excite', 'OD600' → od, ...."""
        api.activity["name"] = "PLATE TRANSFER"
        api.activity["inputs"][0]["properties"] = [
            {"_id": "p-od", "name": "OD"},
            {"_id": "p-fp1", "name": "FP1 Excite"},
            {"_id": "p-od600", "name": "OD600"},
            {"_id": "p-pos", "name": "DevicePosition"},
        ]
        api.add_run("r1", status="running")
        api.values["r1"] = {
            f"{ACTIVITY} | input | in-ot2 | p-od | value": 0.42,
            f"{ACTIVITY} | input | in-ot2 | p-fp1 | value": "6500K",
            f"{ACTIVITY} | input | in-ot2 | p-od600 | value": 0.5,
            f"{ACTIVITY} | input | in-ot2 | p-pos | value": "M0",
        }
        async with running(url) as harness:
            trigger = await harness.next_trigger()
        assert trigger.protocol == "PlateTransfer"
        assert trigger.spec == {
            "od": 0.42,
            "fp1Excite": "6500K",
            "od600": 0.5,
            "devicePosition": "M0",
        }

    async def test_a_partly_started_plate_survives_a_tower_restart(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Wells started before a restart count towards the plate after it."""
        for well in (1, 2):
            api.add_run(f"w{well}", name=f"Transfer [1x2] {well}")
        api.set_status("w1", "running")
        state = MemoryStateBackend()
        async with running(url, state=state) as harness:
            await harness.wait_for_state("run:w1")
        async with running(url, state=state) as harness:
            api.set_status("w2", "running")
            plate = await harness.next_trigger()
        assert well_run_ids(plate) == ["w1", "w2"]

    async def test_a_restarted_well_of_a_fired_plate_is_reported_not_sent(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """One well restarted fires nothing; the plate fires again once every well restarted."""
        for well in (1, 2):
            api.add_run(f"w{well}", name=f"Transfer [1x2] {well}", status="running")
        async with running(url) as harness:
            first = await harness.next_trigger()
            api.set_status("w1", "stopped")
            await trio.sleep(30)
            api.set_status("w1", "running")
            (error,) = await harness.wait_for_item_errors(1)
            await trio.sleep(60)
            assert harness.unread() == []
            api.set_status("w2", "stopped")
            await trio.sleep(30)
            api.set_status("w2", "running")
            second = await harness.next_trigger()
            await trio.sleep(60)
        assert error.item == "run w1"
        assert error.message == (
            "well 1 of plate 'Transfer [1x2]' was restarted after the plate was triggered; "
            "it is not triggered alone and the other wells are not run again: to run the "
            "plate again, stop and start all 2 of its wells"
        )
        assert second.spec == first.spec
        assert second.key != first.key
        assert harness.unread() == []
        assert len(harness.item_errors) == 1
        assert [key for key in harness.state if not key.startswith("run:")] == [
            f"fired:{EXPERIMENT}:{ACTIVITY}:Transfer:1x2"
        ]

    async def test_a_wrong_api_key_is_reported(
        self, api: FakeRiffyn, url: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A 401 is an error the operator sees, without the key in it."""
        async with running(url, api_key="wrong") as harness:
            (error,) = await harness.wait_for_item_errors(1)
        assert "401" in error.message
        assert "wrong" not in error.message


class TestNames:
    @pytest.mark.parametrize(
        ("activity", "protocol"),
        [
            ("Plate Transfer", "PlateTransfer"),
            ("plate transfer", "PlateTransfer"),
            ("PLATE TRANSFER", "PlateTransfer"),
            ("Serial Dilution", "SerialDilution"),
            ("  Simple  Dilution ", "SimpleDilution"),
            ("Bioreactor", "Bioreactor"),
            ("bioreactor", "Bioreactor"),
            ("Measure OD600", "MeasureOd600"),
            ("PLATETRANSFER", "Platetransfer"),
            # The exception: already PascalCase (or camelCase), no spaces.
            ("PlateTransfer", "PlateTransfer"),
            ("MeasureAbsorbance", "MeasureAbsorbance"),
            ("plateTransfer", "PlateTransfer"),
        ],
    )
    def test_protocol_names(self, activity: str, protocol: str) -> None:
        """An activity name becomes a protocol by str.title() with spaces removed."""
        assert watcher.protocol_name(activity) == protocol

    @pytest.mark.parametrize(
        ("prop", "key"),
        [
            ("OD", "od"),
            ("FP1 Excite", "fp1Excite"),
            ("FP1 Gain", "fp1Gain"),
            ("OD600", "od600"),
            ("measurement wavelength", "measurementWavelength"),
            ("Shaking Duration", "shakingDuration"),
            ("Device Position", "devicePosition"),
            ("volume", "volume"),
            ("Thermostat", "thermostat"),
            ("pH", "ph"),
            ("transfer volume (uL)", "transferVolume(Ul)"),
            # The exception: already PascalCase (or camelCase), no spaces.
            ("DevicePosition", "devicePosition"),
            ("fp1Excite", "fp1Excite"),
        ],
    )
    def test_spec_keys(self, prop: str, key: str) -> None:
        """A property name becomes a spec key the same way, its first letter lowered."""
        assert watcher.spec_key(prop) == key

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("Dilution [8x12] 5", ("Dilution", 8, 12, 5)),
            ("My plate [2X3]1", ("My plate", 2, 3, 1)),
            ("Screen [16x24] 384", ("Screen", 16, 24, 384)),
            ("Dilution 5", None),
            ("[2x2] 1", None),
        ],
    )
    def test_plate_run_names(self, name: str, expected: tuple[str, int, int, int] | None) -> None:
        """'<name> [RxC] <i>' marks well i of an R-by-C plate."""
        well = watcher.PlateWell.parse(name)
        assert (None if well is None else attrs.astuple(well)) == expected
