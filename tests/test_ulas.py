"""ULAS's protocol triggers: accepted on every path, consumed in the strict ULAS shape.

The examples in ``tests/ulas/`` are written from ULAS's format (its four
example shapes, their variants with ``metadata``, and the empty specs the
format allows); ``tests/ulas/trigger.schema.json`` is the format as a strict
consumer (ULAS's Tecan relay) reads it: no member it does not define.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import trio

from tests._helpers import run_tower, tower_settings
from tower_trio._cli import main
from tower_trio._serialization import load_trigger, parse_datetime
from tower_trio.plugin import trigger_from_json

if TYPE_CHECKING:
    from tests._helpers import Broker

REPO = Path(__file__).parent.parent
ULAS = Path(__file__).parent / "ulas"
SCHEMA = json.loads((ULAS / "trigger.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
EXAMPLES = sorted(path for path in ULAS.glob("*.json") if path != ULAS / "trigger.schema.json")
MIGRATION_PAGE = REPO / "docs" / "migrating-from-ulas.md"
FORMAT_PAGE = REPO / "docs" / "message-format.md"

# A device service's handler, as ULAS's Redis subscriber called it: here it
# records each trigger, and fails on the second so that the test can tell an
# acknowledged trigger from one that was not.
SERVICE = """
import json
import os


def handle_trigger(trigger):
    with open(os.environ["RECEIVED"], "a", encoding="utf-8") as received:
        received.write(json.dumps(trigger) + "\\n")
    if trigger["protocol"] == "Fail":
        raise RuntimeError("the test handler refuses this trigger")
"""


def read(path: Path) -> dict[str, Any]:
    example: dict[str, Any] = json.loads(path.read_text())
    return example


def ulas_errors(message: object) -> list[str]:
    """Every way ``message`` breaks the strict ULAS format; empty when it is fine."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '$'}: {error.message}"
        for error in VALIDATOR.iter_errors(message)
    ]


def as_published(sent: dict[str, Any], uuid: str) -> dict[str, Any]:
    """What a trigger sent over HTTP becomes on the wire: the tower adds the uuid and the source."""
    metadata = sent.get("metadata") or {}
    return {**sent, "uuid": uuid, "metadata": {"source": "http", "spec": metadata.get("spec", {})}}


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.DOTALL)


def consumer_snippet() -> str:
    """The one Python block of docs/migrating-from-ulas.md."""
    blocks = code_blocks(MIGRATION_PAGE, "python")
    assert len(blocks) == 1, "the migration page should hold exactly one Python block"
    return blocks[0]


class TestSchema:
    def test_schema_is_a_schema(self) -> None:
        """The ULAS schema is itself a valid JSON Schema."""
        jsonschema.Draft202012Validator.check_schema(SCHEMA)

    @pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
    def test_examples_fit_the_format(self, path: Path) -> None:
        """Each example, with the uuid a tower adds, is a valid ULAS trigger."""
        assert ulas_errors({**read(path), "uuid": "0" * 32}) == []

    @pytest.mark.parametrize(
        ("extra", "where"),
        [
            pytest.param({"createdAt": "2026-01-31T12:00:00Z"}, "$", id="created-at"),
            pytest.param({"metadata": {"source": "t", "spec": {}, "at": 1}}, "metadata", id="meta"),
            pytest.param({"plate": {"rows": 1, "columns": 1, "wells": 1}}, "plate", id="plate"),
        ],
    )
    def test_refuses_extra_members(self, extra: dict[str, Any], where: str) -> None:
        """The schema fails a body with a member ULAS does not define, as the Tecan relay would."""
        message = {**read(ULAS / "bioreactor.json"), "uuid": "0" * 32, **extra}
        if "plate" in extra:
            message["spec"] = [{}]
        errors = ulas_errors(message)
        assert len(errors) == 1
        assert errors[0].startswith(f"{where}: Additional properties are not allowed")


