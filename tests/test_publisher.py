"""The publisher's message properties, encoded from templates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tower_trio._journal import Outgoing
from tower_trio._publisher import PropertyTemplates, message_properties

identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,40}", fullmatch=True)
outgoings = st.builds(
    Outgoing,
    seq=st.integers(min_value=1),
    uuid=st.text("0123456789abcdef", min_size=32, max_size=32),
    routing_key=st.just("OT-2/v1alpha1"),
    protocol=identifiers,
    source=st.one_of(st.just("http"), identifiers),
    body=st.just(b"{}"),
    created_at=st.floats(min_value=0, max_value=2**37, allow_nan=False),
    attempts=st.integers(min_value=0, max_value=9),
)


class TestPropertyTemplates:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(outgoings, min_size=1, max_size=5))
    def test_same_bytes_as_encoding_each_time(self, batch: list[Outgoing]) -> None:
        """A template gives exactly the bytes the full properties encode to, for any trigger."""
        templates = PropertyTemplates()
        for outgoing in batch:
            from_template = templates(outgoing)
            assert from_template.encode() == message_properties(outgoing).encode()
            assert from_template.message_id == outgoing.uuid

    def test_an_odd_uuid_falls_back_to_full_encoding(self) -> None:
        """A uuid that is not 32 characters is encoded the long way, still correctly."""
        outgoing = Outgoing(1, "short", "OT-2/v1", "P", "http", b"{}", 1.5, 0)
        assert PropertyTemplates()(outgoing).encode() == message_properties(outgoing).encode()
