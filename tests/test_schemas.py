"""Protocol schemas: loaded once, checked at the HTTP API and for plugins."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests._helpers import VALID, Broker, run_tower, tower_settings
from tower_trio import ConfigError, InvalidTriggerError, Plate, Trigger
from tower_trio._channel import Submission, TriggerSendChannel
from tower_trio._plugins import discover_plugins, select_plugins
from tower_trio._schemas import MAX_REPORTED_ERRORS, ProtocolSchemas, load_schemas
from tower_trio._serialization import load_trigger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tower_trio import FieldError

EXAMPLES = Path(__file__).parent.parent / "docs" / "schemas"
VOLUME = {"type": "object", "required": ["volume"], "properties": {"volume": {"type": "number"}}}


def write_schema(root: Path, relative: str, schema: Any) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return path


def fields(errors: Sequence[FieldError]) -> list[str]:
    return [error.field for error in errors]


@pytest.fixture(scope="module")
def examples() -> ProtocolSchemas:
    return load_schemas(EXAMPLES)


class TestLoading:
    def test_example_schemas_load(self, examples: ProtocolSchemas) -> None:
        """Every schema shipped in docs/schemas is valid and keyed by api/version/protocol."""
        assert sorted(examples.by_key) == [
            ("ChiBio/v1alpha1", "Dilute"),
            ("OT-2/v1alpha1", "Calibrate"),
            ("OT-2/v1alpha1", "PlateTransfer"),
            ("TecanSpark/v1alpha1", "Absorbance"),
            ("TecanSpark/v1alpha1", "ReadPlate"),
        ]

    def test_documented_examples_match_them(self, examples: ProtocolSchemas) -> None:
        """The triggers the docs show as examples pass the example schemas."""
        documented = [
            Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"volume": 100}),
            Trigger(
                api_version="OT-2/v1alpha1",
                protocol="PlateTransfer",
                spec={"volume": 100, "source": "A1", "destination": "B1"},
            ),
            Trigger(api_version="OT-2/v1alpha1", protocol="Calibrate", spec={"deck": 1}),
            Trigger(
                api_version="TecanSpark/v1alpha1/Spark2",
                protocol="Absorbance",
                spec=[{"wavelength": 600}] * 6,
                plate=Plate(rows=2, columns=3),
            ),
            Trigger(
                api_version="TecanSpark/v1alpha1", protocol="ReadPlate", spec={"wavelength": 600}
            ),
        ]
        for trigger in documented:
            assert examples.check(trigger) == [], trigger

    def test_no_directory_means_no_schemas(self) -> None:
        """Without TOWER_SCHEMAS_DIR every valid trigger passes."""
        schemas = load_schemas(None)
        assert len(schemas) == 0
        assert schemas.check(Trigger(api_version="A/v1", protocol="P", spec={"x": 1})) == []

    def test_strict_without_directory_refused(self) -> None:
        """Strict mode without schemas would refuse everything, so it is a start-up error."""
        with pytest.raises(ConfigError, match="TOWER_SCHEMAS_STRICT=true needs TOWER_SCHEMAS_DIR"):
            load_schemas(None, strict=True)

    def test_missing_directory_named(self, tmp_path: Path) -> None:
        """A TOWER_SCHEMAS_DIR that is not a folder is named."""
        with pytest.raises(ConfigError, match="is not a directory"):
            load_schemas(tmp_path / "absent")

    def test_other_files_ignored(self, tmp_path: Path) -> None:
        """Only .json files are schemas: a README beside them is fine."""
        write_schema(tmp_path, "OT-2/README.md", "# OT-2 protocols")
        write_schema(tmp_path, "OT-2/v1alpha1/PlateTransfer.json", VOLUME)
        assert len(load_schemas(tmp_path)) == 1

    @pytest.mark.parametrize(
        "relative",
        [
            "PlateTransfer.json",
            "OT-2/PlateTransfer.json",
            "OT-2/v1alpha1/robot-1/PlateTransfer.json",
            "OT-2/alpha/PlateTransfer.json",
            "OT 2/v1/PlateTransfer.json",
            "OT-2/v1/plate-transfer.json",
        ],
    )
    def test_misplaced_schema_named(self, tmp_path: Path, relative: str) -> None:
        """A schema outside <api>/<version>/<Protocol>.json stops start-up, naming it."""
        path = write_schema(tmp_path, relative, VOLUME)
        with pytest.raises(ConfigError, match="is not where a schema goes") as excinfo:
            load_schemas(tmp_path)
        assert str(path) in str(excinfo.value)

    def test_broken_json_named(self, tmp_path: Path) -> None:
        """A schema file that is not JSON stops start-up, naming it."""
        path = write_schema(tmp_path, "OT-2/v1/P.json", '{"type": ')
        with pytest.raises(ConfigError, match=f"schema {path} cannot be read as JSON"):
            load_schemas(tmp_path)

    def test_invalid_schema_named(self, tmp_path: Path) -> None:
        """JSON that is not a valid JSON Schema stops start-up, naming file and place."""
        path = write_schema(tmp_path, "OT-2/v1/P.json", {"properties": {"x": {"type": "int"}}})
        with pytest.raises(ConfigError) as excinfo:
            load_schemas(tmp_path)
        message = str(excinfo.value)
        assert message.startswith(f"schema {path} is not a valid JSON Schema: ")
        assert "(at .properties.x.type)" in message

    def test_external_ref_refused(self, tmp_path: Path) -> None:
        """A $ref to another document is refused: the tower never fetches schemas."""
        write_schema(tmp_path, "OT-2/v1/P.json", {"$ref": "https://schemas.example/p.json"})
        with pytest.raises(ConfigError, match="schemas must be self-contained"):
            load_schemas(tmp_path)

    def test_dangling_ref_refused(self, tmp_path: Path) -> None:
        """A local $ref to nothing is found at start-up, not at the first trigger."""
        schema = {"properties": {"x": {"$ref": "#/$defs/missing"}}}
        write_schema(tmp_path, "OT-2/v1/P.json", schema)
        with pytest.raises(ConfigError, match="does not exist in the file"):
            load_schemas(tmp_path)

    def test_draft_07_schemas_work(self, tmp_path: Path) -> None:
        """A schema declaring an older draft is checked by that draft's rules."""
        schema = {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"n": {"type": "integer"}},
            "properties": {"n": {"$ref": "#/definitions/n"}},
        }
        write_schema(tmp_path, "OT-2/v1/P.json", schema)
        schemas = load_schemas(tmp_path)
        trigger = Trigger(api_version="OT-2/v1", protocol="P", spec={"n": "one"})
        assert fields(schemas.check(trigger)) == ["spec.n"]


