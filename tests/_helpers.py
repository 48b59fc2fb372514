"""Small helpers shared by the tests: an in-process tower and a broker view."""

from __future__ import annotations

import logging
import socket
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from tower_trio import amqp
from tower_trio._config import Settings
from tower_trio._journal import Journal, SQLiteStorage
from tower_trio._supervisor import RunningTower, serve_tower

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    import pytest

    from tower_trio import Trigger
    from tower_trio._channel import Submission
    from tower_trio._plugins import ConfiguredPlugin

VALID = {"apiVersion": "OT-2/v1alpha1", "protocol": "PlateTransfer", "spec": {"volume": 100}}


def spec_of(trigger: Trigger) -> dict[str, Any]:
    """The spec of a trigger without a plate, typed as the object it is."""
    assert isinstance(trigger.spec, dict)
    return trigger.spec


@attrs.frozen
class Tower:
    client: httpx.AsyncClient
    running: RunningTower
    exchange: str
    shutdown: trio.Event

    @property
    def storage(self) -> SQLiteStorage:
        """The tower's storage: the SQLite journal, which tests may hook into."""
        storage = self.running.storage
        assert isinstance(storage, SQLiteStorage)
        return storage

    @property
    def journal(self) -> Journal:
        """The SQLite journal under the tower's storage (its blocking methods)."""
        return self.storage.journal


@attrs.define
class Broker:
    """A test's own view of the broker: a channel to bind, consume and clean up."""

    channel: amqp.Channel
    exchange: str
    queues: list[str] = attrs.Factory(list)

    async def bind(self, routing_key: str, *, refusing: bool = False) -> str:
        """A queue bound to ``routing_key``; a ``refusing`` one is always full and
        rejects what comes in, so the broker nacks every publish routed to it."""
        await self.channel.exchange_declare(self.exchange, "topic", durable=True)
        arguments = {"x-max-length": 0, "x-overflow": "reject-publish"} if refusing else None
        declared = await self.channel.queue_declare("", exclusive=True, arguments=arguments)
        await self.channel.queue_bind(declared.name, self.exchange, routing_key)
        self.queues.append(declared.name)
        return declared.name

    async def take(self, queue: str, count: int) -> list[amqp.Message]:
        messages = []
        with trio.fail_after(10):
            async with self.channel.consume(queue, no_ack=True) as deliveries:
                async for message in deliveries:
                    messages.append(message)
                    if len(messages) == count:
                        break
        return messages

    async def count(self, queue: str) -> int:
        return (await self.channel.queue_declare(queue, passive=True)).message_count


@asynccontextmanager
async def run_tower(
    settings: Settings, plugins: Sequence[ConfiguredPlugin] = ()
) -> AsyncIterator[Tower]:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        running: RunningTower = await nursery.start(
            lambda task_status: serve_tower(
                settings, plugins, shutdown=shutdown, task_status=task_status
            )
        )
        async with httpx.AsyncClient(base_url=running.http_urls[0], timeout=30) as client:
            try:
                yield Tower(client, running, settings.exchange, shutdown)
            finally:
                shutdown.set()


def tower_settings(amqp_url: str, exchange: str, data_dir: Path, **overrides: Any) -> Settings:
    return attrs.evolve(
        Settings(),
        amqp_url=amqp_url,
        exchange=exchange,
        http_port=0,
        plugins_dir=Path("no-such-plugins-dir"),
        data_dir=data_dir,
        **overrides,
    )


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def accept_all(
    receive: trio.MemoryReceiveChannel[Submission], received: list[Submission]
) -> None:
    """Stand in for the journal: report every submission stored, and keep it."""
    async with receive:
        async for submission in receive:
            submission.accepted()
            received.append(submission)


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The fields of each ``event`` line the tower logged during the test."""
    return [record.__dict__["fields"] for record in caplog.records if record.msg == event]


class LogWatch(logging.Handler):
    """Counts one event in the tower's log, so a test can wait for it instead of sleeping.

    The events watched here are logged from trio's own thread, where setting
    a trio event is allowed.
    """

    def __init__(self, event: str) -> None:
        super().__init__(logging.INFO)
        self.event = event
        self.count = 0
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self.event:
            self.count += 1
            self._changed.set()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            self._changed = trio.Event()
            await self._changed.wait()


@contextmanager
def watching(logger_name: str, event: str) -> Iterator[LogWatch]:
    """A LogWatch on ``logger_name`` for as long as the block runs, at INFO level."""
    logger = logging.getLogger(logger_name)
    watch = LogWatch(event)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
