"""AMQP over TLS, against TLS listeners that the tests start on the local RabbitMQ.

Two listeners run for this module, both trusting a throwaway CA: one takes
clients with or without a certificate, the other requires one (mutual TLS).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import ssl
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from tests._helpers import VALID, Broker, run_tower, tower_settings
from tests.amqp._certificates import BROKER_NAME, TLSFiles, make_tls_files
from tests.amqp._tls_broker import LISTEN_ADDRESS, tls_listener, tls_ports
from tower_trio import ConfigError, amqp
from tower_trio._config import Settings
from tower_trio._serialization import load_trigger
from tower_trio.amqp._tls import tls_error

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def tls_files() -> Iterator[TLSFiles]:
    """A throwaway CA with certificates for the broker and for clients."""
    with make_tls_files() as files:
        yield files


@pytest.fixture(scope="module")
def tls_port(tls_files: TLSFiles) -> Iterator[int]:
    """A TLS listener that verifies client certificates but does not require one."""
    with tls_listener(tls_files, require_client_cert=False) as port:
        yield port


@pytest.fixture(scope="module")
def mtls_port(tls_files: TLSFiles) -> Iterator[int]:
    """A TLS listener that refuses clients without a certificate from the test CA."""
    with tls_listener(tls_files, require_client_cert=True) as port:
        yield port


@pytest.fixture
def tls_url(tls_port: int, amqp_vhost: str) -> str:
    """An amqps:// URL for the session's vhost, by the name in the broker's certificate."""
    return f"amqps://guest:guest@{BROKER_NAME}:{tls_port}/{amqp_vhost}"


@pytest.fixture
def mtls_url(mtls_port: int, amqp_vhost: str) -> str:
    """An amqps:// URL of the listener that requires client certificates."""
    return f"amqps://guest:guest@{BROKER_NAME}:{mtls_port}/{amqp_vhost}"


def _trusting(files: TLSFiles) -> ssl.SSLContext:
    return amqp.create_ssl_context(ca_file=files.ca)


async def _publish_and_confirm(connection: amqp.Connection, body: bytes, count: int) -> None:
    async with connection.open_channel(confirm=True) as channel:
        queue = (await channel.queue_declare("", exclusive=True)).name
        confirmations = [await channel.publish("", queue, body) for _ in range(count)]
        outcomes = {await confirmation.wait() for confirmation in confirmations}
        assert outcomes == {amqp.Outcome.ACK}
        assert (await channel.queue_declare(queue, passive=True)).message_count == count
        message = await channel.basic_get(queue)
        assert message is not None
        assert message.body == body


class TestURL:
    """amqps:// URLs."""

    def test_default_port(self) -> None:
        """An amqps:// URL without a port means RabbitMQ's TLS port, 5671."""
        url = amqp.URL.parse("amqps://broker.lab/")
        assert (url.scheme, url.host, url.port, url.tls) == ("amqps", "broker.lab", 5671, True)

    def test_amqp_is_not_tls(self) -> None:
        """An amqp:// URL stays plain TCP on port 5672."""
        url = amqp.URL.parse("amqp://broker.lab/")
        assert (url.port, url.tls) == (5672, False)

    def test_redacted_keeps_the_scheme(self) -> None:
        """redacted() of an amqps:// URL still says amqps, and hides the password."""
        url = amqp.URL.parse("amqps://lab:secret@broker.lab:5999/lab")
        assert url.redacted() == "amqps://lab:***@broker.lab:5999/lab"


