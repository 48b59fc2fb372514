"""Errors raised by the AMQP client.

Each error carries the broker's reply code and text where there is one, and
its message says what to do next, because these messages reach operators who
only see a log line.
"""

from __future__ import annotations

import enum
from typing import Self

from pamqp import commands


def _method_name(class_id: int, method_id: int) -> str | None:
    method = commands.INDEX_MAPPING.get((class_id << 16) | method_id)
    return None if method is None else str(getattr(method, "name", method.__name__))


class AMQPError(Exception):
    """Base class of every error the AMQP client raises."""

    # The error a copy was made from, so that copies raised by many waiters
    # can be recognised as one failure when they meet in an exception group.
    _origin: AMQPError | None = None

    def _fresh(self) -> Self:
        # One failure (a lost connection, a closed channel) is raised by every
        # task that was waiting on it. Raising one object from many tasks would
        # splice their tracebacks together, so each raise gets its own copy.
        copy = type(self).__new__(type(self), *self.args)
        copy.__dict__.update(self.__dict__)
        copy.args = self.args
        copy.__cause__ = self.__cause__
        copy._origin = self._origin or self
        return copy


class AMQPConfigError(AMQPError):
    """The AMQP URL or a connection option is invalid."""


class BrokerUnreachableError(AMQPError):
    """No AMQP connection could be made: refused, unknown host or timed out."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        # What happened, without the advice, for a caller that names its own settings.
        self.summary = f"cannot reach the AMQP broker at {host}:{port}: {reason}"
        super().__init__(
            f"{self.summary}; check that RabbitMQ is running there and that the URL points at it"
        )


class TLSFailure(enum.Enum):
    """Why a TLS connection failed, as far as the client can tell: what to look at."""

    #: The broker's certificate is not valid for the host name in the URL.
    NAME_MISMATCH = enum.auto()
    #: The broker's certificate is not signed by a CA the SSL context trusts.
    UNTRUSTED = enum.auto()
    #: The server answered the TLS handshake in plain AMQP (or something else).
    NOT_TLS = enum.auto()
    #: The server answered in TLS, but the URL is ``amqp://``.
    TLS_PORT = enum.auto()
    #: The broker requires a client certificate and none was given.
    CLIENT_CERT_REQUIRED = enum.auto()
    #: The broker refused the client certificate given.
    CLIENT_CERT_REFUSED = enum.auto()
    #: The broker refused the handshake for another reason (such as no common version).
    HANDSHAKE_REFUSED = enum.auto()
    #: The broker dropped the connection right after the handshake, without an alert.
    CLOSED_AFTER_HANDSHAKE = enum.auto()
    #: The server dropped the connection during the handshake.
    CLOSED_DURING_HANDSHAKE = enum.auto()


class TLSError(AMQPError):
    """The TLS handshake with the broker failed: a certificate was refused, or no TLS spoken.

    Not a :class:`BrokerUnreachableError`: like a wrong password, it is a
    configuration problem that retrying does not fix.
    """

    def __init__(self, host: str, port: int, reason: str, advice: str, failure: TLSFailure) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        self.failure = failure
        # What happened, without the advice, for a caller that names its own settings.
        self.summary = f"TLS with the AMQP broker at {host}:{port} failed: {reason}"
        super().__init__(f"{self.summary}; {advice}")


class _ReplyError(AMQPError):
    """An error that the broker reported with a reply code and text."""

    def __init__(self, reply_code: int, reply_text: str, message: str) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        super().__init__(message)


class AuthenticationError(_ReplyError):
    """The broker refused the user name or password (403 ACCESS_REFUSED)."""

    def __init__(self, reply_code: int, reply_text: str, *, username: str) -> None:
        self.username = username
        super().__init__(
            reply_code,
            reply_text,
            f"the broker refused the login of user {username!r} "
            f"({reply_code} {reply_text}); check the user and password in the AMQP URL",
        )


class AccessRefusedError(_ReplyError):
    """The broker refused to open the vhost for this user (530 NOT_ALLOWED)."""

    def __init__(self, reply_code: int, reply_text: str, *, vhost: str, username: str) -> None:
        self.vhost = vhost
        self.username = username
        super().__init__(reply_code, reply_text, self._describe(reply_code, reply_text))

    def _describe(self, reply_code: int, reply_text: str) -> str:
        return (
            f"user {self.username!r} may not use vhost {self.vhost!r} "
            f"({reply_code} {reply_text}); grant access with `rabbitmqctl "
            f"set_permissions -p {self.vhost} {self.username} '.*' '.*' '.*'`"
        )


class VhostNotFoundError(AccessRefusedError):
    """The vhost named in the URL does not exist on the broker."""

    def _describe(self, reply_code: int, reply_text: str) -> str:
        return (
            f"vhost {self.vhost!r} does not exist on the broker "
            f"({reply_code} {reply_text}); create it with `rabbitmqctl add_vhost "
            f"{self.vhost}` and `rabbitmqctl set_permissions -p {self.vhost} "
            f"{self.username} '.*' '.*' '.*'`, or fix the vhost in the AMQP URL"
        )


class ConnectionClosedError(_ReplyError):
    """The connection was closed with Connection.Close, by the broker or by us."""

    def __init__(self, reply_code: int, reply_text: str, *, by_client: bool = False) -> None:
        self.by_client = by_client
        if by_client:
            message = (
                f"the connection was closed by this client ({reply_code} {reply_text}); "
                "open a new connection to go on"
            )
        else:
            message = (
                f"the broker closed the connection ({reply_code} {reply_text}); "
                "reconnect, and republish every message that was not confirmed"
            )
        super().__init__(reply_code, reply_text, message)


class ConnectionLostError(AMQPError):
    """The connection broke without a close handshake: EOF, reset, or silence."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"lost the connection to the AMQP broker: {reason}; reconnect, and "
            "republish every message that was not confirmed"
        )


class ChannelClosedError(_ReplyError):
    """The channel is closed: by the broker (an error), by us, or with its connection."""

    def __init__(
        self,
        reply_code: int,
        reply_text: str,
        class_id: int = 0,
        method_id: int = 0,
        *,
        channel_id: int | None = None,
        by_client: bool = False,
    ) -> None:
        self.class_id = class_id
        self.method_id = method_id
        self.channel_id = channel_id
        self.by_client = by_client
        which = "the channel" if channel_id is None else f"channel {channel_id}"
        if by_client:
            message = (
                f"{which} was closed by this client ({reply_code} {reply_text}); "
                "open a new channel to go on"
            )
        else:
            method = _method_name(class_id, method_id)
            cause = f" in reply to {method}" if method else ""
            message = (
                f"the broker closed {which}{cause}: {reply_code} {reply_text}; the "
                "connection is still usable, open a new channel"
            )
        super().__init__(reply_code, reply_text, message)
