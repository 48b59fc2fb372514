"""Settings read from an explicit environment mapping."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from tests.amqp._certificates import TLSFiles, make_tls_files
from tower_trio import ConfigError, TowerError
from tower_trio._auth import Tokens
from tower_trio._config import Settings, setting_docs

if TYPE_CHECKING:
    from collections.abc import Iterator

VARIABLES = [
    "TOWER_AMQP_URL",
    "TOWER_AMQP_CA_FILE",
    "TOWER_AMQP_CERT_FILE",
    "TOWER_AMQP_KEY_FILE",
    "TOWER_INSTANCE",
    "TOWER_EXCHANGE",
    "TOWER_HTTP_HOST",
    "TOWER_HTTP_PORT",
    "TOWER_MAX_BODY_BYTES",
    "TOWER_WAIT_MAX_BYTES",
    "TOWER_CACHE_MAX_BYTES",
    "TOWER_LIST_MAX_BYTES",
    "TOWER_PUBLISH_TIMEOUT",
    "TOWER_SHUTDOWN_GRACE",
    "TOWER_PLUGINS_DIR",
    "TOWER_PLUGINS",
    "TOWER_CHANNEL_SIZE",
    "TOWER_CONFIRM_WINDOW",
    "TOWER_DATA_DIR",
    "TOWER_JOURNAL_URL",
    "TOWER_JOURNAL_MAX_BYTES",
    "TOWER_LEASE_TTL",
    "TOWER_RETENTION",
    "TOWER_REPLICA_TTL",
    "TOWER_CONFIRM_TIMEOUT",
    "TOWER_UNROUTABLE_EXCHANGE",
    "TOWER_MAX_ATTEMPTS",
    "TOWER_METRICS_TOKEN",
    "TOWER_LOG_LEVEL",
    "TOWER_LOG_FORMAT",
    "TOWER_API_TOKENS",
    "TOWER_PROBE_TOKEN",
    "TOWER_ALLOW_UNAUTHENTICATED",
    "TOWER_RATE_LIMIT",
    "TOWER_RATE_BURST",
    "TOWER_HTTP_KEEP_ALIVE_TIMEOUT",
    "TOWER_HTTP_READ_TIMEOUT",
    "TOWER_HTTP_MAX_CONNECTIONS",
    "TOWER_SCHEMAS_DIR",
    "TOWER_SCHEMAS_STRICT",
]


class TestDefaults:
    @pytest.mark.parametrize(
        ("field", "default"),
        [
            pytest.param("amqp_url", "amqp://guest:guest@localhost:5672/%2F", id="amqp-url"),
            pytest.param("amqp_ca_file", None, id="amqp-ca-file"),
            pytest.param("amqp_cert_file", None, id="amqp-cert-file"),
            pytest.param("amqp_key_file", None, id="amqp-key-file"),
            pytest.param("exchange", "tower.triggers", id="exchange"),
            pytest.param("http_host", "127.0.0.1", id="http-host"),
            pytest.param("http_port", 8000, id="http-port"),
            pytest.param("max_body_bytes", 1024 * 1024, id="max-body-bytes"),
            pytest.param("publish_timeout", 10.0, id="publish-timeout"),
            pytest.param("shutdown_grace", 10.0, id="shutdown-grace"),
            pytest.param("plugins_dir", Path("plugins"), id="plugins-dir"),
            pytest.param("plugins", None, id="plugins"),
            pytest.param("channel_size", 512, id="channel-size"),
            pytest.param("confirm_window", 1024, id="confirm-window"),
            pytest.param("max_attempts", 5, id="max-attempts"),
            pytest.param("log_level", "INFO", id="log-level"),
            pytest.param("log_format", "auto", id="log-format"),
            pytest.param("api_tokens", None, id="api-tokens"),
            pytest.param("probe_token", None, id="probe-token"),
            pytest.param("allow_unauthenticated", False, id="allow-unauthenticated"),
            pytest.param("rate_limit", None, id="rate-limit"),
            pytest.param("rate_burst", 10, id="rate-burst"),
            pytest.param("http_keep_alive_timeout", 5.0, id="keep-alive-timeout"),
            pytest.param("http_read_timeout", 30.0, id="read-timeout"),
            pytest.param("schemas_dir", None, id="schemas-dir"),
            pytest.param("schemas_strict", False, id="schemas-strict"),
            pytest.param("data_dir", Path("var"), id="data-dir"),
            pytest.param("journal_url", None, id="journal-url"),
            pytest.param("journal_max_bytes", None, id="journal-max-bytes"),
            pytest.param("retention", 7 * 86400.0, id="retention"),
            pytest.param("replica_ttl", 10.0, id="replica-ttl"),
            pytest.param("confirm_timeout", 30.0, id="confirm-timeout"),
            pytest.param("unroutable_exchange", None, id="unroutable-exchange"),
        ],
    )
    def test_default(self, field: str, default: object) -> None:
        """An empty environment gives the documented default."""
        assert getattr(Settings.from_environ({}), field) == default

    def test_empty_environ_is_all_defaults(self) -> None:
        """An empty environment gives the same settings as the class defaults."""
        assert Settings.from_environ({}) == Settings()

    def test_unrelated_variables_ignored(self) -> None:
        """Variables that are not settings do not matter, even with a TOWER_ prefix."""
        environ = {"HOME": "/root", "TOWER_COLOUR": "blue", "tower_http_port": "1"}
        assert Settings.from_environ(environ) == Settings()

    def test_process_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a mapping, the process environment is read."""
        for variable in VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("TOWER_HTTP_PORT", "9001")
        assert Settings.from_environ() == Settings(http_port=9001)

    def test_frozen(self) -> None:
        """Settings cannot be changed once read."""
        settings = Settings()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            settings.http_port = 1  # type: ignore[misc]


