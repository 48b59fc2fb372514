"""A console left open on the live feed, as a browser would: reads every event.

A thread of the bench process holds ``GET /console/events`` open and
reads whatever comes, counting the trigger events, so that the tower
streams every change of every trigger while the load runs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs

from ._common import BenchError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ConsoleStream", "console_stream"]


@attrs.define
class ConsoleStream:
    triggers: int = 0
    """``trigger`` events read: two per published trigger (pending, then published)."""
    _stop: threading.Event = attrs.field(factory=threading.Event)


def _read(sock: socket.socket, stream: ConsoleStream) -> None:
    tail = b""
    while not stream._stop.is_set():
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            return
        # An event's name may be split between two reads: keep the last few bytes.
        chunk = tail + data
        stream.triggers += chunk.count(b"event: trigger\n")
        tail = chunk[-15:].replace(b"event: trigger\n", b"")


@contextlib.contextmanager
def console_stream(base_url: str) -> Iterator[ConsoleStream]:
    """A live feed open on the tower at ``base_url`` for the ``with`` block."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    sock = socket.create_connection((host, port), timeout=5)
    stream = ConsoleStream()
    with sock:
        sock.sendall(
            f"GET /console/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = sock.recv(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"the console's live feed answered {head[:60]!r}")
        sock.settimeout(0.2)
        reader = threading.Thread(target=_read, args=(sock, stream), daemon=True)
        reader.start()
        try:
            yield stream
        finally:
            stream._stop.set()
            reader.join()
