"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Most figures are read at scrape time from the objects that already keep
them (publisher statistics, plugin statuses, the channel), so the hot paths
carry no metrics code at all. Only what has no other home is counted as it
happens: HTTP requests, and the time from acceptance to confirm.

Every label value comes from a closed set, so that no client can grow the
registry (each new label value is a series held for the life of the process):

- ``route``: a template (``/triggers/{uuid}``) or ``other``, never a raw path;
- ``method``: the methods the tower serves, else ``other`` (a method is any
  token a client cares to send, and is counted before authentication);
- ``status``: the statuses the tower documents, else the class (``4xx``);
- ``outcome``: a fixed vocabulary, ``source``: ``http`` only;
- ``plugin``: the plugins the operator installed and configured, a set fixed
  at start-up; ``state``: the members of ``PluginState``.

Nothing a caller or a plugin's source chooses (uuids, apiVersions, protocols,
``metadata.source``, idempotency keys, header values) becomes a label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ._openapi import openapi_document
from ._runtime import PluginState
from ._version import __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ._auth import Tokens
    from ._publisher import PublisherStatistics
    from ._runtime import PluginStatus

__all__ = ["TowerMetrics", "instrument"]

ASGIApp = Callable[..., Any]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_ROUTES = (
    "/triggers",
    "/plugins",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/protocols",
)


# Quart answers HEAD and OPTIONS for every route besides what each one declares.
_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS"})


def _documented_statuses() -> frozenset[int]:
    """The statuses of the OpenAPI document, plus 405 (a route asked with another
    method) and 500 (a bug of ours); any other status is counted by its class."""
    return frozenset(
        {405, 500}
        | {
            int(status)
            for path in openapi_document()["paths"].values()
            for operation in path.values()
            for status in operation["responses"]
        }
    )


_STATUSES = _documented_statuses()


def route_of(path: str) -> str:
    """The route template for ``path``, from a fixed set: label values stay bounded."""
    if path in _ROUTES:
        return path
    if path.startswith("/triggers/"):
        return "/triggers/{uuid}"
    return "other"


def method_of(method: str) -> str:
    """``method`` if the tower serves it, else ``other``: label values stay bounded."""
    return method if method in _METHODS else "other"


def status_of(status: int) -> str:
    """A documented status as itself, any other as its class (``4xx``)."""
    if status in _STATUSES:
        return str(status)
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


def _outcome(status: int) -> str:
    if status == 202:
        return "accepted"
    if status == 200:
        return "duplicate"
    return {
        400: "malformed",
        401: "unauthorized",
        403: "forbidden",
        409: "conflict",
        413: "too_large",
        415: "unsupported_media_type",
        422: "invalid",
        429: "rate_limited",
        503: "unavailable",
        504: "timeout",
    }.get(status, "other")


class _StateCollector(Collector):
    """Reads the tower's own counters at scrape time."""

    def __init__(
        self,
        publisher: Callable[[], PublisherStatistics],
        plugins: Mapping[str, PluginStatus],
        channel: Callable[[], int],
    ) -> None:
        self._publisher = publisher
        self._plugins = plugins
        self._channel = channel

    def collect(self) -> Iterator[Metric]:
        stats = self._publisher()
        for name, value, doc in (
            ("tower_triggers_published", stats.published, "Triggers confirmed by the broker."),
            ("tower_triggers_unroutable", stats.unroutable, "Triggers returned as unroutable."),
            ("tower_triggers_failed", stats.failed, "Triggers given up after repeated nacks."),
            ("tower_triggers_duplicate", stats.duplicates, "Triggers with a reused key."),
            ("tower_broker_nacks", stats.nacked, "Negative acknowledgements from the broker."),
            ("tower_publish_attempts", stats.attempts, "Messages handed to the broker."),
            ("tower_broker_reconnects", stats.reconnects, "Connections after the first."),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "tower_journal_pending", "Journaled triggers not yet confirmed.", value=stats.pending
        )
        yield GaugeMetricFamily(
            "tower_unconfirmed",
            "Messages published and awaiting a confirm.",
            value=stats.unconfirmed,
        )
        yield GaugeMetricFamily(
            "tower_channel_depth", "Triggers waiting in the memory channel.", value=self._channel()
        )
        yield GaugeMetricFamily(
            "tower_broker_connected",
            "1 while the broker connection is open.",
            value=stats.connected,
        )
        yield GaugeMetricFamily(
            "tower_broker_blocked", "1 while the broker blocks publishing.", value=stats.blocked
        )
        # One series per node of TOWER_AMQP_URL: a closed set, fixed at start-up.
        node = GaugeMetricFamily(
            "tower_broker_node",
            "1 for the broker node (host:port) the connection is open to, 0 for the others.",
            labels=["node"],
        )
        for address in stats.nodes:
            node.add_metric([address], address == stats.node)
        yield node
        if (replica := stats.replica) is not None:
            # Only with a journal several towers share (PostgreSQL).
            yield CounterMetricFamily(
                "tower_triggers_taken_over",
                "Pending triggers of towers whose heartbeat expired, taken over by this one.",
                value=replica.taken_over,
            )
            yield CounterMetricFamily(
                "tower_replica_lapses",
                "Times this tower found its heartbeat expired and joined the replicas again.",
                value=replica.lapses,
            )
            yield GaugeMetricFamily(
                "tower_replica_live",
                "1 while this tower's heartbeat is sure to be alive, so that it publishes.",
                value=replica.live,
            )
        sent = CounterMetricFamily(
            "tower_plugin_triggers_sent", "Triggers sent by each plugin.", labels=["plugin"]
        )
        restarts = CounterMetricFamily(
            "tower_plugin_restarts", "Restarts of each plugin after a crash.", labels=["plugin"]
        )
        state = GaugeMetricFamily(
            "tower_plugin_state", "1 for each plugin's current state.", labels=["plugin", "state"]
        )
        for name, status in self._plugins.items():
            sent.add_metric([name], status.triggers_sent)
            restarts.add_metric([name], status.restarts)
            for candidate in PluginState:
                state.add_metric([name, candidate.value], status.state is candidate)
        yield sent
        yield restarts
        yield state