class TestCreateSSLContext:
    """amqp.create_ssl_context."""

    def test_verifies_by_default(self) -> None:
        """Without arguments, the broker's certificate and host name are both checked."""
        context = amqp.create_ssl_context()
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname

    def test_ca_file_is_the_only_trust(self, tls_files: TLSFiles) -> None:
        """With a CA file, exactly its CA is trusted, not the system's as well."""
        context = amqp.create_ssl_context(ca_file=tls_files.ca)
        assert len(context.get_ca_certs()) == 1
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname

    def test_missing_ca_file(self, tmp_path: Path) -> None:
        """A CA file that does not exist is named in the error."""
        missing = tmp_path / "missing.pem"
        with pytest.raises(
            amqp.AMQPConfigError,
            match=re.escape(f"cannot use the CA file '{missing}': no such file"),
        ):
            amqp.create_ssl_context(ca_file=missing)

    def test_ca_file_without_certificates(self, tls_files: TLSFiles) -> None:
        """A CA file that holds no certificate (here a key) is refused, with OpenSSL's reason."""
        with pytest.raises(amqp.AMQPConfigError, match="no certificate or crl found"):
            amqp.create_ssl_context(ca_file=tls_files.client_key)

    def test_key_without_certificate(self, tls_files: TLSFiles) -> None:
        """A client key alone is refused: it is of no use without its certificate."""
        with pytest.raises(amqp.AMQPConfigError, match="without a client certificate"):
            amqp.create_ssl_context(key_file=tls_files.client_key)

    def test_key_of_another_certificate(self, tls_files: TLSFiles) -> None:
        """A key that does not belong to the certificate is refused, naming both files."""
        with pytest.raises(amqp.AMQPConfigError, match="key values mismatch") as info:
            amqp.create_ssl_context(cert_file=tls_files.client_cert, key_file=tls_files.server_key)
        assert str(tls_files.client_cert) in str(info.value)
        assert str(tls_files.server_key) in str(info.value)

    def test_encrypted_key_is_refused_without_a_prompt(self, tls_files: TLSFiles) -> None:
        """An encrypted key raises at once instead of asking for a password on the terminal."""
        with pytest.raises(amqp.AMQPConfigError, match="is encrypted") as info:
            amqp.create_ssl_context(
                cert_file=tls_files.client_cert, key_file=tls_files.client_key_encrypted
            )
        assert str(tls_files.client_key_encrypted) in str(info.value)

    async def test_ssl_context_needs_amqps(self) -> None:
        """An SSL context with an amqp:// URL is refused rather than silently unused."""
        with pytest.raises(amqp.AMQPConfigError, match="not an amqps:// URL") as info:
            async with amqp.open_connection(
                "amqp://lab:secret@localhost/", ssl_context=amqp.create_ssl_context()
            ):
                pass  # pragma: no cover
        assert "secret" not in str(info.value)


