"""``GET /metrics``: what a platform team scrapes and alerts on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from tests._helpers import VALID, Broker, run_tower, tower_settings
from tower_trio._auth import Tokens
from tower_trio._metrics import route_of

SCRAPE_TOKEN = "scrape-token-0123456789"

if TYPE_CHECKING:
    from pathlib import Path


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class TestMetrics:
    async def test_counts_what_the_tower_did(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Published, unroutable and rejected triggers, requests and latency are all counted."""
        await broker.bind("OT-2/v1alpha1")
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
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
