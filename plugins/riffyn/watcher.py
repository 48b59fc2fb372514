"""Riffyn Nexus: a run that starts in the LIMS becomes triggers for its devices.

Every ``poll_interval`` seconds the plugin walks experiments → run groups →
runs. A run that has become ``running`` is started: for each of its inputs
whose ``resourceName`` is an apiVersion (``OT-2/v1alpha1``), one trigger,
``protocol`` from the activity's name and ``spec`` from the run's data. A
run that goes back to ``stopped`` or ``new`` is forgotten, so starting it
again triggers again. Runs named ``<name> [RxC] <i>`` are the wells of one
plate: one plate trigger is sent once all R*C of them have started.

Names follow the original ULAS plugin, which labs configured their
activities against: ``str.title()``, spaces removed (see ``protocol_name``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trio

from tower_trio import InvalidTriggerError, Trigger
from tower_trio.plugin import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RequestDeadlineError,
    ResponseTooLargeError,
    State,
    is_api_version,
    open_http_client,
    poll,
    report_item_error,
    secret,
    trigger_from_json,
)

RESTARTABLE = frozenset({"stopped", "new"})
_PLATE_RUN = re.compile(
    r"(?P<name>.*\S)\s*\[(?P<rows>\d+)\s*[xX]\s*(?P<columns>\d+)\]\s*(?P<well>\d+)"
)
# Two or more words already marked by capitals, nothing else: PlateTransfer,
# plateTransfer, fp1Excite; not OD600 or FP1 (capitals in a row are an acronym).
_CASED = re.compile(r"[A-Za-z][a-z][a-z0-9]*(?:[A-Z][a-z][a-z0-9]*)+")


@attrs.frozen
class Config:
    api_key: str = secret()
    """Riffyn API key, sent as the ``api-key`` header (PLUGIN_RIFFYN_API_KEY)."""
    url: str = "https://api.app.riffyn.com/v1"
    """Base URL of the Riffyn API (PLUGIN_RIFFYN_URL)."""
    poll_interval: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds between polls (PLUGIN_RIFFYN_POLL_INTERVAL)."""
    timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Seconds one API request may take, answer included (PLUGIN_RIFFYN_TIMEOUT)."""
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES, validator=attrs.validators.ge(1)
    )
    """The largest answer read, decompressed (PLUGIN_RIFFYN_MAX_RESPONSE_BYTES)."""


class RiffynDataError(ValueError):
    """The Riffyn API answered, but not with what a run needs."""


class RiffynApiError(Exception):
    """The Riffyn API did not answer within the plugin's limits of time or size."""


def _title_words(name: str) -> str:
    stripped = name.strip()
    if _CASED.fullmatch(stripped):
        # The one departure from the original: title() would flatten
        # PlateTransfer to Platetransfer, which names no protocol module.
        return stripped
    return "".join(stripped.title().split())


def protocol_name(activity: str) -> str:
    """``Plate Transfer``, ``PLATE TRANSFER``, ``PlateTransfer`` → ``PlateTransfer``.

    The original's rule, ``str.title()`` with the spaces removed, except that
    a name without spaces already written in PascalCase (or camelCase) keeps
    its capitals.
    """
    words = _title_words(activity)
    return words[:1].upper() + words[1:]


def spec_key(prop: str) -> str:
    """``OD`` → ``od``, ``FP1 Excite`` → ``fp1Excite``: ``protocol_name``, first letter lowered."""
    words = _title_words(prop)
    return words[:1].lower() + words[1:]


@attrs.frozen
class PlateWell:
    """Where a run named ``<name> [RxC] <i>`` sits."""

    name: str
    rows: int
    columns: int
    well: int

    @classmethod
    def parse(cls, run_name: str) -> PlateWell | None:
        match = _PLATE_RUN.fullmatch(run_name.strip())
        if match is None:
            return None
        return cls(match["name"], int(match["rows"]), int(match["columns"]), int(match["well"]))


def _items(body: Any, what: str) -> list[dict[str, Any]]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise RiffynDataError(f"{what}: expected {{'data': [objects]}}")
    return data


def _field(item: Any, name: str, what: str) -> Any:
    if not isinstance(item, dict) or item.get(name) in (None, ""):
        raise RiffynDataError(f"{what} has no {name!r}")
    return item[name]


