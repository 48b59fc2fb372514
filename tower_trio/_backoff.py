"""Capped exponential backoff with jitter, for reconnects and plugin restarts."""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]

_MAX_DOUBLINGS = 64


@attrs.define
class Backoff:
    """Delays that double from ``initial`` up to ``cap``, each jittered.

    Jitter spreads the retries of many towers (or plugins) that failed for
    the same reason at the same moment, so they do not return in lockstep.
    """

    initial: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2
    _failures: int = attrs.field(default=0, init=False)
    _random: random.Random = attrs.field(factory=random.Random, repr=False)

    @property
    def failures(self) -> int:
        return self._failures

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        # The exponent stops growing long after any cap is reached: a retry loop
        # that failed for days must still get the cap, and 2**1024 is no float.
        doublings = min(self._failures, _MAX_DOUBLINGS)
        base = min(self.cap, self.initial * 2**doublings)
        self._failures += 1
        jittered: float = base * (1 - self.jitter * self._random.random())
        return jittered

    def reset(self) -> None:
        self._failures = 0
