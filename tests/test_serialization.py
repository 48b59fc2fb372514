"""The wire format: camelCase JSON out, validated triggers in, exact round trips."""

from __future__ import annotations

import enum
import json
import os
import string
import time
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tower_trio import FieldError, InvalidTriggerError, Metadata, Plate, Trigger
from tower_trio._serialization import (
    dump_trigger,
    dumps,
    format_datetime,
    format_timestamp,
    load_trigger,
    parse_datetime,
    structure_env_value,
    trigger_from_wire,
    trigger_to_wire,
)

FIXED_UUID = "0123456789abcdef0123456789abcdef"
FIXED_TIME = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)

# Enough examples to find the odd case, few enough to keep the file fast;
# no deadline, because a loaded CI machine is not a failing test.
BOUNDED = settings(max_examples=100, deadline=None)


def fixed_trigger(**overrides: Any) -> Trigger:
    """A valid trigger with a known uuid and creation time."""
    fields: dict[str, Any] = {
        "api_version": "OT-2/v1alpha1",
        "protocol": "PlateTransfer",
        "spec": {"volume": 100},
        "metadata": Metadata(source="http", spec={"operator": "ada"}),
        "uuid": FIXED_UUID,
        "created_at": FIXED_TIME,
    }
    fields.update(overrides)
    return Trigger(**fields)


def submitted(**overrides: Any) -> dict[str, Any]:
    """A valid submitted wire trigger, with ``overrides`` replacing (or adding) keys."""
    wire: dict[str, Any] = {
        "apiVersion": "OT-2/v1alpha1",
        "protocol": "PlateTransfer",
        "spec": {"volume": 100},
    }
    wire.update(overrides)
    return wire


def published(**overrides: Any) -> dict[str, Any]:
    """A valid published wire trigger: uuid included, no creation time."""
    return submitted(uuid=FIXED_UUID) | overrides


def wire_errors(wire: object, **kwargs: Any) -> dict[str, str]:
    """Field name to message of every error ``trigger_from_wire`` reports; fails if valid."""
    with pytest.raises(InvalidTriggerError) as excinfo:
        trigger_from_wire(wire, **kwargs)
    fields = [error.field for error in excinfo.value.errors]
    assert len(fields) == len(set(fields)), f"a field is reported twice: {fields}"
    return {error.field: error.message for error in excinfo.value.errors}


def strict_json(body: bytes) -> Any:
    """``body`` decoded as RFC 8259 JSON: UTF-8, and no NaN or Infinity."""

    def reject(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(body.decode("utf-8"), parse_constant=reject)


class TestDatetimes:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            pytest.param(FIXED_TIME, "2026-01-31T12:00:00Z", id="utc"),
            pytest.param(
                datetime(2026, 1, 31, 14, 0, tzinfo=timezone(timedelta(hours=2))),
                "2026-01-31T12:00:00Z",
                id="converted-to-utc",
            ),
            pytest.param(
                datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
                "2026-01-31T12:00:00.123456Z",
                id="microseconds",
            ),
        ],
    )
    def test_format(self, value: datetime, text: str) -> None:
        """Timestamps are written as RFC 3339 in UTC, ending in ``Z``."""
        assert format_datetime(value) == text

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("2026-01-31T12:00:00Z", id="z"),
            pytest.param("2026-01-31T12:00:00+00:00", id="zero-offset"),
            pytest.param("2026-01-31T13:00:00+01:00", id="other-offset"),
        ],
    )
    def test_parse(self, text: str) -> None:
        """RFC 3339 timestamps with any offset are read as the instant they denote."""
        assert parse_datetime(text) == FIXED_TIME

    @pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
    def test_format_whatever_the_local_zone(self, zone: str) -> None:
        """A tower whose machine runs on local time still writes UTC timestamps."""
        previous = os.environ.get("TZ")
        os.environ["TZ"] = zone
        time.tzset()
        try:
            assert format_datetime(FIXED_TIME) == "2026-01-31T12:00:00Z"
        finally:
            if previous is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = previous
            time.tzset()

    @BOUNDED
    @given(st.floats(min_value=0, max_value=253_402_300_799))
    def test_a_unix_time_is_spelled_as_its_datetime(self, seconds: float) -> None:
        """The fast spelling of a Unix time rounds its microseconds as ``datetime`` does."""
        expected = format_datetime(datetime.fromtimestamp(seconds, UTC))
        assert format_timestamp(seconds) == expected

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.0, "1970-01-01T00:00:00Z"),
            (1_790_000_000.0000005, "2026-09-21T14:13:20Z"),
            (1_790_000_000.9999996, "2026-09-21T14:13:21Z"),
            (1_790_000_000.123456, "2026-09-21T14:13:20.123456Z"),
            (-1.5, "1969-12-31T23:59:58.500000Z"),
        ],
    )
    def test_a_unix_time_at_the_edges(self, seconds: float, text: str) -> None:
        assert format_timestamp(seconds) == text

    def test_parse_naive(self) -> None:
        """A timestamp without an offset is refused with an example of a good one."""
        with pytest.raises(ValueError, match=r"^needs a timezone, like '2026-01-31T12:00:00Z'$"):
            parse_datetime("2026-01-31T12:00:00")


