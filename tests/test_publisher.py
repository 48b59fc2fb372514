"""The publisher against a scripted broker: commits, confirms, retries and records.

A real journal on disk and the fake broker of ``tests/amqp``, in one
process: the broker's answers come exactly when a test sends them, which
RabbitMQ cannot be made to do (a nack, a return, a confirm that never comes).
"""

from __future__ import annotations

import logging
import platform
import threading
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands, frame

from tests._helpers import tower_settings, watching
from tests.amqp._fake_broker import FakePeer, serve_fake_broker
from tests.test_delivery import declare_for_each_connection
from tower_trio import JournalError, Trigger, __version__
from tower_trio._channel import Intake, Submission
from tower_trio._journal import FILE_NAME, Journal, SQLiteStorage, open_journal
from tower_trio._message import PropertyTemplates, message_properties
from tower_trio._publisher import Publisher
from tower_trio._storage import Accepted, JournalRecord, Outgoing, Settlement
from tower_trio._vocabulary import DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    from tests.amqp._fake_broker import FakeBroker, Published

identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,40}", fullmatch=True)
outgoings = st.builds(
    Outgoing,
    seq=st.integers(min_value=1),
    uuid=st.text("0123456789abcdef", min_size=32, max_size=32),
    routing_key=st.just("OT-2/v1alpha1"),
    protocol=identifiers,
    source=st.one_of(st.just("http"), identifiers),
    body=st.just(b"{}"),
    created_at=st.floats(min_value=0, max_value=2**37, allow_nan=False),
    attempts=st.integers(min_value=0, max_value=9),
)


class TestPropertyTemplates:
    # The test keeps no state on its instance; a mutation run calls it from
    # several pytest sessions in one process, which that check mistakes for a risk.
    @settings(
        max_examples=300, deadline=None, suppress_health_check=[HealthCheck.differing_executors]
    )
    @given(st.lists(outgoings, min_size=1, max_size=5))
    def test_same_bytes_as_encoding_each_time(self, batch: list[Outgoing]) -> None:
        """A template gives exactly the bytes the full properties encode to, for any trigger."""
        templates = PropertyTemplates()
        for outgoing in batch:
            from_template = templates(outgoing)
            assert from_template.encode() == message_properties(outgoing).encode()
            assert from_template.message_id == outgoing.uuid

    def test_an_odd_uuid_falls_back_to_full_encoding(self) -> None:
        """A uuid that is not 32 characters is encoded the long way, still correctly."""
        outgoing = Outgoing(1, "short", "OT-2/v1", "P", "http", b"{}", 1.5, 0)
        assert PropertyTemplates()(outgoing).encode() == message_properties(outgoing).encode()


def trigger(n: int = 0, **fields: Any) -> Trigger:
    return Trigger(
        **{"api_version": "OT-2/v1alpha1", "protocol": "PlateTransfer", "spec": {"n": n}, **fields}
    )


@attrs.define
class Scripted:
    """A running publisher, its journal, its intake and the broker's side of its connections."""

    publisher: Publisher
    journal: Journal
    intake: trio.MemorySendChannel[Submission]
    peers: trio.MemoryReceiveChannel[FakePeer]
    stopped: trio.Event

    async def submit(self, *triggers: Trigger, **options: Any) -> list[Submission]:
        """Hand triggers over at once (one journal batch) and wait until the journal has them."""
        submissions = [Submission.of(t, **options) for t in triggers]
        for submission in submissions:
            self.intake.send_nowait(submission)
        for submission in submissions:
            await submission.wait_committed()
        return submissions

    async def one_out(self) -> tuple[FakePeer, Submission]:
        """Connect, submit one trigger that waits for its outcome, and see it published."""
        peer = await self.peers.receive()
        (submission,) = await self.submit(trigger(), wait_published=True)
        await peer.wait_published(1)
        return peer, submission

    async def stop(self) -> None:
        """Close the intake and wait until the publisher has nothing left to publish."""
        await self.intake.aclose()
        await self.stopped.wait()

    def shown(self, submission: Submission) -> JournalRecord:
        """A submission's record as a lookup shows it: the journal's, with unwritten answers."""
        record = self.journal.get(submission.trigger.uuid)
        assert record is not None
        return self.publisher.settlements.current(record)

    def status(self, submission: Submission) -> tuple[str, int, str | None]:
        """What the journal on disk says of a submission's trigger."""
        record = self.journal.get(submission.trigger.uuid)
        assert record is not None
        return record.status, record.attempts, record.last_error