@pytest.fixture
def tls() -> Iterator[TLSFiles]:
    """A throwaway CA and client certificate, for the TLS settings."""
    with make_tls_files() as files:
        yield files


class TestValidValues:
    @pytest.mark.parametrize(
        ("variable", "raw", "field", "value"),
        [
            pytest.param(
                "TOWER_AMQP_URL",
                " amqp://u:p@rabbit:5672/lab ",
                "amqp_url",
                "amqp://u:p@rabbit:5672/lab",
                id="amqp-url-stripped",
            ),
            pytest.param("TOWER_EXCHANGE", "lab.triggers", "exchange", "lab.triggers", id="exch"),
            pytest.param("TOWER_HTTP_HOST", "0.0.0.0", "http_host", "0.0.0.0", id="host"),
            pytest.param("TOWER_HTTP_PORT", "0", "http_port", 0, id="port-zero"),
            pytest.param("TOWER_HTTP_PORT", "65535", "http_port", 65535, id="port-max"),
            pytest.param("TOWER_HTTP_PORT", " 8080 ", "http_port", 8080, id="port-padded"),
            pytest.param("TOWER_MAX_BODY_BYTES", "1", "max_body_bytes", 1, id="body-one"),
            pytest.param(
                "TOWER_PUBLISH_TIMEOUT", "0.25", "publish_timeout", 0.25, id="timeout-fraction"
            ),
            pytest.param("TOWER_SHUTDOWN_GRACE", "30", "shutdown_grace", 30.0, id="grace-int"),
            pytest.param(
                "TOWER_PLUGINS_DIR", "/srv/plugins", "plugins_dir", Path("/srv/plugins"), id="dir"
            ),
            pytest.param(
                "TOWER_PLUGINS", "riffyn, example,,", "plugins", ("riffyn", "example"), id="list"
            ),
            pytest.param("TOWER_PLUGINS", " , ", "plugins", None, id="plugins-blank"),
            pytest.param("TOWER_CHANNEL_SIZE", "1", "channel_size", 1, id="channel-one"),
            pytest.param("TOWER_CONFIRM_WINDOW", "1000", "confirm_window", 1000, id="window"),
            pytest.param("TOWER_MAX_ATTEMPTS", "1", "max_attempts", 1, id="attempts-one"),
            pytest.param("TOWER_LOG_LEVEL", "debug", "log_level", "DEBUG", id="level-lower"),
            pytest.param("TOWER_LOG_LEVEL", " Warning ", "log_level", "WARNING", id="level-mixed"),
            pytest.param("TOWER_LOG_FORMAT", " JSON ", "log_format", "json", id="format-upper"),
        ],
    )
    def test_parsed(self, variable: str, raw: str, field: str, value: Any) -> None:
        """Each variable is parsed into its setting, and only that setting changes."""
        settings = Settings.from_environ({variable: raw})
        assert getattr(settings, field) == value
        assert settings == attrs.evolve(Settings(), **{field: value})

    def test_every_variable_at_once(self, tls: TLSFiles) -> None:
        """All variables may be given together."""
        environ = {
            "TOWER_AMQP_URL": "amqps://rabbit",
            "TOWER_AMQP_CA_FILE": str(tls.ca),
            "TOWER_AMQP_CERT_FILE": str(tls.client_cert),
            "TOWER_AMQP_KEY_FILE": str(tls.client_key),
            "TOWER_INSTANCE": "tower-a",
            "TOWER_EXCHANGE": "x",
            "TOWER_HTTP_HOST": "::1",
            "TOWER_HTTP_PORT": "1",
            "TOWER_MAX_BODY_BYTES": "2",
            "TOWER_WAIT_MAX_BYTES": "14",
            "TOWER_CACHE_MAX_BYTES": "15",
            "TOWER_LIST_MAX_BYTES": "16",
            "TOWER_PUBLISH_TIMEOUT": "3",
            "TOWER_SHUTDOWN_GRACE": "4",
            "TOWER_PLUGINS_DIR": "p",
            "TOWER_PLUGINS": "a",
            "TOWER_CHANNEL_SIZE": "5",
            "TOWER_CONFIRM_WINDOW": "6",
            "TOWER_MAX_ATTEMPTS": "7",
            "TOWER_LOG_LEVEL": "ERROR",
            "TOWER_LOG_FORMAT": "json",
            "TOWER_DATA_DIR": "d",
            "TOWER_JOURNAL_MAX_BYTES": "8",
            "TOWER_LEASE_TTL": "18",
            "TOWER_RETENTION": "9",
            "TOWER_REPLICA_TTL": "4",
            "TOWER_CONFIRM_TIMEOUT": "10",
            "TOWER_UNROUTABLE_EXCHANGE": "lost",
            "TOWER_METRICS_TOKEN": "m" * 16,
            "TOWER_API_TOKENS": "a" * 16,
            "TOWER_PROBE_TOKEN": "b" * 16,
            "TOWER_ALLOW_UNAUTHENTICATED": "yes",
            "TOWER_RATE_LIMIT": "60/m",
            "TOWER_RATE_BURST": "11",
            "TOWER_HTTP_KEEP_ALIVE_TIMEOUT": "12",
            "TOWER_HTTP_READ_TIMEOUT": "13",
            "TOWER_HTTP_MAX_CONNECTIONS": "17",
            "TOWER_SCHEMAS_DIR": "s",
            "TOWER_SCHEMAS_STRICT": "true",
            "TOWER_JOURNAL_URL": "j/journal.sqlite3",
        }
        assert sorted(environ) == sorted(VARIABLES)
        assert Settings.from_environ(environ) == Settings(
            amqp_url="amqps://rabbit",
            amqp_ca_file=tls.ca,
            amqp_cert_file=tls.client_cert,
            amqp_key_file=tls.client_key,
            instance="tower-a",
            exchange="x",
            http_host="::1",
            http_port=1,
            max_body_bytes=2,
            wait_max_bytes=14,
            cache_max_bytes=15,
            list_max_bytes=16,
            publish_timeout=3.0,
            shutdown_grace=4.0,
            plugins_dir=Path("p"),
            plugins=("a",),
            channel_size=5,
            confirm_window=6,
            max_attempts=7,
            log_level="ERROR",
            log_format="json",
            data_dir=Path("d"),
            journal_url=Path("j/journal.sqlite3"),
            journal_max_bytes=8,
            lease_ttl=18.0,
            retention=9.0,
            replica_ttl=4.0,
            confirm_timeout=10.0,
            unroutable_exchange="lost",
            metrics_token=Tokens.of(["m" * 16]),
            api_tokens=Tokens.of(["a" * 16]),
            probe_token=Tokens.of(["b" * 16]),
            allow_unauthenticated=True,
            rate_limit=1.0,
            rate_burst=11,
            http_keep_alive_timeout=12.0,
            http_read_timeout=13.0,
            http_max_connections=17,
            schemas_dir=Path("s"),
            schemas_strict=True,
        )