def _segment(value: Any) -> str:
    """An id from the API as one URL path segment, which it cannot escape from."""
    text = str(value)
    # "." and ".." stay dot segments even when quoted: a URL parser removes them.
    if text in ("", ".", ".."):
        raise RiffynDataError(f"the id {text!r} cannot be used in a URL path")
    return quote(text, safe="")


@attrs.define
class Riffyn:
    """The few Riffyn API calls the plugin makes."""

    client: httpx.AsyncClient
    config: Config

    async def get(self, path: str, **params: Any) -> Any:
        try:
            response = await self.client.get(path, params=params or None)
        except ResponseTooLargeError:
            raise RiffynApiError(
                f"GET {path} answered more than PLUGIN_RIFFYN_MAX_RESPONSE_BYTES="
                f"{self.config.max_response_bytes} bytes; raise it if the API's answers "
                "are really that large"
            ) from None
        except RequestDeadlineError:
            raise RiffynApiError(
                f"GET {path} timed out after {self.config.timeout:g} s, answer included; "
                "raise PLUGIN_RIFFYN_TIMEOUT if the API is that slow"
            ) from None
        response.raise_for_status()
        try:
            return response.json()
        except ValueError as err:
            raise RiffynDataError(f"GET {path} did not answer JSON: {err}") from None

    async def experiments(self) -> list[dict[str, Any]]:
        return _items(await self.get("/experiments"), "GET /experiments")

    async def run_groups(self, experiment: str) -> list[dict[str, Any]]:
        path = f"/experiment/{_segment(experiment)}/run-groups"
        return _items(await self.get(path), f"GET {path}")

    async def runs(self, experiment: str, group: str) -> list[dict[str, Any]]:
        path = f"/experiment/{_segment(experiment)}/run-group/{_segment(group)}/runs"
        return _items(await self.get(path), f"GET {path}")

    async def activity(self, experiment: str, activity: str) -> dict[str, Any]:
        body = await self.get(f"/process/{_segment(experiment)}/activity/{_segment(activity)}")
        if not isinstance(body, dict):
            raise RiffynDataError(f"activity {activity} is not an object")
        return body

    async def run_values(self, experiment: str, run: dict[str, Any]) -> dict[str, Any]:
        run_id, activity = run["_id"], run["activityId"]
        body = await self.get(
            f"/experiment/{_segment(experiment)}/step/{_segment(activity)}/data/raw",
            rgid=run.get("groupId", ""),
            rid=run_id,
            rnum=run.get("num", ""),
        )
        try:
            row = body["datatables"][run_id]["datatable"][0]
        except (KeyError, IndexError, TypeError):
            raise RiffynDataError(f"run {run_id} has no datatables.{run_id}.datatable[0]") from None
        if not isinstance(row, dict):
            raise RiffynDataError(f"run {run_id}'s datatable row is not an object")
        return row


@attrs.frozen
class StartedRun:
    """What a started run asks for: protocol, and one spec per device apiVersion."""

    experiment: str
    activity: str
    run_id: str
    protocol: str
    specs: dict[str, dict[str, Any]]


async def describe_run(riffyn: Riffyn, experiment: str, run: dict[str, Any]) -> StartedRun:
    """Fetch a started run's activity and data; raises RiffynDataError or httpx errors.

    Every input whose ``resourceName`` is an apiVersion gets a spec, empty if
    the run has no values for it: the device still has a protocol to run.
    """
    run_id = _field(run, "_id", "a run")
    activity_id = _field(run, "activityId", f"run {run_id}")
    activity = await riffyn.activity(experiment, activity_id)
    protocol = protocol_name(str(_field(activity, "name", f"activity {activity_id}")))
    inputs = run.get("inputs") or []
    wanted = [i for i in inputs if isinstance(i, dict) and is_api_version(i.get("resourceName"))]
    if not wanted:
        return StartedRun(experiment, activity_id, run_id, protocol, {})
    values = await riffyn.run_values(experiment, run)
    by_id = {}
    for definition in activity.get("inputs") or []:
        if isinstance(definition, dict):
            for ref in (definition.get("_id"), definition.get("resourceDefId")):
                if ref:
                    by_id[ref] = definition
    specs: dict[str, dict[str, Any]] = {}
    for run_input in wanted:
        resource = run_input["resourceName"]
        definition = by_id.get(run_input.get("resourceDefId"))
        if definition is None:
            raise RiffynDataError(
                f"run {run_id}: input {resource} ({run_input.get('resourceDefId')}) "
                f"is not an input of activity {activity_id}"
            )
        spec = specs.setdefault(resource, {})
        for prop in definition.get("properties") or []:
            if not isinstance(prop, dict) or not prop.get("_id") or not prop.get("name"):
                continue
            key = spec_key(str(prop["name"]))
            column = f"{activity_id} | input | {definition['_id']} | {prop['_id']} | value"
            value = values.get(column)
            if key and value is not None:
                spec[key] = value
    return StartedRun(experiment, activity_id, run_id, protocol, specs)