class RefusingAnswers(Journal):
    """A journal whose disk filled up after the triggers: answers wait while ``refusing``."""

    refusing = True

    def settle(self, settlements: Iterable[Settlement]) -> None:
        if self.refusing:
            raise JournalError(f"cannot write to the journal {self.path}: database or disk is full")
        super().settle(settlements)


class HeldAnswers(Journal):
    """A journal whose record of broker answers waits, in its worker thread, until released."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = threading.Event()
        self.release = threading.Event()

    def settle(self, settlements: Iterable[Settlement]) -> None:
        self.writing.set()
        self.release.wait(timeout=10)
        super().settle(settlements)


@asynccontextmanager
async def scripted_publisher(
    tmp_path: Path,
    journal: Journal | None = None,
    opened: trio.Event | None = None,
    **overrides: Any,
) -> AsyncIterator[Scripted]:
    """A publisher connected to a fake broker, which declares whatever is asked.

    With ``opened``, the broker holds its first answer until that is set:
    the publisher is started but cannot publish yet.
    """
    journal = journal or open_journal(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            fake: FakeBroker = await nursery.start(serve_fake_broker)
            peers_in, peers = trio.open_memory_channel[FakePeer](10)
            declares = 2 if overrides.get("unroutable_exchange") else 1
            nursery.start_soon(declare_for_each_connection, fake, peers_in, opened, declares)
            settings = tower_settings(fake.url, "fake.triggers", tmp_path, **overrides)
            publisher = Publisher(settings, SQLiteStorage(journal))
            intake, receive = trio.open_memory_channel[Submission](100)
            stopped = trio.Event()

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await publisher.serve(receive, task_status=task_status)
                stopped.set()

            if opened is None:
                await nursery.start(serve)
            else:
                # Started means connected, which waits for the held answer.
                nursery.start_soon(partial(serve, task_status=trio.TASK_STATUS_IGNORED))
            yield Scripted(publisher, journal, intake, peers, stopped)
            nursery.cancel_scope.cancel()
    finally:
        journal.close()


async def ack(peer: FakePeer, tag: int, *, multiple: bool = False) -> None:
    await peer.send(1, commands.Basic.Ack(delivery_tag=tag, multiple=multiple))


async def nack(peer: FakePeer, tag: int) -> None:
    await peer.send(1, commands.Basic.Nack(delivery_tag=tag))


PUBLISHER_LOGGERS = frozenset(
    {"tower_trio._publisher", "tower_trio._outbox", "tower_trio._settlements"}
)
"""The publisher's task tree logs under its modules' names."""


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[tuple[int, dict[str, Any]]]:
    """The level and fields of each ``event`` the publisher logged."""
    return [
        (record.levelno, record.fields)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name in PUBLISHER_LOGGERS and record.msg == event
    ]


def ids(published: list[Published]) -> list[str | None]:
    return [message.properties.message_id for message in published]


class TestConfirms:
    async def test_an_ack_publishes_and_records(self, tmp_path: Path) -> None:
        """An acked trigger is published: its waiter hears so, and the journal records it."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                (submission,) = await scripted.submit(trigger(), wait_published=True)
                assert submission.intake is Intake.ACCEPTED
                (message,) = await peer.wait_published(1)
                assert not submission.settled
                await ack(peer, 1)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                stats = scripted.publisher.statistics()
                assert (stats.published, stats.pending, stats.attempts) == (1, 0, 1)
                await scripted.stop()
                assert scripted.status(submission) == ("published", 1, None)
        assert message.properties.message_id == submission.trigger.uuid
        assert message.method.routing_key == "OT-2/v1alpha1"
        assert message.method.exchange == "fake.triggers"
        assert message.method.mandatory
        assert message.body == submission.body

    async def test_one_multiple_ack_settles_every_trigger_up_to_it(self, tmp_path: Path) -> None:
        """A multiple ack for the last delivery tag publishes every trigger before it too."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                submissions = await scripted.submit(*map(trigger, range(5)), wait_published=True)
                published = await peer.wait_published(5)
                await ack(peer, 5, multiple=True)
                for submission in submissions:
                    assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                await scripted.stop()
                assert [scripted.status(s) for s in submissions] == [("published", 1, None)] * 5
                stats = scripted.publisher.statistics()
                assert (stats.published, stats.attempts, stats.pending) == (5, 5, 0)
        assert ids(published) == [s.trigger.uuid for s in submissions]

    async def test_a_returned_trigger_is_unroutable_and_not_retried(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A Basic.Return before the ack makes the trigger unroutable, with the broker's reason."""
        with caplog.at_level(logging.INFO), trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                (submission,) = await scripted.submit(trigger(), wait_published=True)
                (message,) = await peer.wait_published(1)
                await peer.send_message(
                    1,
                    commands.Basic.Return(312, "NO_ROUTE", "fake.triggers", "OT-2/v1alpha1"),
                    message.properties,
                    message.body,
                )
                await ack(peer, 1)
                assert await submission.wait_settled() is DeliveryStatus.UNROUTABLE
                assert submission.error == "312 NO_ROUTE"
                await scripted.stop()
                stats = scripted.publisher.statistics()
                assert (stats.unroutable, stats.published, stats.pending) == (1, 0, 0)
                assert scripted.status(submission) == ("unroutable", 1, "312 NO_ROUTE")
                assert len(peer.published) == 1
        assert logged(caplog, "trigger.unroutable") == [
            (
                logging.WARNING,
                {
                    "uuid": submission.trigger.uuid,
                    "api_version": "OT-2/v1alpha1",
                    "protocol": "PlateTransfer",
                    "source": "",
                    "routing_key": "OT-2/v1alpha1",
                    "reason": "312 NO_ROUTE",
                    "hint": "no queue is bound to the exchange with this apiVersion",
                },
            )
        ]

    async def test_the_time_to_confirm_is_reported(self, tmp_path: Path) -> None:
        """Each published trigger reports the seconds from its creation to its confirm."""
        latencies: list[float] = []
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                scripted.publisher.on_published = latencies.append
                peer = await scripted.peers.receive()
                await scripted.submit(trigger())
                await peer.wait_published(1)
                await ack(peer, 1)
                await scripted.stop()
        (latency,) = latencies
        assert 0 <= latency < 10


