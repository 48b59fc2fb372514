"""The trigger model: construction, defaults and validation rules."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tower_trio import FieldError, InvalidTriggerError, Metadata, Plate, TowerError, Trigger
from tower_trio._vocabulary import MAX_KEY_LENGTH

FIXED_UUID = "0123456789abcdef0123456789abcdef"
FIXED_TIME = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
API_VERSION_SHAPE = "must be '<api>/<version>[/<device>]'"

# Enough examples to find the odd case, few enough to keep the file fast;
# no deadline, because a loaded CI machine is not a failing test.
BOUNDED = settings(max_examples=150, deadline=None)


def make_trigger(**overrides: Any) -> Trigger:
    """A valid trigger, with ``overrides`` replacing its fields."""
    fields: dict[str, Any] = {
        "api_version": "OT-2/v1alpha1",
        "protocol": "PlateTransfer",
        "spec": {"volume": 100},
    }
    fields.update(overrides)
    return Trigger(**fields)


def errors_of(**overrides: Any) -> tuple[FieldError, ...]:
    """The field errors of a trigger built with ``overrides``; fails if it is valid."""
    with pytest.raises(InvalidTriggerError) as excinfo:
        make_trigger(**overrides)
    return excinfo.value.errors


def fields_of(errors: tuple[FieldError, ...]) -> list[str]:
    return [error.field for error in errors]


API_CHARS = string.ascii_letters + string.digits + "-"
DEVICE_CHARS = API_CHARS + "_"
SUFFIX_CHARS = string.ascii_lowercase + string.digits
WHITESPACE = " \t\n\r\v\f\u00a0\u2003\u3000"


def valid_api_versions() -> st.SearchStrategy[str]:
    """apiVersions assembled from parts that obey the rules, at most 255 characters."""
    api = st.text(API_CHARS, min_size=1, max_size=20)
    version = st.builds(
        lambda number, suffix: f"v{number}{suffix}",
        st.integers(min_value=1, max_value=10**9),
        st.text(SUFFIX_CHARS, max_size=10),
    )
    device = st.none() | st.text(DEVICE_CHARS, min_size=1, max_size=20)
    return st.builds(
        lambda a, v, d: f"{a}/{v}" if d is None else f"{a}/{v}/{d}", api, version, device
    )


def _insert(value: str, index: int, char: str) -> str:
    index %= len(value) + 1
    return value[:index] + char + value[index:]


def invalid_api_versions() -> st.SearchStrategy[object]:
    """Values that break exactly one rule of the apiVersion format, or are not strings."""
    with_whitespace = st.builds(
        _insert, valid_api_versions(), st.integers(min_value=0), st.sampled_from(WHITESPACE)
    )
    foreign = st.characters(exclude_characters=API_CHARS + "/")
    with_foreign_api_char = st.builds(
        lambda api, index, char, rest: _insert(api, index, char) + rest,
        st.text(API_CHARS, min_size=1, max_size=10),
        st.integers(min_value=0),
        foreign,
        st.sampled_from(["/v1", "/v2beta3", "/v1alpha1/dev"]),
    )
    bad_version = st.builds(
        lambda api, version: f"{api}/{version}",
        st.text(API_CHARS, min_size=1, max_size=10),
        st.one_of(
            st.integers(min_value=0).map(str),
            st.text(SUFFIX_CHARS, max_size=5).map(lambda s: f"v0{s}"),
            st.text(string.ascii_uppercase, min_size=1, max_size=5).map(lambda s: f"v1{s}"),
            st.just(""),
            st.just("v"),
        ),
    )
    no_version = st.text(API_CHARS, max_size=20)
    empty_part = valid_api_versions().flatmap(
        lambda v: st.sampled_from([v + "/", "/" + v, v.replace("/", "//", 1)])
    )
    too_long = st.builds(
        lambda api, version: f"{api}/{version}",
        st.text(API_CHARS, min_size=253, max_size=300),
        st.sampled_from(["v1", "v1alpha1"]),
    )
    not_a_string = st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        st.binary(),
        st.lists(st.text(), max_size=3),
    )
    return st.one_of(
        with_whitespace,
        with_foreign_api_char,
        bad_version,
        no_version,
        empty_part,
        too_long,
        not_a_string,
    )


class TestTriggerConstruction:
    def test_defaults(self) -> None:
        """A trigger built from the three required fields has no plate and empty metadata."""
        trigger = make_trigger()
        assert trigger.plate is None
        assert trigger.metadata == Metadata(source="", spec={})

    def test_uuid_is_assigned(self) -> None:
        """Every trigger gets its own uuid of 32 lowercase hex characters."""
        first, second = make_trigger(), make_trigger()
        assert re.fullmatch(r"[0-9a-f]{32}", first.uuid)
        assert first.uuid != second.uuid

    def test_created_at_is_assigned_in_utc(self) -> None:
        """``created_at`` is the construction time as an aware UTC datetime."""
        before = datetime.now(UTC)
        trigger = make_trigger()
        after = datetime.now(UTC)
        assert trigger.created_at.utcoffset() == timedelta(0)
        assert before <= trigger.created_at <= after

    def test_assigned_fields_can_be_given(self) -> None:
        """A uuid and creation time given explicitly are kept as they are."""
        trigger = make_trigger(uuid=FIXED_UUID, created_at=FIXED_TIME)
        assert (trigger.uuid, trigger.created_at) == (FIXED_UUID, FIXED_TIME)

    def test_is_frozen(self) -> None:
        """A trigger cannot be changed after it was validated."""
        trigger = make_trigger()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            trigger.protocol = "Other"  # type: ignore[misc]

    def test_routing_key_is_the_api_version(self) -> None:
        """The AMQP routing key is the apiVersion, device part included."""
        trigger = make_trigger(api_version="TecanSpark/v1alpha1/Spark2")
        assert trigger.routing_key == "TecanSpark/v1alpha1/Spark2"


class TestApiVersion:
    @pytest.mark.parametrize(
        "api_version",
        [
            pytest.param("OT-2/v1alpha1", id="api-with-dash"),
            pytest.param("ChiBio/v1alpha1/ChiBio1", id="with-device"),
            pytest.param("TecanSpark/v1alpha1/Spark2", id="tecan-device"),
            pytest.param("X/v2beta3", id="one-letter-api"),
            pytest.param("A/v1", id="bare-version"),
            pytest.param("OT-2/v10", id="multi-digit-version"),
            pytest.param("OT-2/v1/robot_1-a", id="device-with-underscore-and-dash"),
            pytest.param("A" * 252 + "/v1", id="255-chars"),
        ],
    )
    def test_valid(self, api_version: str) -> None:
        """Well-formed apiVersions are accepted unchanged."""
        assert make_trigger(api_version=api_version).api_version == api_version

    @pytest.mark.parametrize(
        "api_version",
        [
            pytest.param("OT-2", id="no-version"),
            pytest.param("OT-2/1", id="version-without-v"),
            pytest.param("OT-2/v0", id="version-zero"),
            pytest.param("OT-2/v01", id="leading-zero"),
            pytest.param("OT-2/V1", id="uppercase-v"),
            pytest.param("OT-2/v1Alpha", id="uppercase-suffix"),
            pytest.param("OT-2/valpha", id="suffix-without-number"),
            pytest.param("/v1", id="empty-api"),
            pytest.param("OT-2/v1/", id="empty-device"),
            pytest.param("OT-2//v1", id="double-slash"),
            pytest.param("OT-2/v1/a/b", id="two-devices"),
            pytest.param("OT_2/v1", id="underscore-in-api"),
            pytest.param("OT.2/v1", id="dot-in-api"),
            pytest.param("OT-2/v1/dev.1", id="dot-in-device"),
            pytest.param(" OT-2/v1", id="leading-space"),
            pytest.param("OT-2/v1 ", id="trailing-space"),
            pytest.param("OT-2/v1\n", id="trailing-newline"),
            pytest.param("OT 2/v1", id="inner-space"),
            pytest.param("OT-2/\tv1", id="inner-tab"),
            pytest.param("", id="empty"),
            pytest.param("A" * 253 + "/v1", id="256-chars"),
        ],
    )
    def test_invalid(self, api_version: str) -> None:
        """Malformed apiVersions are reported under ``apiVersion`` with the expected shape."""
        (error,) = errors_of(api_version=api_version)
        assert error.field == "apiVersion"
        assert API_VERSION_SHAPE in error.message
        assert "'OT-2/v1alpha1'" in error.message

    def test_invalid_message_spells_out_the_format(self) -> None:
        """The error for a malformed apiVersion describes each part of the format, with examples."""
        assert errors_of(api_version="OT-2") == (
            FieldError(
                "apiVersion",
                "must be '<api>/<version>[/<device>]' like 'OT-2/v1alpha1' or "
                "'TecanSpark/v1alpha1/Spark2' (api: letters, digits, '-'; version: 'v', "
                "a positive integer and an optional lowercase suffix; device: letters, "
                "digits, '-', '_')",
            ),
        )

    @pytest.mark.parametrize(
        "api_version",
        [
            pytest.param(None, id="none"),
            pytest.param(1, id="int"),
            pytest.param(b"OT-2/v1", id="bytes"),
            pytest.param(["OT-2", "v1"], id="list"),
        ],
    )
    def test_not_a_string(self, api_version: object) -> None:
        """A non-string apiVersion is reported as such."""
        assert errors_of(api_version=api_version) == (
            FieldError("apiVersion", "must be a string like 'OT-2/v1alpha1'"),
        )

    @BOUNDED
    @given(api_version=valid_api_versions())
    def test_generated_valid(self, api_version: str) -> None:
        """Any apiVersion built from the allowed parts is accepted."""
        assert make_trigger(api_version=api_version).routing_key == api_version

    @BOUNDED
    @given(api_version=invalid_api_versions())
    def test_generated_invalid(self, api_version: object) -> None:
        """Any apiVersion broken in one of the ways the rules forbid is rejected."""
        assert fields_of(errors_of(api_version=api_version)) == ["apiVersion"]


class TestProtocol:
    @pytest.mark.parametrize(
        "protocol",
        [
            pytest.param("PlateTransfer", id="camel-case"),
            pytest.param("a", id="one-letter"),
            pytest.param("run_2_steps", id="digits-and-underscores"),
            pytest.param("x" * 128, id="128-chars"),
        ],
    )
    def test_valid(self, protocol: str) -> None:
        """Protocol names that start with a letter and use letters, digits, '_' are accepted."""
        assert make_trigger(protocol=protocol).protocol == protocol

    @pytest.mark.parametrize(
        "protocol",
        [
            pytest.param("", id="empty"),
            pytest.param("1Transfer", id="leading-digit"),
            pytest.param("_Transfer", id="leading-underscore"),
            pytest.param("Plate-Transfer", id="dash"),
            pytest.param("Plate Transfer", id="inner-space"),
            pytest.param(" PlateTransfer", id="leading-space"),
            pytest.param("PlateTransfer\n", id="trailing-newline"),
            pytest.param("Plätte", id="non-ascii-letter"),
        ],
    )
    def test_invalid_characters(self, protocol: str) -> None:
        """A badly formed protocol name is reported with the allowed characters."""
        assert errors_of(protocol=protocol) == (
            FieldError(
                "protocol", "must start with a letter and contain only letters, digits and '_'"
            ),
        )

    def test_too_long(self) -> None:
        """A protocol name over 128 characters is reported with the limit."""
        assert errors_of(protocol="x" * 129) == (
            FieldError("protocol", "must be at most 128 characters"),
        )

    @pytest.mark.parametrize("protocol", [pytest.param(None, id="none"), pytest.param(7, id="int")])
    def test_not_a_string(self, protocol: object) -> None:
        """A non-string protocol is reported as such."""
        assert errors_of(protocol=protocol) == (
            FieldError("protocol", "must be a string naming the protocol, like 'PlateTransfer'"),
        )


class TestSpec:
    def test_object(self) -> None:
        """A non-empty object is a valid spec for a trigger without plate."""
        spec = {"volume": 100, "wells": ["A1", "B2"], "mix": {"cycles": 3}}
        assert make_trigger(spec=spec).spec == spec

    @pytest.mark.parametrize("protocol", ["Home", "Calibrate"])
    def test_empty_object(self, protocol: str) -> None:
        """An empty spec is valid, as ULAS's format allows: a protocol without parameters."""
        assert make_trigger(protocol=protocol, spec={}).spec == {}

    @pytest.mark.parametrize(
        "spec",
        [
            pytest.param(None, id="none"),
            pytest.param("volume=100", id="string"),
            pytest.param(100, id="number"),
        ],
    )
    def test_not_an_object(self, spec: object) -> None:
        """A spec that is neither an object nor a list is rejected."""
        assert errors_of(spec=spec) == (
            FieldError("spec", "must be a JSON object of protocol parameters"),
        )

    def test_list_without_plate(self) -> None:
        """A list of wells without a plate is an error naming ``plate``."""
        assert errors_of(spec=[{"volume": 1}]) == (
            FieldError("plate", "is required when spec is a list of wells"),
        )

    @pytest.mark.parametrize(
        "spec",
        [
            pytest.param({1: "a"}, id="non-string-key"),
            pytest.param({"volume": object()}, id="arbitrary-object"),
            pytest.param({"volume": float("nan")}, id="nan"),
            pytest.param({"volume": float("inf")}, id="infinity"),
            pytest.param({"note": "\ud800"}, id="lone-surrogate"),
            pytest.param({"mix": {"cycles": float("-inf")}}, id="nested-infinity"),
        ],
    )
    def test_not_json(self, spec: dict[Any, Any]) -> None:
        """A spec JSON cannot carry faithfully is rejected under ``spec``."""
        assert any(field.startswith("spec") for field in fields_of(errors_of(spec=spec)))

    @pytest.mark.parametrize(
        ("spec", "error"),
        [
            pytest.param(
                {"mix": {"note": "\ud800"}},
                FieldError(
                    "spec.mix.note", "holds text that is not valid Unicode (a lone surrogate)"
                ),
                id="lone-surrogate-value",
            ),
            pytest.param(
                {"mix": {"\udfff": 1}},
                FieldError("spec.mix", "has a key that is not valid Unicode"),
                id="lone-surrogate-key",
            ),
            pytest.param(
                {"wells": ("A1", "B2")},
                FieldError("spec.wells", "holds a tuple, which is not a JSON value"),
                id="tuple",
            ),
            pytest.param(
                {"at": FIXED_TIME},
                FieldError("spec.at", "holds a datetime, which is not a JSON value"),
                id="datetime",
            ),
        ],
    )
    def test_not_json_says_where_and_why(self, spec: dict[str, Any], error: FieldError) -> None:
        """The error names the path to the bad value and what is wrong with it."""
        assert errors_of(spec=spec) == (error,)