class TestOverTLS:
    """Connecting to the broker's TLS listener."""

    async def test_publish_and_confirm(self, tls_url: str, tls_files: TLSFiles) -> None:
        """Messages published over TLS are confirmed and arrive intact."""
        async with amqp.open_connection(tls_url, ssl_context=_trusting(tls_files)) as connection:
            await _publish_and_confirm(connection, b'{"plate": "P-7"}', 300)

    async def test_large_body(self, tls_url: str, tls_files: TLSFiles) -> None:
        """A body larger than a TLS record and many frames arrives intact."""
        body = os.urandom(1 << 20)
        async with amqp.open_connection(tls_url, ssl_context=_trusting(tls_files)) as connection:
            await _publish_and_confirm(connection, body, 2)

    async def test_system_cas_do_not_trust_a_private_ca(self, tls_url: str) -> None:
        """Without a CA file, a broker certificate from a private CA is not trusted."""
        with pytest.raises(amqp.TLSError, match="the broker's certificate is not trusted") as info:
            async with amqp.open_connection(tls_url):
                pass  # pragma: no cover
        assert "ca_file of create_ssl_context" in str(info.value)
        assert info.value.failure is amqp.TLSFailure.UNTRUSTED

    async def test_wrong_ca(self, tls_url: str, tls_files: TLSFiles, tls_port: int) -> None:
        """A CA file without the broker's CA gives an error that names the CA setting."""
        context = amqp.create_ssl_context(ca_file=tls_files.other_ca)
        with pytest.raises(amqp.TLSError) as info:
            async with amqp.open_connection(tls_url, ssl_context=context):
                pass  # pragma: no cover
        message = str(info.value)
        assert message.startswith(f"TLS with the AMQP broker at {BROKER_NAME}:{tls_port} failed")
        assert "the broker's certificate is not trusted" in message
        assert "check the CAs the SSL context trusts (ca_file of create_ssl_context)" in message
        assert (info.value.host, info.value.port) == (BROKER_NAME, tls_port)
        assert info.value.failure is amqp.TLSFailure.UNTRUSTED

    async def test_host_name_mismatch(
        self, tls_port: int, amqp_vhost: str, tls_files: TLSFiles
    ) -> None:
        """Connecting by a name the certificate was not issued for is refused, naming it."""
        url = f"amqps://guest:guest@{LISTEN_ADDRESS}:{tls_port}/{amqp_vhost}"
        with pytest.raises(
            amqp.TLSError,
            match=re.escape(f"certificate is not valid for the name '{LISTEN_ADDRESS}'"),
        ) as info:
            async with amqp.open_connection(url, ssl_context=_trusting(tls_files)):
                pass  # pragma: no cover
        assert "(the host in the URL)" in str(info.value)
        assert info.value.failure is amqp.TLSFailure.NAME_MISMATCH

    async def test_plain_amqp_port(self, amqp_url: str, tls_files: TLSFiles) -> None:
        """amqps:// to the broker's plain AMQP port says that it is a plain port."""
        plain = amqp.URL.parse(amqp_url)
        url = f"amqps://guest:guest@{plain.host}:{plain.port}/"
        with pytest.raises(amqp.TLSError, match="the server does not answer in TLS") as info:
            async with amqp.open_connection(url, ssl_context=_trusting(tls_files)):
                pass  # pragma: no cover
        assert "looks like a plain AMQP port" in str(info.value)
        assert info.value.failure is amqp.TLSFailure.NOT_TLS

    async def test_amqp_url_for_the_tls_port(self, tls_port: int, amqp_vhost: str) -> None:
        """amqp:// to a TLS port says to use amqps:// instead of blaming the protocol."""
        url = f"amqp://guest:guest@{BROKER_NAME}:{tls_port}/{amqp_vhost}"
        with pytest.raises(amqp.TLSError, match="use an amqps:// URL for this port") as info:
            async with amqp.open_connection(url):
                pass  # pragma: no cover
        assert info.value.failure is amqp.TLSFailure.TLS_PORT

    async def test_handshake_bounded_by_connect_timeout(
        self, nursery: trio.Nursery, tls_files: TLSFiles
    ) -> None:
        """A server that accepts but never answers the TLS handshake times out as configured."""
        accepted = trio.Event()

        async def silent(stream: trio.SocketStream) -> None:
            accepted.set()
            await trio.sleep_forever()

        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host=LISTEN_ADDRESS))
        port = listeners[0].socket.getsockname()[1]
        url = f"amqps://guest:guest@{BROKER_NAME}:{port}/?connection_timeout=0.5"
        with pytest.raises(
            amqp.BrokerUnreachableError,
            match=r"no connection within 0\.5 s \(TCP connect, TLS and AMQP handshakes\)",
        ):
            async with amqp.open_connection(url, ssl_context=_trusting(tls_files)):
                pass  # pragma: no cover
        assert accepted.is_set()

    @pytest.mark.broker
    @pytest.mark.subprocess
    def test_listener_is_stopped_after_use(self, tls_files: TLSFiles) -> None:
        """The test suite's TLS listener is gone from the broker once its block ends."""
        with tls_listener(tls_files, require_client_cert=False) as port:
            assert port in tls_ports()
        assert port not in tls_ports()


