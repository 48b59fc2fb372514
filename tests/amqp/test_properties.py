"""The hand-written property encoder agrees with pamqp byte for byte."""

from __future__ import annotations

import datetime

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tower_trio.amqp import Properties, PropertiesTemplate

short = st.text(max_size=40)
octet = st.integers(min_value=0, max_value=255)
moment = st.datetimes(
    min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2200, 1, 1)
)
properties = st.builds(
    Properties,
    content_type=st.none() | short,
    content_encoding=st.none() | short,
    headers=st.none() | st.dictionaries(short, st.text(max_size=60), max_size=4),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | octet,
    correlation_id=st.none() | short,
    reply_to=st.none() | short,
    expiration=st.none() | short,
    message_id=st.none() | short,
    timestamp=st.none() | moment | moment.map(lambda value: value.replace(tzinfo=datetime.UTC)),
    type=st.none() | short,
    user_id=st.none() | short,
    app_id=st.none() | short,
)


class TestEncode:
    @settings(max_examples=300, deadline=None)
    @given(properties)
    def test_same_bytes_as_pamqp(self, value: Properties) -> None:
        """Any properties a publisher sets encode exactly as pamqp encodes them."""
        assert value.encode() == value.to_pamqp().marshal()

    def test_other_header_types_go_through_pamqp(self) -> None:
        """Headers with numbers, booleans or nested tables are still encoded, by pamqp."""
        value = Properties(headers={"n": 1, "ok": True, "nested": {"a": "b"}})
        assert value.encode() == value.to_pamqp().marshal()

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (Properties(message_id="x" * 256), "longer than an AMQP short string"),
            (Properties(priority=256), "does not fit in an AMQP octet"),
            (Properties(delivery_mode=3), "delivery_mode must be 1 or 2"),
            (
                Properties(timestamp=datetime.datetime(1969, 12, 31, tzinfo=datetime.UTC)),
                "cannot be before 1970",
            ),
        ],
    )
    def test_values_amqp_cannot_carry_are_refused(self, value: Properties, message: str) -> None:
        """Too long a short string, too big an octet or a pre-1970 time is a ValueError."""
        with pytest.raises(ValueError, match=message):
            value.encode()


class TestTemplate:
    @settings(max_examples=300, deadline=None)
    @given(
        properties,
        st.text(min_size=1, max_size=40).filter(lambda text: len(text.encode()) <= 255),
        st.integers(min_value=0, max_value=2**37),
    )
    def test_same_bytes_as_encoding_each_time(
        self, value: Properties, message_id: str, seconds: int
    ) -> None:
        """A rendered template is exactly the properties with that id and time, encoded."""
        rendered = PropertiesTemplate(value).render(message_id, seconds)
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        expected = attrs.evolve(value, message_id=message_id, timestamp=moment)
        assert rendered.encode() == expected.encode()
        assert rendered.message_id == message_id

    def test_a_message_needs_an_id(self) -> None:
        """An empty id would be left out of the flags, so the template refuses it."""
        with pytest.raises(ValueError, match="message id"):
            PropertiesTemplate(Properties(type="T")).render("", 0)
