"""Who may use the HTTP API, how often, and how much a request may carry."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio

from tests._helpers import VALID, Broker, Tower, run_tower, tower_settings
from tower_trio import ConfigError, InvalidTriggerError, Metadata, Plate, Trigger
from tower_trio._auth import (
    MIN_TOKEN_LENGTH,
    Denial,
    Guard,
    RateLimiter,
    Tokens,
    check_exposure,
    is_loopback,
    parse_rate,
)
from tower_trio._cli import main
from tower_trio._config import Settings
from tower_trio._models import MAX_JSON_DEPTH, MAX_JSON_KEYS, MAX_STRING_LENGTH

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

TOKEN = "lab-token-0123456789abcdef"
OTHER = "other-token-fedcba9876543210"
PROBE = "probe-token-0123456789abcdef"


@attrs.define
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


class TestTokenSettings:
    def test_comma_list(self) -> None:
        """TOWER_API_TOKENS takes a comma-separated list, blanks ignored."""
        settings = Settings.from_environ({"TOWER_API_TOKENS": f" {TOKEN}, ,{OTHER} "})
        assert settings.api_tokens == Tokens.of([TOKEN, OTHER])

    def test_file_with_one_token_a_line(self, tmp_path: Path) -> None:
        """A value starting with / names a file: one token a line, # comments skipped."""
        path = tmp_path / "tokens"
        path.write_text(f"# robots\n{TOKEN}\n\n{OTHER}\n")
        settings = Settings.from_environ({"TOWER_API_TOKENS": str(path)})
        assert settings.api_tokens == Tokens.of([TOKEN, OTHER])

    def test_blank_is_off(self) -> None:
        """An empty TOWER_API_TOKENS leaves authentication off."""
        assert Settings.from_environ({"TOWER_API_TOKENS": " "}).api_tokens is None

    def test_sixteen_characters_are_enough(self) -> None:
        """A token of exactly MIN_TOKEN_LENGTH characters is accepted."""
        token = "0123456789abcdef"
        assert len(token) == MIN_TOKEN_LENGTH
        settings = Settings.from_environ({"TOWER_API_TOKENS": token})
        assert settings.api_tokens == Tokens.of([token])

    def test_short_token_refused_without_showing_it(self) -> None:
        """A short token stops start-up; the message counts it but never quotes it."""
        with pytest.raises(ConfigError, match="token number 2 is not acceptable") as excinfo:
            Settings.from_environ({"TOWER_API_TOKENS": f"{TOKEN},tiny-secret"})
        assert str(excinfo.value) == (
            "TOWER_API_TOKENS: token number 2 is not acceptable; each token must be at least "
            "16 printable ASCII characters without spaces (make one with `openssl rand -hex 32`)"
        )
        assert "tiny-secret" not in str(excinfo.value)
        assert TOKEN not in str(excinfo.value)

    def test_token_with_a_space_refused(self, tmp_path: Path) -> None:
        """A token line with a space in it is refused (it could not be sent as one header)."""
        path = tmp_path / "tokens"
        path.write_text("two words in one token line\n")
        with pytest.raises(ConfigError, match="token number 1 is not acceptable"):
            Settings.from_environ({"TOWER_API_TOKENS": str(path)})

    def test_missing_file_named(self, tmp_path: Path) -> None:
        """A token file that cannot be read is named in the error."""
        path = tmp_path / "absent"
        with pytest.raises(ConfigError) as excinfo:
            Settings.from_environ({"TOWER_API_TOKENS": str(path)})
        assert str(excinfo.value) == (
            f"TOWER_API_TOKENS names the file {path}, which cannot be read: "
            "No such file or directory"
        )

    def test_file_not_utf8_named(self, tmp_path: Path) -> None:
        """A token file that is not UTF-8 text is named, with that reason and not its bytes."""
        path = tmp_path / "tokens"
        path.write_bytes(TOKEN.encode() + b"\xe9\n")
        with pytest.raises(ConfigError) as excinfo:
            Settings.from_environ({"TOWER_API_TOKENS": str(path)})
        assert str(excinfo.value) == (
            f"TOWER_API_TOKENS names the file {path}, which cannot be read: not UTF-8 text"
        )

    def test_empty_file_refused(self, tmp_path: Path) -> None:
        """A token file without tokens is a mistake, not a way to turn authentication off."""
        path = tmp_path / "tokens"
        path.write_text("# nothing yet\n")
        with pytest.raises(ConfigError) as excinfo:
            Settings.from_environ({"TOWER_API_TOKENS": str(path)})
        assert str(excinfo.value) == (
            f"TOWER_API_TOKENS names the file {path}, which holds no token; "
            "put one token per line (lines starting with # are comments)"
        )

    def test_probe_token_errors_name_their_variable(self) -> None:
        """TOWER_PROBE_TOKEN is checked like the API tokens, under its own name."""
        with pytest.raises(ConfigError, match=r"^TOWER_PROBE_TOKEN: token number 1"):
            Settings.from_environ({"TOWER_PROBE_TOKEN": "short"})

    def test_repr_hides_tokens(self) -> None:
        """Neither the tokens' repr nor the settings' repr shows a token."""
        settings = Settings.from_environ({"TOWER_API_TOKENS": TOKEN})
        assert TOKEN not in repr(settings)
        assert repr(settings.api_tokens) == "Tokens(<1 hidden>)"

    def test_match_checks_every_token(self) -> None:
        """match finds whichever configured token was presented, and nothing else."""
        tokens = Tokens.of([TOKEN, OTHER])
        assert tokens.match(OTHER) == Tokens.of([OTHER]).digests[0]
        assert tokens.match(TOKEN) == Tokens.of([TOKEN]).digests[0]
        assert tokens.match(TOKEN[:-1]) is None
        assert tokens.match("") is None

    @pytest.mark.parametrize(
        ("raw", "per_second"),
        [("10", 10.0), ("10/s", 10.0), ("600/m", 10.0), ("3600/h", 1.0), ("0.5", 0.5)],
    )
    def test_rate_forms(self, raw: str, per_second: float) -> None:
        """TOWER_RATE_LIMIT reads a count per second, minute or hour."""
        assert parse_rate(raw) == per_second

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("fast", "must be a number of requests per second, or like 10/s, 600/m, 5000/h"),
            ("10/d", "must be a number of requests per second, or like 10/s, 600/m, 5000/h"),
            ("0", "must be a positive rate"),
            ("-1/s", "must be a positive rate"),
            ("inf", "must be a positive rate"),
        ],
    )
    def test_bad_rates_refused(self, raw: str, reason: str) -> None:
        """A rate that is not a positive count per s, m or h stops start-up, saying why."""
        with pytest.raises(ConfigError) as excinfo:
            Settings.from_environ({"TOWER_RATE_LIMIT": raw})
        assert str(excinfo.value) == f"TOWER_RATE_LIMIT={raw!r} is invalid: {reason}"