class TestRetries:
    async def test_a_nacked_trigger_is_pending_until_its_retry_is_acked(
        self, tmp_path: Path
    ) -> None:
        """After a nack the trigger is pending with the reason, then published on attempt two."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, max_attempts=3) as scripted:
                peer, submission = await scripted.one_out()
                await nack(peer, 1)
                published = await peer.wait_published(2)
                current = scripted.shown(submission)
                assert (current.status, current.attempts, current.last_error) == (
                    "pending",
                    1,
                    "nacked by the broker",
                )
                assert current.published_at is None
                assert not submission.settled
                await ack(peer, 2)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                stats = scripted.publisher.statistics()
                assert (stats.nacked, stats.attempts, stats.published) == (1, 2, 1)
                await scripted.stop()
                assert scripted.status(submission) == ("published", 2, None)
        assert ids(published) == [submission.trigger.uuid] * 2

    async def test_the_last_allowed_nack_fails_the_trigger(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A trigger nacked TOWER_MAX_ATTEMPTS times is failed, logged, and its waiter told why."""
        with caplog.at_level(logging.INFO), trio.fail_after(10):
            async with scripted_publisher(tmp_path, max_attempts=2) as scripted:
                peer, submission = await scripted.one_out()
                await nack(peer, 1)
                await peer.wait_published(2)
                await nack(peer, 2)
                assert await submission.wait_settled() is DeliveryStatus.FAILED
                assert submission.error == "nacked by the broker"
                await scripted.stop()
                stats = scripted.publisher.statistics()
                assert (stats.failed, stats.nacked, stats.pending) == (1, 2, 0)
                assert scripted.status(submission) == ("failed", 2, "nacked by the broker")
                assert len(peer.published) == 2
        assert logged(caplog, "trigger.failed") == [
            (
                logging.ERROR,
                {
                    "uuid": submission.trigger.uuid,
                    "api_version": "OT-2/v1alpha1",
                    "protocol": "PlateTransfer",
                    "source": "",
                    "attempts": 2,
                    "reason": "nacked",
                },
            )
        ]

    async def test_every_nacked_trigger_is_retried_through_a_shutdown(self, tmp_path: Path) -> None:
        """Triggers nacked as the sources close are each retried, and settled before the end."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                submissions = await scripted.submit(trigger(1), trigger(2), wait_published=True)
                await peer.wait_published(2)
                await nack(peer, 1)
                await nack(peer, 2)
                await scripted.intake.aclose()
                # Each retry waits its own, growing, delay: acknowledge them one by one.
                await peer.wait_published(3)
                await ack(peer, 3)
                await peer.wait_published(4)
                await ack(peer, 4)
                await scripted.stopped.wait()
                assert [scripted.status(s) for s in submissions] == [("published", 2, None)] * 2
                assert scripted.publisher.statistics().nacked == 2

    async def test_counts_add_up_over_several_triggers(self, tmp_path: Path) -> None:
        """Failed and unroutable triggers are counted one by one, like published ones."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, max_attempts=1) as scripted:
                peer = await scripted.peers.receive()
                await scripted.submit(*map(trigger, range(4)))
                published = await peer.wait_published(4)
                for message in published[2:]:
                    await peer.send_message(
                        1,
                        commands.Basic.Return(312, "NO_ROUTE", "fake.triggers", "OT-2/v1alpha1"),
                        message.properties,
                        message.body,
                    )
                await nack(peer, 1)
                await nack(peer, 2)
                await ack(peer, 4, multiple=True)
                await scripted.stop()
                stats = scripted.publisher.statistics()
                assert (stats.failed, stats.unroutable, stats.nacked, stats.pending) == (2, 2, 2, 0)

    async def test_a_trigger_behind_a_retry_is_not_held_up(self, tmp_path: Path) -> None:
        """While a nacked trigger waits for its retry, the next one is published and settled."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                first, second = await scripted.submit(trigger(1), trigger(2), wait_published=True)
                await peer.wait_published(2)
                await nack(peer, 1)
                await ack(peer, 2)
                assert await second.wait_settled() is DeliveryStatus.PUBLISHED
                assert not first.settled
                published = await peer.wait_published(3)
                await ack(peer, 3)
                assert await first.wait_settled() is DeliveryStatus.PUBLISHED
                await scripted.stop()
        assert ids(published) == [first.trigger.uuid, second.trigger.uuid, first.trigger.uuid]

    async def test_an_unconfirmed_trigger_goes_out_again_on_a_new_connection(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without a confirm in TOWER_CONFIRM_TIMEOUT, the tower reconnects and publishes again."""
        with caplog.at_level(logging.WARNING), trio.fail_after(10):
            async with scripted_publisher(tmp_path, confirm_timeout=0.2) as scripted:
                first = await scripted.peers.receive()
                (submission,) = await scripted.submit(trigger(), wait_published=True)
                await first.wait_published(1)
                second = await scripted.peers.receive()
                (again,) = await second.wait_published(1)
                await ack(second, 1)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                stats = scripted.publisher.statistics()
                assert (stats.reconnects, stats.attempts, stats.last_error) == (1, 2, None)
                await scripted.stop()
                assert scripted.status(submission)[0] == "published"
        assert again.properties.message_id == submission.trigger.uuid
        ((level, fields),) = logged(caplog, "broker.disconnected")
        assert level == logging.WARNING
        assert str(fields["error"]) == (
            f"the broker did not confirm trigger {submission.trigger.uuid} within 0.2 s "
            "(TOWER_CONFIRM_TIMEOUT); reconnecting to publish it again"
        )
        assert fields["pending"] == 1

    @pytest.mark.parametrize("together", [False, True], ids=["ack-then-close", "one-read"])
    async def test_a_closed_channel_republishes_only_the_unconfirmed(
        self, tmp_path: Path, together: bool
    ) -> None:
        """An ack read before or with the channel's close is kept; the unconfirmed go out again."""
        acked = frame.marshal(commands.Basic.Ack(delivery_tag=1), 1)
        closed = frame.marshal(commands.Channel.Close(406, "PRECONDITION_FAILED", 0, 0), 1)
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                first = await scripted.peers.receive()
                submissions = await scripted.submit(*map(trigger, range(3)), wait_published=True)
                await first.wait_published(3)
                if together:
                    await first.send_raw(acked + closed)
                else:
                    await first.send_raw(acked)
                    await first.send_raw(closed)
                second = await scripted.peers.receive()
                republished = await second.wait_published(2)
                await ack(second, 2, multiple=True)
                for submission in submissions:
                    assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                await scripted.stop()
                assert [scripted.status(s)[0] for s in submissions] == ["published"] * 3
        assert ids(republished) == [s.trigger.uuid for s in submissions[1:]]


