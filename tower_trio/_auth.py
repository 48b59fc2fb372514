"""Who may use the HTTP API, and how often.

Bearer tokens are kept only as SHA-256 digests and compared with
``hmac.compare_digest`` against every configured token, without stopping at
the first match: neither timing nor an early exit tells a caller how close a
guess came. A token's value never reaches a log line, a repr or an error
body.

The rate limit is a token bucket per API token (per client address when
the tower runs without tokens), in memory, on trio's clock. Refusals (401,
403) count too, in a bucket per client address: otherwise a caller without
a valid token would be the one caller nothing slows down.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Protocol

import attrs
import trio

from ._errors import ConfigError

__all__ = [
    "SESSION_COOKIE",
    "Denial",
    "ExposureSettings",
    "Guard",
    "GuardSettings",
    "RateLimiter",
    "Session",
    "Sessions",
    "Tokens",
    "check_exposure",
    "is_loopback",
    "parse_rate",
    "parse_tokens",
    "same_secret",
]

MIN_TOKEN_LENGTH = 16
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_FILE_PREFIXES = ("/", "./", "../")
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@attrs.frozen(repr=False)
class Tokens:
    """A set of bearer tokens, held as digests only."""

    digests: tuple[bytes, ...]

    @classmethod
    def of(cls, tokens: Iterable[str]) -> Tokens:
        return cls(tuple(_digest(token) for token in tokens))

    def match(self, presented: str) -> bytes | None:
        """The digest of the configured token equal to ``presented``, or None."""
        candidate = _digest(presented)
        found = None
        for digest in self.digests:
            # Every digest is compared, whatever matched before.
            if hmac.compare_digest(digest, candidate):
                found = digest
        return found

    def __len__(self) -> int:
        return len(self.digests)

    def __repr__(self) -> str:
        return f"Tokens(<{len(self.digests)} hidden>)"


def parse_tokens(raw: str, *, variable: str = "TOWER_API_TOKENS") -> Tokens | None:
    """Tokens from a comma-separated list, or from a file (a value starting ``/`` or ``./``).

    Errors are ``ConfigError``s written here, not ``ValueError``s, so that the
    raw value (the tokens themselves) is never quoted in the message.
    """
    text = raw.strip()
    if not text:
        return None
    if text.startswith(_FILE_PREFIXES):
        path = Path(text)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "not UTF-8 text"
            raise ConfigError(
                f"{variable} names the file {path}, which cannot be read: {reason}"
            ) from None
        tokens = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not tokens:
            raise ConfigError(
                f"{variable} names the file {path}, which holds no token; "
                "put one token per line (lines starting with # are comments)"
            )
    else:
        tokens = [part.strip() for part in text.split(",") if part.strip()]
    for number, token in enumerate(tokens, 1):
        printable = token.isascii() and token.isprintable() and " " not in token
        if len(token) < MIN_TOKEN_LENGTH or not printable:
            raise ConfigError(
                f"{variable}: token number {number} is not acceptable; each token must be "
                f"at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces "
                "(make one with `openssl rand -hex 32`)"
            )
    return Tokens.of(tokens)


def parse_rate(raw: str) -> float | None:
    """Requests per second from ``10``, ``10/s``, ``600/m`` or ``5000/h``; blank is off."""
    text = raw.strip().lower()
    if not text:
        return None
    number, _, unit = text.partition("/")
    if unit not in ("", *_RATE_UNITS):
        raise ValueError("must be a number of requests per second, or like 10/s, 600/m, 5000/h")
    try:
        count = float(number)
    except ValueError:
        raise ValueError(
            "must be a number of requests per second, or like 10/s, 600/m, 5000/h"
        ) from None
    if not (count > 0 and math.isfinite(count)):
        raise ValueError("must be a positive rate")
    return count / _RATE_UNITS.get(unit, 1.0)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as in TOWER_HTTP_HOST) is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to anything.
        return False


class ExposureSettings(Protocol):
    """What :func:`check_exposure` reads of the settings.

    Declared here rather than imported, because the settings module imports
    this one to parse tokens and rates.
    """

    @property
    def http_host(self) -> str: ...
    @property
    def api_tokens(self) -> Tokens | None: ...
    @property
    def allow_unauthenticated(self) -> bool: ...


def check_exposure(settings: ExposureSettings) -> None:
    """Refuse to serve an unauthenticated API beyond loopback unless told to."""
    if (
        settings.api_tokens is None
        and not settings.allow_unauthenticated
        and not is_loopback(settings.http_host)
    ):
        raise ConfigError(
            f"TOWER_HTTP_HOST={settings.http_host} is not a loopback address and "
            "TOWER_API_TOKENS is not set; set TOWER_API_TOKENS, or "
            "TOWER_ALLOW_UNAUTHENTICATED=true to let anyone who reaches it send triggers"
        )


@attrs.define
class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second."""

    rate: float
    burst: int
    clock: Callable[[], float] = trio.current_time
    max_keys: int = 10_000
    _buckets: dict[Hashable, tuple[float, float]] = attrs.field(factory=dict, init=False)

    def acquire(self, key: Hashable) -> float:
        """0.0 if a request under ``key`` may go ahead now, else the seconds until one may."""
        now = self.clock()
        level = self._level(self._buckets.pop(key, None), now)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) / self.rate
        # Re-inserted so that the dict stays ordered from least to most recently seen.
        self._buckets[key] = (level, now)
        if len(self._buckets) > self.max_keys:
            self._forget(now)
        return wait

    def delay(self, key: Hashable) -> float:
        """What ``acquire`` would answer, spending nothing and remembering nothing."""
        level = self._level(self._buckets.get(key), self.clock())
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def _level(self, bucket: tuple[float, float] | None, now: float) -> float:
        if bucket is None:
            return float(self.burst)
        level, updated = bucket
        return min(float(self.burst), level + (now - updated) * self.rate)

    def _forget(self, now: float) -> None:
        # Bounded memory whatever the number of clients: full buckets carry no
        # information, and past that the least recently seen go first.
        self._buckets = {
            key: (level, updated)
            for key, (level, updated) in self._buckets.items()
            if level + (now - updated) * self.rate < self.burst
        }
        excess = len(self._buckets) - self.max_keys // 2
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


