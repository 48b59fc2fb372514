"""The local RabbitMQ's admin side: ``rabbitmqctl``, and vhosts made for one run and deleted.

The test session and the benchmarks each work in a vhost of their own, so
that what they declare never touches the broker's other users and is gone
when they end, even after a failure half-way. This module imports neither
pytest nor the tower, so that the benchmarks use it as the tests do.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["RabbitmqctlError", "open_vhost", "rabbitmqctl"]

_TIMEOUT = 60


class RabbitmqctlError(RuntimeError):
    """A ``rabbitmqctl`` command could not run or failed; the message says which, and why."""


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS``; what it printed, stripped."""
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        raise RabbitmqctlError(
            "rabbitmqctl is not on PATH; the tests and the benchmarks need a local RabbitMQ "
            "(start it with `rabbitmq-server -detached`)"
        )
    command = f"`rabbitmqctl {' '.join(args)}`"
    try:
        done = subprocess.run(
            [executable, "-q", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
    except subprocess.CalledProcessError as err:
        reason = (err.stderr.strip() or err.stdout.strip()).splitlines()[:1]
        raise RabbitmqctlError(f"{command} failed: {reason[0] if reason else err}") from err
    except subprocess.TimeoutExpired as err:
        raise RabbitmqctlError(f"{command} did not finish within {_TIMEOUT} s") from err
    return done.stdout.strip()


@contextmanager
def open_vhost(prefix: str) -> Iterator[str]:
    """A fresh vhost named ``PREFIX-<random>`` that guest may use, deleted with all it holds."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        _delete_vhost(name)


def _delete_vhost(name: str) -> None:
    try:
        rabbitmqctl("delete_vhost", name)
    except RabbitmqctlError:
        pass
    else:
        return
    # The broker may be restarting (the fault tests stop and start its app);
    # give it a minute so that the vhost does not outlive the run.
    try:
        rabbitmqctl("await_startup", "--timeout", str(_TIMEOUT - 10))
        rabbitmqctl("delete_vhost", name)
    except RabbitmqctlError as err:
        raise RabbitmqctlError(
            f"{err}; delete the vhost by hand: rabbitmqctl delete_vhost {name}"
        ) from err
