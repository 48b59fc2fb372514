"""``GET /metrics``: what a platform team scrapes and alerts on."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests._helpers import VALID, Broker, run_tower, tower_settings
from tower_trio._auth import Tokens
from tower_trio._metrics import method_of, route_of, status_of
from tower_trio._version import __version__

SCRAPE_TOKEN = "scrape-token-0123456789"
API_TOKEN = "api-token-0123456789abcdef"
# Every sample a tower exposes after hostile traffic, histogram buckets and
# _created samples included, stays under this fixed figure whatever the amount
# of traffic (about 130 today); one series per junk method would pass it.
MAX_SERIES = 300

if TYPE_CHECKING:
    from pathlib import Path

    import httpx


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series_per_family(text: str) -> Counter[str]:
    return Counter(
        {family.name: len(family.samples) for family in text_string_to_metric_families(text)}
    )


async def junk_requests(client: httpx.AsyncClient, start: int, stop: int) -> None:
    """Requests whose method, path and headers are all made up, ``start`` to ``stop``."""
    for n in range(start, stop):
        for method, path, headers in (
            (f"JUNK{n}", f"/junk/{n}", {}),
            (f"X-{n}", "/triggers", {"Authorization": f"Bearer guess-{n}-0123456789"}),
            ("GET", f"/wp-admin/{n}.php", {"Authorization": f"Bearer {API_TOKEN}"}),
            (f"P{n}", f"/triggers/{n:032x}", {"Authorization": f"Bearer {API_TOKEN}"}),
        ):
            response = await client.request(method, path, headers=headers)
            assert response.status_code < 500, (method, path, response.text)


async def hostile_traffic(client: httpx.AsyncClient, count: int) -> None:
    """Junk requests plus triggers, query strings and headers a caller varies at will."""
    await junk_requests(client, 0, count)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    for n in range(count):
        for query, body, extra in (
            ("", {**VALID, "apiVersion": f"Junk{n}/v{n}", "protocol": f"P{n}"}, {}),
            ("", {**VALID, "metadata": {"source": f"evil-{n}"}}, {"Idempotency-Key": f"k{n}"}),
            ("", {**VALID, "protocol": f"not a protocol {n}"}, {}),
            ("", VALID, {"Content-Type": f"text/x-{n}"}),
            (f"?wait={n}", VALID, {}),
        ):
            response = await client.post(f"/triggers{query}", json=body, headers={**auth, **extra})
            assert response.status_code < 500, response.text
        await client.request("OPTIONS", f"/triggers/{n}", headers=auth)
        await client.head(f"/protocols?{n}={n}", headers=auth)
        await client.get(f"/triggers?apiVersion=Junk{n}/v{n}&protocol=P{n}", headers=auth)


class TestLabelCardinality:
    async def test_series_do_not_grow_with_junk_requests(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Distinct junk methods and paths add no series once each kind has been seen."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, api_tokens=Tokens.of([API_TOKEN])
        )
        async with run_tower(settings) as tower:
            with trio.fail_after(120):
                await junk_requests(tower.client, 0, 5)
                after_five = series_per_family((await tower.client.get("/metrics")).text)
                await junk_requests(tower.client, 5, 200)
                after_many = series_per_family((await tower.client.get("/metrics")).text)
        assert after_many == after_five
        requests = after_many["tower_http_requests"]
        assert 0 < requests < 40

    async def test_hostile_traffic_makes_few_series(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """After junk methods, paths, apiVersions, sources and keys, a scrape stays small."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, api_tokens=Tokens.of([API_TOKEN])
        )
        async with run_tower(settings) as tower:
            with trio.fail_after(120):
                await hostile_traffic(tower.client, 100)
                scrape = (await tower.client.get("/metrics")).text
        assert sum(series_per_family(scrape).values()) < MAX_SERIES
        for junk in ("JUNK", "X-", "wp-admin", "Junk", "evil", "not a protocol", "text/x"):
            assert junk not in scrape

    def test_methods_fold_into_a_closed_set(self) -> None:
        """The methods the tower serves are kept; any other token a client sends is 'other'."""
        assert [method_of(m) for m in ("GET", "HEAD", "POST", "OPTIONS")] == [
            "GET",
            "HEAD",
            "POST",
            "OPTIONS",
        ]
        assert {method_of(m) for m in ("JUNK", "get", "DELETE", "X" * 1000)} == {"other"}

    def test_statuses_fold_into_a_closed_set(self) -> None:
        """Statuses the tower documents are kept; any other is its class, like '4xx'."""
        assert status_of(404) == "404"
        assert status_of(429) == "429"
        assert status_of(418) == "4xx"
        assert status_of(599) == "5xx"
        assert status_of(42) == "other"


class TestMetrics:
    async def test_counts_what_the_tower_did(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Published, unroutable and rejected triggers, requests and latency are all counted."""
        await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, instance="tower-a")
        async with run_tower(settings) as tower:
            for _ in range(3):
                await tower.client.post("/triggers?wait=published", json=VALID)
            await tower.client.post(
                "/triggers?wait=published", json={**VALID, "apiVersion": "Nobody/v1"}
            )
            await tower.client.post("/triggers", json={**VALID, "protocol": "9"})
            await tower.client.get("/triggers/" + "0" * 32)
            response = await tower.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert found[("tower_triggers_published_total", frozenset())] == 3
        assert found[("tower_triggers_unroutable_total", frozenset())] == 1
        assert found[("tower_publish_attempts_total", frozenset())] == 4
        assert found[("tower_broker_connected", frozenset())] == 1
        assert found[("tower_journal_pending", frozenset())] == 0
        accepted = frozenset({("source", "http"), ("outcome", "accepted")})
        invalid = frozenset({("source", "http"), ("outcome", "invalid")})
        assert found[("tower_triggers_received_total", accepted)] == 4
        assert found[("tower_triggers_received_total", invalid)] == 1
        lookups = frozenset({("route", "/triggers/{uuid}"), ("method", "GET"), ("status", "404")})
        assert found[("tower_http_requests_total", lookups)] == 1
        assert found[("tower_publish_latency_seconds_count", frozenset())] == 3
        this = frozenset({("instance", "tower-a"), ("version", __version__)})
        assert found[("tower_info", this)] == 1

    async def test_token_protects_the_scrape(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """With TOWER_METRICS_TOKEN, a scrape without it gets 401 and with it 200."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, metrics_token=Tokens.of([SCRAPE_TOKEN])
        )
        async with run_tower(settings) as tower:
            anonymous = await tower.client.get("/metrics")
            wrong = await tower.client.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await tower.client.get(
                "/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}
            )
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert SCRAPE_TOKEN not in anonymous.text
        assert wrong.status_code == 401
        assert right.status_code == 200

    def test_route_labels_are_bounded(self) -> None:
        """Raw paths never become labels: uuids fold into a template, the rest into 'other'."""
        assert route_of("/triggers/" + "a" * 32) == "/triggers/{uuid}"
        assert route_of("/triggers") == "/triggers"
        assert route_of("/wp-admin/../../etc/passwd") == "other"