@attrs.frozen
class Denial:
    """Why a request is refused before it reaches its route."""

    status: int
    error: str
    detail: str
    headers: dict[str, str] = attrs.field(factory=dict)


_CHALLENGE = 'Bearer realm="tower-trio"'


@attrs.frozen
class _Refused:
    """The limiter key of the requests refused to one address.

    A bucket apart from the address's own (the key of its accepted requests
    when the tower runs without API tokens), so that accepted requests never
    spend the budget for refusals, nor the reverse.
    """

    client: str


class GuardSettings(Protocol):
    """What :meth:`Guard.from_settings` reads of the settings (see ExposureSettings)."""

    @property
    def api_tokens(self) -> Tokens | None: ...
    @property
    def probe_token(self) -> Tokens | None: ...
    @property
    def rate_limit(self) -> float | None: ...
    @property
    def rate_burst(self) -> int: ...


@attrs.frozen
class Guard:
    """Decides, from a request's path, Authorization header and client, whether it may pass."""

    api: Tokens | None = None
    probe: Tokens | None = None
    limiter: RateLimiter | None = None

    @classmethod
    def from_settings(cls, settings: GuardSettings) -> Guard:
        limiter = None
        if settings.rate_limit is not None:
            limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        return cls(settings.api_tokens, settings.probe_token, limiter)

    @property
    def active(self) -> bool:
        return self.api is not None or self.probe is not None or self.limiter is not None

    def check(self, path: str, authorization: str | None, client: str) -> Denial | None:
        if path in PROBE_PATHS:
            if self.probe is None:
                return None
            # A refused probe is counted, so that guessing the probe token costs
            # the address its budget for refusals on the API, but a probe is
            # never answered 429: a liveness probe held back by its neighbours'
            # traffic would get the tower restarted (probes are never limited).
            _, denial = self._authenticate(self.probe, "TOWER_PROBE_TOKEN", authorization)
            if denial is not None:
                self._count_refusal(client)
            return denial
        if self.api is None:
            return self._spend(client)
        if self.limiter is not None and (wait := self.limiter.delay(_Refused(client))):
            # Answered before the token is read: read first, a guesser over the
            # limit would still tell a right guess (2xx) from a wrong one (429)
            # at full speed.
            return _too_many(self.limiter, wait, refused=True)
        digest, denial = self._authenticate(self.api, "TOWER_API_TOKENS", authorization)
        if denial is not None:
            self._count_refusal(client)
            return denial
        return self._spend(digest)

    def sign_in(self, presented: str, client: str) -> tuple[bytes, Denial | None]:
        """Check a token typed into the console: its digest, or why it is refused.

        Counted like a request that carries it, so guessing tokens through
        the console's form is no faster than through the API.
        """
        denial = self.check("/console/session", f"Bearer {presented}", client)
        if denial is not None or self.api is None:
            return b"", denial
        digest = self.api.match(presented)
        assert digest is not None  # check() passed, so one token matches
        return digest, None

    def spend_as(self, token: bytes) -> Denial | None:
        """Count a request of a console session under its token's rate limit."""
        return self._spend(token)

    def _spend(self, key: Hashable) -> Denial | None:
        if self.limiter is not None and (wait := self.limiter.acquire(key)):
            return _too_many(self.limiter, wait)
        return None

    def _count_refusal(self, client: str) -> None:
        if self.limiter is not None:
            # Over the budget, this spends nothing, like any limited request.
            self.limiter.acquire(_Refused(client))

    @staticmethod
    def _authenticate(
        tokens: Tokens, variable: str, authorization: str | None
    ) -> tuple[bytes, Denial | None]:
        if not authorization:
            return b"", Denial(
                401,
                "unauthorized",
                f"send a token from {variable} as 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": _CHALLENGE},
            )
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return b"", Denial(
                401,
                "unauthorized",
                "the Authorization header must be 'Bearer <token>'",
                {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_request"'},
            )
        digest = tokens.match(presented)
        if digest is None:
            return b"", Denial(403, "forbidden", f"the bearer token is not one of {variable}")
        return digest, None


def _too_many(limiter: RateLimiter, wait: float, *, refused: bool = False) -> Denial:
    """429 for ``wait`` seconds; ``refused``: because the address's refusals used up its budget."""
    retry_after = max(1, math.ceil(wait))
    limit = (
        f"at most {limiter.burst} requests at once and {limiter.rate:g} per second "
        "(TOWER_RATE_BURST, TOWER_RATE_LIMIT)"
    )
    if refused:
        detail = (
            f"too many refused requests from this address, {limit}; retry in {retry_after} s "
            "with a token from TOWER_API_TOKENS"
        )
    else:
        detail = f"{limit}; retry in {retry_after} s"
    return Denial(429, "too many requests", detail, {"Retry-After": str(retry_after)})


SESSION_COOKIE = "tower_session"
SESSION_LIFETIME = 12 * 3600.0
MAX_SESSIONS = 1024


@attrs.frozen(repr=False)
class Session:
    """A browser signed in to the console with one of the API tokens."""

    token: bytes
    """The digest of the token it signed in with: its rate-limit key."""
    csrf: str
    """What its state-changing requests carry in ``X-CSRF-Token``."""
    expires: float

    def __repr__(self) -> str:
        return "Session(<hidden>)"


@attrs.define
class Sessions:
    """Console sessions, in memory: a restart signs every browser out.

    The cookie holds a random id; only its digest is kept, so neither a
    memory dump nor a log line holds a usable cookie. At most
    ``MAX_SESSIONS`` are kept (the oldest go first), each for
    ``SESSION_LIFETIME`` seconds.
    """

    clock: Callable[[], float] = trio.current_time
    lifetime: float = SESSION_LIFETIME
    max_sessions: int = MAX_SESSIONS
    _sessions: dict[bytes, Session] = attrs.field(factory=dict, init=False)

    def open(self, token: bytes) -> tuple[str, Session]:
        """A session for ``token`` (a digest from ``Tokens.match``): its cookie, and it."""
        cookie = secrets.token_urlsafe(32)
        session = Session(token, secrets.token_urlsafe(32), self.clock() + self.lifetime)
        self._sessions[_digest(cookie)] = session
        while len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        return cookie, session

    def get(self, cookie: str) -> Session | None:
        key = _digest(cookie)
        session = self._sessions.get(key)
        if session is not None and session.expires <= self.clock():
            del self._sessions[key]
            return None
        return session

    def close(self, cookie: str) -> None:
        self._sessions.pop(_digest(cookie), None)

    def __len__(self) -> int:
        return len(self._sessions)


def same_secret(presented: str, expected: str) -> bool:
    """``presented == expected`` in constant time."""
    return hmac.compare_digest(presented.encode(), expected.encode())