class TestTriggerToWire:
    def test_fields(self) -> None:
        """A trigger becomes a dict of ULAS's fields only: camelCase, no plate, no createdAt."""
        assert trigger_to_wire(fixed_trigger()) == {
            "apiVersion": "OT-2/v1alpha1",
            "protocol": "PlateTransfer",
            "spec": {"volume": 100},
            "metadata": {"source": "http", "spec": {"operator": "ada"}},
            "uuid": FIXED_UUID,
        }

    def test_plate(self) -> None:
        """A plate is written as an object of rows and columns."""
        wire = trigger_to_wire(fixed_trigger(plate=Plate(rows=1, columns=2), spec=[{}, {"a": 1}]))
        assert wire["plate"] == {"rows": 1, "columns": 2}
        assert wire["spec"] == [{}, {"a": 1}]

    def test_well_metadata(self) -> None:
        """A plate trigger's list metadata.spec is written as the list it is."""
        wells = [{"runId": "r0"}, {}]
        trigger = fixed_trigger(
            plate=Plate(rows=2, columns=1),
            spec=[{}, {}],
            metadata=Metadata(source="riffyn", spec=wells),
        )
        assert trigger_to_wire(trigger)["metadata"] == {"source": "riffyn", "spec": wells}

    def test_no_created_at(self) -> None:
        """The creation time is not in the body: ULAS's strict consumers refuse extra members."""
        paris = datetime(2026, 1, 31, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
        assert "createdAt" not in trigger_to_wire(fixed_trigger(created_at=paris))


class TestDumps:
    def test_compact_utf8(self) -> None:
        """Bodies are compact UTF-8 JSON."""
        body = dumps({"note": "µl", "list": [1, 2]})
        assert b" " not in body
        assert json.loads(body.decode("utf-8")) == {"note": "µl", "list": [1, 2]}

    def test_dump_trigger(self) -> None:
        """A published body is the JSON of the trigger's wire form."""
        trigger = fixed_trigger(spec={"note": "5 µl, then mix"})
        assert strict_json(dump_trigger(trigger)) == trigger_to_wire(trigger)


class TestTriggerFromWire:
    def test_minimal(self) -> None:
        """The three required keys make a trigger; the tower assigns uuid and time."""
        trigger = trigger_from_wire(submitted())
        assert (trigger.api_version, trigger.protocol, trigger.spec) == (
            "OT-2/v1alpha1",
            "PlateTransfer",
            {"volume": 100},
        )
        assert (trigger.plate, trigger.metadata) == (None, Metadata())
        assert len(trigger.uuid) == 32
        assert trigger.created_at.utcoffset() == timedelta(0)

    def test_plate(self) -> None:
        """A plate object with a list of wells makes a plate trigger."""
        trigger = trigger_from_wire(
            submitted(plate={"rows": 1, "columns": 2}, spec=[{"a": 1}, {"a": 2}])
        )
        assert trigger.plate == Plate(rows=1, columns=2)
        assert trigger.spec == [{"a": 1}, {"a": 2}]

    def test_empty_spec(self) -> None:
        """An empty spec is accepted, as ULAS's format allows (a Home or Calibrate protocol)."""
        assert trigger_from_wire(submitted(protocol="Home", spec={})).spec == {}

    def test_well_metadata(self) -> None:
        """A plate trigger's metadata.spec may be a list, one object per well, kept in order."""
        wells = [{"runId": "r0"}, {}]
        wire = submitted(
            plate={"rows": 2, "columns": 1},
            spec=[{"volume": 1}, {}],
            metadata={"source": "test", "spec": wells},
        )
        assert trigger_from_wire(wire, source="http").metadata == Metadata("http", wells)

    def test_well_metadata_wrong_length(self) -> None:
        """A list metadata.spec that does not fit the plate is named, with the well count."""
        wire = submitted(plate={"rows": 2, "columns": 1}, spec=[{}, {}], metadata={"spec": [{}]})
        assert wire_errors(wire) == {
            "metadata.spec": "must hold exactly 2 wells for a 2x1 plate (one per well, "
            "column-first from A1), got 1"
        }

    def test_well_metadata_without_plate(self) -> None:
        """A list metadata.spec without a plate is refused, saying what to do."""
        assert wire_errors(submitted(metadata={"spec": [{}]})) == {
            "metadata.spec": "may be a list (one object per well) only for a plate trigger; "
            "give an object, or add plate"
        }

    def test_well_metadata_with_broken_plate(self) -> None:
        """With a broken plate, a list metadata.spec is not blamed for the missing plate."""
        wire = submitted(plate={"rows": 0, "columns": 2}, spec=[{}, {}], metadata={"spec": [{}]})
        assert wire_errors(wire) == {"plate.rows": "must be a positive integer"}

    def test_null_plate(self) -> None:
        """An explicit null plate is the same as no plate."""
        assert trigger_from_wire(submitted(plate=None)).plate is None

    def test_source_overrides_caller(self) -> None:
        """On the HTTP path the tower sets the source and keeps the caller's metadata spec."""
        wire = submitted(metadata={"source": "someone-else", "spec": {"operator": "ada"}})
        trigger = trigger_from_wire(wire, source="http")
        assert trigger.metadata == Metadata(source="http", spec={"operator": "ada"})

    def test_source_without_metadata(self) -> None:
        """The tower's source is set even when the caller sent no metadata."""
        assert trigger_from_wire(submitted(), source="http").metadata == Metadata(source="http")

    def test_source_overrides_invalid_caller_source(self) -> None:
        """A bad caller source does not matter when the tower overrides it."""
        wire = submitted(metadata={"source": 5})
        assert trigger_from_wire(wire, source="http").metadata.source == "http"

    def test_wire_source_kept_without_override(self) -> None:
        """Without a source to impose, the wire's metadata is taken as it is."""
        wire = submitted(metadata={"source": "riffyn", "spec": {"run": 3}})
        trigger = trigger_from_wire(wire)
        assert trigger.metadata == Metadata(source="riffyn", spec={"run": 3})

    def test_metadata_without_source(self) -> None:
        """Metadata sent without a source, and no source imposed, has an empty source."""
        wire = submitted(metadata={"spec": {"run": 3}})
        assert trigger_from_wire(wire).metadata == Metadata(source="", spec={"run": 3})

    @pytest.mark.parametrize("key", ["uuid", "createdAt"])
    def test_assigned_fields_refused(self, key: str) -> None:
        """A submitted trigger may not choose its uuid or creation time."""
        wire = submitted(**{key: {"uuid": FIXED_UUID, "createdAt": "2026-01-31T12:00:00Z"}[key]})
        assert wire_errors(wire) == {key: "is assigned by the tower; leave it out"}

    @pytest.mark.parametrize(
        "key", ["api_version", "created_at", "Protocol", "specs", "routingKey", "status"]
    )
    def test_unknown_key(self, key: str) -> None:
        """A key that is not a trigger field is named, so typos are not silently dropped."""
        assert wire_errors(submitted(**{key: "x"})) == {key: "is not a trigger field"}

    @pytest.mark.parametrize("key", ["apiVersion", "protocol", "spec"])
    def test_missing_required(self, key: str) -> None:
        """A missing required key is reported once, as required."""
        wire = submitted()
        del wire[key]
        assert wire_errors(wire) == {key: "is required"}

    @pytest.mark.parametrize(
        "wire",
        [
            pytest.param([], id="list"),
            pytest.param("trigger", id="string"),
            pytest.param(None, id="null"),
        ],
    )
    def test_not_an_object(self, wire: object) -> None:
        """A body that is not a JSON object is reported under ``$``."""
        assert wire_errors(wire) == {"$": "must be a JSON object"}

    def test_list_spec_without_plate(self) -> None:
        """A list of wells without a plate names ``plate``."""
        assert wire_errors(submitted(spec=[{}])) == {
            "plate": "is required when spec is a list of wells"
        }

    @pytest.mark.parametrize(
        ("plate", "errors"),
        [
            pytest.param(
                {"rows": True, "columns": 2},
                {"plate.rows": "must be a positive integer"},
                id="bool-rows",
            ),
            pytest.param(
                {"rows": 1, "columns": "2"},
                {"plate.columns": "must be a positive integer"},
                id="string-columns",
            ),
            pytest.param(
                {"rows": 1.0, "columns": 2.0},
                {
                    "plate.rows": "must be a positive integer",
                    "plate.columns": "must be a positive integer",
                },
                id="floats",
            ),
            pytest.param(
                {"rows": 1},
                {"plate.columns": "must be a positive integer"},
                id="missing-columns",
            ),
            pytest.param(
                {"rows": 1, "columns": 2, "wells": 2},
                {"plate.wells": "is not a plate field"},
                id="unknown-key",
            ),
            pytest.param(
                [1, 2],
                {"plate": 'must be an object like {"rows": 8, "columns": 12}'},
                id="not-an-object",
            ),
        ],
    )
    def test_invalid_plate(self, plate: object, errors: dict[str, str]) -> None:
        """Each problem of the plate is named, without a misleading 'plate is required'."""
        assert wire_errors(submitted(plate=plate, spec=[{}, {}])) == errors

    def test_wrong_number_of_wells(self) -> None:
        """A list of wells that does not fit the plate is reported under ``spec``."""
        errors = wire_errors(submitted(plate={"rows": 2, "columns": 2}, spec=[{}]))
        assert errors == {
            "spec": "must hold exactly 4 wells for a 2x2 plate (one per well, column-first "
            "from A1), got 1"
        }

    def test_well_problems_with_broken_plate(self) -> None:
        """A well that is not an object is reported even when the plate is broken too."""
        wire = submitted(plate={"rows": 0, "columns": 2}, spec=[{}, 5])
        assert wire_errors(wire) == {
            "plate.rows": "must be a positive integer",
            "spec[1]": "must be a JSON object",
        }

    @pytest.mark.parametrize(
        ("metadata", "errors"),
        [
            pytest.param(
                "ada",
                {"metadata": 'must be an object like {"spec": {...}}'},
                id="not-an-object",
            ),
            pytest.param(
                {"spec": "E-42"},
                {
                    "metadata.spec": "must be a JSON object, or for a plate trigger a list of "
                    "one object per well"
                },
                id="spec-string",
            ),
            pytest.param(
                {"source": ["a"]}, {"metadata.source": "must be a string"}, id="source-list"
            ),
            pytest.param(
                {"owner": "ada"}, {"metadata.owner": "is not a metadata field"}, id="unknown-key"
            ),
        ],
    )
    def test_invalid_metadata(self, metadata: object, errors: dict[str, str]) -> None:
        """Each problem of the metadata is named under ``metadata``."""
        assert wire_errors(submitted(metadata=metadata)) == errors

    def test_every_problem_at_once(self) -> None:
        """All problems of a submitted trigger come back together, each once."""
        wire = {
            "apiVersion": "OT-2 /v1",
            "spec": "{}",
            "plate": {"rows": "8", "columns": 12},
            "metadata": {"spec": "none"},
            "uuid": FIXED_UUID,
            "colour": "blue",
        }
        assert set(wire_errors(wire)) == {
            "apiVersion",
            "protocol",
            "spec",
            "plate.rows",
            "metadata.spec",
            "uuid",
            "colour",
        }

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(rb'{"note": NaN}', id="nan"),
            pytest.param(rb'{"note": -Infinity}', id="infinity"),
            pytest.param(rb'{"note": "\ud800"}', id="lone-surrogate"),
            pytest.param(rb'{"\udfff": 1}', id="lone-surrogate-key"),
        ],
    )
    def test_spec_that_cannot_be_published(self, body: bytes) -> None:
        """A spec Python's JSON reader lets through but strict JSON cannot carry is refused."""
        wire = submitted(spec=json.loads(body))
        assert any(field.startswith("spec") for field in wire_errors(wire, source="http"))


