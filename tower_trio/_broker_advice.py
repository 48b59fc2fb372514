"""Broker errors as the operator reads them: the fix named in ``TOWER_*`` variables.

The AMQP client (``tower_trio.amqp``) is a library that knows nothing of the
tower, so its advice speaks of "the URL" and of ``create_ssl_context``'s
files. The operator sets ``TOWER_AMQP_URL`` and the ``TOWER_AMQP_*_FILE``
variables instead. Every place that shows a broker error (the publisher's
``broker.disconnected`` line and ``/readyz``, start-up errors, the CLI) words
it here, so the advice is written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from . import amqp

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["describe_broker_error", "invalid_broker_setting"]

_UNREACHABLE: Final = "check that RabbitMQ is running there and that TOWER_AMQP_URL points at it"

_CLIENT_CERT: Final = (
    "check TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE, and that the broker trusts the CA "
    "that signed that certificate"
)

# The TLS failures whose fix is a setting. A plain AMQP port under amqps://,
# or a TLS port under amqp://, is fixed in the URL's scheme or port, which the
# client's own advice already says.
_TLS_FIXES: Final[Mapping[amqp.TLSFailure, str]] = {
    amqp.TLSFailure.NAME_MISMATCH: (
        "connect with a host name the certificate was issued for (the host in TOWER_AMQP_URL)"
    ),
    amqp.TLSFailure.UNTRUSTED: (
        "check TOWER_AMQP_CA_FILE: it must hold the CA that signed the broker's certificate "
        "(unset, the system's CAs are trusted)"
    ),
    amqp.TLSFailure.CLIENT_CERT_REQUIRED: (
        "the broker requires a client certificate: set TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE"
    ),
    amqp.TLSFailure.CLIENT_CERT_REFUSED: _CLIENT_CERT,
    amqp.TLSFailure.HANDSHAKE_REFUSED: (
        "check that the broker accepts TLS 1.2 or later and, if it requires client "
        "certificates, set TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE"
    ),
    amqp.TLSFailure.CLOSED_AFTER_HANDSHAKE: (
        "it most likely refused the client certificate or the lack of one; " + _CLIENT_CERT
    ),
    amqp.TLSFailure.CLOSED_DURING_HANDSHAKE: (
        "check that this is the broker's TLS port and, if the broker requires client "
        "certificates, " + _CLIENT_CERT
    ),
}


def describe_broker_error(error: BaseException) -> str:
    """``error``'s message for the operator: what happened, and which variable to check.

    Errors whose fix is not a tower setting keep their own message.
    """
    if isinstance(error, amqp.BrokerUnreachableError):
        return f"{error.summary}; {_UNREACHABLE}"
    if isinstance(error, amqp.TLSError) and (fix := _TLS_FIXES.get(error.failure)):
        return f"{error.summary}; {fix}"
    return str(error)


def invalid_broker_setting(variables: str, error: amqp.AMQPConfigError) -> str:
    """The start-up error for ``variables`` (a URL or TLS files) that the client refused."""
    return f"{variables} is invalid: {error}"