class TestMutualTLS:
    """A broker that requires client certificates."""

    async def test_client_certificate_accepted(self, mtls_url: str, tls_files: TLSFiles) -> None:
        """With a certificate from a CA the broker trusts, publishing works."""
        context = amqp.create_ssl_context(
            ca_file=tls_files.ca, cert_file=tls_files.client_cert, key_file=tls_files.client_key
        )
        async with amqp.open_connection(mtls_url, ssl_context=context) as connection:
            await _publish_and_confirm(connection, b"mutual", 10)

    async def test_key_in_the_certificate_file(self, mtls_url: str, tls_files: TLSFiles) -> None:
        """A client certificate with its key in the same file is enough."""
        context = amqp.create_ssl_context(ca_file=tls_files.ca, cert_file=tls_files.client_combined)
        async with amqp.open_connection(mtls_url, ssl_context=context) as connection:
            await _publish_and_confirm(connection, b"combined", 1)

    async def test_no_client_certificate(self, mtls_url: str, tls_files: TLSFiles) -> None:
        """Without a client certificate the error names the certificate settings."""
        with pytest.raises(amqp.TLSError) as info:
            async with amqp.open_connection(mtls_url, ssl_context=_trusting(tls_files)):
                pass  # pragma: no cover
        assert "cert_file and key_file of create_ssl_context" in str(info.value)
        # Under TLS 1.3 the broker's alert is read, or lost to the reset that follows it.
        assert info.value.failure in {
            amqp.TLSFailure.CLIENT_CERT_REQUIRED,
            amqp.TLSFailure.CLOSED_AFTER_HANDSHAKE,
        }

    async def test_no_client_certificate_tls12(self, mtls_url: str, tls_files: TLSFiles) -> None:
        """Over TLS 1.2 the broker refuses in the handshake, and the error says so."""
        context = _trusting(tls_files)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(amqp.TLSError, match="the broker refused the TLS handshake") as info:
            async with amqp.open_connection(mtls_url, ssl_context=context):
                pass  # pragma: no cover
        assert "cert_file and key_file of create_ssl_context" in str(info.value)

    async def test_client_certificate_from_another_ca(
        self, mtls_url: str, tls_files: TLSFiles
    ) -> None:
        """A client certificate the broker does not trust is refused, naming the settings."""
        context = amqp.create_ssl_context(
            ca_file=tls_files.ca, cert_file=tls_files.other_client_combined
        )
        with pytest.raises(amqp.TLSError) as info:
            async with amqp.open_connection(mtls_url, ssl_context=context):
                pass  # pragma: no cover
        assert "cert_file and key_file of create_ssl_context" in str(info.value)


class TestErrorMeaning:
    """What a failed TLS connection is reported as, for failures a broker shows only by chance."""

    def test_reset_right_after_handshake(self) -> None:
        """A reset before the first AMQP frame points at the client certificate."""
        url = amqp.URL.parse("amqps://broker.lab/")
        reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        broken = trio.BrokenResourceError()
        broken.__cause__ = reset
        error = tls_error(url, broken, handshake_done=True)
        assert str(error) == (
            "TLS with the AMQP broker at broker.lab:5671 failed: the broker closed the "
            "connection right after the TLS handshake (connection reset by peer); it most "
            "likely refused the client certificate or the lack of one; check the client "
            "certificate and key (cert_file and key_file of create_ssl_context), and that the "
            "broker trusts the CA that signed that certificate"
        )
        assert error.failure is amqp.TLSFailure.CLOSED_AFTER_HANDSHAKE

    def test_closed_during_handshake(self) -> None:
        """A server that hangs up during the TLS handshake is not taken for a bad certificate."""
        url = amqp.URL.parse("amqps://broker.lab:5999/")
        error = tls_error(url, None, handshake_done=False)
        assert "closed the connection during the TLS handshake" in str(error)
        assert "check that this is the broker's TLS port" in str(error)
        assert error.failure is amqp.TLSFailure.CLOSED_DURING_HANDSHAKE


