"""Fixtures shared by the whole suite, and the marks that sort its tests.

The suite talks to a real RabbitMQ (``TOWER_TEST_AMQP_HOST``, default
127.0.0.1:5672, guest/guest). Each test session gets a vhost of its own,
created with ``rabbitmqctl`` and deleted afterwards (``tests/_rabbitmq.py``),
so that exchanges and queues made by the tests never touch the broker's
other users.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
from hypothesis import HealthCheck, settings

from tests._helpers import Broker
from tests._rabbitmq import open_vhost
from tower_trio import amqp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

BROKER_HOST = os.environ.get("TOWER_TEST_AMQP_HOST", "127.0.0.1:5672")
# The session's broker, and the default TOWER_AMQP_URL's.
BROKER_PORTS = frozenset({int(BROKER_HOST.rpartition(":")[2]), 5672})

# `just mutate` runs the tests several times in one process (a clean run, the
# coverage pass, then each mutant in a fork). Hypothesis sees a test method
# bound to another instance than last time and refuses it as a different
# executor, which would count a mutant as killed when no assertion failed.
settings.register_profile("mutmut", suppress_health_check=[HealthCheck.differing_executors])


# Fixtures whose users need what the pure tests do without. Every fixture that
# reaches RabbitMQ builds on amqp_vhost (amqp_url, broker, ...), and the
# broker's TLS listeners are started with rabbitmqctl.
BROKER_FIXTURES = frozenset({"amqp_vhost", "tls_port", "mtls_port"})
SUBPROCESS_FIXTURES = frozenset({"towers", "installed"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test `broker` or `subprocess` from the fixtures it uses, however indirectly.

    Tests that start a process or reach the broker by themselves carry the
    mark in their own file.
    """
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & BROKER_FIXTURES:
            item.add_marker(pytest.mark.broker)
        if used & SUBPROCESS_FIXTURES:
            item.add_marker(pytest.mark.subprocess)


@pytest.fixture(autouse=True)
def _marks_hold(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse a process, a broker or a database to a test whose marks do not say it needs one.

    The pure selection is only as true as the marks; this keeps them true as
    tests are added. A refused connection looks like a broker that is down,
    so a test that copes without the broker still passes unmarked.
    """
    marks = {mark.name for mark in request.node.iter_markers()}
    if "subprocess" not in marks:

        def no_process(self: subprocess.Popen[Any], args: object, *_: Any, **__: Any) -> None:
            raise AssertionError(
                f"this test starts a process ({args!r}): mark it @pytest.mark.subprocess"
            )

        monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    if "broker" not in marks:
        connect = socket.socket.connect

        def no_broker(self: socket.socket, address: Any) -> None:
            if isinstance(address, tuple) and address[1] in BROKER_PORTS:
                raise ConnectionRefusedError(
                    f"this test reaches the broker at {address!r}: mark it @pytest.mark.broker"
                )
            connect(self, address)

        monkeypatch.setattr(socket.socket, "connect", no_broker)
    if "postgres" not in marks:
        # libpq opens its own sockets: the driver's entry point is where to refuse.
        def no_database(cls: type[psycopg.Connection[Any]], *_: Any, **__: Any) -> None:
            raise psycopg.OperationalError(
                "this test reaches PostgreSQL: mark it @pytest.mark.postgres"
            )

        monkeypatch.setattr(psycopg.Connection, "connect", classmethod(no_database))
        monkeypatch.setattr(psycopg, "connect", partial(no_database, psycopg.Connection))


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