class TestPlate:
    def test_wells(self) -> None:
        """A plate has rows times columns wells."""
        assert Plate(rows=8, columns=12).wells == 96

    @pytest.mark.parametrize(
        ("rows", "columns", "fields"),
        [
            pytest.param(0, 12, ["plate.rows"], id="zero-rows"),
            pytest.param(8, -1, ["plate.columns"], id="negative-columns"),
            pytest.param(True, 12, ["plate.rows"], id="bool-rows"),
            pytest.param(8, "12", ["plate.columns"], id="string-columns"),
            pytest.param(8.0, 12, ["plate.rows"], id="float-rows"),
            pytest.param(None, None, ["plate.rows", "plate.columns"], id="both-missing"),
        ],
    )
    def test_invalid(self, rows: Any, columns: Any, fields: list[str]) -> None:
        """Rows and columns must be positive ints; each bad one is named."""
        with pytest.raises(InvalidTriggerError) as excinfo:
            Plate(rows=rows, columns=columns)
        assert excinfo.value.errors == tuple(
            FieldError(field, "must be a positive integer") for field in fields
        )

    def test_plate_trigger(self) -> None:
        """With a plate, the spec is a list of exactly rows*columns objects."""
        spec = [{"volume": well} for well in range(6)]
        trigger = make_trigger(plate=Plate(rows=2, columns=3), spec=spec)
        assert (trigger.plate, trigger.spec) == (Plate(rows=2, columns=3), spec)

    def test_empty_well_objects(self) -> None:
        """A well may have an empty object: nothing to change in that well."""
        assert make_trigger(plate=Plate(rows=1, columns=2), spec=[{}, {}]).spec == [{}, {}]

    @pytest.mark.parametrize("wells", [pytest.param(5, id="too-few"), pytest.param(7, id="many")])
    def test_wrong_number_of_wells(self, wells: int) -> None:
        """A list whose length is not rows*columns says how many wells the plate has."""
        spec = [{"volume": 1}] * wells
        assert errors_of(plate=Plate(rows=2, columns=3), spec=spec) == (
            FieldError(
                "spec",
                "must hold exactly 6 wells for a 2x3 plate (one per well, column-first "
                f"from A1), got {wells}",
            ),
        )

    def test_wells_that_are_not_objects(self) -> None:
        """Each well that is not an object is named by its index."""
        spec = [{"volume": 1}, 5, {"volume": 3}, "A4"]
        assert errors_of(plate=Plate(rows=2, columns=2), spec=spec) == (
            FieldError("spec[1]", "must be a JSON object"),
            FieldError("spec[3]", "must be a JSON object"),
        )

    def test_object_spec_with_plate(self) -> None:
        """A plate with a single object spec is rejected."""
        assert errors_of(plate=Plate(rows=1, columns=1), spec={"volume": 1}) == (
            FieldError("spec", "must be a list of well objects when plate is given"),
        )

    def test_well_metadata(self) -> None:
        """With a plate, metadata.spec may be a list of one object per well, kept in order."""
        wells = [{"runId": f"r{i}"} for i in range(6)]
        trigger = make_trigger(
            plate=Plate(rows=2, columns=3), spec=[{}] * 6, metadata=Metadata(spec=wells)
        )
        assert trigger.metadata.spec == wells

    def test_empty_well_metadata(self) -> None:
        """A well's metadata may be an empty object."""
        trigger = make_trigger(
            plate=Plate(rows=1, columns=2), spec=[{}, {}], metadata=Metadata(spec=[{}, {}])
        )
        assert trigger.metadata.spec == [{}, {}]

    def test_object_metadata_with_plate(self) -> None:
        """An object metadata.spec stays valid for a plate trigger."""
        metadata = Metadata(source="test", spec={"experiment": "E-42"})
        trigger = make_trigger(plate=Plate(rows=1, columns=1), spec=[{}], metadata=metadata)
        assert trigger.metadata == metadata

    @pytest.mark.parametrize("wells", [pytest.param(5, id="too-few"), pytest.param(7, id="many")])
    def test_wrong_number_of_well_metadata(self, wells: int) -> None:
        """A list metadata.spec must hold rows*columns objects, like spec."""
        metadata = Metadata(spec=[{"runId": "r"}] * wells)
        assert errors_of(plate=Plate(rows=2, columns=3), spec=[{}] * 6, metadata=metadata) == (
            FieldError(
                "metadata.spec",
                "must hold exactly 6 wells for a 2x3 plate (one per well, column-first "
                f"from A1), got {wells}",
            ),
        )

    def test_well_metadata_that_is_not_objects(self) -> None:
        """Each well of metadata.spec that is not an object is named by its index."""
        metadata = Metadata(spec=[{"runId": "r0"}, "r1"])  # type: ignore[list-item]
        assert errors_of(plate=Plate(rows=1, columns=2), spec=[{}, {}], metadata=metadata) == (
            FieldError("metadata.spec[1]", "must be a JSON object"),
        )

    def test_well_metadata_not_json(self) -> None:
        """A well's metadata JSON cannot carry is named with its index."""
        metadata = Metadata(spec=[{"ratio": float("nan")}])
        assert errors_of(plate=Plate(rows=1, columns=1), spec=[{}], metadata=metadata) == (
            FieldError("metadata.spec[0].ratio", "holds NaN or Infinity, which JSON cannot carry"),
        )

    def test_plate_that_is_not_a_plate(self) -> None:
        """A plate given as a dict rather than a Plate is rejected under ``plate``."""
        assert errors_of(plate={"rows": 1, "columns": 1}, spec=[{}]) == (
            FieldError("plate", "must be a Plate with rows and columns"),
        )


