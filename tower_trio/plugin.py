"""Helpers for plugin authors: state, polling, HTTP, building triggers, reporting bad items.

A plugin imports only ``tower_trio`` (Trigger, errors), this module and, in
its tests, ``tower_trio.testing``; never a private module. Everything here
works the same under the tower and under the test harness, where the wall
clock (``utc_now``) follows trio's clock so that ``autojump_clock`` can
drive schedules.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from ._backoff import Backoff
from ._logging import get_logger
from ._models import FieldError, InvalidTriggerError, Trigger, check_api_version
from ._plugin_http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    CrossOriginRedirectError,
    PluginHTTPClient,
    RequestDeadlineError,
    ResponseTooLargeError,
)
from ._runtime import State, current_context
from ._secrets import secret
from ._serialization import trigger_from_wire

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    import httpx

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "CrossOriginRedirectError",
    "RequestDeadlineError",
    "ResponseTooLargeError",
    "State",
    "is_api_version",
    "open_http_client",
    "poll",
    "report_item_error",
    "seconds_until",
    "secret",
    "trigger_from_json",
    "utc_now",
]

_log = get_logger("tower_trio.plugin")


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC.

    Use it instead of ``datetime.now()``: under ``tower_trio.testing`` it
    advances with trio's clock, so a test with ``autojump_clock`` can run a
    day of schedules in milliseconds.
    """
    context = current_context()
    if context is not None and context.wall_clock is not None:
        return context.wall_clock()
    return datetime.now(UTC)


def report_item_error(item: str, error: BaseException | str) -> None:
    """Record that one item from the source was bad, and go on with the next.

    The error is logged with the plugin's name, counted in ``GET /plugins``
    (``errors``) and becomes its ``lastError``. Use it for bad external data
    (an unreadable file, a record missing a field): the plugin keeps running.
    """
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    context = current_context()
    if context is None:
        _log.warning("plugin.item_failed", item=item, error=message)
        return
    message = context.redact(message)
    _log.warning("plugin.item_failed", plugin=context.name, item=item, error=message)
    context.item_failed(item, message)


def trigger_from_json(wire: object, *, key: str | None = None) -> Trigger:
    """A Trigger from decoded JSON, checked exactly as ``POST /triggers`` checks it.

    Raises ``InvalidTriggerError`` listing every problem (its ``str()`` is
    the one-line explanation to report). ``key`` is the idempotency key.
    """
    trigger = trigger_from_wire(wire)
    if key is None:
        return trigger
    try:
        return attrs.evolve(trigger, key=key)
    except InvalidTriggerError:
        raise
    except (TypeError, ValueError) as err:  # pragma: no cover - evolve only re-validates
        raise InvalidTriggerError([FieldError("key", str(err))]) from err


def is_api_version(value: object) -> bool:
    """Whether ``value`` is a valid trigger apiVersion (``OT-2/v1alpha1``)."""
    return check_api_version(value) is None


def open_http_client(
    *,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for a plugin, safe to point at an API it does not control.

    Use it as ``async with open_http_client(...) as client``, then
    ``await client.get(...)`` as with any httpx client (httpx runs on trio
    through anyio). Every request, whichever method sends it, is bounded:

    - ``timeout``: seconds for the whole request — connecting, following
      redirects and reading the answer (with ``client.stream()``, up to the
      last byte read). Past it, ``RequestDeadlineError``, an
      ``httpx.TimeoutException``.
    - ``max_response_bytes``: the largest answer read, counted after gzip or
      deflate decompression. A larger one raises ``ResponseTooLargeError``
      as soon as it shows, without reading the rest.
    - Redirects are followed only within the origin (scheme, host and port)
      of the request, so ``headers`` (API keys, tokens) never reach another
      host; a redirect elsewhere raises ``CrossOriginRedirectError``.

    The three errors are ``httpx.HTTPError`` and ``PluginError`` at once:
    let ``poll`` back off on them like on any failed request.
    """
    return PluginHTTPClient(
        base_url=base_url,
        headers=headers,
        timeout=timeout,
        max_response_bytes=max_response_bytes,
    )


async def poll(
    check: Callable[[], Awaitable[None]],
    *,
    interval: float,
    jitter: float = 0.1,
    max_backoff: float = 300.0,
    what: str = "poll",
) -> NoReturn:
    """Call ``check()`` every ``interval`` seconds, for ever, surviving its failures.

    The interval is jittered by up to ``jitter`` (a fraction) so that many
    towers do not poll a shared API in lockstep. When ``check`` raises, the
    error is reported (``report_item_error(what, err)``) and the next try
    waits a doubling delay, from ``interval`` up to ``max_backoff``, instead
    of hammering a source that is down; the plugin shows ``backing-off``
    meanwhile. Cancellation passes straight through.
    """
    if interval <= 0:
        raise ValueError(f"poll interval must be positive, got {interval}")
    backoff = Backoff(initial=interval, cap=max(interval, max_backoff))
    rng = random.Random()
    context = current_context()
    while True:
        try:
            await check()
        except Exception as err:
            report_item_error(what, err)
            if context is not None:
                context.backing_off(True)
            try:
                await trio.sleep(backoff.next_delay())
            finally:
                if context is not None:
                    context.backing_off(False)
            continue
        backoff.reset()
        await trio.sleep(interval * (1 - jitter * rng.random()))


def seconds_until(when: datetime) -> float:
    """Seconds from ``utc_now()`` until ``when`` (0 if it has passed)."""
    return max(0.0, (when - utc_now()) / timedelta(seconds=1))
