"""Message properties and received messages."""

from __future__ import annotations

import calendar
import datetime
import struct
from collections.abc import Mapping
from typing import Any

import attrs
from pamqp import commands

PERSISTENT = 2
TRANSIENT = 1


def _table(value: Any) -> Any:
    # pamqp encodes only real dicts and lists as AMQP tables and arrays, so
    # read-only mappings and tuples given by callers are converted first.
    if isinstance(value, dict):
        return {key: _table(item) for key, item in value.items()}
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):
        return {key: _table(value[key]) for key in value.keys()}  # noqa: SIM118
    if isinstance(value, list | tuple):
        return [_table(item) for item in value]
    return value


_FLAGS = struct.Struct(">H")
_OCTET = struct.Struct(">B")
_LONG = struct.Struct(">I")
_TIMESTAMP_FIELD = struct.Struct(">Q")
(
    _CONTENT_TYPE,
    _CONTENT_ENCODING,
    _HEADERS,
    _DELIVERY_MODE,
    _PRIORITY,
    _CORRELATION_ID,
    _REPLY_TO,
    _EXPIRATION,
    _MESSAGE_ID,
    _TIMESTAMP,
    _TYPE,
    _USER_ID,
    _APP_ID,
) = (1 << bit for bit in range(15, 2, -1))


def _short_string(value: str) -> bytes:
    encoded = value.encode()
    if len(encoded) > 255:
        raise ValueError(f"{value[:40]!r}... is longer than an AMQP short string (255 bytes)")
    return _OCTET.pack(len(encoded)) + encoded


def _octet(value: int) -> bytes:
    if not 0 <= value <= 255:
        raise ValueError(f"{value} does not fit in an AMQP octet")
    return _OCTET.pack(value)


def _long_string(value: str) -> bytes:
    encoded = value.encode()
    return _LONG.pack(len(encoded)) + encoded


def _seconds(value: datetime.datetime) -> int:
    # As pamqp does: a naive datetime is UTC; sub-second precision is dropped.
    seconds = (
        int(value.timestamp())
        if value.tzinfo is datetime.UTC
        else calendar.timegm(value.utctimetuple())
    )
    if seconds < 0:
        raise ValueError(f"an AMQP timestamp cannot be before 1970: {value.isoformat()}")
    return seconds