class TestTowerSettings:
    """TOWER_AMQP_CA_FILE, TOWER_AMQP_CERT_FILE and TOWER_AMQP_KEY_FILE."""

    def test_read_and_used(self, tls_files: TLSFiles) -> None:
        """The three files are read, and the TLS context trusts the given CA."""
        settings = Settings.from_environ(
            {
                "TOWER_AMQP_URL": "amqps://broker.lab/",
                "TOWER_AMQP_CA_FILE": str(tls_files.ca),
                "TOWER_AMQP_CERT_FILE": str(tls_files.client_cert),
                "TOWER_AMQP_KEY_FILE": str(tls_files.client_key),
            }
        )
        assert settings.amqp_ca_file == tls_files.ca
        assert settings.amqp_cert_file == tls_files.client_cert
        assert settings.amqp_key_file == tls_files.client_key
        context = settings.amqp_ssl_context()
        assert context is not None
        assert len(context.get_ca_certs()) == 1
        assert context.check_hostname

    def test_plain_url_has_no_context(self) -> None:
        """With an amqp:// URL the tower connects without TLS."""
        assert Settings().amqp_ssl_context() is None

    def test_amqps_without_files_trusts_the_system(self) -> None:
        """An amqps:// URL alone verifies the broker against the system's CAs."""
        context = Settings(amqp_url="amqps://broker.lab/").amqp_ssl_context()
        assert context is not None
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname

    @pytest.mark.parametrize(
        "variable", ["TOWER_AMQP_CA_FILE", "TOWER_AMQP_CERT_FILE", "TOWER_AMQP_KEY_FILE"]
    )
    def test_missing_file(self, variable: str, tmp_path: Path) -> None:
        """A file that does not exist is refused, naming the variable and the path."""
        missing = str(tmp_path / "missing.pem")
        with pytest.raises(ConfigError) as info:
            Settings.from_environ({"TOWER_AMQP_URL": "amqps://broker.lab/", variable: missing})
        assert str(info.value) == f"{variable}={missing!r} is invalid: no such file"

    def test_folder_instead_of_file(self, tmp_path: Path) -> None:
        """A folder is refused with a reason that says so."""
        with pytest.raises(ConfigError, match="is a folder, not a file"):
            Settings.from_environ(
                {"TOWER_AMQP_URL": "amqps://broker.lab/", "TOWER_AMQP_CA_FILE": str(tmp_path)}
            )

    def test_files_with_a_plain_url(self, tls_files: TLSFiles) -> None:
        """TLS files with an amqp:// URL stop start-up instead of publishing in clear text."""
        with pytest.raises(
            ConfigError,
            match=r"^TOWER_AMQP_CA_FILE is set, but TOWER_AMQP_URL is not an amqps:// URL",
        ):
            Settings.from_environ({"TOWER_AMQP_CA_FILE": str(tls_files.ca)})

    def test_key_without_certificate(self, tls_files: TLSFiles) -> None:
        """A client key without its certificate is refused."""
        with pytest.raises(
            ConfigError, match=r"^TOWER_AMQP_KEY_FILE is set without TOWER_AMQP_CERT_FILE"
        ):
            Settings.from_environ(
                {
                    "TOWER_AMQP_URL": "amqps://broker.lab/",
                    "TOWER_AMQP_KEY_FILE": str(tls_files.client_key),
                }
            )

    def test_ca_file_that_is_not_a_ca(self, tls_files: TLSFiles) -> None:
        """A readable file without certificates is refused at start-up, naming the variable."""
        with pytest.raises(ConfigError, match=r"^TOWER_AMQP_CA_FILE is invalid: cannot use"):
            Settings.from_environ(
                {
                    "TOWER_AMQP_URL": "amqps://broker.lab/",
                    "TOWER_AMQP_CA_FILE": str(tls_files.client_key),
                }
            )

    def test_key_of_another_certificate(self, tls_files: TLSFiles) -> None:
        """A key that does not match the certificate is refused at start-up."""
        with pytest.raises(
            ConfigError,
            match=r"^TOWER_AMQP_CERT_FILE or TOWER_AMQP_KEY_FILE is invalid: .*key values mismatch",
        ):
            Settings.from_environ(
                {
                    "TOWER_AMQP_URL": "amqps://broker.lab/",
                    "TOWER_AMQP_CERT_FILE": str(tls_files.client_cert),
                    "TOWER_AMQP_KEY_FILE": str(tls_files.server_key),
                }
            )

    @pytest.mark.subprocess
    def test_start_up_error_is_one_line(self, tmp_path: Path) -> None:
        """`tower-trio run` with a missing CA file exits 2 with one line naming the variable."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOWER_", "PLUGIN_"))}
        missing = str(tmp_path / "missing.pem")
        environ |= {
            "TOWER_AMQP_URL": "amqps://broker.lab/",
            "TOWER_AMQP_CA_FILE": missing,
            "TOWER_DATA_DIR": str(tmp_path / "data"),
        }
        result = subprocess.run(
            [sys.executable, "-m", "tower_trio", "run"],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"tower-trio: error: TOWER_AMQP_CA_FILE={missing!r} is invalid: no such file"
        ]


class TestTower:
    """The tower publishing over amqps://."""

    async def test_trigger_published_over_tls(
        self, tls_url: str, tls_files: TLSFiles, broker: Broker, tmp_path: Path
    ) -> None:
        """A trigger posted to a tower configured with a CA file is confirmed and arrives."""
        queue = await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(tls_url, broker.exchange, tmp_path, amqp_ca_file=tls_files.ca)
        async with run_tower(settings) as tower:
            response = await tower.client.post("/triggers?wait=published", json=VALID)
        assert response.status_code == 202
        assert response.json()["status"] == "published"
        (message,) = await broker.take(queue, 1)
        assert load_trigger(message.body).uuid == response.json()["uuid"]

    async def test_trigger_published_with_client_certificate(
        self, mtls_url: str, tls_files: TLSFiles, broker: Broker, tmp_path: Path
    ) -> None:
        """A tower with a client certificate publishes to a broker that requires one."""
        queue = await broker.bind("OT-2/v1alpha1")
        settings = tower_settings(
            mtls_url,
            broker.exchange,
            tmp_path,
            amqp_ca_file=tls_files.ca,
            amqp_cert_file=tls_files.client_cert,
            amqp_key_file=tls_files.client_key,
        )
        async with run_tower(settings) as tower:
            response = await tower.client.post("/triggers?wait=published", json=VALID)
        assert response.status_code == 202
        assert response.json()["status"] == "published"
        (message,) = await broker.take(queue, 1)
        assert load_trigger(message.body).uuid == response.json()["uuid"]


