"""Broker errors as the operator reads them: the AMQP client's account, the tower's settings."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio

from tests._helpers import run_tower, tower_settings, unused_port, watching
from tests.test_recovery import _fields, _named
from tower_trio import _cli, amqp
from tower_trio._broker_advice import describe_broker_error

if TYPE_CHECKING:
    from pathlib import Path

_CLIENT_CERT = (
    "check TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE, and that the broker trusts the CA "
    "that signed that certificate"
)

# The operator's fix for each TLS failure that is fixed in a setting, word for word.
_TLS_FIXES = {
    amqp.TLSFailure.NAME_MISMATCH: (
        "connect with a host name the certificate was issued for (the host in TOWER_AMQP_URL)"
    ),
    amqp.TLSFailure.UNTRUSTED: (
        "check TOWER_AMQP_CA_FILE: it must hold the CA that signed the broker's certificate "
        "(unset, the system's CAs are trusted)"
    ),
    amqp.TLSFailure.CLIENT_CERT_REQUIRED: (
        "the broker requires a client certificate: set TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE"
    ),
    amqp.TLSFailure.CLIENT_CERT_REFUSED: _CLIENT_CERT,
    amqp.TLSFailure.HANDSHAKE_REFUSED: (
        "check that the broker accepts TLS 1.2 or later and, if it requires client "
        "certificates, set TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE"
    ),
    amqp.TLSFailure.CLOSED_AFTER_HANDSHAKE: (
        "it most likely refused the client certificate or the lack of one; " + _CLIENT_CERT
    ),
    amqp.TLSFailure.CLOSED_DURING_HANDSHAKE: (
        "check that this is the broker's TLS port and, if the broker requires client "
        "certificates, " + _CLIENT_CERT
    ),
}

# Fixed in the URL's scheme or port, which the client's own advice already says.
_CLIENT_WORDING = [amqp.TLSFailure.NOT_TLS, amqp.TLSFailure.TLS_PORT]


def _tls_error(failure: amqp.TLSFailure) -> amqp.TLSError:
    return amqp.TLSError("rabbit.lab", 5671, "it went wrong", "the client's advice", failure)


class TestDescribe:
    """describe_broker_error: the client's account of what happened, the tower's fix."""

    def test_unreachable_names_the_url_variable(self) -> None:
        """An unreachable broker points at TOWER_AMQP_URL."""
        error = amqp.BrokerUnreachableError("rabbit.lab", 5672, "connection refused")
        assert describe_broker_error(error) == (
            "cannot reach the AMQP broker at rabbit.lab:5672: connection refused; check that "
            "RabbitMQ is running there and that TOWER_AMQP_URL points at it"
        )

    @pytest.mark.parametrize("failure", list(_TLS_FIXES), ids=lambda failure: failure.name)
    def test_tls_failure_names_the_setting(self, failure: amqp.TLSFailure) -> None:
        """A TLS failure fixed in a setting keeps what happened and names the variable."""
        assert describe_broker_error(_tls_error(failure)) == (
            "TLS with the AMQP broker at rabbit.lab:5671 failed: it went wrong; "
            + _TLS_FIXES[failure]
        )

    @pytest.mark.parametrize("failure", _CLIENT_WORDING, ids=lambda failure: failure.name)
    def test_tls_failure_fixed_in_the_url_keeps_the_clients_words(
        self, failure: amqp.TLSFailure
    ) -> None:
        """A wrong scheme or port for TLS is told in the client's own words."""
        error = _tls_error(failure)
        assert describe_broker_error(error) == str(error)

    def test_every_tls_failure_is_worded(self) -> None:
        """Each kind of TLS failure either names a setting or is told in the client's words."""
        assert set(_TLS_FIXES) | set(_CLIENT_WORDING) == set(amqp.TLSFailure)

    @pytest.mark.parametrize(
        "error",
        [
            amqp.AuthenticationError(403, "ACCESS_REFUSED", username="guest"),
            amqp.ConnectionLostError("connection reset by peer"),
            OSError("no space left"),
        ],
        ids=["login", "lost", "os"],
    )
    def test_other_errors_keep_their_message(self, error: BaseException) -> None:
        """Errors whose fix is no tower setting are shown as they are."""
        assert describe_broker_error(error) == str(error)

    def test_a_copy_raised_by_another_task_is_worded_alike(self) -> None:
        """The copy of a failure that each waiting task raises still names the setting."""
        error = _tls_error(amqp.TLSFailure.UNTRUSTED)
        assert describe_broker_error(error._fresh()) == describe_broker_error(error)


class TestWhereTheOperatorSeesIt:
    """The tower's log, /readyz and command line say the tower's variables."""

    async def test_unreachable_broker_in_log_and_readyz(
        self, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """broker.disconnected and /readyz tell an unreachable broker's fix as TOWER_AMQP_URL."""
        port = unused_port()
        settings = tower_settings(
            f"amqp://guest:guest@127.0.0.1:{port}/", f"test.{unique}", tmp_path, shutdown_grace=0.1
        )
        with (
            caplog.at_level(logging.INFO, logger="tower_trio"),
            watching("tower_trio._publisher", "broker.disconnected") as disconnected,
            trio.fail_after(15),
        ):
            async with run_tower(settings) as tower:
                await disconnected.wait_for(1)
                ready = await tower.client.get("/readyz")
        expected = (
            f"cannot reach the AMQP broker at 127.0.0.1:{port}: connection refused; check "
            "that RabbitMQ is running there and that TOWER_AMQP_URL points at it"
        )
        (logged, *_) = _named(caplog, "broker.disconnected")
        assert str(_fields(logged)["error"]) == expected
        assert ready.json()["details"][0] == f"broker not connected: {expected}"

    def test_a_client_error_on_the_command_line_is_one_line_in_the_towers_terms(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An AMQP error that reaches the command line is one line naming the variable, exit 2."""

        def unreachable(environ: object) -> int:
            raise amqp.BrokerUnreachableError("rabbit.lab", 5672, "connection refused")

        monkeypatch.setattr(_cli, "_run", unreachable)
        assert _cli.main(["run"], {}) == _cli.EXIT_USAGE
        assert capsys.readouterr().err == (
            "tower-trio: error: cannot reach the AMQP broker at rabbit.lab:5672: connection "
            "refused; check that RabbitMQ is running there and that TOWER_AMQP_URL points at it\n"
        )
