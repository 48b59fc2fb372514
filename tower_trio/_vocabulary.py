"""The words and limits that more than one layer uses, each defined once.

The validators, the journal, the publisher, the HTTP API, its OpenAPI
document, the protocol-schema loader and the command line all import
these; none of them restates a status, a pattern or a limit. This module
imports nothing of the tower.
"""

from __future__ import annotations

import enum

__all__ = [
    "API_NAME",
    "API_VERSION",
    "API_VERSION_NUMBER",
    "DEFAULT_LIST_LIMIT",
    "MAX_API_VERSION_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_LIST_LIMIT",
    "MAX_PROTOCOL_LENGTH",
    "PROTOCOL",
    "DeliveryStatus",
]


class DeliveryStatus(enum.StrEnum):
    """Where a trigger's delivery stands: pending until the broker has answered."""

    PENDING = "pending"
    PUBLISHED = "published"
    UNROUTABLE = "unroutable"
    FAILED = "failed"

    @property
    def settled(self) -> bool:
        """Whether the broker's answer is final (no further attempt is made)."""
        return self is not DeliveryStatus.PENDING


# Regular expressions (Python's and JSON Schema's dialects agree on these),
# to be matched whole.
API_NAME = r"[A-Za-z0-9-]+"
"""The device API of an apiVersion: ``OT-2`` in ``OT-2/v1alpha1``."""
API_VERSION_NUMBER = r"v[1-9][0-9]*[a-z0-9]*"
"""The version of an apiVersion: ``v1alpha1``."""
API_VERSION = rf"{API_NAME}/{API_VERSION_NUMBER}(?:/[A-Za-z0-9_-]+)?"
"""``<api>/<version>[/<device>]``, the routing key a trigger is published with."""
PROTOCOL = r"[A-Za-z][A-Za-z0-9_]*"

MAX_API_VERSION_LENGTH = 255  # an AMQP routing key is a short string: 255 bytes at most
MAX_PROTOCOL_LENGTH = 128
MAX_KEY_LENGTH = 256
"""An idempotency key, from the ``Idempotency-Key`` header or a plugin."""
MAX_LIST_LIMIT = 500
"""Triggers on one page of ``GET /triggers``."""
DEFAULT_LIST_LIMIT = 50
