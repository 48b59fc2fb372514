"""The broker nodes named by ``TOWER_AMQP_URL``, and which one to try next.

``TOWER_AMQP_URL`` holds one URL, or several separated by commas: one per
node of a RabbitMQ cluster. The publisher connects to the first node that
answers, in order. When a connection is lost, or an attempt fails, the next
attempt goes to the node after that one (wrapping around), so a dead node
costs one connect timeout per round, not one per reconnect.

A round is one attempt per node. The publisher fails over at once within a
round and waits its backoff only when a whole round went by without a
connection: with one URL, that is a wait after every failure, as it has
always been.
"""

from __future__ import annotations

import attrs

from . import amqp

__all__ = ["Nodes", "node_address", "split_urls"]


def split_urls(raw: str) -> list[str]:
    """The URLs of ``TOWER_AMQP_URL``, in order, stripped; empty ones are kept (as "")."""
    return [url.strip() for url in raw.split(",")]


def node_address(url: amqp.URL) -> str:
    """``host:port`` of ``url``: how logs, metrics and the status name a node (no credentials)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}"


@attrs.define
class Nodes:
    """The nodes in order, the one to try next, and how many attempts failed in this round."""

    urls: tuple[amqp.URL, ...] = attrs.field()
    _next: int = attrs.field(default=0, init=False)
    _failed_in_round: int = attrs.field(default=0, init=False)

    @urls.validator
    def _at_least_one(self, _: attrs.Attribute[object], urls: tuple[amqp.URL, ...]) -> None:
        if not urls:
            raise ValueError("a broker needs at least one URL")

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(node_address(url) for url in self.urls)

    @property
    def next(self) -> amqp.URL:
        """The node the next connection attempt goes to."""
        return self.urls[self._next]

    def connected(self) -> None:
        """The attempt on ``next`` connected: the next failure starts a new round."""
        self._failed_in_round = 0

    def failed(self) -> bool:
        """The attempt on ``next`` failed, or its connection was lost: move on to the node after it.

        Returns True when that ends a round without a connection, that is when
        the publisher should back off before the next attempt.
        """
        self._next = (self._next + 1) % len(self.urls)
        self._failed_in_round += 1
        if self._failed_in_round < len(self.urls):
            return False
        self._failed_in_round = 0
        return True

    def redacted(self) -> str:
        """Every URL without its password, as ``TOWER_AMQP_URL`` lists them."""
        return ",".join(url.redacted() for url in self.urls)