class TestChecking:
    def test_errors_name_their_path(self, examples: ProtocolSchemas) -> None:
        """Each schema error names the field under spec, as the model's own errors do."""
        trigger = Trigger(
            api_version="OT-2/v1alpha1",
            protocol="PlateTransfer",
            spec={"volume": -1, "source": "Z9", "speed": 3},
        )
        errors = sorted(examples.check(trigger), key=lambda e: e.field)
        assert fields(errors) == ["spec", "spec.source", "spec.volume"]
        assert "'speed' was unexpected" in errors[0].message
        assert "does not match" in errors[1].message
        assert "less than or equal to the minimum of 0" in errors[2].message

    def test_missing_required_field(self, examples: ProtocolSchemas) -> None:
        """A missing required property is reported on the object that lacks it."""
        trigger = Trigger(api_version="OT-2/v1alpha1", protocol="Calibrate", spec={"slot": 1})
        messages = {e.message for e in examples.check(trigger)}
        assert "'deck' is a required property" in messages

    def test_device_suffix_ignored(self, examples: ProtocolSchemas) -> None:
        """OT-2/v1alpha1/robot-3 is checked against OT-2/v1alpha1's schema."""
        trigger = Trigger(
            api_version="OT-2/v1alpha1/robot-3", protocol="PlateTransfer", spec={"volume": "a"}
        )
        assert fields(examples.check(trigger)) == ["spec.volume"]

    def test_each_well_checked(self, examples: ProtocolSchemas) -> None:
        """For a plate, each well's spec is checked and named by its index."""
        wells: list[dict[str, Any]] = [{"wavelength": 600}] * 6
        wells[4] = {"wavelength": 100}
        trigger = Trigger(
            api_version="TecanSpark/v1alpha1",
            protocol="Absorbance",
            spec=wells,
            plate=Plate(rows=2, columns=3),
        )
        assert fields(examples.check(trigger)) == ["spec[4].wavelength"]

    def test_errors_bounded(self, examples: ProtocolSchemas) -> None:
        """A plate where every well is wrong reports the first few and counts the rest."""
        trigger = Trigger(
            api_version="ChiBio/v1alpha1",
            protocol="Dilute",
            spec=[{"od": -1}] * 384,
            plate=Plate(rows=16, columns=24),
        )
        errors = examples.check(trigger)
        assert len(errors) == MAX_REPORTED_ERRORS + 1
        assert errors[-1].message == f"and {384 - MAX_REPORTED_ERRORS} more schema errors not shown"

    def test_long_values_shortened(self, examples: ProtocolSchemas) -> None:
        """A message quoting a huge value is cut, so the error body stays small."""
        trigger = Trigger(
            api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"volume": "9" * 100_000}
        )
        (error,) = examples.check(trigger)
        assert len(error.message) <= 300
        assert error.message.endswith("…")

    def test_protocols_without_schema_pass(self, examples: ProtocolSchemas) -> None:
        """Not strict: a protocol without a schema is not checked."""
        trigger = Trigger(api_version="OT-2/v1alpha1", protocol="Unknown", spec={"x": 1})
        assert examples.check(trigger) == []

    def test_strict_refuses_protocols_without_schema(self) -> None:
        """Strict: a protocol without a schema is refused, naming protocol and setting."""
        schemas = load_schemas(EXAMPLES, strict=True)
        trigger = Trigger(api_version="OT-2/v1alpha2", protocol="PlateTransfer", spec={"x": 1})
        (error,) = schemas.check(trigger)
        assert error.field == "protocol"
        assert "has no schema for OT-2/v1alpha2" in error.message
        assert "TOWER_SCHEMAS_STRICT=true" in error.message