class TestMetadata:
    def test_default(self) -> None:
        """Metadata defaults to no source and an empty spec."""
        assert Metadata() == Metadata(source="", spec={})

    def test_kept(self) -> None:
        """Metadata given to a trigger is kept as it is."""
        metadata = Metadata(source="riffyn", spec={"experiment": "E-42"})
        assert make_trigger(metadata=metadata).metadata == metadata

    def test_not_metadata(self) -> None:
        """Metadata given as a dict is rejected under ``metadata``."""
        assert errors_of(metadata={"source": "x", "spec": {}}) == (
            FieldError("metadata", "must be a Metadata object"),
        )

    def test_invalid_fields(self) -> None:
        """A non-string source and a spec neither object nor list are both named."""
        assert errors_of(metadata=Metadata(source=1, spec="E-42")) == (  # type: ignore[arg-type]
            FieldError("metadata.source", "must be a string"),
            FieldError(
                "metadata.spec",
                "must be a JSON object, or for a plate trigger a list of one object per well",
            ),
        )

    def test_list_without_plate(self) -> None:
        """A list metadata spec is refused for a trigger without plate, saying what to do."""
        assert errors_of(metadata=Metadata(spec=[{"runId": "r1"}])) == (
            FieldError(
                "metadata.spec",
                "may be a list (one object per well) only for a plate trigger; "
                "give an object, or add plate",
            ),
        )

    def test_spec_not_json(self) -> None:
        """A metadata spec JSON cannot carry faithfully is rejected under ``metadata.spec``."""
        errors = errors_of(metadata=Metadata(spec={"ratio": float("nan")}))
        assert any(field.startswith("metadata.spec") for field in fields_of(errors))