class TestOverHttp:
    @pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
    async def test_example_arrives_in_the_ulas_shape(
        self, path: Path, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """POSTed as ULAS wrote it, the trigger is consumed in the strict shape, field for field."""
        sent = read(path)
        queue = await broker.bind(sent["apiVersion"])
        settings = tower_settings(amqp_url, broker.exchange, tmp_path / "data")
        async with run_tower(settings) as tower:
            with trio.fail_after(20):
                answer = await tower.client.post(
                    "/triggers?wait=published",
                    content=await trio.Path(path).read_bytes(),
                    headers={"content-type": "application/json"},
                )
                (message,) = await broker.take(queue, 1)
                looked_up = await tower.client.get(answer.headers["location"])
        assert answer.status_code == 202, answer.text
        body = answer.json()
        consumed = json.loads(message.body)
        assert ulas_errors(consumed) == []
        assert consumed == as_published(sent, body["uuid"])
        assert message.routing_key == sent["apiVersion"]
        # The creation time is kept out of the body, but not lost.
        created_at = parse_datetime(body["createdAt"])
        assert looked_up.json()["createdAt"] == body["createdAt"]
        assert message.properties.timestamp == datetime.fromtimestamp(
            int(created_at.timestamp()), UTC
        )
        assert {k: v for k, v in body.items() if k not in ("status", "createdAt")} == consumed


class TestOtherPaths:
    def test_validate_accepts_every_example(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`tower-trio validate` reports each example ok and exits 0."""
        environ = {"TOWER_DATA_DIR": str(tmp_path / "data")}
        assert main(["validate", *map(str, EXAMPLES)], environ) == 0
        assert capsys.readouterr().out.splitlines() == [f"{path}: ok" for path in EXAMPLES]

    @pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
    def test_plugin_kit_accepts_every_example(self, path: Path) -> None:
        """A plugin building the example with ``trigger_from_json`` gets it, metadata kept."""
        sent = read(path)
        trigger = trigger_from_json(sent)
        assert trigger.spec == sent["spec"]
        assert trigger.metadata.spec == sent.get("metadata", {}).get("spec", {})


class TestMessageFormatPage:
    @pytest.mark.parametrize("block", code_blocks(FORMAT_PAGE, "json"))
    def test_json_examples_are_published_triggers(self, block: str) -> None:
        """Each JSON example on the page is a published trigger, in the strict ULAS shape."""
        message = json.loads(block)
        assert ulas_errors(message) == []
        assert load_trigger(block).uuid == message["uuid"]

    @pytest.mark.parametrize("block", code_blocks(FORMAT_PAGE, "python"))
    def test_python_examples_run(self, block: str) -> None:
        """Each Python example on the page runs: its triggers are valid."""
        exec(compile(block, str(FORMAT_PAGE), "exec"), {})


@pytest.mark.subprocess
class TestMigrationConsumer:
    async def test_consumer_snippet_receives_and_acks(
        self, amqp_url: str, broker: Broker, unique: str, tmp_path: Path
    ) -> None:
        """The page's consumer gets the published trigger and acks it; a failed one stays queued."""
        queue = f"test.ulas-consumer.{unique}"
        api_version = "TecanSpark/v1alpha1/Spark1"
        # Declared and bound as the snippet does, before the tower publishes,
        # so that nothing depends on when the consumer process gets there.
        await broker.channel.exchange_declare(broker.exchange, "topic", durable=True)
        await broker.channel.queue_declare(queue, durable=True)
        broker.queues.append(queue)
        await broker.channel.queue_bind(queue, broker.exchange, api_version)
        (tmp_path / "consumer.py").write_text(consumer_snippet())
        (tmp_path / "service.py").write_text(SERVICE)
        sent = read(ULAS / "measure-absorbance-metadata.json")
        settings = tower_settings(amqp_url, broker.exchange, tmp_path / "data")
        async with run_tower(settings) as tower:
            with trio.fail_after(20):
                first = await tower.client.post("/triggers?wait=published", json=sent)
                failing = {"apiVersion": api_version, "protocol": "Fail", "spec": {}}
                second = await tower.client.post("/triggers?wait=published", json=failing)
        assert (first.json()["status"], second.json()["status"]) == ("published", "published")
        received_file = tmp_path / "received.jsonl"
        environ = {
            **os.environ,
            "AMQP_URL": amqp_url,
            "TOWER_EXCHANGE": broker.exchange,
            "QUEUE": queue,
            "RECEIVED": str(received_file),
        }
        with trio.fail_after(30):
            done = await trio.run_process(
                [sys.executable, "consumer.py"],
                cwd=tmp_path,
                env=environ,
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
        assert b"the test handler refuses this trigger" in done.stderr, done.stderr.decode()
        received = [json.loads(line) for line in received_file.read_text().splitlines()]
        assert received[0] == as_published(sent, first.json()["uuid"])
        assert ulas_errors(received[0]) == []
        assert [r["uuid"] for r in received] == [first.json()["uuid"], second.json()["uuid"]]
        # The first was acked; the second, whose handler failed, is back in the queue.
        (requeued,) = await broker.take(queue, 1)
        assert json.loads(requeued.body)["uuid"] == second.json()["uuid"]
        assert await broker.count(queue) == 0
