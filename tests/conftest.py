"""Fixtures shared by the whole suite, and the marks that sort its tests.

The suite talks to a real RabbitMQ (``TOWER_TEST_AMQP_HOST``, default
127.0.0.1:5672, guest/guest). Each test session gets a vhost of its own,
created with ``rabbitmqctl`` and deleted afterwards (``tests/_rabbitmq.py``),
so that exchanges and queues made by the tests never touch the broker's
other users.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import HealthCheck, settings

from tests._helpers import Broker
from tests._rabbitmq import open_vhost
from tower_trio import amqp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

BROKER_HOST = os.environ.get("TOWER_TEST_AMQP_HOST", "127.0.0.1:5672")

# `just mutate` runs the tests several times in one process (a clean run, the
# coverage pass, then each mutant in a fork). Hypothesis sees a test method
# bound to another instance than last time and refuses it as a different
# executor, which would count a mutant as killed when no assertion failed.
settings.register_profile("mutmut", suppress_health_check=[HealthCheck.differing_executors])


@pytest.fixture(scope="session")
def amqp_vhost() -> Iterator[str]:
    """A fresh vhost on the real broker, deleted when the session ends."""
    with open_vhost("tower-trio-test") as name:
        yield name


@pytest.fixture(scope="session")
def amqp_url(amqp_vhost: str) -> str:
    """An ``amqp://`` URL for the session's vhost."""
    return f"amqp://guest:guest@{BROKER_HOST}/{amqp_vhost}"


@pytest.fixture
def unique() -> str:
    """A short random suffix for names of exchanges and queues made by one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def broker(amqp_url: str, unique: str) -> AsyncIterator[Broker]:
    """The test's own exchange name and a channel to bind, consume and clean up with."""
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel() as channel,
    ):
        broker = Broker(channel, f"test.triggers.{unique}")
        try:
            yield broker
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for queue in broker.queues:
                    await channel.queue_delete(queue)
                await channel.exchange_delete(broker.exchange)