class TestInvalidValues:
    @pytest.mark.parametrize(
        ("variable", "raw", "reason"),
        [
            pytest.param("TOWER_AMQP_URL", "", "must not be empty", id="url-empty"),
            pytest.param("TOWER_EXCHANGE", "  ", "must not be empty", id="exchange-blank"),
            pytest.param(
                "TOWER_INSTANCE", "tower a", "must not contain spaces", id="instance-space"
            ),
            pytest.param(
                "TOWER_INSTANCE",
                "x" * 65,
                "must be 1 to 64 printable ASCII characters",
                id="instance-long",
            ),
            pytest.param(
                "TOWER_INSTANCE",
                "tür",
                "must be 1 to 64 printable ASCII characters",
                id="instance-utf",
            ),
            pytest.param("TOWER_HTTP_HOST", "", "must not be empty", id="host-empty"),
            pytest.param("TOWER_HTTP_PORT", "http", "is not a number", id="port-word"),
            pytest.param("TOWER_HTTP_PORT", "", "is not a number", id="port-empty"),
            pytest.param("TOWER_HTTP_PORT", "80.5", "is not a number", id="port-fraction"),
            pytest.param(
                "TOWER_HTTP_PORT", "65536", "must be a TCP port between 0 and 65535", id="port-big"
            ),
            pytest.param(
                "TOWER_HTTP_PORT", "-1", "must be a TCP port between 0 and 65535", id="port-neg"
            ),
            pytest.param("TOWER_MAX_BODY_BYTES", "0", "must be a positive integer", id="body-0"),
            pytest.param("TOWER_MAX_BODY_BYTES", "1MiB", "is not a number", id="body-unit"),
            pytest.param(
                "TOWER_PUBLISH_TIMEOUT", "0", "must be a positive number of seconds", id="timeout-0"
            ),
            pytest.param(
                "TOWER_PUBLISH_TIMEOUT",
                "-1",
                "must be a positive number of seconds",
                id="timeout-negative",
            ),
            pytest.param(
                "TOWER_PUBLISH_TIMEOUT",
                "nan",
                "must be a positive number of seconds",
                id="timeout-nan",
            ),
            pytest.param(
                "TOWER_SHUTDOWN_GRACE",
                "inf",
                "must be a positive number of seconds",
                id="grace-infinite",
            ),
            # The reason is Python's own wording here; only the variable is pinned.
            pytest.param("TOWER_SHUTDOWN_GRACE", "10s", "", id="grace-unit"),
            pytest.param("TOWER_PLUGINS_DIR", " ", "must not be empty", id="dir-blank"),
            pytest.param("TOWER_CHANNEL_SIZE", "0", "must be a positive integer", id="channel-0"),
            pytest.param(
                "TOWER_CONFIRM_WINDOW", "-5", "must be a positive integer", id="window-negative"
            ),
            pytest.param("TOWER_MAX_ATTEMPTS", "many", "is not a number", id="attempts-word"),
            pytest.param(
                "TOWER_LOG_LEVEL",
                "TRACE",
                "must be one of DEBUG, INFO, WARNING, ERROR",
                id="level-unknown",
            ),
            pytest.param(
                "TOWER_LOG_FORMAT", "xml", "must be one of auto, json, console", id="format-unknown"
            ),
        ],
    )
    def test_refused(self, variable: str, raw: str, reason: str) -> None:
        """A bad value raises a ConfigError naming the variable, the value and the reason."""
        with pytest.raises(ConfigError) as excinfo:
            Settings.from_environ({variable: raw})
        message = str(excinfo.value)
        assert message.startswith(f"{variable}={raw!r} is invalid: ")
        assert reason in message
        assert isinstance(excinfo.value.__cause__, ValueError)

    def test_first_bad_variable_named(self) -> None:
        """With several bad values, the error names one of them, not a default."""
        environ = {"TOWER_HTTP_PORT": "x", "TOWER_LOG_LEVEL": "loud", "TOWER_EXCHANGE": "ok"}
        with pytest.raises(ConfigError, match=r"^TOWER_HTTP_PORT='x' is invalid"):
            Settings.from_environ(environ)

    @pytest.mark.parametrize(
        ("raw", "seconds"),
        [("7d", 604800.0), ("12h", 43200.0), ("30m", 1800.0), ("90", 90.0), ("2w", 1209600.0)],
    )
    def test_retention_takes_durations(self, raw: str, seconds: float) -> None:
        """TOWER_RETENTION reads a number with an optional unit: s, m, h, d or w."""
        assert Settings.from_environ({"TOWER_RETENTION": raw}).retention == seconds

    def test_systemd_state_directory_is_the_default_data_dir(self) -> None:
        """Under systemd's StateDirectory=, the journal goes where systemd says."""
        settings = Settings.from_environ({"STATE_DIRECTORY": "/var/lib/tower-trio"})
        assert settings.data_dir == Path("/var/lib/tower-trio")

    def test_is_a_tower_error(self) -> None:
        """ConfigError belongs to the tower's one exception hierarchy."""
        assert issubclass(ConfigError, TowerError)


