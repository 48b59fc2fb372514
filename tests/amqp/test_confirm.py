"""Bookkeeping of publisher confirms, without a broker."""

from __future__ import annotations

import pytest
import trio

from tower_trio import amqp
from tower_trio.amqp._confirm import PendingConfirms


def _returned() -> amqp.Returned:
    return amqp.Returned(312, "NO_ROUTE", "ex", "rk")


class TestPendingConfirms:
    """PendingConfirms.settle, returned and fail_all."""

    def test_tags_count_from_one(self) -> None:
        """Delivery tags are 1, 2, 3, ... per channel."""
        pending = PendingConfirms()
        assert [pending.add().delivery_tag for _ in range(3)] == [1, 2, 3]

    def test_multiple_ack_settles_every_tag_up_to_it(self) -> None:
        """An ack with multiple settles all outstanding tags <= its tag, and no others."""
        pending = PendingConfirms()
        confirmations = [pending.add() for _ in range(5)]
        assert pending.settle(3, True, ack=True) == 3
        assert [c.outcome for c in confirmations] == [amqp.Outcome.ACK] * 3 + [None, None]
        assert len(pending) == 2

    def test_single_ack_settles_exactly_one(self) -> None:
        """Without multiple, only the named tag is settled, even out of order."""
        pending = PendingConfirms()
        confirmations = [pending.add() for _ in range(3)]
        assert pending.settle(2, False, ack=True) == 1
        assert [c.done for c in confirmations] == [False, True, False]
        assert pending.settle(3, True, ack=False) == 2
        assert [c.outcome for c in confirmations] == [
            amqp.Outcome.NACK,
            amqp.Outcome.ACK,
            amqp.Outcome.NACK,
        ]

    def test_multiple_with_tag_zero_settles_everything(self) -> None:
        """multiple with delivery tag 0 settles every outstanding message."""
        pending = PendingConfirms()
        confirmations = [pending.add() for _ in range(4)]
        assert pending.settle(0, True, ack=True) == 4
        assert all(c.outcome is amqp.Outcome.ACK for c in confirmations)

    def test_repeated_settle_is_ignored(self) -> None:
        """Settling a tag twice changes nothing the second time."""
        pending = PendingConfirms()
        confirmation = pending.add()
        pending.settle(1, False, ack=True)
        assert pending.settle(1, True, ack=False) == 0
        assert confirmation.outcome is amqp.Outcome.ACK

    def test_returned_then_acked(self) -> None:
        """A Basic.Return followed by the ack resolves the message as RETURNED."""
        pending = PendingConfirms()
        confirmation = pending.add("m-1")
        assert pending.returned("m-1", _returned())
        assert not confirmation.done
        pending.settle(1, False, ack=True)
        assert confirmation.outcome is amqp.Outcome.RETURNED
        assert confirmation.returned == _returned()

    def test_returns_of_one_message_id_go_oldest_first(self) -> None:
        """With one message_id in flight twice, returns are matched first in, first out."""
        pending = PendingConfirms()
        first, second = pending.add("same"), pending.add("same")
        assert pending.returned("same", _returned())
        pending.settle(2, False, ack=True)
        pending.settle(1, False, ack=True)
        assert (first.outcome, second.outcome) == (amqp.Outcome.RETURNED, amqp.Outcome.ACK)

    def test_unknown_return(self) -> None:
        """A return for no known message_id is reported as unmatched."""
        pending = PendingConfirms()
        pending.add("m-1")
        assert not pending.returned("other", _returned())
        assert not pending.returned(None, _returned())

    async def test_fail_all(self) -> None:
        """fail_all makes every waiter raise the error, a fresh copy each time."""
        pending = PendingConfirms()
        confirmation = pending.add()
        error = amqp.ChannelClosedError(406, "PRECONDITION_FAILED - boom", 60, 40, channel_id=1)
        pending.fail_all(error)
        assert confirmation.done
        assert confirmation.error is error
        with pytest.raises(amqp.ChannelClosedError, match="406 PRECONDITION_FAILED") as info:
            await confirmation.wait()
        assert info.value is not error
        assert len(pending) == 0


class TestConfirmation:
    """Confirmation.wait and add_done_callback."""

    async def test_wait_wakes_on_settle(self) -> None:
        """A task waiting on a confirmation wakes when the ack comes."""
        pending = PendingConfirms()
        confirmation = pending.add()
        async with trio.open_nursery() as nursery:
            results: list[amqp.Outcome] = []

            async def wait() -> None:
                results.append(await confirmation.wait())

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            pending.settle(1, False, ack=True)
        assert results == [amqp.Outcome.ACK]

    def test_callbacks(self) -> None:
        """Callbacks run once on settlement, or at once if already done."""
        pending = PendingConfirms()
        confirmation = pending.add()
        seen: list[amqp.Outcome | None] = []
        confirmation.add_done_callback(lambda c: seen.append(c.outcome))
        assert seen == []
        pending.settle(1, False, ack=False)
        confirmation.add_done_callback(lambda c: seen.append(c.outcome))
        assert seen == [amqp.Outcome.NACK, amqp.Outcome.NACK]