class TestAssignedFields:
    @pytest.mark.parametrize(
        "uuid",
        [
            pytest.param(FIXED_UUID.upper(), id="uppercase"),
            pytest.param(FIXED_UUID[:-1], id="31-chars"),
            pytest.param(FIXED_UUID + "0", id="33-chars"),
            pytest.param("0123456789abcdef0123456789abcdeg", id="not-hex"),
            pytest.param("0123456789abcdef0123456789abcdeX", id="not-hex-capital"),
            pytest.param("01234567-89ab-cdef-0123-456789abcdef", id="dashed"),
            pytest.param(None, id="none"),
            pytest.param(0x0123456789ABCDEF, id="int"),
        ],
    )
    def test_invalid_uuid(self, uuid: object) -> None:
        """A uuid that is not 32 lowercase hex characters is rejected."""
        assert errors_of(uuid=uuid) == (FieldError("uuid", "must be 32 lowercase hex characters"),)

    @pytest.mark.parametrize(
        "created_at",
        [
            pytest.param(datetime(2026, 1, 31, 12, 0), id="naive"),
            pytest.param("2026-01-31T12:00:00Z", id="string"),
            pytest.param(None, id="none"),
        ],
    )
    def test_invalid_created_at(self, created_at: object) -> None:
        """A creation time that is not an aware datetime is reported as ``createdAt``."""
        assert errors_of(created_at=created_at) == (
            FieldError("createdAt", "must be a timezone-aware datetime"),
        )

    def test_created_at_in_another_zone(self) -> None:
        """An aware creation time in another zone denotes the same instant."""
        paris = datetime(2026, 1, 31, 13, 0, tzinfo=timezone(timedelta(hours=1)))
        assert make_trigger(created_at=paris).created_at == FIXED_TIME


