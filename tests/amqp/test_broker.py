"""The client against the real local RabbitMQ."""

from __future__ import annotations

import datetime
import shutil
import socket
from typing import TYPE_CHECKING

import pytest
import trio

from tower_trio import amqp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def _with_vhost(url: str, vhost: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + vhost


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[amqp.Channel]:
    """A confirm channel on a fresh connection to the test vhost."""
    async with (
        amqp.open_connection(amqp_url) as connection,
        connection.open_channel(confirm=True) as channel,
    ):
        yield channel


class TestHandshake:
    """Connecting and what gets negotiated."""

    async def test_broker_proposals_are_taken(self, amqp_url: str) -> None:
        """Without wishes, the broker's frame_max, channel_max and heartbeat are used."""
        async with amqp.open_connection(amqp_url) as connection:
            assert connection.frame_max == 131072
            assert connection.channel_max == 2047
            assert connection.heartbeat == 60
            assert connection.server_properties["product"] == "RabbitMQ"
            assert connection.server_properties["capabilities"]["publisher_confirms"]
            assert connection.url == amqp.URL.parse(amqp_url)
            assert not connection.blocked
            assert connection.blocked_reason is None

    async def test_client_wishes_win(self, amqp_url: str) -> None:
        """frame_max and heartbeat asked for by the client are what the connection uses."""
        async with amqp.open_connection(
            amqp.URL.parse(amqp_url + "?channel_max=16"), heartbeat=5, frame_max=4096
        ) as connection:
            assert (connection.frame_max, connection.heartbeat) == (4096, 5)
            assert connection.channel_max == 16

    async def test_bad_password(self, amqp_url: str) -> None:
        """A refused login raises AuthenticationError telling to check the URL."""
        bad = amqp_url.replace("guest:guest@", "guest:wrong@")
        with pytest.raises(amqp.AuthenticationError, match="check the user and password") as info:
            async with amqp.open_connection(bad):
                pytest.fail("the login should be refused")
        assert info.value.reply_code == 403
        assert "ACCESS_REFUSED" in str(info.value)

    async def test_unknown_vhost(self, amqp_url: str, unique: str) -> None:
        """A vhost that does not exist raises VhostNotFoundError suggesting add_vhost."""
        with pytest.raises(amqp.VhostNotFoundError, match="rabbitmqctl add_vhost") as info:
            async with amqp.open_connection(_with_vhost(amqp_url, unique)):
                pytest.fail("the vhost should not open")
        assert info.value.reply_code == 530
        assert unique in str(info.value)
        assert isinstance(info.value, amqp.AccessRefusedError)

    @pytest.mark.subprocess
    async def test_vhost_without_permissions(self, amqp_url: str, unique: str) -> None:
        """A vhost the user may not use raises AccessRefusedError suggesting set_permissions."""
        rabbitmqctl = shutil.which("rabbitmqctl")
        assert rabbitmqctl is not None
        await trio.run_process([rabbitmqctl, "-q", "add_vhost", unique], capture_stdout=True)
        try:
            with pytest.raises(amqp.AccessRefusedError, match="set_permissions -p") as info:
                async with amqp.open_connection(_with_vhost(amqp_url, unique)):
                    pytest.fail("the vhost should not open")
            assert not isinstance(info.value, amqp.VhostNotFoundError)
            assert info.value.reply_code == 530
            assert "refused for user 'guest'" in str(info.value)
        finally:
            await trio.run_process([rabbitmqctl, "-q", "delete_vhost", unique], capture_stdout=True)

    async def test_refused_port(self) -> None:
        """Nothing listening raises BrokerUnreachableError naming host:port and the fix."""
        with socket.socket() as holder:
            # Bound but not listening: the port is ours, and connecting is refused.
            holder.bind(("127.0.0.1", 0))
            port = holder.getsockname()[1]
            with pytest.raises(amqp.BrokerUnreachableError) as info:
                async with amqp.open_connection(f"amqp://127.0.0.1:{port}/"):
                    pytest.fail("nothing should answer")
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message
        assert "connection refused" in message
        assert message.endswith(
            "check that RabbitMQ is running there and that the URL points at it"
        )


class TestPublishAndConsume:
    """Messages make it through intact, with their properties."""

    async def test_round_trip_with_every_property(self, channel: amqp.Channel, unique: str) -> None:
        """Every property set on publish arrives on the consumer unchanged."""
        properties = amqp.Properties(
            content_type="application/json",
            content_encoding="utf-8",
            headers={"plate": "P-7", "wells": [1, 2, 3], "meta": {"ok": True}, "n": 2**40},
            delivery_mode=amqp.PERSISTENT,
            priority=5,
            correlation_id="corr-1",
            reply_to="replies",
            expiration="60000",
            message_id="msg-1",
            timestamp=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            type="protocol.trigger",
            user_id="guest",
            app_id="tower-trio-tests",
        )
        await channel.queue_declare(unique, auto_delete=True)
        try:
            confirmation = await channel.publish("", unique, b'{"a": 1}', properties=properties)
            assert await confirmation.wait() is amqp.Outcome.ACK
            assert confirmation.delivery_tag == 1
            async with channel.consume(unique) as messages:
                message = await anext(messages)
                await channel.basic_ack(message.delivery_tag)
            assert message.body == b'{"a": 1}'
            assert message.properties == properties
            assert (message.exchange, message.routing_key) == ("", unique)
            assert not message.redelivered
        finally:
            await channel.queue_delete(unique)

    async def test_large_body_with_small_frames(self, amqp_url: str, unique: str) -> None:
        """A 1 MB body split into 4 KiB frames arrives intact."""
        payload = bytes(range(256)) * 4096
        async with (
            amqp.open_connection(amqp_url, frame_max=4096) as connection,
            connection.open_channel(confirm=True) as channel,
        ):
            await channel.queue_declare(unique)
            try:
                confirmation = await channel.publish("", unique, payload)
                assert await confirmation.wait() is amqp.Outcome.ACK
                message = await channel.basic_get(unique)
                assert message is not None
                assert message.body == payload
            finally:
                await channel.queue_delete(unique)
            assert connection.statistics().frames_sent > len(payload) // 4096

    async def test_window_with_persistent_messages(self, amqp_url: str, unique: str) -> None:
        """5000 persistent messages with 256 in flight are all acked, some with multiple."""
        async with (
            amqp.open_connection(amqp_url) as connection,
            connection.open_channel(confirm=True, window=256) as channel,
        ):
            await channel.queue_declare(unique, durable=True)
            try:
                properties = amqp.Properties(delivery_mode=amqp.PERSISTENT)
                confirmations = [
                    await channel.publish("", unique, b"x" * 200, properties=properties)
                    for _ in range(5000)
                ]
                assert channel.statistics().unconfirmed <= 256
                outcomes = {await confirmation.wait() for confirmation in confirmations}
                assert outcomes == {amqp.Outcome.ACK}
                assert [c.delivery_tag for c in confirmations] == list(range(1, 5001))
                statistics = connection.statistics()
                assert statistics.multiple_acks_received >= 1
                assert statistics.messages_published == 5000
                assert await channel.queue_purge(unique) == 5000
            finally:
                await channel.queue_delete(unique)

    async def test_consumer_ends_when_queue_is_deleted(self, amqp_url: str, unique: str) -> None:
        """The broker's Basic.Cancel (queue deleted) ends the iteration cleanly."""
        async with (
            amqp.open_connection(amqp_url) as connection,
            connection.open_channel() as consumer_channel,
            connection.open_channel() as admin,
        ):
            await consumer_channel.queue_declare(unique)
            try:
                await consumer_channel.basic_qos(10)
                for number in range(3):
                    await admin.publish("", unique, str(number).encode())
                received = []
                async with consumer_channel.consume(unique, no_ack=True) as messages:
                    async for message in messages:
                        received.append(message.body)
                        if len(received) == 3:
                            await admin.queue_delete(unique)
                assert received == [b"0", b"1", b"2"]
                assert not consumer_channel.closed
            finally:
                # Deleting a queue that is already gone is not an error.
                await admin.queue_delete(unique)

    async def test_basic_get_on_empty_queue(self, channel: amqp.Channel, unique: str) -> None:
        """basic_get returns None when the queue is empty."""
        declared = await channel.queue_declare(unique, exclusive=True)
        try:
            assert declared == amqp.QueueDeclared(unique, 0, 0)
            assert await channel.basic_get(unique) is None
        finally:
            await channel.queue_delete(unique)

    async def test_topic_exchange_routing(self, channel: amqp.Channel, unique: str) -> None:
        """A message published to a bound topic exchange reaches the queue."""
        await channel.exchange_declare(unique, "topic", durable=False, auto_delete=False)
        try:
            queue = await channel.queue_declare(exclusive=True)
            assert queue.name.startswith("amq.gen-")
            await channel.queue_bind(queue.name, unique, "plate.*")
            await channel.publish(unique, "plate.read", b"routed")
            await channel.publish(unique, "other.read", b"dropped")
            message = None
            with trio.fail_after(5):
                while message is None:
                    message = await channel.basic_get(queue.name, no_ack=False)
            await channel.basic_ack(message.delivery_tag)
            assert (message.body, message.exchange) == (b"routed", unique)
            assert await channel.basic_get(queue.name) is None
        finally:
            await channel.exchange_delete(unique)


class TestBrokerErrors:
    """What the broker refuses, and how the client reports it."""

    async def test_mandatory_unroutable_is_returned(
        self, channel: amqp.Channel, unique: str
    ) -> None:
        """A mandatory message no queue takes resolves as RETURNED with the reply."""
        await channel.exchange_declare(unique, "direct", durable=False)
        try:
            confirmation = await channel.publish(
                unique,
                "nobody",
                b"lost",
                properties=amqp.Properties(message_id="m-1"),
                mandatory=True,
            )
            assert await confirmation.wait() is amqp.Outcome.RETURNED
            assert confirmation.returned == amqp.Returned(312, "NO_ROUTE", unique, "nobody")
        finally:
            await channel.exchange_delete(unique)

    async def test_publish_to_missing_exchange(self, amqp_url: str, unique: str) -> None:
        """A missing exchange closes the channel (404) but not the connection."""
        async with amqp.open_connection(amqp_url) as connection:
            async with connection.open_channel(confirm=True) as channel:
                confirmation = await channel.publish(unique, "rk", b"x")
                with pytest.raises(amqp.ChannelClosedError, match="404 NOT_FOUND") as info:
                    await confirmation.wait()
                assert info.value.reply_code == 404
                assert "Basic.Publish" in str(info.value)
                assert channel.closed
                with pytest.raises(amqp.ChannelClosedError, match="404"):
                    await channel.publish("", "rk", b"x")
            async with connection.open_channel() as other:
                declared = await other.queue_declare(unique, exclusive=True)
                assert declared.name == unique
                await other.queue_delete(unique)

    async def test_failing_rpc(self, channel: amqp.Channel, unique: str) -> None:
        """A passive declare of a missing queue raises ChannelClosedError from the call."""
        with pytest.raises(amqp.ChannelClosedError, match="404 NOT_FOUND - no queue"):
            await channel.queue_declare(unique, passive=True)
        with pytest.raises(amqp.ChannelClosedError):
            await channel.queue_declare(unique)


class TestClose:
    """Ending a connection, from either side."""

    async def test_client_close(self, amqp_url: str) -> None:
        """Leaving the block closes channels and the connection without an error."""
        async with amqp.open_connection(amqp_url) as connection:
            async with connection.open_channel() as channel:
                assert connection.statistics().channels_open == 1
            assert channel.closed
            assert connection.statistics().channels_open == 0
        with pytest.raises(amqp.ConnectionClosedError, match="closed by this client"):
            async with connection.open_channel():
                pass

    async def test_close_on_cancel(self, amqp_url: str) -> None:
        """Cancelling the body still closes the connection, and Cancelled is not swallowed."""
        with trio.move_on_after(0.2) as scope:
            async with amqp.open_connection(amqp_url):
                await trio.sleep_forever()
        assert scope.cancelled_caught

    @pytest.mark.subprocess
    async def test_broker_close(self, amqp_url: str, amqp_vhost: str) -> None:
        """A connection closed by the broker raises ConnectionClosedError with its code."""
        rabbitmqctl = shutil.which("rabbitmqctl")
        assert rabbitmqctl is not None
        command = [rabbitmqctl, "-q", "close_all_connections", "-p", amqp_vhost, "test"]

        async def closed_by_broker() -> None:
            async with amqp.open_connection(amqp_url):
                await trio.run_process(command, capture_stdout=True)
                await trio.sleep_forever()

        with pytest.raises(amqp.ConnectionClosedError, match="320 CONNECTION_FORCED") as info:
            await closed_by_broker()
        assert info.value.reply_code == 320
        assert not info.value.by_client