class TestPluginChannel:
    async def test_send_raises_to_the_plugin(self, examples: ProtocolSchemas) -> None:
        """A plugin whose trigger breaks its schema gets InvalidTriggerError; nothing is queued."""
        send, receive = trio.open_memory_channel[Submission](1)
        channel = TriggerSendChannel(send, "lims", check=examples.check)
        bad = Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"volume": 0})
        with pytest.raises(InvalidTriggerError) as excinfo:
            await channel.send(bad)
        assert [e.field for e in excinfo.value.errors] == ["spec.volume"]
        with pytest.raises(InvalidTriggerError):
            channel.send_nowait(bad)
        assert receive.statistics().current_buffer_used == 0
        good = Trigger(api_version="OT-2/v1alpha1", protocol="PlateTransfer", spec={"volume": 5})
        channel.clone().send_nowait(good)
        assert (await receive.receive()).trigger.metadata.source == "lims"

    async def test_tower_checks_plugin_triggers(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """In a running tower, a plugin's invalid trigger is refused to it and never published."""
        watcher = tmp_path / "plugins" / "checker" / "watcher.py"
        watcher.parent.mkdir(parents=True)
        watcher.write_text(
            textwrap.dedent(
                """
                import attrs
                import trio

                from tower_trio import InvalidTriggerError, Metadata, Trigger


                @attrs.frozen
                class Config:
                    pass


                async def run(send_channel, config):
                    def transfer(volume, note=""):
                        return Trigger(
                            api_version="OT-2/v1alpha1",
                            protocol="PlateTransfer",
                            spec={"volume": volume},
                            metadata=Metadata(spec={"refused": note}),
                        )

                    try:
                        await send_channel.send(transfer(-3))
                    except InvalidTriggerError as err:
                        await send_channel.send(transfer(3, str(err)))
                    await trio.sleep_forever()
                """
            )
        )
        plugins, _ = select_plugins(
            discover_plugins(tmp_path / "plugins", entry_points=False), ("checker",), {}
        )
        queue = await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, schemas_dir=EXAMPLES)
        async with run_tower(settings, plugins):
            (message,) = await broker.take(queue, 1)
        trigger = load_trigger(message.body)
        assert trigger.spec == {"volume": 3}
        assert isinstance(trigger.metadata.spec, dict)
        assert trigger.metadata.spec["refused"].startswith("invalid trigger: spec.volume: -3")