class TestLoadTrigger:
    def test_round_trip(self) -> None:
        """A published body, given its creation time, reads back as an equal trigger."""
        trigger = fixed_trigger()
        assert load_trigger(dump_trigger(trigger), created_at=FIXED_TIME) == trigger

    def test_round_trip_plate(self) -> None:
        """A plate trigger with per-well metadata reads back as an equal trigger."""
        trigger = fixed_trigger(
            plate=Plate(rows=2, columns=1),
            spec=[{"v": 1}, {"v": 2.5}],
            metadata=Metadata(source="riffyn", spec=[{"runId": "r0"}, {"runId": "r1"}]),
        )
        assert load_trigger(dump_trigger(trigger), created_at=FIXED_TIME) == trigger

    def test_text_body(self) -> None:
        """A body given as text is read like bytes."""
        trigger = fixed_trigger()
        assert load_trigger(dump_trigger(trigger).decode(), created_at=FIXED_TIME) == trigger

    def test_keeps_assigned_fields(self) -> None:
        """The uuid and source of a published body are kept."""
        trigger = load_trigger(dumps(published(metadata={"source": "riffyn"})))
        assert (trigger.uuid, trigger.metadata.source) == (FIXED_UUID, "riffyn")

    def test_creation_time_when_not_given(self) -> None:
        """Without a creation time from elsewhere, the trigger gets the time of reading."""
        before = datetime.now(UTC)
        trigger = load_trigger(dumps(published()))
        assert before <= trigger.created_at <= datetime.now(UTC)

    def test_uuid_required(self) -> None:
        """A published body without uuid is refused."""
        with pytest.raises(InvalidTriggerError) as excinfo:
            load_trigger(dumps(submitted()))
        assert excinfo.value.errors == (FieldError("uuid", "is required"),)

    @pytest.mark.parametrize(
        ("overrides", "error"),
        [
            pytest.param(
                {"uuid": FIXED_UUID.upper()},
                FieldError("uuid", "must be 32 lowercase hex characters"),
                id="uppercase-uuid",
            ),
            pytest.param(
                {"createdAt": "2026-01-31T12:00:00Z"},
                FieldError("createdAt", "is assigned by the tower; leave it out"),
                id="created-at",
            ),
            pytest.param(
                {"status": "sent"},
                FieldError("status", "is not a trigger field"),
                id="unknown-key",
            ),
        ],
    )
    def test_invalid(self, overrides: dict[str, Any], error: FieldError) -> None:
        """A published body with a bad field is refused, naming the field."""
        with pytest.raises(InvalidTriggerError) as excinfo:
            load_trigger(dumps(published(**overrides)))
        assert excinfo.value.errors == (error,)

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b"{", id="truncated"),
            pytest.param(b"\xff\xfe", id="not-utf8"),
        ],
    )
    def test_not_json(self, body: bytes) -> None:
        """A body that is not JSON is refused under ``$``."""
        with pytest.raises(InvalidTriggerError) as excinfo:
            load_trigger(body)
        (error,) = excinfo.value.errors
        assert error.field == "$"
        assert error.message.startswith("is not valid JSON: ")

    def test_not_an_object(self) -> None:
        """A JSON body that is not an object is refused under ``$``."""
        with pytest.raises(InvalidTriggerError) as excinfo:
            load_trigger(b"[]")
        assert excinfo.value.errors == (FieldError("$", "must be a JSON object"),)