class TestIdempotencyKey:
    @pytest.mark.parametrize(
        "key",
        [
            pytest.param(None, id="none"),
            pytest.param("k", id="one-char"),
            pytest.param("riffyn:run-42", id="typical"),
            pytest.param("k" * MAX_KEY_LENGTH, id="longest"),
        ],
    )
    def test_valid(self, key: str | None) -> None:
        """No key, or a key of 1 to MAX_KEY_LENGTH characters, is accepted and kept."""
        assert make_trigger(key=key).key == key

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("", id="empty"),
            pytest.param("k" * (MAX_KEY_LENGTH + 1), id="too-long"),
            pytest.param(42, id="int"),
            pytest.param(b"riffyn:run-42", id="bytes"),
        ],
    )
    def test_invalid(self, key: object) -> None:
        """An empty, over-long or non-string key is reported under ``key`` with the limit."""
        assert errors_of(key=key) == (
            FieldError("key", "must be a non-empty string of at most 256 characters"),
        )

    def test_not_part_of_equality(self) -> None:
        """Two triggers that differ only in their key are equal: the key is not the message."""
        fixed = {"uuid": FIXED_UUID, "created_at": FIXED_TIME}
        assert make_trigger(key="a", **fixed) == make_trigger(key="b", **fixed)


class TestInvalidTriggerError:
    def test_every_problem_at_once(self) -> None:
        """All broken fields are reported together, under their wire names."""
        errors = errors_of(
            api_version="OT-2",
            protocol="1st",
            spec="{}",
            metadata=Metadata(source=None),  # type: ignore[arg-type]
            uuid="nope",
            created_at=datetime(2026, 1, 31),
        )
        assert fields_of(errors) == [
            "apiVersion",
            "protocol",
            "spec",
            "metadata.source",
            "uuid",
            "createdAt",
        ]

    def test_message_lists_every_error(self) -> None:
        """The message names each field with its problem."""
        error = InvalidTriggerError(
            [FieldError("protocol", "must not be empty"), FieldError("plate.rows", "is bad")]
        )
        assert str(error) == "invalid trigger: protocol: must not be empty; plate.rows: is bad"
        assert error.errors == (
            FieldError("protocol", "must not be empty"),
            FieldError("plate.rows", "is bad"),
        )

    def test_hierarchy(self) -> None:
        """It is a TowerError and a ValueError, so callers may catch either."""
        error = InvalidTriggerError([FieldError("spec", "must not be empty")])
        assert isinstance(error, TowerError)
        assert isinstance(error, ValueError)


class TestWithSource:
    def test_sets_source(self) -> None:
        """The source is replaced and everything else, metadata spec included, is kept."""
        trigger = make_trigger(metadata=Metadata(source="client", spec={"note": "hi"}))
        entered = trigger.with_source("http")
        assert entered.metadata == Metadata(source="http", spec={"note": "hi"})
        assert attrs.evolve(entered, metadata=trigger.metadata) == trigger

    def test_same_source(self) -> None:
        """A trigger that already has the source is returned as it is."""
        trigger = make_trigger(metadata=Metadata(source="http"))
        assert trigger.with_source("http") is trigger
