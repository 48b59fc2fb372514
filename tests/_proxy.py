"""A TCP proxy a test can cut: the network between one tower and its server, made to fail.

``open_proxy(host, port)`` listens on a free local port and forwards every
connection to ``host:port``. ``cut()`` closes every connection it carries
and closes each new one at once, as a server that went away would;
``restore()`` forwards again. The server itself is never touched.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Proxy", "open_proxy"]


@attrs.define(eq=False)
class Proxy:
    port: int
    target: tuple[str, int]
    cut_off: bool = False
    _scopes: set[trio.CancelScope] = attrs.Factory(set)

    def cut(self) -> None:
        """Close every connection, and each new one as soon as it is accepted."""
        self.cut_off = True
        for scope in self._scopes:
            scope.cancel()

    def restore(self) -> None:
        """Forward new connections again."""
        self.cut_off = False

    async def serve(self, client: trio.SocketStream) -> None:
        """Forward one client's connection, unless cut off."""
        async with client:
            if self.cut_off:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    server = await trio.open_tcp_stream(*self.target)
                    async with server, trio.open_nursery() as nursery:
                        nursery.start_soon(_pipe, client, server, nursery.cancel_scope)
                        nursery.start_soon(_pipe, server, client, nursery.cancel_scope)
                finally:
                    self._scopes.discard(scope)


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def open_proxy(host: str, port: int) -> AsyncIterator[Proxy]:
    """A proxy to ``host:port`` for the block, on a free port of 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy = Proxy(listeners[0].socket.getsockname()[1], (host, port))
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, proxy.serve, listeners)
        try:
            yield proxy
        finally:
            proxy.cut()
            nursery.cancel_scope.cancel()