class TestLoopbackRule:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
    def test_loopback_hosts(self, host: str) -> None:
        """Loopback addresses, in any spelling hypercorn accepts, count as loopback."""
        assert is_loopback(host)

    @pytest.mark.parametrize(
        "host", ["0.0.0.0", "::", "192.0.2.7", "tower.lab.example", "localhostX"]
    )
    def test_other_hosts(self, host: str) -> None:
        """Wildcards, other addresses and host names, even ones close to a loopback name, do not."""
        assert not is_loopback(host)

    def test_open_tower_beyond_loopback_refused(self) -> None:
        """Without tokens, a non-loopback host is an error naming both ways out."""
        with pytest.raises(ConfigError) as excinfo:
            check_exposure(Settings(http_host="0.0.0.0"))
        assert str(excinfo.value) == (
            "TOWER_HTTP_HOST=0.0.0.0 is not a loopback address and TOWER_API_TOKENS is not set; "
            "set TOWER_API_TOKENS, or TOWER_ALLOW_UNAUTHENTICATED=true to let anyone who "
            "reaches it send triggers"
        )

    def test_tokens_or_explicit_permission_allow_it(self) -> None:
        """Tokens, or TOWER_ALLOW_UNAUTHENTICATED, let the tower listen beyond loopback."""
        check_exposure(Settings(http_host="0.0.0.0", api_tokens=Tokens.of([TOKEN])))
        check_exposure(Settings(http_host="0.0.0.0", allow_unauthenticated=True))

    def test_cli_says_it_in_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`tower-trio run` on 0.0.0.0 without tokens exits 2 with one line, no traceback."""
        environ = {"TOWER_HTTP_HOST": "0.0.0.0", "TOWER_DATA_DIR": str(tmp_path)}
        assert main(["run"], environ) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("tower-trio: error: TOWER_HTTP_HOST=0.0.0.0 is not a loopback")


class TestRateLimiter:
    def test_burst_then_refill(self) -> None:
        """A full bucket lets `burst` requests through, then one more per 1/rate seconds."""
        clock = FakeClock()
        limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
        assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.acquire("a") == pytest.approx(0.5)
        clock.now = 0.5
        assert limiter.acquire("a") == 0.0
        assert limiter.acquire("a") == pytest.approx(0.5)

    def test_refused_requests_cost_nothing(self) -> None:
        """Retrying too early does not push the next allowed request further away."""
        clock = FakeClock()
        limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
        assert limiter.acquire("a") == 0.0
        for _ in range(5):
            assert limiter.acquire("a") == pytest.approx(1.0)
        clock.now = 1.0
        assert limiter.acquire("a") == 0.0

    def test_keys_have_their_own_buckets(self) -> None:
        """One client using up its bucket leaves another's untouched."""
        limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock())
        assert limiter.acquire("a") == 0.0
        assert limiter.acquire("a") > 0
        assert limiter.acquire("b") == 0.0

    def test_memory_stays_bounded(self) -> None:
        """However many clients come, the limiter keeps at most max_keys buckets."""
        clock = FakeClock()
        limiter = RateLimiter(rate=1.0, burst=5, clock=clock, max_keys=100)
        for n in range(1000):
            clock.now = n / 1000
            limiter.acquire(n)
            assert len(limiter) <= 100
        # The most recent client is remembered: its next request is still counted.
        limiter.acquire(999)
        limiter.acquire(999)
        limiter.acquire(999)
        limiter.acquire(999)
        assert limiter.acquire(999) > 0

    def test_every_client_remembered_up_to_max_keys(self) -> None:
        """Up to max_keys clients, none is forgotten: each keeps the budget it spent."""
        limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock(), max_keys=3)
        assert [limiter.acquire(client) for client in "abc"] == [0.0, 0.0, 0.0]
        assert all(limiter.acquire(client) > 0 for client in "abc")
        assert len(limiter) == 3

    def test_refilled_buckets_are_forgotten_before_spent_ones(self) -> None:
        """Over max_keys, refilled buckets go first, so an older client still in debt keeps it."""
        clock = FakeClock()
        limiter = RateLimiter(rate=2.0, burst=3, clock=clock, max_keys=4)

        def spend(client: str, count: int, at: float) -> None:
            clock.now = at
            for _ in range(count):
                assert limiter.acquire(client) == 0.0

        spend("idle-1", 3, at=0.0)
        spend("idle-2", 3, at=0.0)
        spend("in-debt", 3, at=0.75)
        spend("one-off", 1, at=1.0)
        # The fifth client makes the limiter sweep at t=1.5: idle-1, idle-2 and
        # one-off have refilled; in-debt is back to 1.5 of 3 and stays.
        spend("newest", 1, at=1.5)
        assert len(limiter) == 2
        assert limiter.acquire("in-debt") == 0.0
        assert limiter.acquire("in-debt") == pytest.approx(0.25)

    def test_delay_spends_and_remembers_nothing(self) -> None:
        """delay answers what acquire would, without taking from the bucket or adding one."""
        clock = FakeClock()
        limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
        assert limiter.delay("a") == 0.0
        assert len(limiter) == 0
        assert limiter.acquire("a") == 0.0
        assert limiter.delay("a") == pytest.approx(1.0)
        clock.now = 0.25
        assert limiter.delay("a") == pytest.approx(0.75)
        clock.now = 1.0
        assert limiter.delay("a") == 0.0
        assert limiter.acquire("a") == 0.0

    async def test_runs_on_trio_clock(self, autojump_clock: trio.testing.MockClock) -> None:
        """By default the limiter reads trio's clock, so a sleep refills the bucket."""
        limiter = RateLimiter(rate=0.1, burst=1)
        assert limiter.acquire("a") == 0.0
        wait = limiter.acquire("a")
        assert wait == pytest.approx(10.0)
        await trio.sleep(wait)
        assert limiter.acquire("a") == 0.0


