"""The servers under test, each in a subprocess of its own.

Each server gets a free port, its log goes to a file (a pipe nobody reads
would fill up and stall it), and it counts as up once its health route
answers 200. On the way out it gets SIGTERM and time to drain, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._common import REPO_ROOT, BenchError, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

__all__ = [
    "RunningServer",
    "peer_command",
    "pick_port",
    "run_server",
    "tower_command",
    "tower_environ",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SLOW_STOP = 5.0
"""Seconds after which a server's exit on SIGTERM is worth a note in the output."""
_POLL_INTERVAL = 0.1
_LOG_TAIL = 2000


@attrs.frozen
class RunningServer:
    name: str
    pid: int
    base_url: str


def tower_command() -> list[str]:
    """``tower-trio run`` from the environment this harness runs in."""
    script = Path(sys.executable).with_name("tower-trio")
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "tower_trio", "run"]


def tower_environ(amqp_url: str, exchange: str, port: int, workdir: Path) -> dict[str, str]:
    """The environment of a tower with no plugins and a fresh journal under ``workdir``."""
    plugins_dir = workdir / "no-plugins"
    plugins_dir.mkdir(exist_ok=True)
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TOWER_", "PLUGIN_")) and name != "STATE_DIRECTORY"
    }
    environ.update(
        TOWER_HTTP_HOST=HOST,
        TOWER_HTTP_PORT=str(port),
        TOWER_AMQP_URL=amqp_url,
        TOWER_EXCHANGE=exchange,
        TOWER_PLUGINS_DIR=str(plugins_dir),
        TOWER_DATA_DIR=str(workdir / f"data-{exchange}"),
    )
    return environ


def peer_command(amqp_url: str, exchange: str, port: int, *, plain: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench._peer_fastapi",
        "--host",
        HOST,
        "--port",
        str(port),
        "--amqp-url",
        amqp_url,
        "--exchange",
        exchange,
        *(["--plain"] if plain else []),
    ]


@contextlib.contextmanager
def run_server(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    ready_path: str,
    log_path: Path,
    environ: Mapping[str, str] | None = None,
    report: Callable[[str], None] | None = None,
) -> Iterator[RunningServer]:
    base_url = f"http://{HOST}:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(environ if environ is not None else os.environ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(name, process, base_url + ready_path, log_path)
            yield RunningServer(name, process.pid, base_url)
        finally:
            seconds = _stop(process)
            if report is not None and seconds > SLOW_STOP:
                report(f"  note: {name} took {seconds:.1f} s to exit after SIGTERM")


def pick_port() -> int:
    return free_port(HOST)


def _wait_ready(name: str, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    # Readiness is observable only from outside the process, so this polls.
    deadline = time.monotonic() + READY_TIMEOUT
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"{name} exited with {process.returncode} before it was ready; "
                f"its log ends with:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
                last_problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            last_problem = f"HTTP {err.code}: {err.read(300).decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as err:
            last_problem = str(err)
        time.sleep(_POLL_INTERVAL)
    raise BenchError(
        f"{name} was not ready within {READY_TIMEOUT:g} s ({url}: {last_problem}); "
        f"its log ends with:\n{_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> float:
    """Stop ``process``; returns how long it took to exit after SIGTERM."""
    if process.poll() is not None:
        return 0.0
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.monotonic() - started


def _tail(log_path: Path) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL:].strip() or "(empty log)"


def run_tower(
    *,
    port: int,
    environ: Mapping[str, str],
    log_path: Path,
    report: Callable[[str], None] | None = None,
    ready_path: str = "/readyz",
) -> contextlib.AbstractContextManager[RunningServer]:
    """``tower-trio run`` with ``environ`` (see ``tower_environ``), until the block ends."""
    return run_server(
        "tower-trio",
        tower_command(),
        port=port,
        ready_path=ready_path,
        log_path=log_path,
        environ=environ,
        report=report,
    )