class TowerMetrics:
    """The tower's metrics, in a registry of their own (never the global one)."""

    def __init__(
        self,
        publisher: Callable[[], PublisherStatistics],
        plugins: Mapping[str, PluginStatus],
        channel: Callable[[], int],
        *,
        instance: str = "",
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(publisher, plugins, channel))
        Info(
            "tower", "This tower: its version and its name among replicas.", registry=self.registry
        ).info({"version": __version__, "instance": instance})
        self.requests = Counter(
            "tower_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tower_http_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.received = Counter(
            "tower_triggers_received",
            "Triggers received over HTTP by outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "tower_publish_latency_seconds",
            "Time from a trigger's acceptance to the broker's confirm.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_published(self, seconds: float) -> None:
        self.publish_seconds.observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def instrument(app: ASGIApp, metrics: TowerMetrics, *, token: Tokens | None = None) -> ASGIApp:
    """Wrap an ASGI app: count its requests and serve ``GET /metrics``.

    ``/metrics`` is answered here, before the app, so that a scrape never
    waits behind the API's own work; with ``token`` it needs that bearer
    token.
    """

    # ``labels()`` validates and takes a lock on every call; the label values
    # come from fixed sets, so each child is looked up once and kept.
    children: dict[tuple[str, str, str, str | None], tuple[Any, Any, Any]] = {}

    def children_of(route: str, method: str, status: int) -> tuple[Any, Any, Any]:
        ingest = route == "/triggers" and method == "POST"
        key = (route, method_of(method), status_of(status), _outcome(status) if ingest else None)
        if (found := children.get(key)) is None:
            route_label, method_label, status_label, outcome = key
            found = children[key] = (
                metrics.requests.labels(route_label, method_label, status_label),
                metrics.request_seconds.labels(route_label),
                None if outcome is None else metrics.received.labels("http", outcome),
            )
        return found

    async def app_with_metrics(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/metrics":
            if scope["method"] in ("GET", "HEAD"):
                await _serve_metrics(scope, send, metrics, token)
            else:
                await _respond(
                    send,
                    405,
                    b'{"error":"method not allowed","details":["GET /metrics"]}',
                    b"application/json",
                    [(b"allow", b"GET, HEAD")],
                )
            return
        started = time.perf_counter()
        status = 500
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            requests, seconds, received = children_of(route_of(path), scope["method"], status)
            requests.inc()
            seconds.observe(time.perf_counter() - started)
            if received is not None:
                received.inc()

        async def send_and_count(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves, so that a client's next
                # request (a scrape, say) always sees this one counted.
                count()
            await send(message)

        try:
            await app(scope, receive, send_and_count)
        finally:
            if not counted:
                count()

    return app_with_metrics


async def _serve_metrics(
    scope: dict[str, Any], send: Any, metrics: TowerMetrics, token: Tokens | None
) -> None:
    if token is not None:
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, presented = given.partition(" ")
        if scheme.lower() != "bearer" or token.match(presented.strip()) is None:
            await _respond(
                send,
                401,
                b'{"error":"unauthorized","details":["GET /metrics needs TOWER_METRICS_TOKEN '
                b'as a bearer token"]}',
                b"application/json",
                [(b"www-authenticate", b'Bearer realm="tower-trio metrics"')],
            )
            return
    await _respond(send, 200, metrics.render(), CONTENT_TYPE_LATEST.encode())


async def _respond(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