class TestIntake:
    async def test_a_withdrawn_submission_is_not_stored(self, tmp_path: Path) -> None:
        """A submission withdrawn before the journal took it is neither stored nor published."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                withdrawn = Submission.of(trigger(1))
                assert withdrawn.withdraw()
                await scripted.intake.send(withdrawn)
                (kept,) = await scripted.submit(trigger(2))
                (message,) = await peer.wait_published(1)
                await ack(peer, 1)
                await scripted.stop()
                assert scripted.journal.get(withdrawn.trigger.uuid) is None
                assert withdrawn.intake is Intake.WAITING
        assert message.properties.message_id == kept.trigger.uuid

    async def test_a_repeated_key_is_answered_with_the_first_trigger(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A submission with a stored key gets the first trigger's record and publishes nothing."""
        with caplog.at_level(logging.INFO), trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                (first,) = await scripted.submit(trigger(1), key="http:k", fingerprint="fp")
                await peer.wait_published(1)
                await ack(peer, 1)
                (retry,) = await scripted.submit(trigger(1), key="http:k", fingerprint="fp")
                (other,) = await scripted.submit(trigger(2), key="http:k", fingerprint="fp2")
                await scripted.stop()
                assert scripted.publisher.statistics().duplicates == 2
                assert len(peer.published) == 1
        assert (retry.intake, other.intake) == (Intake.DUPLICATE, Intake.DUPLICATE)
        assert retry.duplicate is not None
        assert retry.duplicate.uuid == first.trigger.uuid
        assert (retry.same_request, other.same_request) == (True, False)
        first_uuid = first.trigger.uuid
        assert logged(caplog, "trigger.duplicate") == [
            (logging.INFO, {"key": "http:k", "first_uuid": first_uuid, "same_request": True}),
            (logging.INFO, {"key": "http:k", "first_uuid": first_uuid, "same_request": False}),
        ]

    async def test_a_refused_batch_is_rejected_and_reported(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A batch the journal refuses is refused to each source, logged and named by readiness."""
        journal = open_journal(tmp_path, max_bytes=96 * 1024)
        with caplog.at_level(logging.INFO), trio.fail_after(10):
            async with scripted_publisher(tmp_path, journal) as scripted:
                peer = await scripted.peers.receive()
                big = [trigger(n, spec={"blob": "x" * 60_000, "n": n}) for n in range(3)]
                refused = await scripted.submit(*big, wait_published=True)
                assert [s.intake for s in refused] == [Intake.REJECTED] * 3
                assert all(s.status is DeliveryStatus.FAILED for s in refused)
                assert "cannot write to the journal" in (refused[0].error or "")
                problem = scripted.publisher.statistics().journal_problem
                assert problem is not None
                assert problem.startswith("the last write failed: cannot write to the journal")
                (small,) = await scripted.submit(trigger(9))
                assert small.intake is Intake.ACCEPTED
                await peer.wait_published(1)
                await ack(peer, 1)
                await scripted.stop()
                assert scripted.publisher.statistics().pending == 0
        ((level, fields),) = logged(caplog, "journal.write_failed")
        assert level == logging.ERROR
        assert fields["triggers"] == 3
        assert str(fields["error"]) == refused[0].error


class TestBacklog:
    async def test_the_cache_is_bounded_while_the_broker_is_away(self, tmp_path: Path) -> None:
        """Triggers that do not fit in the cache wait on disk; all go out in order later."""
        body_size = len(Submission.of(trigger(0)).body)
        cap = 3 * body_size
        opened = trio.Event()
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, opened=opened, cache_max_bytes=cap) as scripted:
                submissions = await scripted.submit(*map(trigger, range(10)))
                stats = scripted.publisher.statistics()
                assert (stats.pending, stats.cached_bytes) == (10, 3 * body_size)
                opened.set()
                peer = await scripted.peers.receive()
                published = await peer.wait_published(10)
                await ack(peer, 10, multiple=True)
                await scripted.stop()
                assert scripted.publisher.statistics().cached_bytes == 0
        assert ids(published) == [s.trigger.uuid for s in submissions]

    async def test_a_trigger_too_big_for_the_cache_keeps_its_place(self, tmp_path: Path) -> None:
        """A large trigger between cached ones is read back from disk and published in its turn."""
        small = [trigger(n) for n in range(4)]
        big = trigger(9, spec={"blob": "x" * 10_000})
        cap = 3 * len(Submission.of(small[0]).body)
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, cache_max_bytes=cap) as scripted:
                peer = await scripted.peers.receive()
                order = [small[0], big, small[1], small[2], small[3]]
                await scripted.submit(*order)
                published = await peer.wait_published(5)
                await ack(peer, 5, multiple=True)
                await scripted.stop()
                assert scripted.publisher.statistics().cached_bytes == 0
        assert ids(published) == [t.uuid for t in order]

    async def test_a_restart_publishes_only_what_is_pending(self, tmp_path: Path) -> None:
        """Rows settled before a restart are skipped, wherever they sit among the pending ones."""
        journal = open_journal(tmp_path)
        triggers = [trigger(n) for n in range(5)]
        results = journal.append([(t, Submission.of(t).body, None, None) for t in triggers])
        seqs = [r.outgoing.seq for r in results if isinstance(r, Accepted)]
        journal.settle(Settlement(seqs[n], "published", 1, None, 1.0) for n in (1, 4))
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, journal) as scripted:
                peer = await scripted.peers.receive()
                published = await peer.wait_published(3)
                await ack(peer, 3, multiple=True)
                await scripted.stop()
                assert journal.pending_count() == 0
        assert ids(published) == [triggers[n].uuid for n in (0, 2, 3)]

    async def test_a_backlog_larger_than_a_batch_goes_out_in_order(self, tmp_path: Path) -> None:
        """Pending rows from an earlier run are published oldest first, past one read batch."""
        journal = open_journal(tmp_path)
        triggers = [trigger(n) for n in range(600)]
        journal.append([(t, Submission.of(t).body, None, None) for t in triggers])
        with trio.fail_after(20):
            async with scripted_publisher(tmp_path, journal) as scripted:
                assert scripted.publisher.statistics().pending == 600
                peer = await scripted.peers.receive()
                published = await peer.wait_published(600)
                await ack(peer, 600, multiple=True)
                await scripted.stop()
                assert journal.pending_count() == 0
        assert ids(published) == [t.uuid for t in triggers]


class TestAnswersNotYetRecorded:
    async def test_an_answer_the_journal_cannot_write_yet_is_shown_and_retried(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A confirm whose record waits for the disk is what lookups show, and is written later."""
        journal = RefusingAnswers(tmp_path / FILE_NAME)
        with (
            caplog.at_level(logging.INFO),
            watching("tower_trio._settlements", "journal.write_failed") as failures,
            trio.fail_after(10),
        ):
            async with scripted_publisher(tmp_path, journal) as scripted:
                peer, submission = await scripted.one_out()
                await ack(peer, 1)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                await failures.wait_for(1)
                assert scripted.status(submission) == ("pending", 0, None)
                shown = scripted.shown(submission)
                assert (shown.status, shown.attempts, shown.last_error) == ("published", 1, None)
                assert shown.published_at is not None
                assert shown.published_at >= shown.created_at
                stats = scripted.publisher.statistics()
                assert (stats.unrecorded, stats.pending, stats.published) == (1, 0, 1)
                journal.refusing = False
                # Written by the publisher's next try, in a worker thread: poll until
                # the publisher has it back (the journal shows it a moment earlier).
                while scripted.publisher.unrecorded():  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert scripted.status(submission) == ("published", 1, None)
                await scripted.stop()
        level, fields = logged(caplog, "journal.write_failed")[0]
        assert level == logging.ERROR
        assert fields["settlements"] == 1
        assert "database or disk is full" in str(fields["error"])

    async def test_a_later_answer_replaces_one_not_yet_written(self, tmp_path: Path) -> None:
        """A retry's unwritten nack shows as pending; the ack that followed is what stays."""
        journal = RefusingAnswers(tmp_path / FILE_NAME)
        with (
            watching("tower_trio._settlements", "journal.write_failed") as failures,
            trio.fail_after(10),
        ):
            async with scripted_publisher(tmp_path, journal) as scripted:
                peer, submission = await scripted.one_out()
                await nack(peer, 1)
                await failures.wait_for(1)
                shown = scripted.shown(submission)
                assert (shown.status, shown.attempts, shown.last_error, shown.published_at) == (
                    "pending",
                    1,
                    "nacked by the broker",
                    None,
                )
                assert scripted.publisher.unrecorded() == 0
                await peer.wait_published(2)
                await ack(peer, 2)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                assert scripted.shown(submission).status == "published"
                journal.refusing = False
                await scripted.stop()
                assert scripted.status(submission) == ("published", 2, None)

    async def test_an_answer_being_written_is_shown(self, tmp_path: Path) -> None:
        """While the journal writes a confirm, lookups already show it as published."""
        journal = HeldAnswers(tmp_path / FILE_NAME)
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, journal) as scripted:
                peer, submission = await scripted.one_out()
                await ack(peer, 1)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                try:
                    assert await trio.to_thread.run_sync(journal.writing.wait, 5)
                    assert scripted.status(submission)[0] == "pending"
                    assert scripted.shown(submission).status == "published"
                    assert scripted.publisher.unrecorded() == 1
                finally:
                    journal.release.set()
                await scripted.stop()
                assert scripted.status(submission) == ("published", 1, None)

    async def test_a_reconnect_says_when_answers_still_cannot_be_written(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Reconnecting while confirms wait for the disk logs the error and how many wait."""
        journal = RefusingAnswers(tmp_path / FILE_NAME)
        with (
            caplog.at_level(logging.INFO),
            watching("tower_trio._settlements", "journal.write_failed") as failures,
            trio.fail_after(10),
        ):
            async with scripted_publisher(tmp_path, journal) as scripted:
                first = await scripted.peers.receive()
                submissions = await scripted.submit(trigger(1), trigger(2), wait_published=True)
                await first.wait_published(2)
                await ack(first, 2, multiple=True)
                for submission in submissions:
                    await submission.wait_settled()
                # The recorder's retries wait 0.4, 0.8, then 1.6 s at least: after its
                # third failure, the next failure logged within a second is the reconnect's.
                await failures.wait_for(3)
                await first.send(1, commands.Channel.Close(406, "PRECONDITION_FAILED", 0, 0))
                before = len(logged(caplog, "journal.write_failed"))
                # An idle publisher finds the channel closed at its next publish.
                (later,) = await scripted.submit(trigger(3), wait_published=True)
                second = await scripted.peers.receive()
                (message,) = await second.wait_published(1)
                at_reconnect = logged(caplog, "journal.write_failed")[before:]
                await ack(second, 1)
                await later.wait_settled()
                journal.refusing = False
                await scripted.stop()
        assert message.properties.message_id == later.trigger.uuid
        assert at_reconnect
        for level, fields in at_reconnect:
            assert level == logging.ERROR
            assert fields["settlements"] == 2
            assert "database or disk is full" in str(fields["error"])

    async def test_a_retry_cut_by_a_reconnect_goes_out_on_the_new_connection(
        self, tmp_path: Path
    ) -> None:
        """A nacked trigger whose retry a lost channel cut is published again on the next one."""
        journal = RefusingAnswers(tmp_path / FILE_NAME)
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, journal) as scripted:
                first, submission = await scripted.one_out()
                await nack(first, 1)
                await first.send(1, commands.Channel.Close(406, "PRECONDITION_FAILED", 0, 0))
                second = await scripted.peers.receive()
                (again,) = await second.wait_published(1)
                await ack(second, 1)
                assert await submission.wait_settled() is DeliveryStatus.PUBLISHED
                journal.refusing = False
                await scripted.stop()
                assert scripted.status(submission)[0] == "published"
        assert again.properties.message_id == submission.trigger.uuid


class TestMessages:
    async def test_a_trigger_travels_with_every_property(self, tmp_path: Path) -> None:
        """A published trigger is persistent JSON, named by its uuid, protocol, source and time."""
        sent = trigger(created_at=datetime(2026, 1, 31, 12, 0, 7, 900_000, tzinfo=UTC))
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                await scripted.submit(sent.with_source("lims"))
                (message,) = await peer.wait_published(1)
                await ack(peer, 1)
                await scripted.stop()
        properties = message.properties
        assert properties.content_type == "application/json"
        assert properties.delivery_mode == 2
        assert properties.message_id == sent.uuid
        assert properties.message_type == "PlateTransfer"
        assert properties.app_id == "tower-trio"
        assert properties.timestamp == datetime(2026, 1, 31, 12, 0, 7, tzinfo=UTC)
        assert properties.headers == {"protocol": "PlateTransfer", "source": "lims"}

    async def test_the_connection_names_the_tower(self, tmp_path: Path) -> None:
        """The broker's connection list shows the tower, its version and its host."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path) as scripted:
                peer = await scripted.peers.receive()
                await scripted.stop()
        properties = peer.client_properties
        assert properties["product"] == "tower-trio"
        assert properties["version"] == __version__
        assert properties["platform"] == f"Python {platform.python_version()}"
        assert properties["information"] == "trio-native AMQP 0-9-1 client of tower-trio"
        assert properties["connection_name"] == f"tower-trio publisher on {platform.node()}"

    @pytest.mark.parametrize("alternate", [None, "fake.unroutable"])
    async def test_the_exchange_is_declared_durable(
        self, tmp_path: Path, alternate: str | None
    ) -> None:
        """The exchange is a durable topic, with its alternate (a durable fanout) when set."""
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, unroutable_exchange=alternate) as scripted:
                peer = await scripted.peers.receive()
                await scripted.stop()
        declared = [
            (d.exchange, d.exchange_type, d.durable, d.passive, d.arguments)
            for d in peer.got(commands.Exchange.Declare)
            if isinstance(d, commands.Exchange.Declare)
        ]
        topic = ("fake.triggers", "topic", True, False)
        if alternate is None:
            assert declared == [(*topic, {})]
        else:
            assert declared == [
                (alternate, "fanout", True, False, {}),
                (*topic, {"alternate-exchange": alternate}),
            ]