class TestGuard:
    guard = Guard(api=Tokens.of([TOKEN]), probe=Tokens.of([PROBE]))

    def test_missing_header_is_401_with_challenge(self) -> None:
        """No Authorization header: 401 and a Bearer challenge."""
        denial = self.guard.check("/triggers", None, "127.0.0.1")
        assert denial is not None
        assert denial.status == 401
        assert denial.headers["WWW-Authenticate"] == 'Bearer realm="tower-trio"'

    @pytest.mark.parametrize("header", [f"Basic {TOKEN}", "Bearer", "Bearer   ", TOKEN])
    def test_malformed_header_is_401(self, header: str) -> None:
        """An Authorization header that is not `Bearer <token>` is 401 invalid_request."""
        assert self.guard.check("/triggers", header, "127.0.0.1") == Denial(
            401,
            "unauthorized",
            "the Authorization header must be 'Bearer <token>'",
            {"WWW-Authenticate": 'Bearer realm="tower-trio", error="invalid_request"'},
        )

    def test_spaces_between_scheme_and_token(self) -> None:
        """Several spaces between `Bearer` and the token are allowed, as HTTP allows them."""
        assert self.guard.check("/triggers", f"Bearer   {TOKEN}", "127.0.0.1") is None

    def test_wrong_token_is_403(self) -> None:
        """A well-formed but unknown token is 403, and the answer does not repeat it."""
        denial = self.guard.check("/triggers", "Bearer not-the-token-at-all", "127.0.0.1")
        assert denial is not None
        assert denial.status == 403
        assert "not-the-token" not in denial.detail

    def test_right_token_passes_any_scheme_case(self) -> None:
        """The scheme is case-insensitive, as HTTP says."""
        assert self.guard.check("/triggers", f"Bearer {TOKEN}", "127.0.0.1") is None
        assert self.guard.check("/plugins", f"bearer {TOKEN}", "127.0.0.1") is None

    def test_probes_take_the_probe_token_only(self) -> None:
        """Probes have their own token; an API token does not open them, nor the reverse."""
        assert self.guard.check("/healthz", f"Bearer {PROBE}", "127.0.0.1") is None
        denial = self.guard.check("/readyz", f"Bearer {TOKEN}", "127.0.0.1")
        assert denial is not None
        assert denial.status == 403
        denial = self.guard.check("/triggers", f"Bearer {PROBE}", "127.0.0.1")
        assert denial is not None
        assert denial.status == 403

    def test_probe_refusals_name_the_probe_token(self) -> None:
        """A refused probe is told to use TOWER_PROBE_TOKEN, not the API's tokens."""
        missing = self.guard.check("/healthz", None, "127.0.0.1")
        assert missing is not None
        assert missing.detail == (
            "send a token from TOWER_PROBE_TOKEN as 'Authorization: Bearer <token>'"
        )
        wrong = self.guard.check("/readyz", f"Bearer {TOKEN}", "127.0.0.1")
        assert wrong == Denial(403, "forbidden", "the bearer token is not one of TOWER_PROBE_TOKEN")

    def test_probes_open_without_probe_token(self) -> None:
        """Without TOWER_PROBE_TOKEN the probes need nothing, even when the API does."""
        guard = Guard(api=Tokens.of([TOKEN]))
        assert guard.check("/healthz", None, "127.0.0.1") is None
        assert guard.check("/readyz", None, "127.0.0.1") is None

    def test_rate_limit_per_token(self) -> None:
        """Each token has its own bucket; over it the answer is 429 with Retry-After."""
        limiter = RateLimiter(rate=0.25, burst=1, clock=FakeClock())
        guard = Guard(api=Tokens.of([TOKEN, OTHER]), limiter=limiter)
        assert guard.check("/triggers", f"Bearer {TOKEN}", "10.0.0.1") is None
        assert guard.check("/triggers", f"Bearer {TOKEN}", "10.0.0.2") == Denial(
            429,
            "too many requests",
            "at most 1 requests at once and 0.25 per second "
            "(TOWER_RATE_BURST, TOWER_RATE_LIMIT); retry in 4 s",
            {"Retry-After": "4"},
        )
        assert guard.check("/triggers", f"Bearer {OTHER}", "10.0.0.1") is None

    def test_retry_after_is_at_least_one_second(self) -> None:
        """A wait under a second is announced as Retry-After: 1, never 0."""
        guard = Guard(limiter=RateLimiter(rate=4.0, burst=1, clock=FakeClock()))
        assert guard.check("/triggers", None, "10.0.0.1") is None
        denial = guard.check("/triggers", None, "10.0.0.1")
        assert denial is not None
        assert denial.headers == {"Retry-After": "1"}
        assert denial.detail.endswith("; retry in 1 s")

    def test_rate_limit_per_address_without_tokens(self) -> None:
        """Without tokens the bucket is the client's address; probes are never limited."""
        guard = Guard(limiter=RateLimiter(rate=1.0, burst=1, clock=FakeClock()))
        assert guard.check("/triggers", None, "10.0.0.1") is None
        denial = guard.check("/triggers", None, "10.0.0.1")
        assert denial is not None
        assert denial.status == 429
        assert guard.check("/triggers", None, "10.0.0.2") is None
        assert guard.check("/healthz", None, "10.0.0.1") is None

    @pytest.mark.parametrize(
        ("header", "status"),
        [(None, 401), ("Basic abc", 401), ("Bearer guessed-guessed-guessed", 403)],
    )
    def test_refusals_are_rate_limited_per_address(self, header: str | None, status: int) -> None:
        """401s and 403s spend the address's bucket; past it the answer is 429 with Retry-After."""
        limiter = RateLimiter(rate=0.25, burst=2, clock=FakeClock())
        guard = Guard(api=Tokens.of([TOKEN]), limiter=limiter)
        refused = [guard.check("/triggers", header, "10.0.0.1") for _ in range(3)]
        assert [denial and denial.status for denial in refused] == [status, status, 429]
        assert refused[-1] == Denial(
            429,
            "too many requests",
            "too many refused requests from this address, at most 2 requests at once and "
            "0.25 per second (TOWER_RATE_BURST, TOWER_RATE_LIMIT); retry in 4 s with a token "
            "from TOWER_API_TOKENS",
            {"Retry-After": "4"},
        )
        other = guard.check("/triggers", header, "10.0.0.2")
        assert other is not None
        assert other.status in {401, 403}

    def test_address_over_its_refusals_gets_429_before_its_token_is_read(self) -> None:
        """A right token from an address past its refusals is 429 too: no right-or-wrong oracle."""
        clock = FakeClock()
        guard = Guard(api=Tokens.of([TOKEN]), limiter=RateLimiter(1.0, 1, clock=clock))
        wrong = "Bearer guessed-guessed-guessed"
        first = guard.check("/triggers", wrong, "10.0.0.1")
        assert first is not None
        assert first.status == 403
        for header in (wrong, f"Bearer {TOKEN}"):
            denial = guard.check("/triggers", header, "10.0.0.1")
            assert denial is not None
            assert denial.status == 429
        assert guard.check("/triggers", f"Bearer {TOKEN}", "10.0.0.2") is None
        clock.now = 1.0
        assert guard.check("/triggers", f"Bearer {TOKEN}", "10.0.0.1") is None

    def test_accepted_requests_do_not_spend_the_refusal_budget(self) -> None:
        """A token's own requests, even past its limit, never make its address's refusals 429."""
        guard = Guard(api=Tokens.of([TOKEN]), limiter=RateLimiter(1.0, 1, clock=FakeClock()))
        assert guard.check("/triggers", f"Bearer {TOKEN}", "10.0.0.1") is None
        limited = guard.check("/triggers", f"Bearer {TOKEN}", "10.0.0.1")
        assert limited is not None
        assert limited.status == 429
        refused = guard.check("/triggers", None, "10.0.0.1")
        assert refused is not None
        assert refused.status == 401

    def test_probe_refusals_count_but_probes_are_never_limited(self) -> None:
        """Refused probes spend the address's refusals; a probe itself is never answered 429."""
        guard = Guard(
            api=Tokens.of([TOKEN]),
            probe=Tokens.of([PROBE]),
            limiter=RateLimiter(rate=1.0, burst=2, clock=FakeClock()),
        )
        for header in ("Bearer wrong-probe-token-0000", None, "Bearer wrong-probe-token-0000"):
            denial = guard.check("/healthz", header, "127.0.0.1")
            assert denial is not None
            assert denial.status in {401, 403}
        for path in ("/healthz", "/readyz"):
            assert guard.check(path, f"Bearer {PROBE}", "127.0.0.1") is None
        spent = guard.check("/triggers", f"Bearer {TOKEN}", "127.0.0.1")
        assert spent is not None
        assert spent.status == 429
        assert guard.check("/triggers", f"Bearer {TOKEN}", "127.0.0.2") is None

    def test_accepted_probes_do_not_spend_the_refusal_budget(self) -> None:
        """Probes with the right token, however many, never make the address's refusals 429."""
        guard = Guard(
            api=Tokens.of([TOKEN]),
            probe=Tokens.of([PROBE]),
            limiter=RateLimiter(rate=1.0, burst=1, clock=FakeClock()),
        )
        for _ in range(3):
            assert guard.check("/healthz", f"Bearer {PROBE}", "127.0.0.1") is None
        refused = guard.check("/triggers", "Bearer guessed-guessed-guessed", "127.0.0.1")
        assert refused is not None
        assert refused.status == 403

    def test_refused_probes_leave_an_open_api_alone(self) -> None:
        """Without API tokens the API's bucket is the address's, untouched by refused probes."""
        guard = Guard(
            probe=Tokens.of([PROBE]), limiter=RateLimiter(rate=1.0, burst=1, clock=FakeClock())
        )
        for _ in range(3):
            assert guard.check("/readyz", None, "127.0.0.1") is not None
        assert guard.check("/triggers", None, "127.0.0.1") is None

    def test_inactive_without_tokens_or_limit(self) -> None:
        """An open tower without a limit needs no guard at all."""
        assert not Guard().active