class TestHttp:
    async def test_schema_errors_are_422(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """POST /triggers refuses a spec breaking its schema, naming each path; valid ones pass."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, schemas_dir=EXAMPLES)
        async with run_tower(settings) as tower:
            bad = await tower.client.post(
                "/triggers", json={**VALID, "spec": {"volume": 2000, "source": "A0"}}
            )
            good = await tower.client.post("/triggers", json=VALID)
            wells = await tower.client.post(
                "/triggers",
                json={
                    "apiVersion": "ChiBio/v1alpha1/ChiBio1",
                    "protocol": "Dilute",
                    "spec": [{"od": 1}, {"od": "high"}],
                    "plate": {"rows": 1, "columns": 2},
                },
            )
        assert bad.status_code == 422
        assert bad.json()["error"] == "invalid trigger"
        details = sorted(bad.json()["details"], key=lambda d: d["field"])
        assert [d["field"] for d in details] == ["spec.source", "spec.volume"]
        assert good.status_code == 202
        assert wells.status_code == 422
        assert wells.json()["details"] == [
            {"field": "spec[1].od", "message": "'high' is not of type 'number'"}
        ]

    async def test_protocols_listed(self, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
        """GET /protocols lists each protocol with its schema, and whether strict mode is on."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, schemas_dir=EXAMPLES, schemas_strict=True
        )
        async with run_tower(settings) as tower:
            listed = await tower.client.get("/protocols")
            unknown = await tower.client.post("/triggers", json={**VALID, "protocol": "Mystery"})
        assert listed.status_code == 200
        body = listed.json()
        assert body["strict"] is True
        first = body["protocols"][0]
        assert (first["apiVersion"], first["protocol"]) == ("ChiBio/v1alpha1", "Dilute")
        assert first["schema"] == json.loads((EXAMPLES / "ChiBio/v1alpha1/Dilute.json").read_text())
        assert len(body["protocols"]) == 5
        assert unknown.status_code == 422
        assert unknown.json()["details"][0]["field"] == "protocol"

    async def test_no_schemas_lists_none(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Without TOWER_SCHEMAS_DIR, GET /protocols is an empty list."""
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            listed = await tower.client.get("/protocols")
        assert listed.json() == {"strict": False, "protocols": []}

    async def test_broken_schema_stops_start_up(self, amqp_url: str, tmp_path: Path) -> None:
        """serve_tower refuses to start with a broken schema, before opening anything."""
        write_schema(tmp_path / "schemas", "OT-2/v1/P.json", {"type": 12})
        settings = tower_settings(
            amqp_url, "unused", tmp_path / "data", schemas_dir=tmp_path / "schemas"
        )
        with pytest.RaisesGroup(pytest.RaisesExc(ConfigError, match="P.json is not a valid")):
            async with run_tower(settings):
                pass
        assert not (tmp_path / "data").exists()
