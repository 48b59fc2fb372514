"""Fixtures for the AMQP client's tests."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from ._fake_broker import FakeBroker, serve_fake_broker

if TYPE_CHECKING:
    import trio


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run) uses, for exchanges and queues."""
    return f"tower-trio-amqp-test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def fake_broker(nursery: trio.Nursery) -> FakeBroker:
    """A scripted broker on a local port, proposing no heartbeat."""
    broker: FakeBroker = await nursery.start(serve_fake_broker)
    return broker
