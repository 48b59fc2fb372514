"""Capped exponential backoff: doubling, the cap, jitter and reset."""

from __future__ import annotations

import random

import pytest

from tower_trio._backoff import Backoff


class FixedRandom(random.Random):
    """A random source that always draws the same number, so a jittered delay is known."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


# The largest draw random.random() can return: the most jitter can ever take off.
HIGHEST_DRAW = 1.0 - 2.0**-53


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next_delay() for _ in range(count)]


class TestDoubling:
    def test_doubles_from_initial(self) -> None:
        """Without jitter the delays are initial, twice that, four times, and so on."""
        backoff = Backoff(initial=0.5, cap=100.0, jitter=0.0)
        assert delays(backoff, 5) == [0.5, 1.0, 2.0, 4.0, 8.0]

    def test_counts_failures(self) -> None:
        """Each delay asked for counts one failure."""
        backoff = Backoff(initial=1.0, cap=10.0, jitter=0.0)
        assert backoff.failures == 0
        delays(backoff, 3)
        assert backoff.failures == 3

    def test_stops_at_the_cap(self) -> None:
        """Once doubling passes the cap, every delay is the cap, however many failures follow."""
        backoff = Backoff(initial=0.5, cap=30.0, jitter=0.0)
        assert delays(backoff, 9) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]

    def test_cap_after_a_long_outage(self) -> None:
        """Thousands of failures in a row (days at the cap) still give the cap, not an error."""
        backoff = Backoff(initial=0.5, cap=30.0, jitter=0.0)
        assert set(delays(backoff, 3000)[7:]) == {30.0}

    def test_cap_below_initial_wins(self) -> None:
        """A cap lower than the initial delay bounds the very first delay too."""
        backoff = Backoff(initial=5.0, cap=2.0, jitter=0.0)
        assert delays(backoff, 2) == [2.0, 2.0]


class TestJitter:
    def test_only_shortens(self) -> None:
        """Jitter takes at most its fraction off a delay and never lengthens it."""
        for draw in (0.0, 0.5, HIGHEST_DRAW):
            backoff = Backoff(initial=1.0, cap=8.0, jitter=0.25, random=FixedRandom(draw))
            for base, delay in zip([1.0, 2.0, 4.0, 8.0, 8.0], delays(backoff, 5), strict=True):
                assert base * 0.75 <= delay <= base

    def test_fraction_of_the_draw(self) -> None:
        """A draw of a half takes half the jitter fraction off each delay."""
        backoff = Backoff(initial=2.0, cap=8.0, jitter=0.5, random=FixedRandom(0.5))
        assert delays(backoff, 4) == [1.5, 3.0, 6.0, 6.0]

    def test_default_takes_at_most_a_fifth(self) -> None:
        """By default a delay loses at most a fifth to jitter, so retries still grow."""
        backoff = Backoff(initial=10.0, cap=10.0, random=FixedRandom(HIGHEST_DRAW))
        assert backoff.next_delay() == pytest.approx(8.0)

    def test_spreads_simultaneous_retries(self) -> None:
        """Backoffs that failed at the same moment do not all wait the same delay."""
        first_delays = {Backoff(initial=1.0, cap=1.0).next_delay() for _ in range(20)}
        assert len(first_delays) > 1
        assert all(0.8 <= delay <= 1.0 for delay in first_delays)


class TestReset:
    def test_starts_again_from_initial(self) -> None:
        """After a success, the next failure waits the initial delay again."""
        backoff = Backoff(initial=0.5, cap=30.0, jitter=0.0)
        delays(backoff, 4)
        backoff.reset()
        assert backoff.failures == 0
        assert delays(backoff, 2) == [0.5, 1.0]
