"""TLS listeners started on the local RabbitMQ at run time, and stopped again.

The broker's configuration files are never touched: a listener is started
with ``rabbit_networking:start_ssl_listener`` through ``rabbitmqctl eval``
and stopped with ``rabbit_networking:stop_tcp_listener``, which stops TLS
listeners too (both are children of the same supervisor, named by address
and port). A run killed before its teardown leaves its listener running
until the broker restarts, which forgets it; every run uses fresh ports and
certificates, so such a leftover never gets in a later run's way.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests._helpers import unused_port
from tests._rabbitmq import rabbitmqctl

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.amqp._certificates import TLSFiles

# The listeners take local connections only.
LISTEN_ADDRESS = "127.0.0.1"


def rabbitmqctl_eval(expression: str) -> str:
    """Evaluate an Erlang expression in the broker; its printed result."""
    return rabbitmqctl("eval", expression)


def _erlang_string(path: Path) -> str:
    text = str(path)
    if '"' in text or "\\" in text:
        raise ValueError(f"{text!r} cannot be written as a plain Erlang string")
    return f'"{text}"'


def _check_broker_can_read(files: TLSFiles) -> None:
    # The broker reads these files at the first handshake, not when the
    # listener starts; a permission problem would show up as a puzzling
    # handshake failure in every test instead of here.
    paths = ", ".join(_erlang_string(p) for p in (files.ca, files.server_cert, files.server_key))
    answer = rabbitmqctl_eval(f"lists:usort([element(1, file:read_file(F)) || F <- [{paths}]]).")
    if answer != "[ok]":
        raise RuntimeError(
            f"RabbitMQ cannot read the test certificates in {files.folder} ({answer}); "
            "set TMPDIR to a folder the broker's user can read"
        )


@contextmanager
def tls_listener(files: TLSFiles, *, require_client_cert: bool) -> Iterator[int]:
    """Run a TLS listener on a free local port of the broker; its port.

    The broker verifies client certificates against the test CA. With
    ``require_client_cert`` it refuses clients that have none.
    """
    _check_broker_can_read(files)
    port = unused_port()
    listener = f'{{"{LISTEN_ADDRESS}", {port}}}'
    options = (
        f"[{{certfile, {_erlang_string(files.server_cert)}}}, "
        f"{{keyfile, {_erlang_string(files.server_key)}}}, "
        f"{{cacertfile, {_erlang_string(files.ca)}}}, "
        "{verify, verify_peer}, "
        f"{{fail_if_no_peer_cert, {str(require_client_cert).lower()}}}]"
    )
    answer = rabbitmqctl_eval(f"rabbit_networking:start_ssl_listener({listener}, {options}, 2).")
    if answer != "ok":
        raise RuntimeError(f"RabbitMQ did not start a TLS listener on port {port}: {answer}")
    try:
        yield port
    finally:
        answer = rabbitmqctl_eval(f"rabbit_networking:stop_tcp_listener({listener}).")
        if answer != "ok":
            raise RuntimeError(f"RabbitMQ did not stop the TLS listener on port {port}: {answer}")


def tls_ports() -> set[int]:
    """The ports of the broker's TLS listeners, to check that none is left behind."""
    answer = rabbitmqctl_eval(
        "[element(6, L) || L <- rabbit_networking:active_listeners(), "
        "element(1, L) =:= listener, element(3, L) =:= 'amqp/ssl']."
    )
    return {int(port) for port in answer.strip("[]").split(",") if port.strip()}