@attrs.frozen
class Outgoing:
    """A trigger as JSON, before it is checked, with its idempotency key."""

    api_version: str
    wire: dict[str, Any]
    key: str


def single_triggers(started: StartedRun, generation: int) -> list[Outgoing]:
    """One trigger per apiVersion of a run that is not a plate well."""
    meta = {"experimentId": started.experiment, "activityId": started.activity}
    return [
        Outgoing(
            api_version,
            {
                "apiVersion": api_version,
                "protocol": started.protocol,
                "spec": spec,
                "metadata": {"spec": {**meta, "runId": started.run_id}},
            },
            f"riffyn:{started.run_id}:{generation}:{api_version}",
        )
        for api_version, spec in sorted(started.specs.items())
    ]


def plate_triggers(
    plate: PlateWell, experiment: str, activity: str, wells: dict[str, Any]
) -> list[Outgoing]:
    """One plate trigger per apiVersion; spec and metadata.spec a list in well order."""
    order = [wells[str(i)] for i in range(1, plate.rows * plate.columns + 1)]
    origins = [
        {"experimentId": experiment, "activityId": activity, "runId": well["runId"]}
        for well in order
    ]
    generations = ",".join(f"{w['runId']}:{w['gen']}" for w in order)
    digest = hashlib.sha256(generations.encode()).hexdigest()[:16]
    api_versions = sorted({api for well in order for api in well["specs"]})
    return [
        Outgoing(
            api_version,
            {
                "apiVersion": api_version,
                "protocol": order[0]["protocol"],
                "plate": {"rows": plate.rows, "columns": plate.columns},
                "spec": [well["specs"].get(api_version, {}) for well in order],
                "metadata": {"spec": origins},
            },
            f"riffyn:plate:{digest}:{api_version}",
        )
        for api_version in api_versions
    ]