API_CHARS = string.ascii_letters + string.digits + "-"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
api_versions = st.builds(
    lambda api, number, suffix, device: f"{api}/v{number}{suffix}{device}",
    st.text(API_CHARS, min_size=1, max_size=12),
    st.integers(min_value=1, max_value=999),
    st.text(string.ascii_lowercase + string.digits, max_size=6),
    st.just("") | st.text(API_CHARS + "_", min_size=1, max_size=12).map(lambda d: "/" + d),
)
protocols = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters),
    st.text(string.ascii_letters + string.digits + "_", max_size=127),
)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
created_ats = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


@st.composite
def specs_and_plates(draw: st.DrawFn) -> tuple[Any, Any, Plate | None]:
    """A spec, a metadata spec and the plate that goes with them.

    Without a plate both are objects (possibly empty); with one, spec is one
    object per well and metadata.spec is an object or one object per well.
    """
    if draw(st.booleans()):
        return draw(json_objects), draw(json_objects), None
    plate = Plate(
        rows=draw(st.integers(min_value=1, max_value=3)),
        columns=draw(st.integers(min_value=1, max_value=4)),
    )
    wells = st.lists(json_objects, min_size=plate.wells, max_size=plate.wells)
    return draw(wells), draw(json_objects | wells), plate


