"""Counters and the statistics snapshots built from them."""

from __future__ import annotations

import attrs


@attrs.define
class Counters:
    """The running totals of one connection, updated in place."""

    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    messages_published: int = 0
    acks_received: int = 0
    multiple_acks_received: int = 0
    nacks_received: int = 0
    returns_received: int = 0
    unmatched_returns: int = 0


@attrs.frozen
class ConnectionStatistics:
    """A snapshot of a connection's traffic and state.

    ``acks_received`` and ``nacks_received`` count frames, not messages: one
    frame with ``multiple`` set (counted again in ``multiple_acks_received``)
    settles many messages. ``unmatched_returns`` counts Basic.Return frames
    whose message could not be found (no or unknown ``message_id``).
    """

    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int
    messages_published: int
    acks_received: int
    multiple_acks_received: int
    nacks_received: int
    returns_received: int
    unmatched_returns: int
    unflushed_bytes: int
    blocked: bool
    channels_open: int


@attrs.frozen
class ChannelStatistics:
    """A snapshot of one channel's state."""

    channel_id: int
    confirm: bool
    window: int
    unconfirmed: int
    published: int
    consumers: int
    closed: bool