@attrs.frozen
class Properties:
    """The AMQP basic properties of a message.

    ``delivery_mode=2`` makes a message persistent. ``timestamp`` travels with
    whole-second precision; a naive datetime is taken to be UTC.
    """

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime.datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None

    def encode(self) -> bytes:
        """The property flags and list of a content header frame, as bytes.

        Written by hand for what publishers send (short strings, octets, a
        timestamp, a headers table of strings), because pamqp's generic
        marshalling was half the cost of a publish; anything else is left to
        pamqp. Both produce the same bytes (the tests check it).
        """
        headers = self.headers
        if headers is not None and not all(
            isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
        ):
            encoded: bytes = self.to_pamqp().marshal()
            return encoded
        flags = 0
        parts: list[bytes] = []
        # Straight-line on purpose: this runs once per published message. Empty
        # strings are left out, as pamqp leaves them out.
        if self.content_type:
            flags |= _CONTENT_TYPE
            parts.append(_short_string(self.content_type))
        if self.content_encoding:
            flags |= _CONTENT_ENCODING
            parts.append(_short_string(self.content_encoding))
        if headers is not None:
            flags |= _HEADERS
            table = b"".join(
                _short_string(key) + b"S" + _long_string(headers[key]) for key in sorted(headers)
            )
            parts.append(_LONG.pack(len(table)) + table)
        if self.delivery_mode is not None:
            if self.delivery_mode not in (TRANSIENT, PERSISTENT):
                raise ValueError(f"delivery_mode must be 1 or 2, not {self.delivery_mode}")
            flags |= _DELIVERY_MODE
            parts.append(_OCTET.pack(self.delivery_mode))
        if self.priority is not None:
            flags |= _PRIORITY
            parts.append(_octet(self.priority))
        if self.correlation_id:
            flags |= _CORRELATION_ID
            parts.append(_short_string(self.correlation_id))
        if self.reply_to:
            flags |= _REPLY_TO
            parts.append(_short_string(self.reply_to))
        if self.expiration:
            flags |= _EXPIRATION
            parts.append(_short_string(self.expiration))
        if self.message_id:
            flags |= _MESSAGE_ID
            parts.append(_short_string(self.message_id))
        if self.timestamp is not None:
            flags |= _TIMESTAMP
            parts.append(_TIMESTAMP_FIELD.pack(_seconds(self.timestamp)))
        if self.type:
            flags |= _TYPE
            parts.append(_short_string(self.type))
        if self.user_id:
            flags |= _USER_ID
            parts.append(_short_string(self.user_id))
        if self.app_id:
            flags |= _APP_ID
            parts.append(_short_string(self.app_id))
        return _FLAGS.pack(flags) + b"".join(parts)

    def to_pamqp(self) -> commands.Basic.Properties:
        """Convert to pamqp's representation (raises ValueError on bad values)."""
        return commands.Basic.Properties(
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            headers=None if self.headers is None else _table(self.headers),
            delivery_mode=self.delivery_mode,
            priority=self.priority,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            expiration=self.expiration,
            message_id=self.message_id,
            timestamp=self.timestamp,
            message_type=self.type,
            user_id=self.user_id,
            app_id=self.app_id,
        )

    @classmethod
    def from_pamqp(cls, value: commands.Basic.Properties) -> Properties:
        """Convert from pamqp's representation."""
        return cls(
            content_type=value.content_type,
            content_encoding=value.content_encoding,
            headers=value.headers,
            delivery_mode=value.delivery_mode,
            priority=value.priority,
            correlation_id=value.correlation_id,
            reply_to=value.reply_to,
            expiration=value.expiration,
            message_id=value.message_id,
            timestamp=value.timestamp,
            type=value.message_type,
            user_id=value.user_id,
            app_id=value.app_id,
        )


@attrs.frozen
class EncodedProperties:
    """Properties already encoded (as ``Properties.encode`` does), for publishers
    that build many messages from one template and want to skip the encoding.

    ``message_id`` must be the one inside ``data``: mandatory publishes match
    Basic.Return by it.
    """

    data: bytes
    message_id: str | None = None

    def encode(self) -> bytes:
        return self.data


class PropertiesTemplate:
    """``Properties`` encoded once, for many messages that differ only in id and timestamp.

    A publisher that sends many messages of one kind (same content type,
    headers, type and app id) pays for the full encoding once;
    ``render`` then costs two concatenations. The message id and the
    timestamp are neighbours in AMQP's property order, which is what makes
    the template a head and a tail. The ``message_id`` and ``timestamp`` of
    ``properties`` are ignored.
    """

    def __init__(self, properties: Properties) -> None:
        rest = attrs.evolve(properties, message_id=None, timestamp=None)
        encoded = rest.encode()
        # Everything before the message id: the same properties without the
        # ones that follow the timestamp.
        head = attrs.evolve(rest, type=None, user_id=None, app_id=None).encode()
        (flags,) = _FLAGS.unpack_from(encoded)
        self._head = (
            _FLAGS.pack(flags | _MESSAGE_ID | _TIMESTAMP) + encoded[_FLAGS.size : len(head)]
        )
        self._tail = encoded[len(head) :]

    def render(self, message_id: str, timestamp: int) -> EncodedProperties:
        """The properties of one message; ``timestamp`` in whole seconds since 1970."""
        if not message_id:
            raise ValueError("a templated message needs a message id")
        data = (
            self._head + _short_string(message_id) + _TIMESTAMP_FIELD.pack(timestamp) + self._tail
        )
        return EncodedProperties(data, message_id=message_id)


@attrs.frozen
class Message:
    """A message received with Basic.Deliver or Basic.GetOk."""

    body: bytes
    exchange: str
    routing_key: str
    delivery_tag: int
    redelivered: bool
    properties: Properties
