"""Properties of the trigger model that the round trips in test_serialization do not cover.

A trigger crosses the real broker byte for byte, and every invalid variant
of a valid trigger is refused with a reason under the field that was broken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._helpers import Broker
from tests.test_serialization import json_objects, triggers
from tower_trio import InvalidTriggerError, Trigger, amqp
from tower_trio._models import MAX_JSON_DEPTH
from tower_trio._serialization import dump_trigger, load_trigger, trigger_from_wire

if TYPE_CHECKING:
    from collections.abc import Callable

# Each example opens its own connection: hypothesis runs every example in
# a trio run of its own, which a connection cannot outlive.
BOUNDED = hypothesis.settings(max_examples=10, deadline=None)

VALID: dict[str, Any] = {
    "apiVersion": "OT-2/v1alpha1",
    "protocol": "PlateTransfer",
    "spec": {"volume": 100},
}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def apply(wire: dict[str, Any]) -> None:
        wire[key] = value

    return apply


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def apply(wire: dict[str, Any]) -> None:
        del wire[key]

    return apply


bad_api_versions = st.one_of(
    st.integers(),
    st.none(),
    st.text(max_size=20).filter(lambda text: "/v" not in text),
    st.just("OT-2/v0"),
    st.just("OT 2/v1"),
    st.just("a/v1/" + "x" * 300),
)
bad_protocols = st.one_of(
    st.integers(),
    st.just(""),
    st.just("1Transfer"),
    st.just("Plate Transfer"),
    st.just("P" * 129),
)
bad_specs = st.one_of(
    st.integers(),
    st.text(max_size=5),
    st.none(),
    st.just(nested(MAX_JSON_DEPTH + 1)),
)
mutations: st.SearchStrategy[tuple[str, Callable[[dict[str, Any]], None]]] = st.one_of(
    bad_api_versions.map(lambda v: ("apiVersion", _set("apiVersion", v))),
    bad_protocols.map(lambda v: ("protocol", _set("protocol", v))),
    bad_specs.map(lambda v: ("spec", _set("spec", v))),
    st.sampled_from(["apiVersion", "protocol", "spec"]).map(lambda k: (k, _delete(k))),
    st.sampled_from(["uuid", "createdAt"]).map(lambda k: (k, _set(k, "x"))),
    st.text(min_size=1, max_size=10)
    .filter(lambda k: k not in {"apiVersion", "protocol", "spec", "plate", "metadata"})
    .map(lambda k: (k, _set(k, 1))),
    st.integers(max_value=0).map(
        lambda n: ("plate.rows", _set("plate", {"rows": n, "columns": 1}))
    ),
    st.just(("plate", _set("plate", [8, 12]))),
    st.text(min_size=1, max_size=10)
    .filter(lambda k: k not in {"source", "spec"})
    .map(lambda k: (f"metadata.{k}", _set("metadata", {k: 1}))),
    st.sampled_from([[], "notes", 3]).map(
        lambda v: ("metadata.spec", _set("metadata", {"spec": v}))
    ),
)


class TestInvalidVariants:
    @hypothesis.settings(max_examples=100, deadline=None)
    @given(spec=json_objects.filter(bool), mutation=mutations)
    def test_every_break_is_named(
        self, spec: dict[str, Any], mutation: tuple[str, Callable[[dict[str, Any]], None]]
    ) -> None:
        """Breaking one field of a valid trigger is refused with a reason under that field."""
        wire = {**VALID, "spec": spec}
        trigger_from_wire(wire)
        field, apply = mutation
        apply(wire)
        with pytest.raises(InvalidTriggerError) as excinfo:
            trigger_from_wire(wire)
        reported = [error.field for error in excinfo.value.errors]
        assert any(
            name == field or name.startswith((f"{field}.", f"{field}[")) for name in reported
        ), (
            field,
            reported,
        )
        assert all(error.message for error in excinfo.value.errors)


class TestThroughTheBroker:
    @BOUNDED
    @given(batch=st.lists(triggers(), min_size=1, max_size=8))
    async def test_triggers_cross_the_broker_unchanged(
        self, batch: list[Trigger], amqp_url: str
    ) -> None:
        """Published bodies come back from a real queue byte for byte, as the same triggers."""
        async with (
            amqp.open_connection(amqp_url) as connection,
            connection.open_channel() as channel,
        ):
            # Exclusive: the broker deletes the queue with the connection.
            broker = Broker(channel, "")
            queue = (await channel.queue_declare("", exclusive=True)).name
            for trigger in batch:
                await channel.publish("", queue, dump_trigger(trigger))
            messages = await broker.take(queue, len(batch))
        assert [message.body for message in messages] == [dump_trigger(t) for t in batch]
        # The body has no creation time (ULAS's format defines none): all else is equal.
        received = [load_trigger(message.body) for message in messages]
        assert [
            attrs.evolve(t, created_at=r.created_at) for t, r in zip(batch, received, strict=True)
        ] == received
