"""A console left open on the live feed, as a browser would: reads every event.

A process of its own (so that it takes nothing from the load generator's
interpreter) holds ``GET /console/events`` open and reads whatever comes,
counting the trigger events, so that the tower streams every change of
every trigger while the load runs. It prints the count when its standard
input closes.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs

from ._common import BenchError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ConsoleStream", "console_stream"]

_EVENT = b"event: trigger\n"


@attrs.define
class ConsoleStream:
    triggers: int = 0
    """``trigger`` events read: two per published trigger (pending, then published)."""


def _read(sock: socket.socket, counted: list[int]) -> None:
    tail = b""
    while data := sock.recv(65536):
        # An event's name may be split between two reads: keep the last few bytes.
        chunk = tail + data
        counted[0] += chunk.count(_EVENT)
        tail = chunk[-(len(_EVENT) - 1) :]


def _main(base_url: str) -> None:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            f"GET /console/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = sock.recv(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            sys.exit(f"the console's live feed answered {head[:60]!r}")
        print("streaming", flush=True)
        sock.settimeout(None)
        counted = [head.count(_EVENT)]
        threading.Thread(target=_read, args=(sock, counted), daemon=True).start()
        sys.stdin.read()
        print(counted[0], flush=True)


@contextlib.contextmanager
def console_stream(base_url: str) -> Iterator[ConsoleStream]:
    """A live feed open on the tower at ``base_url`` for the ``with`` block."""
    stream = ConsoleStream()
    with subprocess.Popen(
        [sys.executable, "-m", "bench._console_stream", base_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as reader:
        assert reader.stdin is not None
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != "streaming":
            raise BenchError("the console's live feed did not open; see the reader's error")
        try:
            yield stream
        finally:
            reader.stdin.close()
            counted = reader.stdout.readline().strip()
            stream.triggers = int(counted) if counted.isdigit() else 0


if __name__ == "__main__":
    _main(sys.argv[1])
