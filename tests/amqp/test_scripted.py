"""The client against a scripted fake broker, for what RabbitMQ won't do on demand."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from pamqp import commands, heartbeat

from tower_trio import amqp

from ._fake_broker import FakeBroker, FakePeer, serve_fake_broker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _publish_many(channel: amqp.Channel, count: int) -> list[amqp.Confirmation]:
    return [await channel.publish("", "q", b"%d" % number) for number in range(count)]


@pytest.fixture
async def connected(
    fake_broker: FakeBroker,
) -> AsyncIterator[tuple[amqp.Connection, FakePeer]]:
    """A connection to the fake broker, and the broker's side of it."""
    async with amqp.open_connection(fake_broker.url) as connection:
        yield connection, await fake_broker.accept()


class TestHandshake:
    """What the client says while connecting."""

    async def test_client_properties(self, fake_broker: FakeBroker) -> None:
        """The client names itself and advertises every capability it handles."""
        extra = {"connection_name": "tests", "capabilities": {"custom": True}}
        async with amqp.open_connection(fake_broker.url, client_properties=extra):
            peer = await fake_broker.accept()
        properties = peer.client_properties
        # The client names itself generically; the application says who it is.
        assert properties["product"] == "trio AMQP client"
        assert "version" not in properties
        assert properties["platform"].startswith("Python ")
        assert properties["connection_name"] == "tests"
        assert properties["capabilities"] == {
            "authentication_failure_close": True,
            "basic.nack": True,
            "connection.blocked": True,
            "consumer_cancel_notify": True,
            "exchange_exchange_bindings": True,
            "per_consumer_qos": True,
            "publisher_confirms": True,
            "custom": True,
        }
        assert peer.vhost == "/"

    @pytest.mark.parametrize(
        ("proposed", "wished", "agreed"),
        [
            (131072, None, 131072),
            (131072, 8192, 8192),
            (0, 8192, 8192),
            (65536, 0, 65536),
            (0, None, 0),
        ],
    )
    async def test_frame_max(
        self, nursery: trio.Nursery, proposed: int, wished: int | None, agreed: int
    ) -> None:
        """frame_max is the smaller wish, where 0 on either side means "no limit"."""
        broker = await nursery.start(partial(serve_fake_broker, frame_max=proposed))
        async with amqp.open_connection(broker.url, frame_max=wished) as connection:
            peer = await broker.accept()
            assert connection.frame_max == agreed
            async with connection.open_channel() as channel:
                await channel.publish("", "q", b"x" * 200_000)
            await peer.wait_published(1)
        assert peer.tune_ok is not None
        assert peer.tune_ok.frame_max == agreed
        assert peer.published[0].body == b"x" * 200_000

    async def test_channel_max_and_heartbeat(self, nursery: trio.Nursery) -> None:
        """channel_max is negotiated like frame_max; the broker's heartbeat is taken as is."""
        broker = await nursery.start(partial(serve_fake_broker, channel_max=0, heartbeat=30))
        async with amqp.open_connection(broker.url + "?channel_max=2") as connection:
            peer = await broker.accept()
            assert (connection.channel_max, connection.heartbeat) == (2, 30)
            async with connection.open_channel() as one, connection.open_channel() as two:
                assert {one.channel_id, two.channel_id} == {1, 2}
                with pytest.raises(amqp.AMQPError, match="all 2 channels"):
                    async with connection.open_channel():
                        pass
        assert peer.tune_ok is not None
        assert (peer.tune_ok.channel_max, peer.tune_ok.heartbeat) == (2, 30)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"heartbeat": -1}, "heartbeat must be 0 to 65535"),
            ({"frame_max": 1000}, "frame_max must be 0"),
            ({"connect_timeout": 0}, "connect_timeout must be a positive number"),
        ],
    )
    async def test_invalid_options(
        self, fake_broker: FakeBroker, options: dict[str, Any], message: str
    ) -> None:
        """Invalid keyword options raise AMQPConfigError before any connection is made."""
        with pytest.raises(amqp.AMQPConfigError, match=message):
            async with amqp.open_connection(fake_broker.url, **options):
                pytest.fail("no connection should be made")

    async def test_no_heartbeat_proposed(self, fake_broker: FakeBroker) -> None:
        """If the broker proposes no heartbeat, the client asks for 60 s."""
        async with amqp.open_connection(fake_broker.url) as connection:
            assert connection.heartbeat == 60