class TestSettingDocs:
    def test_variables(self) -> None:
        """Every variable is documented, in declaration order."""
        assert [variable for variable, _, _ in setting_docs()] == VARIABLES

    def test_one_row_per_setting(self) -> None:
        """Each setting of the class has exactly one documented variable."""
        assert len(setting_docs()) == len(attrs.fields(Settings))

    @pytest.mark.parametrize(
        ("variable", "shown"),
        [
            pytest.param("TOWER_AMQP_URL", "`amqp://guest:guest@localhost:5672/%2F`", id="url"),
            pytest.param("TOWER_HTTP_PORT", "`8000`", id="port"),
            pytest.param("TOWER_MAX_BODY_BYTES", "`1048576`", id="body"),
            pytest.param("TOWER_PLUGINS_DIR", "`plugins`", id="dir"),
            pytest.param("TOWER_PLUGINS", "(all with complete configuration)", id="plugins"),
            pytest.param("TOWER_LOG_LEVEL", "`INFO`", id="level"),
        ],
    )
    def test_default_shown(self, variable: str, shown: str) -> None:
        """The table shows each default as it would be written in the environment."""
        assert {row[0]: row[1] for row in setting_docs()}[variable] == shown

    def test_descriptions(self) -> None:
        """Every variable has a sentence describing it."""
        for variable, _, description in setting_docs():
            assert description.endswith("."), variable
            assert len(description) > 20, variable


