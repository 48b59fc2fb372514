"""Message properties and received messages."""

from __future__ import annotations

import datetime
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
class Message:
    """A message received with Basic.Deliver or Basic.GetOk."""

    body: bytes
    exchange: str
    routing_key: str
    delivery_tag: int
    redelivered: bool
    properties: Properties
