"""A trio event loop in a thread of its own, for tests whose main thread drives a browser.

Playwright's sync API blocks the thread that calls it; the tower's log
reader, the TCP relay and the AMQP consumer are trio code that must keep
running meanwhile. They run in the portal's nursery, and the test calls into
them with ``portal.run(async_fn, ...)``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

__all__ = ["Portal", "open_portal"]

T = TypeVar("T")

_STARTUP = 10.0
_SHUTDOWN = 30.0


@attrs.frozen
class Portal:
    """Runs async functions in the portal's trio thread, from the test's thread."""

    token: trio.lowlevel.TrioToken
    nursery: trio.Nursery

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in the trio thread; its result, or its exception."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the trio thread, for code that must run there (cancel scopes)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``nursery.start(fn, *args)``: runs until the portal closes; returns its start value."""
        return self.run(self.nursery.start, fn, *args)


@contextmanager
def open_portal() -> Iterator[Portal]:
    """A trio loop in a daemon thread; closing cancels its tasks and re-raises a failure."""
    ready = threading.Event()
    portals: list[Portal] = []
    stops: list[trio.Event] = []
    failures: list[BaseException] = []

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            portals.append(Portal(trio.lowlevel.current_trio_token(), nursery))
            stops.append(stop)
            ready.set()
            await stop.wait()
            nursery.cancel_scope.cancel()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as err:  # reported in the test's thread on close
            failures.append(err)
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="trio-portal", daemon=True)
    thread.start()
    if not ready.wait(_STARTUP) or not portals:
        raise RuntimeError("the trio portal did not start") from (failures[0] if failures else None)
    portal = portals[0]
    try:
        yield portal
    finally:
        with suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(stops[0].set, trio_token=portal.token)
        thread.join(_SHUTDOWN)
        if thread.is_alive():
            raise RuntimeError(f"the trio portal did not stop within {_SHUTDOWN:g} s")
        if failures:
            raise failures[0]
