"""Bookkeeping of publisher confirms, without a broker."""

from __future__ import annotations

import functools
import time

import pytest
import trio

from tower_trio import amqp
from tower_trio.amqp._confirm import Confirmation, PendingConfirms


def _returned() -> amqp.Returned:
    return amqp.Returned(312, "NO_ROUTE", "ex", "rk")


def _note(
    seen: list[tuple[int, amqp.Outcome | None]], number: int, confirmation: Confirmation
) -> None:
    seen.append((number, confirmation.outcome))


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

    def test_return_after_an_earlier_message_with_that_id_was_acked(self) -> None:
        """A settled message gives up its message_id: a later return goes to the one in flight."""
        pending = PendingConfirms()
        first, second = pending.add("same"), pending.add("same")
        pending.settle(1, False, ack=True)
        assert pending.returned("same", _returned())
        pending.settle(2, False, ack=True)
        assert (first.outcome, second.outcome) == (amqp.Outcome.ACK, amqp.Outcome.RETURNED)
        assert first.returned is None

    def test_return_after_every_message_with_that_id_was_acked(self) -> None:
        """Once every message with an id is settled, a return for that id matches nothing."""
        pending = PendingConfirms()
        confirmation = pending.add("m-1")
        pending.settle(1, True, ack=True)
        assert not pending.returned("m-1", _returned())
        assert confirmation.outcome is amqp.Outcome.ACK

    def test_returns_of_one_message_id_go_oldest_first(self) -> None:
        """With one message_id in flight twice, returns are matched first in, first out."""
        pending = PendingConfirms()
        first, second = pending.add("same"), pending.add("same")
        assert pending.returned("same", _returned())
        pending.settle(2, False, ack=True)
        pending.settle(1, False, ack=True)
        assert (first.outcome, second.outcome) == (amqp.Outcome.RETURNED, amqp.Outcome.ACK)

    def test_consecutive_multiple_acks(self) -> None:
        """Each multiple ack settles every message up to its tag that an earlier one left."""
        pending = PendingConfirms()
        confirmations = [pending.add() for _ in range(6)]
        assert pending.settle(2, True, ack=True) == 2
        assert pending.settle(4, True, ack=True) == 2
        assert pending.settle(6, True, ack=False) == 2
        assert [c.outcome for c in confirmations] == [amqp.Outcome.ACK] * 4 + [
            amqp.Outcome.NACK
        ] * 2

    def test_multiple_ack_after_single_acks_of_the_oldest(self) -> None:
        """A multiple ack still reaches every message left after the oldest were acked singly."""
        pending = PendingConfirms()
        confirmations = [pending.add() for _ in range(4)]
        assert pending.settle(1, False, ack=True) == 1
        assert pending.settle(4, True, ack=True) == 3
        assert all(c.outcome is amqp.Outcome.ACK for c in confirmations)
        assert len(pending) == 0

    @pytest.mark.parametrize(
        ("delivery_tag", "multiple"),
        [pytest.param(2, False, id="single"), pytest.param(0, True, id="multiple-tag-zero")],
    )
    def test_message_after_everything_was_settled(self, delivery_tag: int, multiple: bool) -> None:
        """Once nothing is outstanding, the next message is still settled by a multiple ack."""
        pending = PendingConfirms()
        pending.add()
        pending.add()
        pending.settle(1, False, ack=True)
        assert pending.settle(delivery_tag, multiple, ack=True) == 1
        later = pending.add()
        assert pending.settle(later.delivery_tag, True, ack=True) == 1
        assert later.outcome is amqp.Outcome.ACK

    def test_ack_for_no_outstanding_message(self) -> None:
        """An ack for a tag already settled, or never published, settles nothing."""
        pending = PendingConfirms()
        confirmation = pending.add()
        assert pending.settle(1, False, ack=True) == 1
        assert pending.settle(1, False, ack=False) == 0
        assert pending.settle(7, False, ack=True) == 0
        assert confirmation.outcome is amqp.Outcome.ACK

    def test_multiple_acks_cost_stays_linear(self) -> None:
        """Acking a long stream one multiple frame at a time walks each tag once, not all again."""
        pending = PendingConfirms()
        count = 8_000
        for _ in range(count):
            pending.add()
        started = time.process_time()
        for tag in range(1, count + 1):
            pending.settle(tag, True, ack=True)
        # Linear work takes milliseconds; walking from tag 1 at every frame
        # (quadratic) takes seconds. CPU time ignores other processes' load.
        assert time.process_time() - started < 1.0
        assert len(pending) == 0

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

    def test_every_callback_runs(self) -> None:
        """Several callbacks added before settlement all run, in the order they were added."""
        pending = PendingConfirms()
        confirmation = pending.add()
        seen: list[tuple[int, amqp.Outcome | None]] = []
        for number in range(3):
            confirmation.add_done_callback(functools.partial(_note, seen, number))
        pending.settle(1, False, ack=True)
        assert seen == [(0, amqp.Outcome.ACK), (1, amqp.Outcome.ACK), (2, amqp.Outcome.ACK)]

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