@attrs.define
class Watcher:
    riffyn: Riffyn
    send_channel: trio.abc.SendChannel[Trigger]
    state: State

    async def poll_once(self) -> None:
        """One walk over every run; an API failure on the experiment list raises (backoff)."""
        for experiment in await self.riffyn.experiments():
            experiment_id = experiment.get("_id")
            if not experiment_id:
                report_item_error("experiment", "an experiment has no '_id'")
                continue
            try:
                runs = [
                    run
                    for group in await self.riffyn.run_groups(experiment_id)
                    for run in await self.riffyn.runs(experiment_id, _field(group, "_id", "group"))
                ]
            except (RiffynDataError, RiffynApiError, httpx.HTTPError) as err:
                report_item_error(f"experiment {experiment_id}", err)
                continue
            for run in runs:
                await self.check_run(experiment_id, run)

    async def check_run(self, experiment: str, run: dict[str, Any]) -> None:
        run_id, status = run.get("_id"), run.get("status")
        if not run_id or not isinstance(run_id, str):
            report_item_error(f"experiment {experiment}", "a run has no '_id'")
            return
        record = await self.state.get(f"run:{run_id}", {"gen": 0, "active": False})
        if status in RESTARTABLE and record["active"]:
            await self.forget(experiment, run)
            await self.state.set(f"run:{run_id}", {"gen": record["gen"] + 1, "active": False})
        elif status == "running" and not record["active"]:
            await self.start(experiment, run, record["gen"])

    async def start(self, experiment: str, run: dict[str, Any], generation: int) -> None:
        run_id = run["_id"]
        try:
            started = await describe_run(self.riffyn, experiment, run)
        except (RiffynDataError, RiffynApiError, httpx.HTTPError) as err:
            # Not marked active: the next poll tries again.
            report_item_error(f"run {run_id}", err)
            return
        plate = PlateWell.parse(str(run.get("name", "")))
        if plate is None:
            await self.send(
                f"run {run_id}",
                single_triggers(started, generation),
                "fix the activity or the run's values in Riffyn, then stop and start the run",
            )
        elif not 1 <= plate.well <= plate.rows * plate.columns:
            report_item_error(
                f"run {run_id}",
                f"well {plate.well} is outside a {plate.rows}x{plate.columns} plate; "
                f"number the wells 1 to {plate.rows * plate.columns} in the runs' names, "
                "then stop and start the run",
            )
        else:
            await self.add_well(plate, started, generation)
        await self.state.set(f"run:{run_id}", {"gen": generation, "active": True})

    def plate_id(self, plate: PlateWell, experiment: str, activity: str) -> str:
        return f"{experiment}:{activity}:{plate.name}:{plate.rows}x{plate.columns}"

    async def add_well(self, plate: PlateWell, started: StartedRun, generation: int) -> None:
        """Gather a started well; the last of R*C wells to start sends the plate.

        ``plate:<id>`` holds the wells started since the plate last fired,
        ``fired:<id>`` the wells of the plate that fired and have not been
        stopped since.
        """
        plate_id = self.plate_id(plate, started.experiment, started.activity)
        wells = await self.state.get(f"plate:{plate_id}", {})
        wells[str(plate.well)] = {
            "runId": started.run_id,
            "gen": generation,
            "protocol": started.protocol,
            "specs": started.specs,
        }
        fired = await self.state.get(f"fired:{plate_id}", {})
        size = plate.rows * plate.columns
        if fired and len(wells) < size:
            # A device runs whole plates: sending this well alone, or the plate
            # again, would re-dispense into wells whose runs were never restarted.
            report_item_error(
                f"run {started.run_id}",
                f"well {plate.well} of plate '{plate.name} [{plate.rows}x{plate.columns}]' "
                "was restarted after the plate was triggered; it is not triggered alone "
                f"and the other wells are not run again: to run the plate again, stop "
                f"and start all {size} of its wells",
            )
        if len(wells) < size:
            await self.state.set(f"plate:{plate_id}", wells)
            return
        await self.send(
            f"plate {plate.name} [{plate.rows}x{plate.columns}]",
            plate_triggers(plate, started.experiment, started.activity, wells),
            "fix the activity or the wells' values in Riffyn, then stop and start every well",
        )
        await self.state.set(
            f"fired:{plate_id}", {well: data["runId"] for well, data in wells.items()}
        )
        await self.state.delete(f"plate:{plate_id}")

    async def forget(self, experiment: str, run: dict[str, Any]) -> None:
        plate = PlateWell.parse(str(run.get("name", "")))
        activity = run.get("activityId")
        if plate is None or not activity:
            return
        plate_id = self.plate_id(plate, experiment, activity)
        wells = await self.state.get(f"plate:{plate_id}", {})
        if wells.get(str(plate.well), {}).get("runId") == run["_id"]:
            del wells[str(plate.well)]
            await self.state.set(f"plate:{plate_id}", wells or None)
        fired = await self.state.get(f"fired:{plate_id}", {})
        if fired.get(str(plate.well)) == run["_id"]:
            del fired[str(plate.well)]
            await self.state.set(f"fired:{plate_id}", fired or None)

    async def send(self, item: str, outgoing: list[Outgoing], fix: str) -> None:
        """Send every valid trigger; an invalid one is reported and does not stop the others."""
        triggers = []
        for out in outgoing:
            try:
                triggers.append(trigger_from_json(out.wire, key=out.key))
            except InvalidTriggerError as err:
                report_item_error(f"{item} ({out.api_version})", f"{err}; {fix}")
        for trigger in triggers:
            await self.send_channel.send(trigger)


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config, state: State) -> None:
    headers = {"api-key": config.api_key, "accept": "application/json"}
    async with open_http_client(
        base_url=config.url.rstrip("/"),
        headers=headers,
        timeout=config.timeout,
        max_response_bytes=config.max_response_bytes,
    ) as client:
        watcher = Watcher(Riffyn(client, config), send_channel, state)
        await poll(watcher.poll_once, interval=config.poll_interval, what="riffyn API")
