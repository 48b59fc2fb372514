"""A vhost of the benchmark's own on the local RabbitMQ, and its queues.

Everything the benchmarks declare lives in a vhost created for the run and
deleted at the end (by ``tests/_rabbitmq.py``, as the test session's is), so
the broker is left as it was found even when a run fails half-way. Queues
are bound with ``#`` so that every trigger is routable and really stored, as
in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import quote

import aio_pika
import attrs

from tests._rabbitmq import RabbitmqctlError, rabbitmqctl
from tests._rabbitmq import open_vhost as vhost_for_run

from ._common import BenchError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Vhost",
    "broker_version",
    "declare_bound_queue",
    "open_vhost",
    "purge_queue",
    "queue_depth",
]


@attrs.frozen
class Vhost:
    name: str
    url: str


def broker_version() -> str:
    try:
        return rabbitmqctl("version")
    except RabbitmqctlError as err:
        raise BenchError(str(err)) from err


@contextlib.contextmanager
def open_vhost(host: str) -> Iterator[Vhost]:
    """A fresh vhost that guest may use, deleted (with all it holds) on exit."""
    try:
        with vhost_for_run("tower-trio-bench") as name:
            yield Vhost(name, f"amqp://guest:guest@{host}/{quote(name, safe='')}")
    except RabbitmqctlError as err:
        raise BenchError(str(err)) from err


async def _declare_bound_queue(url: str, exchange: str, queue: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        bound = await channel.declare_queue(queue, durable=True)
        await bound.bind(declared, routing_key="#")


async def _queue_depth(url: str, queue: str, *, purge: bool) -> int:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        depth: int = result.message_count if result.message_count is not None else 0
        if purge:
            await declared.purge()
        return depth


def declare_bound_queue(url: str, exchange: str, queue: str) -> None:
    """Declare the durable topic ``exchange`` and a durable ``queue`` bound to all of it."""
    asyncio.run(_declare_bound_queue(url, exchange, queue))


def queue_depth(url: str, queue: str) -> int:
    return asyncio.run(_queue_depth(url, queue, purge=False))


def purge_queue(url: str, queue: str) -> int:
    """Empty ``queue``; returns how many messages it held."""
    return asyncio.run(_queue_depth(url, queue, purge=True))