class TestBrokerURLs:
    """TOWER_AMQP_URL with one URL per broker node, separated by commas."""

    def test_one_url_is_one_node(self) -> None:
        """One URL (the default) is one node, parsed as it always was."""
        (url,) = Settings().broker_urls()
        assert url.redacted() == "amqp://guest:***@localhost:5672/%2F"

    def test_several_urls_in_order(self) -> None:
        """Each URL keeps its own host, port, credentials, vhost and options, in order."""
        settings = Settings.from_environ(
            {
                "TOWER_AMQP_URL": " amqp://a:pa@rabbit-1:5672/lab , "
                "amqp://b:pb@rabbit-2:5673/other?connection_timeout=2,amqp://[::1]/"
            }
        )
        urls = settings.broker_urls()
        assert [(u.host, u.port, u.username, u.password, u.vhost) for u in urls] == [
            ("rabbit-1", 5672, "a", "pa", "lab"),
            ("rabbit-2", 5673, "b", "pb", "other"),
            ("::1", 5672, "guest", "guest", "/"),
        ]
        assert urls[1].connect_timeout == 2.0

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            pytest.param(
                "amqp://rabbit-1/,http://lab:s3cret-pw@rabbit-2/",
                "TOWER_AMQP_URL (URL 2 of 2) is invalid: invalid AMQP URL: the scheme must be "
                "amqp:// or amqps:// (AMQP over TLS) (the URLs are separated by commas: write "
                "a comma in a user name or password as %2C)",
                id="scheme",
            ),
            pytest.param(
                "amqp://lab:s3cret/pw@rabbit-1/,amqp://rabbit-2/",
                "TOWER_AMQP_URL (URL 1 of 2) is invalid: invalid AMQP URL: an '@' after the host",
                id="password-with-slash",
            ),
            pytest.param(
                "amqp://lab:s3cret,pw@rabbit-1/,amqp://rabbit-2/",
                "TOWER_AMQP_URL (URL 1 of 3) is invalid: invalid AMQP URL: the port must be",
                id="password-with-comma",
            ),
            pytest.param(
                "amqp://rabbit-1/,,amqp://rabbit-2/",
                "TOWER_AMQP_URL (URL 2 of 3) is empty; separate the URLs with single commas",
                id="empty",
            ),
            pytest.param(
                "amqp://rabbit-1/,",
                "TOWER_AMQP_URL (URL 2 of 2) is empty",
                id="trailing-comma",
            ),
            pytest.param(
                "amqp://rabbit-1/,amqp://x:s3cret-pw@rabbit-2/,amqp://RABBIT-1:5672/other",
                "TOWER_AMQP_URL is invalid: URLs 1 and 3 of 3 both point at rabbit-1:5672; "
                "list each node once",
                id="same-node-twice",
            ),
        ],
    )
    def test_bad_url_named_by_position(self, raw: str, message: str) -> None:
        """A bad URL is a ConfigError naming TOWER_AMQP_URL and its position, never the password."""
        settings = Settings.from_environ({"TOWER_AMQP_URL": raw})
        with pytest.raises(ConfigError) as info:
            settings.broker_urls()
        assert str(info.value).startswith(message)
        for piece in ("s3cret", "pw@", "-pw"):
            assert piece not in str(info.value)
        assert info.value.__cause__ is None or "s3cret" not in str(info.value.__cause__)

    def test_one_bad_url_reads_as_before(self) -> None:
        """With one URL, the error is worded as it always was: no position."""
        with pytest.raises(ConfigError) as info:
            Settings.from_environ({"TOWER_AMQP_URL": "http://rabbit/"}).broker_urls()
        assert str(info.value) == (
            "TOWER_AMQP_URL is invalid: invalid AMQP URL: the scheme must be amqp:// or "
            "amqps:// (AMQP over TLS)"
        )

    def test_tls_and_plain_urls_do_not_mix(self) -> None:
        """amqps:// and amqp:// nodes together are refused: a failover would drop TLS."""
        with pytest.raises(ConfigError) as info:
            Settings.from_environ({"TOWER_AMQP_URL": "amqps://rabbit-1/,amqp://rabbit-2/"})
        assert str(info.value) == (
            "TOWER_AMQP_URL mixes amqps:// and amqp:// URLs (URL 2 of 2 is not amqps://); "
            "use amqps:// for every node, or amqp:// for all"
        )

    def test_tls_files_need_every_url_amqps(self, tls: TLSFiles) -> None:
        """TLS files with a cluster whose URL 2 is amqp:// are refused, naming URL 2."""
        with pytest.raises(ConfigError) as info:
            Settings.from_environ(
                {
                    "TOWER_AMQP_URL": "amqps://rabbit-1/,amqp://rabbit-2/",
                    "TOWER_AMQP_CA_FILE": str(tls.ca),
                }
            )
        assert str(info.value) == (
            "TOWER_AMQP_CA_FILE is set, but URL 2 of 2 in TOWER_AMQP_URL is not an amqps:// "
            "URL; use amqps:// (port 5671 by default) to publish over TLS"
        )

    def test_tls_cluster(self, tls: TLSFiles) -> None:
        """Every node over amqps:// takes the TLS files, and one context serves them all."""
        settings = Settings.from_environ(
            {
                "TOWER_AMQP_URL": "amqps://rabbit-1/,amqps://rabbit-2:5676/",
                "TOWER_AMQP_CA_FILE": str(tls.ca),
            }
        )
        assert [url.port for url in settings.broker_urls()] == [5671, 5676]
        assert settings.amqp_ssl_context() is not None

    def test_plain_cluster_has_no_tls_context(self) -> None:
        """A cluster of amqp:// nodes connects without TLS."""
        settings = Settings.from_environ({"TOWER_AMQP_URL": "amqp://rabbit-1/,amqp://rabbit-2/"})
        assert settings.amqp_ssl_context() is None


class TestInstance:
    def test_default_names_the_host_and_the_process(self) -> None:
        """Unset, each process gets its own name: the host name and its process id."""
        instance = Settings.from_environ({}).instance
        assert instance == f"{socket.gethostname()}-{os.getpid()}"[:64]

    def test_set(self) -> None:
        assert Settings.from_environ({"TOWER_INSTANCE": " tower-b "}).instance == "tower-b"