class TestHousekeeping:
    async def test_settled_triggers_are_pruned_in_the_background(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Triggers settled longer than TOWER_RETENTION leave the journal, and the log says so."""
        with (
            caplog.at_level(logging.INFO),
            watching("tower_trio._outbox", "journal.pruned") as pruned,
            trio.fail_after(10),
        ):
            async with scripted_publisher(tmp_path, retention=0.3) as scripted:
                peer = await scripted.peers.receive()
                submissions = await scripted.submit(trigger(1), trigger(2))
                await peer.wait_published(2)
                await ack(peer, 2, multiple=True)
                await pruned.wait_for(1)
                assert [scripted.journal.get(s.trigger.uuid) for s in submissions] == [None, None]
                await scripted.stop()
        deleted = [fields["deleted"] for _, fields in logged(caplog, "journal.pruned")]
        assert sum(deleted) == 2

    async def test_readiness_names_a_journal_without_room(self, tmp_path: Path) -> None:
        """Without room for two of the largest triggers, the publisher says how much is left."""
        journal = open_journal(tmp_path, max_bytes=256 * 1024)
        with trio.fail_after(10):
            async with scripted_publisher(tmp_path, journal, max_body_bytes=200 * 1024) as scripted:
                # The check runs in a worker thread: poll for its verdict.
                while (problem := scripted.publisher.statistics().journal_problem) is None:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                room = journal.room()
                await scripted.stop()
        assert problem == (
            f"it has room for {room} more bytes, less than {400 * 1024} "
            "(TOWER_JOURNAL_MAX_BYTES or the disk); settled triggers are pruned "
            "after TOWER_RETENTION"
        )