class TestNotABroker:
    """Servers that accept the TCP connection but are no AMQP broker."""

    async def test_wrong_protocol(self, nursery: trio.Nursery) -> None:
        """A server answering in another protocol raises BrokerUnreachableError."""

        async def http(stream: trio.SocketStream) -> None:
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await stream.aclose()

        listeners = await nursery.start(partial(trio.serve_tcp, http, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(amqp.BrokerUnreachableError, match="does not speak AMQP 0-9-1"):
            async with amqp.open_connection(f"amqp://127.0.0.1:{port}/"):
                pytest.fail("no connection should be made")

    async def test_silent_server(
        self, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A server that never answers raises BrokerUnreachableError after connect_timeout."""

        async def silent(stream: trio.SocketStream) -> None:
            await trio.sleep_forever()

        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(amqp.BrokerUnreachableError, match="no connection within 3 s"):
            async with amqp.open_connection(f"amqp://127.0.0.1:{port}/", connect_timeout=3):
                pytest.fail("no connection should be made")
        assert trio.current_time() - start == pytest.approx(3)


class TestConfirms:
    """Basic.Ack and Basic.Nack, single and multiple."""

    async def test_nack_with_multiple(self, connected: tuple[amqp.Connection, FakePeer]) -> None:
        """A multiple nack fails every earlier tag; single frames settle one tag each."""
        connection, peer = connected
        async with connection.open_channel(confirm=True) as channel:
            confirmations = await _publish_many(channel, 5)
            await peer.wait_published(5)
            await peer.send(1, commands.Basic.Nack(delivery_tag=3, multiple=True))
            await peer.send(1, commands.Basic.Ack(delivery_tag=5))
            await peer.send(1, commands.Basic.Nack(delivery_tag=4))
            outcomes = [await confirmation.wait() for confirmation in confirmations]
        assert outcomes == [amqp.Outcome.NACK] * 4 + [amqp.Outcome.ACK]
        statistics = connection.statistics()
        assert (statistics.nacks_received, statistics.acks_received) == (2, 1)
        assert statistics.multiple_acks_received == 1

    async def test_window_limits_unconfirmed(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """With the window full, publish waits until an ack frees a slot."""
        connection, peer = connected
        async with connection.open_channel(confirm=True, window=2) as channel:
            await _publish_many(channel, 2)
            done = trio.Event()

            async def third() -> None:
                await channel.publish("", "q", b"third")
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(third)
                await peer.wait_published(2)
                await trio.testing.wait_all_tasks_blocked()
                assert not done.is_set()
                assert len(peer.published) == 2
                await peer.send(1, commands.Basic.Ack(delivery_tag=1))
            await peer.wait_published(3)
            assert channel.statistics().unconfirmed == 2

    async def test_returns_are_matched_by_message_id(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """Returns of one message_id in flight twice resolve the oldest one first."""
        connection, peer = connected
        properties = amqp.Properties(message_id="dup")
        async with connection.open_channel(confirm=True) as channel:
            first = await channel.publish("ex", "rk", b"1", properties=properties, mandatory=True)
            second = await channel.publish("ex", "rk", b"2", properties=properties, mandatory=True)
            await peer.wait_published(2)
            assert peer.published[0].method.mandatory
            await peer.send_message(
                1,
                commands.Basic.Return(312, "NO_ROUTE", "ex", "rk"),
                commands.Basic.Properties(message_id="dup"),
                b"1",
            )
            await peer.send_message(
                1,
                commands.Basic.Return(312, "NO_ROUTE", "ex", "rk"),
                commands.Basic.Properties(message_id="unknown"),
                b"?",
            )
            await peer.send(1, commands.Basic.Ack(delivery_tag=2, multiple=True))
            assert await first.wait() is amqp.Outcome.RETURNED
            assert await second.wait() is amqp.Outcome.ACK
        assert first.returned == amqp.Returned(312, "NO_ROUTE", "ex", "rk")
        assert second.returned is None
        statistics = connection.statistics()
        assert (statistics.returns_received, statistics.unmatched_returns) == (2, 1)

    async def test_mandatory_needs_message_id_and_confirms(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """mandatory=True without a message_id, or on a plain channel, is refused."""
        connection, _ = connected
        async with connection.open_channel(confirm=True) as channel:
            with pytest.raises(ValueError, match=r"needs properties\.message_id"):
                await channel.publish("ex", "rk", b"x", mandatory=True)
        async with connection.open_channel() as channel:
            with pytest.raises(ValueError, match="needs a channel opened with confirm=True"):
                await channel.publish(
                    "ex", "rk", b"x", properties=amqp.Properties(message_id="m"), mandatory=True
                )

    async def test_properties_larger_than_a_frame(self, nursery: trio.Nursery) -> None:
        """Properties that cannot fit in one header frame are refused before sending."""
        broker = await nursery.start(partial(serve_fake_broker, frame_max=4096))
        async with amqp.open_connection(broker.url) as connection:
            async with connection.open_channel() as channel:
                big = amqp.Properties(headers={"notes": "x" * 5000})
                with pytest.raises(ValueError, match="more than one frame holds"):
                    await channel.publish("", "q", b"x", properties=big)
                fits = amqp.Properties(headers={"notes": "x" * 3000})
                await channel.publish("", "q", b"x", properties=fits)
            peer = await broker.accept()
            published = await peer.wait_published(1)
            assert published[0].properties.headers == {"notes": "x" * 3000}

    async def test_without_confirm_mode(self, connected: tuple[amqp.Connection, FakePeer]) -> None:
        """On a plain channel the confirmation is resolved at once as UNCONFIRMED."""
        connection, peer = connected
        async with connection.open_channel() as channel:
            confirmation = await channel.publish("", "q", b"x")
            assert confirmation.done
            assert confirmation.delivery_tag == 0
            assert await confirmation.wait() is amqp.Outcome.UNCONFIRMED
            await peer.wait_published(1)
        assert not peer.got(commands.Confirm.Select)


class TestChannelClose:
    """The broker closing one channel."""

    async def test_close_with_pending_confirms(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """Pending confirmations fail with the reply; the connection stays usable."""
        connection, peer = connected
        async with connection.open_channel(confirm=True) as channel:
            confirmations = await _publish_many(channel, 3)
            await peer.wait_published(3)
            await peer.send(1, commands.Basic.Ack(delivery_tag=1))
            await peer.send(
                1,
                commands.Channel.Close(406, "PRECONDITION_FAILED - test", 60, 40),
            )
            assert await confirmations[0].wait() is amqp.Outcome.ACK
            for confirmation in confirmations[1:]:
                with pytest.raises(amqp.ChannelClosedError) as info:
                    await confirmation.wait()
                assert info.value.reply_code == 406
                assert (info.value.class_id, info.value.method_id) == (60, 40)
                assert "406 PRECONDITION_FAILED - test" in str(info.value)
                assert "Basic.Publish" in str(info.value)
            with pytest.raises(amqp.ChannelClosedError, match="406"):
                await channel.publish("", "q", b"late")
            with pytest.raises(amqp.ChannelClosedError, match="406"):
                await channel.queue_declare("q")
        await peer.wait_for(lambda: bool(peer.got(commands.Channel.CloseOk)))
        # The client answered the broker's close and sent no close of its own.
        assert len(peer.got(commands.Channel.Close)) == 0
        async with connection.open_channel(confirm=True) as again:
            confirmation = await again.publish("", "q", b"again")
            await peer.send(again.channel_id, commands.Basic.Ack(delivery_tag=1))
            assert await confirmation.wait() is amqp.Outcome.ACK

    async def test_close_while_consuming(self, connected: tuple[amqp.Connection, FakePeer]) -> None:
        """A consumer's iterator raises ChannelClosedError when the broker closes the channel."""
        connection, peer = connected
        async with connection.open_channel() as channel:
            rpc_answers = trio.open_nursery()
            async with rpc_answers as nursery:

                async def answer() -> None:
                    await peer.wait_for(lambda: bool(peer.got(commands.Basic.Consume)))
                    consume = peer.got(commands.Basic.Consume)[0]
                    assert isinstance(consume, commands.Basic.Consume)
                    await peer.send(1, commands.Basic.ConsumeOk(consume.consumer_tag))
                    await peer.send_message(
                        1,
                        commands.Basic.Deliver(consume.consumer_tag, 1, False, "", "q"),
                        commands.Basic.Properties(app_id="fake"),
                        b"hello",
                    )
                    await peer.send(1, commands.Channel.Close(404, "NOT_FOUND - gone", 0, 0))

                nursery.start_soon(answer)
                received: list[amqp.Message] = []

                async def consume() -> None:
                    async with channel.consume("q") as messages:
                        async for message in messages:
                            received.append(message)

                with pytest.raises(amqp.ChannelClosedError, match="404 NOT_FOUND - gone"):
                    await consume()
        assert [(m.body, m.properties.app_id, m.delivery_tag) for m in received] == [
            (b"hello", "fake", 1)
        ]


class TestConnectionEnd:
    """The connection ending by the broker's hand, by the network, or by ours."""

    async def test_broker_close(self, fake_broker: FakeBroker) -> None:
        """Connection.Close from the broker is answered and raised as ConnectionClosedError."""
        confirmations: list[amqp.Confirmation] = []

        async def body() -> None:
            async with amqp.open_connection(fake_broker.url) as connection:
                peer = await fake_broker.accept()
                async with connection.open_channel(confirm=True) as channel:
                    confirmations.extend(await _publish_many(channel, 2))
                    await peer.wait_published(2)
                    await peer.send(
                        0, commands.Connection.Close(320, "CONNECTION_FORCED - bye", 0, 0)
                    )
                    await confirmations[0].wait()

        with pytest.raises(amqp.ConnectionClosedError, match="320 CONNECTION_FORCED - bye") as info:
            await body()
        assert not isinstance(info.value, BaseExceptionGroup)
        assert "republish every message that was not confirmed" in str(info.value)
        for confirmation in confirmations:
            assert isinstance(confirmation.error, amqp.ConnectionClosedError)

    async def test_broker_close_answered(self, fake_broker: FakeBroker) -> None:
        """The client sends Connection.CloseOk before it drops the socket."""
        peers: list[FakePeer] = []

        async def closed_by_broker() -> None:
            async with amqp.open_connection(fake_broker.url):
                peers.append(await fake_broker.accept())
                await peers[0].send(
                    0, commands.Connection.Close(320, "CONNECTION_FORCED - bye", 0, 0)
                )
                await trio.sleep_forever()

        with pytest.raises(amqp.ConnectionClosedError):
            await closed_by_broker()
        peer = peers[0]
        await peer.wait_for(lambda: bool(peer.got(EOFError)))
        assert peer.got(commands.Connection.CloseOk)

    async def test_socket_dropped(self, fake_broker: FakeBroker) -> None:
        """A socket closed without a close handshake raises ConnectionLostError."""

        async def dropped() -> None:
            async with amqp.open_connection(fake_broker.url):
                await (await fake_broker.accept()).close_socket()
                await trio.sleep_forever()

        with pytest.raises(amqp.ConnectionLostError, match=r"without Connection\.Close"):
            await dropped()

    async def test_rpc_interrupted(self, fake_broker: FakeBroker) -> None:
        """A declare waiting for its reply ends with the connection's error."""

        async def interrupted() -> None:
            async with (
                amqp.open_connection(fake_broker.url) as connection,
                connection.open_channel() as channel,
            ):
                peer = await fake_broker.accept()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(channel.queue_declare, "q")
                    await peer.wait_for(lambda: bool(peer.got(commands.Queue.Declare)))
                    await peer.close_socket()

        with pytest.raises(amqp.ConnectionLostError):
            await interrupted()

    async def test_body_error_is_not_wrapped(self, fake_broker: FakeBroker) -> None:
        """An exception from the block comes out as itself, after a clean close."""
        peers: list[FakePeer] = []

        async def failing() -> None:
            async with amqp.open_connection(fake_broker.url):
                peers.append(await fake_broker.accept())
                raise KeyError("from the body")

        with pytest.raises(KeyError, match="from the body"):
            await failing()
        peer = peers[0]
        await peer.wait_for(lambda: bool(peer.got(EOFError)))
        close = peer.got(commands.Connection.Close)
        assert len(close) == 1
        assert isinstance(close[0], commands.Connection.Close)
        assert close[0].reply_code == 200

    async def test_cancelled_block_closes_cleanly(self, fake_broker: FakeBroker) -> None:
        """Cancelling the block still runs the channel and connection close handshakes."""
        peers: list[FakePeer] = []
        start = trio.current_time()
        with trio.CancelScope() as scope:
            async with (
                amqp.open_connection(fake_broker.url) as connection,
                connection.open_channel(),
            ):
                peers.append(await fake_broker.accept())
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        # Well under the 2 s the close would wait for an answer that never comes.
        assert trio.current_time() - start < 1
        peer = peers[0]
        await peer.wait_for(lambda: bool(peer.got(EOFError)))
        assert peer.got(commands.Channel.Close)
        assert peer.got(commands.Connection.Close)

    async def test_channel_opened_in_a_cancelled_scope(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """A channel cancelled while opening is still opened and closed in order."""
        connection, peer = connected
        with trio.CancelScope() as scope:
            scope.cancel()
            async with connection.open_channel():
                pytest.fail("the block should not run")
        await peer.wait_for(lambda: bool(peer.got(commands.Channel.Close)))
        assert [type(value) for _, value in peer.received][-2:] == [
            commands.Channel.Open,
            commands.Channel.Close,
        ]
        async with connection.open_channel(confirm=True) as channel:
            assert not channel.closed

    async def test_repr_hides_password(self, connected: tuple[amqp.Connection, FakePeer]) -> None:
        """Connections and channels show the redacted URL in their repr."""
        connection, _ = connected
        async with connection.open_channel(confirm=True) as channel:
            assert repr(channel).startswith("<Channel 1 confirm open on amqp://guest:***@")
        assert "guest:***@" in repr(connection)
        assert ":guest@" not in repr(connection)

    async def test_close_without_close_ok(
        self, fake_broker: FakeBroker, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A broker that never answers Connection.Close does not hang the exit."""
        with trio.fail_after(5):
            async with amqp.open_connection(fake_broker.url):
                peer = await fake_broker.accept()
                peer.answer_close = False
        assert peer.got(commands.Connection.Close)


class TestHeartbeats:
    """Heartbeats both ways, on virtual time."""

    async def test_silence_is_detected(
        self, fake_broker: FakeBroker, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Nothing received for two heartbeat intervals raises ConnectionLostError."""
        start = trio.current_time()
        with pytest.raises(amqp.ConnectionLostError, match="nothing came from the broker for 20 s"):
            async with amqp.open_connection(fake_broker.url, heartbeat=10):
                await trio.sleep_forever()
        assert 20 <= trio.current_time() - start < 21

    async def test_client_sends_heartbeats(
        self, fake_broker: FakeBroker, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An idle client sends a heartbeat every half interval."""
        async with amqp.open_connection(fake_broker.url, heartbeat=10):
            peer = await fake_broker.accept()
            await trio.sleep(16)
            assert peer.heartbeats == 3

    async def test_broker_heartbeats_keep_it_alive(
        self, fake_broker: FakeBroker, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A broker that sends only heartbeats keeps the connection up indefinitely."""
        async with amqp.open_connection(fake_broker.url, heartbeat=10) as connection:
            peer = await fake_broker.accept()
            for _ in range(40):
                await trio.sleep(5)
                await peer.send(0, heartbeat.Heartbeat())
            async with connection.open_channel():
                pass

    async def test_disabled(
        self, fake_broker: FakeBroker, autojump_clock: trio.testing.MockClock
    ) -> None:
        """heartbeat=0 turns heartbeats off both ways."""
        async with amqp.open_connection(fake_broker.url, heartbeat=0) as connection:
            peer = await fake_broker.accept()
            await trio.sleep(3600)
            assert connection.heartbeat == 0
            assert peer.heartbeats == 0


class TestBackpressure:
    """Publishing faster than the socket drains."""

    async def test_publish_waits_for_the_writer(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """With the peer not reading, publish stops once about 1 MiB is unsent."""
        connection, peer = connected
        payload = b"x" * 65536
        count = 400  # 26 MB: more than the kernel's socket buffers hold.
        peer.reading = trio.Event()
        async with connection.open_channel() as channel:
            published = 0

            async def publish_all() -> None:
                nonlocal published
                for _ in range(count):
                    await channel.publish("", "q", payload)
                    published += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_all)
                await trio.testing.wait_all_tasks_blocked()
                assert published < count
                unflushed = connection.statistics().unflushed_bytes
                assert 0 < unflushed <= (1 << 20) + len(payload) + 100
                peer.reading.set()
            await peer.wait_published(count)


class TestBlocked:
    """Connection.Blocked and Connection.Unblocked."""

    async def _wait_blocked(self, connection: amqp.Connection, expected: bool) -> None:
        while connection.blocked != expected:
            await trio.testing.wait_all_tasks_blocked()

    async def test_publish_waits_while_blocked(
        self, connected: tuple[amqp.Connection, FakePeer]
    ) -> None:
        """publish waits while the broker blocks the connection, and goes on after."""
        connection, peer = connected
        async with connection.open_channel() as channel:
            await peer.send(0, commands.Connection.Blocked("low on memory"))
            await self._wait_blocked(connection, True)
            assert connection.blocked_reason == "low on memory"
            assert connection.statistics().blocked
            published = trio.Event()
            unblocked = trio.Event()

            async def publish() -> None:
                await channel.publish("", "q", b"waited")
                published.set()

            async def wait_unblocked() -> None:
                await connection.wait_unblocked()
                unblocked.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                nursery.start_soon(wait_unblocked)
                await trio.testing.wait_all_tasks_blocked()
                assert not published.is_set()
                assert not unblocked.is_set()
                await peer.send(0, commands.Connection.Unblocked())
            assert not connection.blocked
            assert connection.blocked_reason is None
            await peer.wait_published(1)
            assert peer.published[0].body == b"waited"

    async def test_blocked_then_lost(self, fake_broker: FakeBroker) -> None:
        """A publish waiting on a blocked connection ends when the connection is lost."""

        async def lost_while_blocked() -> None:
            async with (
                amqp.open_connection(fake_broker.url) as connection,
                connection.open_channel() as channel,
            ):
                peer = await fake_broker.accept()
                await peer.send(0, commands.Connection.Blocked("low on disk"))
                await self._wait_blocked(connection, True)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(channel.publish, "", "q", b"never")
                    await trio.testing.wait_all_tasks_blocked()
                    await peer.close_socket()

        with pytest.raises(amqp.ConnectionLostError):
            await lost_while_blocked()


class TestMisbehavingBroker:
    """A broker that breaks the protocol gets disconnected with a clear error."""

    async def test_strays_are_dropped(self, connected: tuple[amqp.Connection, FakePeer]) -> None:
        """A reply nobody waits for and a delivery for no consumer are dropped."""
        connection, peer = connected
        async with connection.open_channel(confirm=True) as channel:
            await peer.send(1, commands.Queue.DeclareOk("q", 0, 0))
            await peer.send_message(
                1,
                commands.Basic.Deliver("nobody", 1, False, "", "q"),
                commands.Basic.Properties(),
                b"x",
            )
            confirmation = await channel.publish("", "q", b"x")
            await peer.send(1, commands.Basic.Ack(delivery_tag=1))
            assert await confirmation.wait() is amqp.Outcome.ACK

    async def test_content_missing(self, fake_broker: FakeBroker) -> None:
        """A delivery without its content frames is a protocol error."""

        async def broken_delivery() -> None:
            async with (
                amqp.open_connection(fake_broker.url) as connection,
                connection.open_channel(),
            ):
                peer = await fake_broker.accept()
                await peer.send(1, commands.Basic.Deliver("nobody", 1, False, "", "q"))
                await peer.send(1, commands.Basic.Ack(delivery_tag=1))
                await trio.sleep_forever()

        with pytest.raises(amqp.ConnectionLostError, match="expected a content frame"):
            await broken_delivery()

    async def test_garbage(self, fake_broker: FakeBroker) -> None:
        """Bytes that are not a frame raise ConnectionLostError naming the problem."""

        async def garbage() -> None:
            async with amqp.open_connection(fake_broker.url):
                peer = await fake_broker.accept()
                await peer.send_raw(b"\x01\x00\x00\x00\x00\x00\x04abcd\x00")
                await trio.sleep_forever()

        with pytest.raises(amqp.ConnectionLostError, match="broke the protocol"):
            await garbage()