class TestAuthenticatedTower:
    async def test_every_answer_of_the_api(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """401, 403 and 202 on POST; probes open; errors in the usual JSON shape."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, api_tokens=Tokens.of([TOKEN, OTHER])
        )
        async with run_tower(settings) as tower:
            client = tower.client
            missing = await client.post("/triggers", json=VALID)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'Bearer realm="tower-trio"'
            assert missing.json()["error"] == "unauthorized"
            assert missing.json()["details"] == [
                "send a token from TOWER_API_TOKENS as 'Authorization: Bearer <token>'"
            ]
            wrong = await client.post(
                "/triggers", json=VALID, headers={"Authorization": "Bearer guessed-guessed-guessed"}
            )
            assert wrong.status_code == 403
            assert wrong.json() == {
                "error": "forbidden",
                "details": ["the bearer token is not one of TOWER_API_TOKENS"],
            }
            for token in (TOKEN, OTHER):
                ok = await client.post(
                    "/triggers", json=VALID, headers={"Authorization": f"Bearer {token}"}
                )
                assert ok.status_code == 202
            listed = await client.get("/triggers", headers={"Authorization": f"Bearer {TOKEN}"})
            assert len(listed.json()["items"]) == 2
            for path in ("/triggers", "/plugins", "/protocols", "/openapi.json", "/nowhere"):
                assert (await client.get(path)).status_code == 401, path
            assert (await client.get("/healthz")).status_code == 200

    async def test_probe_token(self, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
        """With TOWER_PROBE_TOKEN set, the probes need it and the API stays open."""
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, probe_token=Tokens.of([PROBE])
        )
        async with run_tower(settings) as tower:
            client = tower.client
            assert (await client.get("/healthz")).status_code == 401
            answer = await client.get("/healthz", headers={"Authorization": f"Bearer {PROBE}"})
            assert answer.status_code == 200
            assert (await client.post("/triggers", json=VALID)).status_code == 202

    async def test_tokens_never_logged(
        self, amqp_url: str, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Refused and accepted requests are logged without the tokens they carried."""
        guess = "guessed-token-that-is-long-enough"
        settings = tower_settings(
            amqp_url, broker.exchange, tmp_path, api_tokens=Tokens.of([TOKEN])
        )
        with caplog.at_level(logging.DEBUG):
            async with run_tower(settings) as tower:
                for token in (guess, TOKEN):
                    await tower.client.post(
                        "/triggers", json=VALID, headers={"Authorization": f"Bearer {token}"}
                    )
        logged = "\n".join(f"{record.__dict__}" for record in caplog.records)
        assert "http.denied" in logged
        assert guess not in logged
        assert TOKEN not in logged

    async def test_rate_limited_tower(self, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
        """Past the burst, a token gets 429 with Retry-After and a JSON error body."""
        settings = tower_settings(
            amqp_url,
            broker.exchange,
            tmp_path,
            api_tokens=Tokens.of([TOKEN, OTHER]),
            rate_limit=0.01,
            rate_burst=2,
        )
        async with run_tower(settings) as tower:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            statuses = [
                (await tower.client.post("/triggers", json=VALID, headers=headers)).status_code
                for _ in range(3)
            ]
            assert statuses == [202, 202, 429]
            limited = await tower.client.get("/triggers", headers=headers)
            assert limited.status_code == 429
            assert 90 <= int(limited.headers["retry-after"]) <= 100
            assert limited.json()["error"] == "too many requests"
            other = await tower.client.get(
                "/triggers", headers={"Authorization": f"Bearer {OTHER}"}
            )
            assert other.status_code == 200
            assert (await tower.client.get("/healthz")).status_code == 200

    async def test_refusals_end_in_429(self, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
        """Repeated 403s and 401s from one address end in 429; scrapes, probes, others go on."""
        settings = tower_settings(
            amqp_url,
            broker.exchange,
            tmp_path,
            api_tokens=Tokens.of([TOKEN]),
            rate_limit=0.01,
            rate_burst=3,
        )
        wrong = {"Authorization": "Bearer guessed-guessed-guessed"}
        right = {"Authorization": f"Bearer {TOKEN}"}
        async with run_tower(settings) as tower, _client_from("127.0.0.2", tower) as neighbour:
            with trio.fail_after(30):
                client = tower.client
                statuses = [
                    (await client.post("/triggers", json=VALID, headers=wrong)).status_code
                    for _ in range(3)
                ]
                assert statuses == [403, 403, 403]
                for headers in (wrong, {}, right):
                    limited = await client.post("/triggers", json=VALID, headers=headers)
                    assert limited.status_code == 429
                    assert 90 <= int(limited.headers["retry-after"]) <= 100
                    assert limited.json()["error"] == "too many requests"
                    assert "too many refused requests" in limited.json()["details"][0]
                # The promise kept: scrapes and probes are never limited.
                for _ in range(5):
                    assert (await client.get("/metrics")).status_code == 200
                    assert (await client.get("/healthz")).status_code == 200
                accepted = await neighbour.post("/triggers", json=VALID, headers=right)
                assert accepted.status_code == 202
                assert (await neighbour.get("/triggers", headers=wrong)).status_code == 403

    async def test_auth_off_is_said_at_start(
        self, amqp_url: str, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A tower without tokens says so in its start-up log."""
        with caplog.at_level(logging.INFO):
            async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)):
                pass
        assert any("http.auth_off" in f"{record.__dict__}" for record in caplog.records)


class TestLimits:
    def test_total_keys_capped(self) -> None:
        """A spec with more keys in all than MAX_JSON_KEYS is refused with its field."""
        spec: dict[str, object] = {"n": {f"k{i}": i for i in range(MAX_JSON_KEYS - 1)}}
        Trigger(api_version="OT-2/v1", protocol="P", spec=spec)
        spec["one-more"] = 0
        with pytest.raises(InvalidTriggerError, match=f"more than {MAX_JSON_KEYS} keys"):
            Trigger(api_version="OT-2/v1", protocol="P", spec=spec)

    def test_plate_wells_count_together(self) -> None:
        """The key cap applies to a plate's wells together, not to each well."""
        wells = [{f"k{i}": i for i in range(MAX_JSON_KEYS // 96 + 1)} for _ in range(96)]
        with pytest.raises(InvalidTriggerError) as excinfo:
            Trigger(
                api_version="OT-2/v1", protocol="P", spec=wells, plate=Plate(rows=8, columns=12)
            )
        assert f"more than {MAX_JSON_KEYS} keys" in str(excinfo.value)

    def test_long_strings_refused(self) -> None:
        """A string value or a key longer than MAX_STRING_LENGTH is refused with its path."""
        long = "x" * (MAX_STRING_LENGTH + 1)
        with pytest.raises(InvalidTriggerError, match=r"spec\.a\.b: is a string longer"):
            Trigger(api_version="OT-2/v1", protocol="P", spec={"a": {"b": long}})
        with pytest.raises(InvalidTriggerError, match="has a key longer"):
            Trigger(api_version="OT-2/v1", protocol="P", spec={long: 1})
        with pytest.raises(InvalidTriggerError, match=r"metadata\.spec\.note: is a string"):
            Trigger(
                api_version="OT-2/v1",
                protocol="P",
                spec={"a": 1},
                metadata=Metadata(spec={"note": long}),
            )

    def test_longest_strings_accepted(self) -> None:
        """A value or a key of exactly MAX_STRING_LENGTH characters is accepted."""
        longest = "x" * MAX_STRING_LENGTH
        Trigger(api_version="OT-2/v1", protocol="P", spec={"note": longest})
        Trigger(api_version="OT-2/v1", protocol="P", spec={longest: 1})

    @pytest.mark.parametrize("container", [dict, list])
    def test_nesting_capped(self, container: type) -> None:
        """A spec nested MAX_JSON_DEPTH levels deep is accepted; one level more is refused."""

        def spec(levels: int) -> dict[str, object]:
            # The spec object is the first level; the rest are ``container``s.
            value: object = 1
            for _ in range(levels - 1):
                value = {"a": value} if container is dict else [value]
            return {"a": value}

        Trigger(api_version="OT-2/v1", protocol="P", spec=spec(MAX_JSON_DEPTH))
        with pytest.raises(InvalidTriggerError) as excinfo:
            Trigger(api_version="OT-2/v1", protocol="P", spec=spec(MAX_JSON_DEPTH + 1))
        ((field, message),) = [(e.field, e.message) for e in excinfo.value.errors]
        step = ".a" if container is dict else "[0]"
        assert field == "spec.a" + step * MAX_JSON_DEPTH
        assert message == f"is nested more than {MAX_JSON_DEPTH} levels deep"

    async def test_http_reports_the_key_cap(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Over HTTP, too many keys is a 422 naming the field."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path)
        spec = {f"k{i}": 0 for i in range(MAX_JSON_KEYS + 1)}
        async with run_tower(settings) as tower:
            response = await tower.client.post("/triggers", json={**VALID, "spec": spec})
        assert response.status_code == 422
        assert response.json()["details"] == [
            {"field": "spec", "message": f"has more than {MAX_JSON_KEYS} keys in all"}
        ]


class TestSlowClients:
    async def test_request_head_must_arrive_in_time(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A client that never finishes its request head is disconnected (slow-loris)."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, http_keep_alive_timeout=0.3)
        async with run_tower(settings) as tower:
            stream = await _connect(tower.running.http_urls[0])
            async with stream:
                await stream.send_all(b"POST /triggers HTTP/1.1\r\nHost: tower\r\nX-Slow: ")
                with trio.fail_after(10):
                    assert await _read_to_end(stream) == b""

    async def test_request_body_must_arrive_in_time(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """A client that stops sending its body is answered 408 or cut off, not waited for."""
        settings = tower_settings(amqp_url, broker.exchange, tmp_path, http_read_timeout=0.3)
        async with run_tower(settings) as tower:
            stream = await _connect(tower.running.http_urls[0])
            async with stream:
                await stream.send_all(
                    b"POST /triggers HTTP/1.1\r\nHost: tower\r\n"
                    b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"api'
                )
                with trio.fail_after(10):
                    answer = await _read_to_end(stream)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


class TestEarlyAnswers:
    async def test_answer_before_the_body_closes_the_connection(
        self, amqp_url: str, broker: Broker, tmp_path: Path
    ) -> None:
        """Errors sent before the body was read close the connection; the next request is served."""
        async with run_tower(tower_settings(amqp_url, broker.exchange, tmp_path)) as tower:
            for _ in range(20):
                for refused in (
                    await tower.client.post("/triggers?wait=soon", json=VALID),
                    await tower.client.put("/triggers", json=VALID),
                ):
                    assert refused.status_code in {400, 405}
                    assert refused.headers["connection"] == "close"
                with trio.fail_after(5):
                    accepted = await tower.client.post("/triggers", json=VALID)
                assert accepted.status_code == 202
                assert "connection" not in accepted.headers


@asynccontextmanager
async def _client_from(address: str, tower: Tower) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``tower`` whose connections come from another loopback address."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        base_url=tower.running.http_urls[0], transport=transport, timeout=30
    ) as client:
        yield client


async def _connect(url: str) -> trio.SocketStream:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return await trio.open_tcp_stream(host, int(port))


async def _read_to_end(stream: trio.SocketStream) -> bytes:
    received = b""
    while chunk := await stream.receive_some():
        received += chunk
    return received