def _copied(source: Path, path: Path) -> Path:
    shutil.copyfile(source, path)
    return path


def _replace(path: Path, source: Path) -> None:
    """Swap ``source``'s content in at ``path`` in one rename, as a certificate renewal does."""
    renewed = path.with_name(f"{path.name}.renewed")
    shutil.copyfile(source, renewed)
    renewed.replace(path)


async def _renewal_is_used(
    settings: Settings, broker: Broker, renewal: tuple[Path, Path], *refusal: str
) -> None:
    """A tower whose first connection is refused, saying each of ``refusal``; then a renewal.

    ``renewal`` is the file the tower reads and its renewed content. A
    trigger posted after the renewal must reach the broker.
    """
    queue = await broker.bind("OT-2/v1alpha1")
    with trio.fail_after(20):
        async with run_tower(settings) as tower:
            # The tower starts once its first connection attempt is over.
            first_error = tower.running.publisher.statistics().last_error
            _replace(*renewal)
            response = await tower.client.post("/triggers?wait=published", json=VALID)
    assert first_error is not None
    for phrase in refusal:
        assert phrase in first_error
    assert response.status_code == 202
    assert response.json()["status"] == "published"
    (message,) = await broker.take(queue, 1)
    assert load_trigger(message.body).uuid == response.json()["uuid"]


class TestRenewal:
    """TLS files are read again at every connection, so a renewal needs no restart."""

    async def test_a_renewed_ca_file_is_used_by_the_next_connection(
        self, tls_url: str, tls_files: TLSFiles, broker: Broker, tmp_path: Path
    ) -> None:
        """A CA file replaced after a handshake it failed lets the next connection succeed."""
        ca_file = _copied(tls_files.other_ca, tmp_path / "ca.pem")
        settings = tower_settings(
            tls_url, broker.exchange, tmp_path / "data", amqp_ca_file=ca_file, shutdown_grace=0.5
        )
        renewal = (ca_file, tls_files.ca)
        await _renewal_is_used(
            settings,
            broker,
            renewal,
            "the broker's certificate is not trusted",
            "check TOWER_AMQP_CA_FILE: it must hold the CA",
        )

    async def test_a_renewed_client_certificate_is_used_by_the_next_connection(
        self, mtls_url: str, tls_files: TLSFiles, broker: Broker, tmp_path: Path
    ) -> None:
        """A refused client certificate, once replaced, is used by the next connection."""
        cert_file = _copied(tls_files.other_client_combined, tmp_path / "client.pem")
        settings = tower_settings(
            mtls_url,
            broker.exchange,
            tmp_path / "data",
            amqp_ca_file=tls_files.ca,
            amqp_cert_file=cert_file,
            shutdown_grace=0.5,
        )
        renewal = (cert_file, tls_files.client_combined)
        await _renewal_is_used(settings, broker, renewal, "TOWER_AMQP_CERT_FILE")
