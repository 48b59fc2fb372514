"""A vhost of the benchmark's own on the local RabbitMQ, and its queues.

Everything the benchmarks declare lives in a vhost created for the run and
deleted at the end, so the broker is left as it was found even when a run
fails half-way. Queues are bound with ``#`` so that every trigger is
routable and really stored, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from typing import TYPE_CHECKING
from urllib.parse import quote

import aio_pika
import attrs

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

_RABBITMQCTL_TIMEOUT = 60


@attrs.frozen
class Vhost:
    name: str
    url: str


def _rabbitmqctl(*args: str) -> str:
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        raise BenchError(
            "rabbitmqctl is not on PATH; the benchmark needs a local RabbitMQ "
            "(start it with `rabbitmq-server -detached`)"
        )
    try:
        done = subprocess.run(
            [rabbitmqctl, "-q", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=_RABBITMQCTL_TIMEOUT,
        )
    except subprocess.CalledProcessError as err:
        reason = (err.stderr.strip() or err.stdout.strip()).splitlines()[:1]
        raise BenchError(
            f"`rabbitmqctl {' '.join(args)}` failed: {reason[0] if reason else err}"
        ) from err
    except subprocess.TimeoutExpired as err:
        raise BenchError(
            f"`rabbitmqctl {' '.join(args)}` did not finish within {_RABBITMQCTL_TIMEOUT} s"
        ) from err
    return done.stdout.strip()


def broker_version() -> str:
    return _rabbitmqctl("version")


@contextlib.contextmanager
def open_vhost(host: str) -> Iterator[Vhost]:
    """A fresh vhost that guest may use, deleted (with all it holds) on exit."""
    name = f"tower-trio-bench-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield Vhost(name, f"amqp://guest:guest@{host}/{quote(name, safe='')}")
    finally:
        _delete_vhost(name)


def _delete_vhost(name: str) -> None:
    try:
        _rabbitmqctl("delete_vhost", name)
    except BenchError:
        pass
    else:
        return
    # The broker may be restarting (tests stop and start its app); give it
    # a minute so that the vhost does not outlive the run.
    try:
        _rabbitmqctl("await_startup", "--timeout", str(_RABBITMQCTL_TIMEOUT - 10))
        _rabbitmqctl("delete_vhost", name)
    except BenchError as err:
        raise BenchError(
            f"{err}; delete the benchmark's vhost by hand: rabbitmqctl delete_vhost {name}"
        ) from err


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
