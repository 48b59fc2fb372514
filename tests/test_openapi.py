"""The OpenAPI document: it matches the routes, and the API keeps its promises under fuzzing.

The fuzz tests run schemathesis (synchronous, on requests) against a real
tower on the real broker. The tower runs in its own thread with its own
``trio.run``, started once for the module; readiness comes from
``serve_tower``'s ``task_status``, handed over through a queue.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import hypothesis
import pytest
import requests
import schemathesis
import trio
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests._helpers import VALID, Broker, run_tower, tower_settings
from tower_trio import amqp
from tower_trio._channel import Submission
from tower_trio._config import Settings
from tower_trio._console import ConsoleSources
from tower_trio._feed import Feed
from tower_trio._http import create_app
from tower_trio._journal import SQLiteStorage, open_journal
from tower_trio._openapi import openapi_document
from tower_trio._publisher import Publisher
from tower_trio._settlements import Settlements
from tower_trio._supervisor import serve_tower

if TYPE_CHECKING:
    from collections.abc import Iterator

DOCUMENT = Path(__file__).parent.parent / "docs" / "openapi.json"
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
# /metrics is answered by the metrics middleware in front of the app.
MIDDLEWARE_ROUTES = {("/metrics", "get")}
CONSOLE_ROUTES = {
    # The console's page, files and browser-only feeds: docs/console.md, not the API.
    ("/", "get"),
    ("/console", "get"),
    ("/console/session", "post"),
    ("/console/logout", "post"),
    ("/console/events", "get"),
    ("/console/api/status", "get"),
    ("/console/api/triggers/{uuid}/amqp", "get"),
    ("/console/static/{name}", "get"),
}

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
SCHEMA.config.generation.update(max_examples=50, deterministic=True)


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    }


def documented_statuses(case: schemathesis.Case[Any]) -> set[int]:
    return {int(code) for code in case.operation.definition.raw["responses"]}


class TestDocument:
    def test_routes_match_the_app(self, tmp_path: Path) -> None:
        """Every route the app serves is documented, with its methods, and nothing else is."""
        send_channel, _ = trio.open_memory_channel[Submission](1)
        journal = open_journal(tmp_path)
        try:
            settlements = Settlements(SQLiteStorage(journal))
            app = create_app(
                Settings(),
                send_channel,
                settlements,
                list,
                retry=Publisher(Settings(), SQLiteStorage(journal)).retry,
                console=ConsoleSources(Feed(), dict, "tower.triggers"),
            )
        finally:
            journal.close()
        app_routes = {
            (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
            for rule in app.url_map.iter_rules()
            for method in rule.methods or ()
            # Added by the framework to every route.
            if method not in {"HEAD", "OPTIONS"}
        }
        assert documented_routes(openapi_document()) | CONSOLE_ROUTES == (
            app_routes | MIDDLEWARE_ROUTES
        )
        assert not documented_routes(openapi_document()) & CONSOLE_ROUTES

    async def test_served_document_is_the_one_in_docs(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """GET /openapi.json serves docs/openapi.json (`python -m tower_trio._openapi` makes it)."""
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            served = await tower.client.get("/openapi.json")
        assert served.status_code == 200
        assert served.json() == json.loads(DOCUMENT.read_text())

    def test_document_is_valid_openapi(self) -> None:
        """The document is OpenAPI 3.1 and every schema in it is a valid JSON Schema."""
        document = openapi_document()
        assert document["openapi"].startswith("3.1.")
        operations = list(SCHEMA.get_all_operations())
        assert all(isinstance(result, Ok) for result in operations)
        assert len(operations) == len(documented_routes(document))

    def test_every_error_answer_uses_the_error_shape(self) -> None:
        """Each documented 4xx and 5xx answer except 504 is the shared Error object."""
        for path, operations in openapi_document()["paths"].items():
            for method, operation in operations.items():
                for code, response in operation["responses"].items():
                    if code.startswith(("4", "5")) and code != "504":
                        schema = response["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/Error"}, (path, method)


@attrs.define
class ThreadedTower:
    """A tower in a thread of its own, for synchronous clients such as schemathesis."""

    settings: Settings
    _ready: queue.Queue[str | BaseException] = attrs.field(factory=queue.Queue)
    _thread: threading.Thread | None = None
    _token: trio.lowlevel.TrioToken | None = None
    _shutdown: trio.Event | None = None

    def __enter__(self) -> str:
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        ready = self._ready.get(timeout=60)
        if isinstance(ready, BaseException):
            raise ready
        return ready

    def __exit__(self, *exc_info: object) -> None:
        assert self._thread is not None
        assert self._shutdown is not None
        trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                running = await nursery.start(
                    partial(serve_tower, self.settings, shutdown=self._shutdown)
                )
                self._ready.put(running.http_urls[0])
        except BaseException as err:
            self._ready.put(err)
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                async with (
                    amqp.open_connection(self.settings.amqp_url) as connection,
                    connection.open_channel() as channel,
                ):
                    await channel.exchange_delete(self.settings.exchange)


@pytest.fixture(scope="module")
def fuzzed_tower(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tower on the real broker, shared by the fuzz tests of this module."""
    settings = tower_settings(
        amqp_url,
        f"test.fuzz.{uuid.uuid4().hex[:10]}",
        tmp_path_factory.mktemp("fuzz"),
        schemas_dir=Path(__file__).parent.parent / "docs" / "schemas",
    )
    with ThreadedTower(settings) as url:
        yield url


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_keeps_its_contract(
    case: schemathesis.Case[Any], fuzzed_tower: str, session: requests.Session
) -> None:
    """Generated requests, valid or not, get documented statuses, headers and bodies; no 5xx."""
    response = case.call(base_url=fuzzed_tower, session=session, timeout=30)
    status = response.status_code
    assert status < 500 or (status in {503, 504} and status in documented_statuses(case)), (
        f"{case.method} {case.path}: {status} {response.text[:500]}"
    )
    # Valid by the document is not always valid by the tower: a plate needs
    # rows x columns wells, and a reused Idempotency-Key is a 409, both documented.
    case.validate_response(response, excluded_checks=[not_a_server_error, positive_data_acceptance])


class TestAfterFuzzing:
    def test_still_healthy_and_accepting(
        self, fuzzed_tower: str, session: requests.Session
    ) -> None:
        """After the fuzzing, the tower is live, ready, and publishes a valid trigger."""
        assert session.get(f"{fuzzed_tower}/healthz", timeout=10).status_code == 200
        assert session.get(f"{fuzzed_tower}/readyz", timeout=10).status_code == 200
        response = session.post(
            f"{fuzzed_tower}/triggers?wait=published",
            json=json.loads(json.dumps(VALID)),
            timeout=30,
        )
        assert response.status_code == 202
        assert response.json()["status"] in {"published", "unroutable"}
