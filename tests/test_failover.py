"""Failover between the broker nodes of TOWER_AMQP_URL (docs/operations.md, "A RabbitMQ cluster").

The machine has one RabbitMQ, so the other nodes of a "cluster" are stand-ins:
a closed port (a node that is down), an in-process listener that accepts and
never answers (a node that hangs), and relays in front of the real broker
that the test can hold back or kill (a node that dies with messages in
flight). Every test works in a vhost of its own, deleted afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from tests._helpers import Broker, logged, run_tower, tower_settings, unused_port, watching
from tests._rabbitmq import open_vhost
from tests.conftest import BROKER_HOST
from tests.test_guarantees import ROUTE, Relay, posted
from tests.test_metrics import samples
from tower_trio import amqp
from tower_trio._nodes import Nodes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests._helpers import Tower
    from tower_trio._config import Settings

BROKER = f"127.0.0.1:{BROKER_HOST.rpartition(':')[2]}"
"""The real broker as the tower names a node: host:port."""

TIMEOUT = 20
"""Each test's bound: the slowest waits one short connect timeout and a backoff of 0.5 s."""


class TestNodeOrder:
    """Which node the next attempt goes to, and when a round without a connection is over."""

    def urls(self, count: int) -> tuple[amqp.URL, ...]:
        return tuple(amqp.URL.parse(f"amqp://rabbit-{n}/") for n in range(1, count + 1))

    def test_first_attempt_goes_to_the_first_node(self) -> None:
        """The first node listed is tried first."""
        assert Nodes(self.urls(3)).next.host == "rabbit-1"

    def test_each_failure_moves_to_the_next_node_and_wraps(self) -> None:
        """A failed attempt moves on to the node after it; after the last comes the first."""
        nodes = Nodes(self.urls(3))
        tried = []
        for _ in range(7):
            tried.append(nodes.next.host)
            nodes.failed()
        assert tried == [f"rabbit-{n}" for n in (1, 2, 3, 1, 2, 3, 1)]

    def test_a_round_is_one_failure_per_node(self) -> None:
        """Backing off is due once every node failed in a row, not before."""
        nodes = Nodes(self.urls(3))
        assert [nodes.failed() for _ in range(6)] == [False, False, True] * 2

    def test_losing_a_connection_starts_from_the_node_after_it(self) -> None:
        """After a connection to node 2 is lost, node 3 is next, then node 1: a new round."""
        nodes = Nodes(self.urls(3))
        assert nodes.failed() is False  # node 1 is down
        nodes.connected()  # to node 2
        assert nodes.failed() is False  # node 2 is lost: node 3 at once
        assert nodes.next.host == "rabbit-3"
        assert nodes.failed() is False
        assert nodes.next.host == "rabbit-1"
        assert nodes.failed() is True  # all three in a row: back off

    def test_one_node_backs_off_after_every_failure(self) -> None:
        """With one URL every failure ends a round, as reconnecting always worked."""
        nodes = Nodes(self.urls(1))
        assert [nodes.failed() for _ in range(3)] == [True] * 3
        assert nodes.next.host == "rabbit-1"

    def test_addresses_carry_no_credentials(self) -> None:
        """Nodes are named host:port (IPv6 in brackets), never with the user or password."""
        nodes = Nodes(
            (amqp.URL.parse("amqp://u:secret@rabbit:5673/x"), amqp.URL.parse("amqp://u:p@[::1]/"))
        )
        assert nodes.addresses == ("rabbit:5673", "[::1]:5672")
        assert "secret" not in nodes.redacted()

    def test_no_node_is_refused(self) -> None:
        """An empty list of nodes is a programming error, caught at once."""
        with pytest.raises(ValueError, match="at least one URL"):
            Nodes(())