@st.composite
def triggers(draw: st.DrawFn) -> Trigger:
    """Valid triggers, every field drawn from its whole legal range."""
    spec, metadata_spec, plate = draw(specs_and_plates())
    return Trigger(
        api_version=draw(api_versions),
        protocol=draw(protocols),
        spec=spec,
        plate=plate,
        metadata=Metadata(source=draw(st.text(max_size=20)), spec=metadata_spec),
        uuid=draw(st.uuids()).hex,
        created_at=draw(created_ats),
    )


class TestRoundTripProperties:
    @BOUNDED
    @given(trigger=triggers())
    def test_load_dump(self, trigger: Trigger) -> None:
        """Any valid trigger reads back unchanged from its published body and creation time."""
        assert load_trigger(dump_trigger(trigger), created_at=trigger.created_at) == trigger

    @BOUNDED
    @given(trigger=triggers())
    def test_body_is_strict_json(self, trigger: Trigger) -> None:
        """Any valid trigger is published as UTF-8 JSON with exactly ULAS's keys."""
        wire = strict_json(dump_trigger(trigger))
        expected = {"apiVersion", "protocol", "spec", "metadata", "uuid"}
        assert set(wire) == (expected if trigger.plate is None else expected | {"plate"})
        assert set(wire["metadata"]) == {"source", "spec"}

    @BOUNDED
    @given(trigger=triggers(), source=st.text(min_size=1, max_size=20))
    def test_submitted(self, trigger: Trigger, source: str) -> None:
        """Any valid trigger, submitted without its assigned fields, comes back the same."""
        wire = json.loads(dump_trigger(trigger))
        del wire["uuid"]
        received = trigger_from_wire(wire, source=source)
        assert received.metadata == Metadata(source=source, spec=trigger.metadata.spec)
        assert (received.api_version, received.protocol, received.spec, received.plate) == (
            trigger.api_version,
            trigger.protocol,
            trigger.spec,
            trigger.plate,
        )


