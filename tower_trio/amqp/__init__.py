"""A trio-native AMQP 0-9-1 client on pamqp, made for publishing with confirms.

It knows nothing of the application using it (its messages, settings or
errors): it connects, opens channels, declares topology, publishes with
pipelined publisher confirms, and has a small consumer side for tests and
benchmarks. Its errors derive from :class:`AMQPError` alone and give advice
in terms of the URL and :func:`create_ssl_context`; an application that
names its settings otherwise translates them. ``amqps://`` URLs connect over
TLS (:func:`create_ssl_context` builds the context from PEM files)::

    async with amqp.open_connection("amqp://guest:guest@localhost/") as conn:
        async with conn.open_channel(confirm=True) as channel:
            confirmation = await channel.publish("events", "a.b", b"{}")
            outcome = await confirmation.wait()
"""

from ._channel import Channel, QueueDeclared
from ._confirm import Confirmation, Outcome, Returned
from ._connection import Connection, open_connection
from ._errors import (
    AccessRefusedError,
    AMQPConfigError,
    AMQPError,
    AuthenticationError,
    BrokerUnreachableError,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionLostError,
    TLSError,
    TLSFailure,
    VhostNotFoundError,
)
from ._properties import (
    PERSISTENT,
    TRANSIENT,
    EncodedProperties,
    Message,
    Properties,
    PropertiesTemplate,
)
from ._stats import ChannelStatistics, ConnectionStatistics
from ._tls import create_ssl_context
from ._url import URL

__all__ = [
    "PERSISTENT",
    "TRANSIENT",
    "URL",
    "AMQPConfigError",
    "AMQPError",
    "AccessRefusedError",
    "AuthenticationError",
    "BrokerUnreachableError",
    "Channel",
    "ChannelClosedError",
    "ChannelStatistics",
    "Confirmation",
    "Connection",
    "ConnectionClosedError",
    "ConnectionLostError",
    "ConnectionStatistics",
    "EncodedProperties",
    "Message",
    "Outcome",
    "Properties",
    "PropertiesTemplate",
    "QueueDeclared",
    "Returned",
    "TLSError",
    "TLSFailure",
    "VhostNotFoundError",
    "create_ssl_context",
    "open_connection",
]