@attrs.define
class Silent:
    """A node that hangs: it accepts connections and never says a word."""

    port: int = 0
    accepted: int = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._hang, listeners, task_status=task_status)

    async def _hang(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            await trio.sleep_forever()


class _HeldBack(trio.abc.Stream):
    """The tower's side of a relay link: what the broker sends waits while its node holds."""

    def __init__(self, stream: trio.SocketStream, node: Node) -> None:
        self._stream = stream
        self._node = node

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._node.wait_released()
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.define
class Node(Relay):
    """A node in front of the real broker: it can hold the broker's answers back, and die.

    Once dead it accepts and drops every connection, as a host whose broker
    has stopped does (closed at once, before the AMQP handshake).
    """

    dead: bool = False
    _holding: bool = False
    _released: trio.Event = attrs.Factory(trio.Event)

    def hold_answers(self) -> None:
        """From now on, nothing the broker sends reaches the tower (confirms above all)."""
        self._holding = True

    async def wait_released(self) -> None:
        if self._holding:
            await self._released.wait()

    def kill(self) -> None:
        """Drop every connection through this node and refuse new ones."""
        self.dead = True
        self.cut()

    async def _link(self, client: trio.SocketStream) -> None:
        if self.dead:
            self.accepted += 1
            await client.aclose()
            return
        # The relay only sends, receives and closes; the wrapper does all three.
        await super()._link(_HeldBack(client, self))  # type: ignore[arg-type]


def _node() -> Node:
    host, _, port = BROKER.partition(":")
    return Node((host, int(port)))


@attrs.frozen
class Cluster:
    """The test's vhost on the real broker, a queue bound there, and the tower's settings."""

    direct_url: str
    """The real broker, straight."""
    broker: Broker
    queue: str
    data_dir: Path

    def url(self, port: int, **options: str) -> str:
        """The test's vhost through 127.0.0.1:``port``, with extra query options."""
        credentials, _, rest = self.direct_url.partition("@")
        url = f"{credentials}@127.0.0.1:{port}/{rest.partition('/')[2]}"
        if options:
            url += "?" + "&".join(f"{name}={value}" for name, value in options.items())
        return url

    def settings(self, *urls: str) -> Settings:
        return tower_settings(",".join(urls), self.broker.exchange, self.data_dir)


@pytest.fixture
async def cluster(unique: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A vhost of this test's own (deleted with all it holds) and a queue bound for ROUTE."""
    with open_vhost("tower-trio-failover") as vhost:
        direct_url = f"amqp://guest:guest@{BROKER_HOST}/{vhost}"
        async with (
            amqp.open_connection(direct_url) as connection,
            connection.open_channel() as channel,
        ):
            broker = Broker(channel, f"test.triggers.{unique}")
            yield Cluster(direct_url, broker, await broker.bind(ROUTE), tmp_path)


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The tower's log lines, from INFO up."""
    with caplog.at_level(logging.INFO, logger="tower_trio"):
        yield caplog


async def _node_shown(tower: Tower) -> tuple[str | None, dict[str, Any], dict[Any, float]]:
    """The node as the tower's statistics, console status and metrics name it."""
    status = (await tower.client.get("/console/api/status")).json()["broker"]
    metrics = samples((await tower.client.get("/metrics")).text)
    return tower.running.publisher.statistics().node, status, metrics


def _node_gauge(metrics: dict[Any, float], address: str) -> float:
    return metrics[("tower_broker_node", frozenset({("node", address)}))]


# rabbitmqctl makes and deletes each test's vhost: a process.
@pytest.mark.broker
@pytest.mark.subprocess
class TestFailover:
    async def test_a_down_first_node_is_passed_over(
        self, cluster: Cluster, log: pytest.LogCaptureFixture
    ) -> None:
        """With the first node's port closed, the tower starts on the second and says so."""
        down = unused_port()
        settings = cluster.settings(cluster.url(down), cluster.direct_url)
        with trio.fail_after(TIMEOUT):
            async with run_tower(settings) as tower:
                # Started once connected to the second node: ready at once.
                ready = await tower.client.get("/readyz")
                answer = await tower.client.post("/triggers?wait=published", json=posted(0))
                node, status, metrics = await _node_shown(tower)
                (message,) = await cluster.broker.take(cluster.queue, 1)
        assert ready.status_code == 200
        assert answer.json()["status"] == "published"
        assert message.properties.message_id == answer.json()["uuid"]
        assert node == BROKER
        assert (status["node"], status["nodes"]) == (BROKER, [f"127.0.0.1:{down}", BROKER])
        assert status["url"] == cluster.direct_url.replace(":guest@", ":***@")
        assert _node_gauge(metrics, BROKER) == 1
        assert _node_gauge(metrics, f"127.0.0.1:{down}") == 0
        assert metrics[("tower_broker_connected", frozenset())] == 1
        (lost,) = logged(log, "broker.disconnected")
        assert lost["node"] == f"127.0.0.1:{down}"
        assert lost["error"].startswith(f"cannot reach the AMQP broker at 127.0.0.1:{down}")
        (connected,) = logged(log, "broker.connected")
        assert connected["node"] == BROKER
        assert "guest@" not in str(log.records)
        # Passing over a node that is down within a round costs no backoff.
        assert [e["delay"] for e in logged(log, "broker.reconnecting")] == ["0.00s"]

    async def test_a_hanging_node_costs_one_connect_timeout(
        self, cluster: Cluster, log: pytest.LogCaptureFixture, nursery: trio.Nursery
    ) -> None:
        """A first node that accepts and never answers is given up after its connect timeout."""
        silent = Silent()
        await nursery.start(silent.serve)
        settings = cluster.settings(
            cluster.url(silent.port, connection_timeout="0.5"), cluster.direct_url
        )
        with trio.fail_after(TIMEOUT):
            started = trio.current_time()
            async with run_tower(settings) as tower:
                waited = trio.current_time() - started
                node, _, _ = await _node_shown(tower)
        assert node == BROKER
        assert silent.accepted == 1
        (hung,) = logged(log, "broker.disconnected")
        assert hung["node"] == f"127.0.0.1:{silent.port}"
        assert "no connection within 0.5 s (TCP connect and AMQP handshake)" in hung["error"]
        # The timeout, then the real broker's handshake: far below the default 10 s.
        assert 0.5 <= waited < 5

    async def test_a_dying_node_fails_over_and_nothing_is_lost(
        self, cluster: Cluster, log: pytest.LogCaptureFixture, nursery: trio.Nursery
    ) -> None:
        """Triggers unconfirmed when their node dies go out on the next one; none is lost."""
        node = _node()
        await nursery.start(node.serve)
        relayed = f"127.0.0.1:{node.port}"
        settings = cluster.settings(cluster.url(node.port), cluster.direct_url)
        with (
            trio.fail_after(TIMEOUT),
            watching("tower_trio._publisher", "broker.connected") as connected,
        ):
            async with run_tower(settings) as tower:
                before, _, _ = await _node_shown(tower)
                confirmed = [
                    (await tower.client.post("/triggers?wait=published", json=posted(n)))
                    for n in range(5)
                ]
                node.hold_answers()
                held = [
                    (await tower.client.post("/triggers", json=posted(n))) for n in range(5, 25)
                ]
                # The broker has every one of them; their confirms are held back.
                first = await cluster.broker.take(cluster.queue, 25)
                unconfirmed = tower.running.publisher.statistics().unconfirmed
                node.kill()
                await connected.wait_for(2)
                # Published after the republished ones, on the same channel.
                last = await tower.client.post("/triggers?wait=published", json=posted(25))
                again = await cluster.broker.take(cluster.queue, 21)
                left = await cluster.broker.count(cluster.queue)
                after, status, metrics = await _node_shown(tower)

        accepted = [answer.json()["uuid"] for answer in (*confirmed, *held, last)]
        delivered = [m.properties.message_id for m in (*first, *again)]
        assert [a.json()["status"] for a in confirmed] == ["published"] * 5
        assert [a.json()["status"] for a in held] == ["pending"] * 20
        assert last.json()["status"] == "published"
        assert unconfirmed == 20
        # None lost, and the only repeats are those the dead node never confirmed.
        assert set(delivered) == set(accepted)
        assert delivered[:25] == accepted[:25]
        assert delivered[25:] == accepted[5:]
        assert left == 0
        assert (before, after) == (relayed, BROKER)
        assert status["node"] == BROKER
        assert _node_gauge(metrics, BROKER) == 1
        assert _node_gauge(metrics, relayed) == 0
        assert tower.running.publisher.statistics().reconnects == 1
        (moved,) = logged(log, "broker.failed_over")
        assert (moved["from_node"], moved["to_node"]) == (relayed, BROKER)

    async def test_a_reconnect_starts_after_the_node_that_failed(
        self, cluster: Cluster, log: pytest.LogCaptureFixture, nursery: trio.Nursery
    ) -> None:
        """Losing node 2 of (hanging, 2, 3) moves to node 3 at once, not back to the hanging one."""
        silent = Silent()
        second, third = _node(), _node()
        for server in (silent, second, third):
            await nursery.start(server.serve)
        settings = cluster.settings(
            cluster.url(silent.port, connection_timeout="0.5"),
            cluster.url(second.port),
            cluster.url(third.port),
        )
        with (
            trio.fail_after(TIMEOUT),
            watching("tower_trio._publisher", "broker.connected") as connected,
        ):
            async with run_tower(settings) as tower:
                before, _, _ = await _node_shown(tower)
                second.kill()
                await connected.wait_for(2)
                after, _, _ = await _node_shown(tower)
                answer = await tower.client.post("/triggers?wait=published", json=posted(0))
                (message,) = await cluster.broker.take(cluster.queue, 1)
        assert (before, after) == (f"127.0.0.1:{second.port}", f"127.0.0.1:{third.port}")
        assert silent.accepted == 1
        assert second.accepted == 1
        assert message.properties.message_id == answer.json()["uuid"]
        reconnecting = logged(log, "broker.reconnecting")
        assert [(e["delay"], e["node"]) for e in reconnecting] == [
            ("0.00s", f"127.0.0.1:{second.port}"),
            ("0.00s", f"127.0.0.1:{third.port}"),
        ]