class TestStructureEnvValue:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            pytest.param("true", True, id="true"),
            pytest.param(" Yes ", True, id="yes-padded"),
            pytest.param("ON", True, id="on-upper"),
            pytest.param("1", True, id="one"),
            pytest.param("false", False, id="false"),
            pytest.param("no", False, id="no"),
            pytest.param("Off", False, id="off"),
            pytest.param("0", False, id="zero"),
        ],
    )
    def test_bool(self, raw: str, expected: bool) -> None:
        """Booleans are read from the usual words, so 'false' is False."""
        assert structure_env_value(raw, bool) is expected

    @pytest.mark.parametrize("raw", ["", "maybe", "2"])
    def test_bad_bool(self, raw: str) -> None:
        """Anything else is refused rather than read as truthy."""
        with pytest.raises(ValueError, match=r"^must be true or false$"):
            structure_env_value(raw, bool)

    @pytest.mark.parametrize(
        ("raw", "kind", "expected"),
        [
            pytest.param(" 42 ", int, 42, id="int"),
            pytest.param("-3", int, -3, id="negative-int"),
            pytest.param("2.5", float, 2.5, id="float"),
            pytest.param("3", float, 3.0, id="whole-float"),
            pytest.param("hello", str, "hello", id="str"),
        ],
    )
    def test_scalar(self, raw: str, kind: type, expected: object) -> None:
        """Numbers and strings are read as the declared type."""
        value = structure_env_value(raw, kind)
        assert (value, type(value)) == (expected, kind)

    @pytest.mark.parametrize(
        ("raw", "kind", "message"),
        [
            pytest.param("4.5", int, "must be an integer", id="fraction-for-int"),
            pytest.param("many", int, "must be an integer", id="word-for-int"),
            pytest.param("fast", float, "must be a number", id="word-for-float"),
        ],
    )
    def test_bad_number(self, raw: str, kind: type, message: str) -> None:
        """A number that does not parse says which kind was expected."""
        with pytest.raises(ValueError, match=f"^{message}$"):
            structure_env_value(raw, kind)

    @pytest.mark.parametrize(
        ("raw", "kind", "expected"),
        [
            pytest.param("1, 2,,3", list[int], [1, 2, 3], id="list-of-int"),
            pytest.param("a,b", tuple[str, ...], ("a", "b"), id="tuple-of-str"),
            pytest.param(" , ", list[str], [], id="empty"),
            pytest.param("a, b", list, ["a", "b"], id="bare-list"),
            pytest.param("a, b", tuple, ("a", "b"), id="bare-tuple"),
            pytest.param("a, b", typing.List, ["a", "b"], id="bare-typing-list"),  # noqa: UP006
            pytest.param("1,2", typing.Tuple[int, ...], (1, 2), id="typing-tuple"),  # noqa: UP006
            pytest.param("a, b,a", set[str], {"a", "b"}, id="set-of-str"),
            pytest.param("1,2", frozenset[int], frozenset({1, 2}), id="frozenset-of-int"),
            pytest.param("a,b", set, {"a", "b"}, id="bare-set"),
        ],
    )
    def test_sequence(self, raw: str, kind: Any, expected: object) -> None:
        """Lists and sets are comma-separated (bare ones hold strings); blank items are skipped."""
        assert structure_env_value(raw, kind) == expected

    def test_optional(self) -> None:
        """An optional setting reads as its inner type, not as a list of one."""

        # A type of the plugin's own, as a Config class would declare it.
        class Speed(enum.Enum):
            FAST = "fast"
            SLOW = "slow"

        # Both spellings: typing.Optional is a generic alias (with an origin), X | None is not.
        assert structure_env_value("3", typing.Optional[int]) == 3  # noqa: UP045
        assert structure_env_value("slow", typing.Optional[Speed]) is Speed.SLOW  # noqa: UP045
        assert structure_env_value("fast", Speed | None) is Speed.FAST

    def test_bad_item(self) -> None:
        """A bad item of a list is refused like a bad single value."""
        with pytest.raises(ValueError, match=r"^must be an integer$"):
            structure_env_value("1,two", list[int])
