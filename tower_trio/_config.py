"""Settings, read once from an explicit environment mapping.

Each setting is one ``TOWER_*`` variable; ``Settings.from_environ`` parses
them all and raises a ``ConfigError`` naming the first bad variable. Tests
pass a plain dict instead of patching the process environment.

One concept, kept whole although past 400 lines: the settings table, one
documented field per ``TOWER_*`` variable.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from . import amqp
from ._auth import Tokens, parse_rate, parse_tokens
from ._broker_advice import invalid_broker_setting
from ._environ import from_environ
from ._errors import ConfigError
from ._journal_url import PostgresURL, parse_journal_url
from ._nodes import node_address, split_urls
from ._secrets import SECRET

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Mapping

__all__ = ["Settings", "setting_docs"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_DEFAULT_PLUGINS_DIR = Path("plugins")
_DEFAULT_DATA_DIR = Path("var")


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


_INSTANCE_MAX = 64


def _instance(raw: str) -> str:
    name = raw.strip()
    if not (0 < len(name) <= _INSTANCE_MAX and name.isascii() and name.isprintable()):
        raise ValueError(f"must be 1 to {_INSTANCE_MAX} printable ASCII characters")
    if " " in name:
        raise ValueError("must not contain spaces")
    return name


def default_instance() -> str:
    """This process's name among replicas when ``TOWER_INSTANCE`` is not set."""
    return f"{socket.gethostname()}-{os.getpid()}"[:_INSTANCE_MAX]


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("must be a TCP port between 0 and 65535")
    return port


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a positive number of seconds")
    return value


def _path(raw: str) -> Path:
    return Path(_text(raw))


def _readable_file(raw: str) -> Path:
    path = _path(raw)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a folder, not a file") from None
    except OSError as err:
        raise ValueError(f"cannot be read ({(err.strerror or str(err)).lower()})") from None
    return path


def _scheme(url: str) -> str:
    return url.partition(":")[0].strip().lower()


def _is_amqps(url: str) -> bool:
    return _scheme(url) == "amqps"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(raw: str) -> float:
    text = raw.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise ValueError("must be a duration like 7d, 12h, 30m or 90 (seconds)") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a positive duration")
    return value


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _names(raw: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    return names or None


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
    return level


_LOG_FORMATS = ("auto", "json", "console")


def _log_format(raw: str) -> str:
    log_format = raw.strip().lower()
    if log_format not in _LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(_LOG_FORMATS)}")
    return log_format


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered not in _TRUE | _FALSE:
        raise ValueError("must be true or false")
    return lowered in _TRUE


def _probe_token(raw: str) -> Tokens | None:
    return parse_tokens(raw, variable="TOWER_PROBE_TOKEN")


def _metrics_token(raw: str) -> Tokens | None:
    return parse_tokens(raw, variable="TOWER_METRICS_TOKEN")


def _setting(
    variable: str,
    default: Any,
    parse: Callable[[str], Any],
    doc: str,
    *,
    shown: str = "",
    secret: bool = False,
) -> Any:
    # Every setting declares whether it is secret, so no name is ever guessed at.
    return attrs.field(
        default=default,
        metadata={
            "variable": variable,
            "parse": parse,
            "doc": doc,
            "shown": shown,
            SECRET: secret,
        },
    )


@attrs.frozen
class Settings:
    """Everything tower-trio can be told, with its default."""

    amqp_url: str = _setting(
        "TOWER_AMQP_URL",
        "amqp://guest:guest@localhost:5672/%2F",
        _text,
        "Broker to publish to: `amqp://user:password@host:port/vhost` (vhost `%2F` is `/`). "
        "For a RabbitMQ cluster, one URL per node, separated by commas: the tower connects "
        "to the first that answers and fails over to the next.",
    )
    amqp_ca_file: Path | None = _setting(
        "TOWER_AMQP_CA_FILE",
        None,
        _readable_file,
        "For an `amqps://` URL: PEM bundle of the CAs trusted to sign the broker's "
        "certificate. The broker's host name is always checked against its certificate.",
        shown="(unset: the system's CAs)",
    )
    amqp_cert_file: Path | None = _setting(
        "TOWER_AMQP_CERT_FILE",
        None,
        _readable_file,
        "For an `amqps://` URL: client certificate (PEM) for a broker that requires one; "
        "its private key may be in the same file.",
        shown="(unset)",
    )
    amqp_key_file: Path | None = _setting(
        "TOWER_AMQP_KEY_FILE",
        None,
        _readable_file,
        "Unencrypted private key (PEM) of `TOWER_AMQP_CERT_FILE`, unless it is in that file.",
        shown="(unset)",
    )
    instance: str = _setting(
        "TOWER_INSTANCE",
        attrs.Factory(default_instance),
        _instance,
        "This tower's name among replicas sharing one PostgreSQL journal: in logs, "
        "`/readyz`, metrics, the console and the leader of each plugin.",
        shown="the host name and process id (`lab-pc-4242`)",
    )
    exchange: str = _setting(
        "TOWER_EXCHANGE",
        "tower.triggers",
        _text,
        "Durable topic exchange the triggers are published to, declared at start-up.",
    )
    http_host: str = _setting(
        "TOWER_HTTP_HOST", "127.0.0.1", _text, "Address the HTTP API listens on."
    )
    http_port: int = _setting(
        "TOWER_HTTP_PORT", 8000, _port, "Port the HTTP API listens on (0 picks a free one)."
    )
    max_body_bytes: int = _setting(
        "TOWER_MAX_BODY_BYTES",
        1024 * 1024,
        _positive_int,
        "Largest request body accepted by `POST /triggers`; larger ones get 413.",
    )
    wait_max_bytes: int = _setting(
        "TOWER_WAIT_MAX_BYTES",
        64 * 1024 * 1024,
        _positive_int,
        "Bytes of trigger bodies that `?wait=published` requests may hold in memory while "
        "they wait for the broker, together; past it, such requests get 503 with "
        "`Retry-After` and nothing is stored.",
    )
    cache_max_bytes: int = _setting(
        "TOWER_CACHE_MAX_BYTES",
        64 * 1024 * 1024,
        _positive_int,
        "Bytes of recently journaled trigger bodies the publisher keeps in memory so as "
        "not to read them back from disk; the rest are read from the journal.",
    )
    list_max_bytes: int = _setting(
        "TOWER_LIST_MAX_BYTES",
        4 * 1024 * 1024,
        _positive_int,
        "Bytes of trigger bodies in one page of `GET /triggers`; a page ends early "
        "(with its `next` cursor) rather than grow past it.",
    )
    publish_timeout: float = _setting(
        "TOWER_PUBLISH_TIMEOUT",
        10.0,
        _seconds,
        "How long `POST /triggers` waits for the journal (503 after it) and, with "
        "`?wait=published`, for the broker's confirm (504 after it).",
    )
    shutdown_grace: float = _setting(
        "TOWER_SHUTDOWN_GRACE",
        10.0,
        _seconds,
        "On SIGTERM/SIGINT, how long the publisher may keep publishing what is queued.",
    )
    plugins_dir: Path = _setting(
        "TOWER_PLUGINS_DIR",
        _DEFAULT_PLUGINS_DIR,
        _path,
        "Folder holding watcher plugins, one sub-folder with a `watcher.py` each.",
    )
    plugins: tuple[str, ...] | None = _setting(
        "TOWER_PLUGINS",
        None,
        _names,
        "Comma-separated plugins to run; unset runs every discovered plugin whose "
        "configuration is complete.",
        shown="(all with complete configuration)",
    )
    channel_size: int = _setting(
        "TOWER_CHANNEL_SIZE",
        512,
        _positive_int,
        "Triggers that may wait between the sources and the publisher; when it is "
        "full, sources wait (back-pressure).",
    )
    confirm_window: int = _setting(
        "TOWER_CONFIRM_WINDOW",
        1024,
        _positive_int,
        "Messages published but not yet confirmed by the broker, at most. RabbitMQ "
        "confirms persistent messages after its disk write, so a wide window keeps "
        "the pipe full.",
    )
    data_dir: Path = _setting(
        "TOWER_DATA_DIR",
        _DEFAULT_DATA_DIR,
        _path,
        "Folder of the journal (`journal.sqlite3`), created if missing. Back it up; "
        "it holds every trigger not yet confirmed by the broker.",
        shown="`var` (or systemd's `$STATE_DIRECTORY`)",
    )
    journal_url: Path | PostgresURL | None = _setting(
        "TOWER_JOURNAL_URL",
        None,
        parse_journal_url,
        "Where the journal lives instead: the path of a SQLite file, or "
        "`postgresql://user:password@host:5432/database` (or `postgres://`; add "
        "`?schema=name` for a schema of its own) to keep it in PostgreSQL, which needs "
        "`pip install tower-trio[postgres]` (see the storage page). The password is never shown.",
        shown="(unset: `journal.sqlite3` in `TOWER_DATA_DIR`)",
    )
    journal_max_bytes: int | None = _setting(
        "TOWER_JOURNAL_MAX_BYTES",
        None,
        _positive_int,
        "Cap on the journal's size (in PostgreSQL: its tables' size); when it is reached, "
        "`POST /triggers` answers 503 until pruning makes room. Unset: limited by the disk only.",
        shown="(unset)",
    )
    lease_ttl: float = _setting(
        "TOWER_LEASE_TTL",
        10.0,
        _seconds,
        "With several towers on one PostgreSQL journal: how long a tower's lease on a "
        "plugin lasts without renewal (renewed every third of it). A successor takes "
        "over a plugin whose leader died or lost the database within about 1.33 times "
        "this; see docs/replicas.md.",
    )
    retention: float = _setting(
        "TOWER_RETENTION",
        7 * 86400.0,
        _duration,
        "How long settled triggers stay in the journal for lookup and idempotency "
        "(`7d`, `12h`, `30m` or seconds). Unpublished ones are never pruned.",
        shown="`7d`",
    )
    replica_ttl: float = _setting(
        "TOWER_REPLICA_TTL",
        10.0,
        _seconds,
        "With a shared PostgreSQL journal: seconds a tower counts as alive after its last "
        "heartbeat (one every fifth of this). A tower that cannot renew it stops publishing, "
        "and another takes its pending triggers over within about 1.2 times this.",
    )
    confirm_timeout: float = _setting(
        "TOWER_CONFIRM_TIMEOUT",
        30.0,
        _seconds,
        "A confirm that has not come this many seconds after the publish counts as lost: "
        "the tower reconnects and republishes.",
    )
    unroutable_exchange: str | None = _setting(
        "TOWER_UNROUTABLE_EXCHANGE",
        None,
        _optional_text,
        "If set, a fanout exchange declared as the trigger exchange's alternate exchange: "
        "triggers no device queue is bound for go there instead of being returned.",
        shown="(unset)",
    )
    max_attempts: int = _setting(
        "TOWER_MAX_ATTEMPTS",
        5,
        _positive_int,
        "Publish attempts for a trigger the broker refuses (Basic.Nack) before it is "
        "given up as failed.",
    )
    metrics_token: Tokens | None = _setting(
        "TOWER_METRICS_TOKEN",
        None,
        _metrics_token,
        "If set, `GET /metrics` needs it as a bearer token.",
        shown="(unset)",
        secret=True,
    )
    log_level: str = _setting(
        "TOWER_LOG_LEVEL", "INFO", _log_level, "One of DEBUG, INFO, WARNING, ERROR."
    )
    log_format: str = _setting(
        "TOWER_LOG_FORMAT",
        "auto",
        _log_format,
        "`json` (one object per line), `console` (readable key=value) or `auto`: "
        "console when stderr is a terminal, JSON otherwise.",
    )
    api_tokens: Tokens | None = _setting(
        "TOWER_API_TOKENS",
        None,
        parse_tokens,
        "Bearer tokens the HTTP API accepts: a comma-separated list, or the path of a file "
        "(starting `/`, `./` or `../`) with one per line. Unset: no authentication, loopback only.",
        shown="(unset)",
        secret=True,
    )
    probe_token: Tokens | None = _setting(
        "TOWER_PROBE_TOKEN",
        None,
        _probe_token,
        "If set, `GET /healthz` and `GET /readyz` need it as a bearer token.",
        shown="(unset)",
        secret=True,
    )
    allow_unauthenticated: bool = _setting(
        "TOWER_ALLOW_UNAUTHENTICATED",
        False,
        _flag,
        "`true` lets the tower serve a non-loopback `TOWER_HTTP_HOST` without `TOWER_API_TOKENS`.",
    )
    rate_limit: float | None = _setting(
        "TOWER_RATE_LIMIT",
        None,
        parse_rate,
        "Requests per API token (per client address without tokens): `10/s`, `600/m`, "
        "`5000/h` or a number per second; over it, 429 with `Retry-After`. Unset: no limit.",
        shown="(unset)",
    )
    rate_burst: int = _setting(
        "TOWER_RATE_BURST",
        10,
        _positive_int,
        "Requests a token (or client) may send at once before `TOWER_RATE_LIMIT` applies.",
    )
    http_keep_alive_timeout: float = _setting(
        "TOWER_HTTP_KEEP_ALIVE_TIMEOUT",
        5.0,
        _seconds,
        "An idle connection is closed after this many seconds; a request's head must "
        "arrive within it, so slow clients cannot hold connections open.",
    )
    http_read_timeout: float = _setting(
        "TOWER_HTTP_READ_TIMEOUT",
        30.0,
        _seconds,
        "A connection silent for this many seconds is closed, and a request body must "
        "arrive within it (408 otherwise).",
    )
    http_max_connections: int = _setting(
        "TOWER_HTTP_MAX_CONNECTIONS",
        1000,
        _positive_int,
        "HTTP connections served at once; further clients wait in the listen backlog until "
        "one closes, so a flood of idle sockets cannot use up the tower's file descriptors.",
    )
    schemas_dir: Path | None = _setting(
        "TOWER_SCHEMAS_DIR",
        None,
        _path,
        "Folder of JSON Schemas for protocols, `<api>/<version>/<Protocol>.json`; a trigger "
        "whose protocol has one must match it.",
        shown="(unset)",
    )
    schemas_strict: bool = _setting(
        "TOWER_SCHEMAS_STRICT",
        False,
        _flag,
        "`true` refuses triggers for protocols without a schema in `TOWER_SCHEMAS_DIR`.",
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default: the process environment)."""
        if environ is None:
            environ = os.environ
        defaults = {}
        if "TOWER_DATA_DIR" not in environ and (state := environ.get("STATE_DIRECTORY")):
            # systemd's StateDirectory= hands a service its private, persistent folder.
            defaults["data_dir"] = Path(state.split(":")[0])
        return from_environ(cls, "TOWER_", environ, owner="the tower", defaults=defaults)

    def __attrs_post_init__(self) -> None:
        # Checked when the settings are read, so that TLS settings that cannot
        # work stop start-up with one line instead of failing every reconnect.
        tls_files = {
            "TOWER_AMQP_CA_FILE": self.amqp_ca_file,
            "TOWER_AMQP_CERT_FILE": self.amqp_cert_file,
            "TOWER_AMQP_KEY_FILE": self.amqp_key_file,
        }
        given = [variable for variable, path in tls_files.items() if path is not None]
        urls = split_urls(self.amqp_url)
        plain = [n for n, url in enumerate(urls, 1) if not _is_amqps(url)]
        clear = [n for n, url in enumerate(urls, 1) if _scheme(url) == "amqp"]
        if given and plain:
            # Ignoring them would publish in clear text while the operator
            # believes the connection is encrypted.
            where = "TOWER_AMQP_URL is not an amqps:// URL"
            if len(urls) > 1:
                where = f"URL {plain[0]} of {len(urls)} in TOWER_AMQP_URL is not an amqps:// URL"
            raise ConfigError(
                f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set, but "
                f"{where}; use amqps:// (port 5671 by default) to publish over TLS"
            )
        if clear and len(plain) < len(urls):
            # A failover from a TLS node to a plain one would send the password
            # and the triggers in clear text, without anyone having chosen that.
            raise ConfigError(
                f"TOWER_AMQP_URL mixes amqps:// and amqp:// URLs (URL {clear[0]} of "
                f"{len(urls)} is not amqps://); use amqps:// for every node, or amqp:// for all"
            )
        if not given:
            return
        if self.amqp_key_file is not None and self.amqp_cert_file is None:
            raise ConfigError(
                "TOWER_AMQP_KEY_FILE is set without TOWER_AMQP_CERT_FILE; set the client "
                "certificate too"
            )
        if self.amqp_ca_file is not None:
            try:
                amqp.create_ssl_context(ca_file=self.amqp_ca_file)
            except amqp.AMQPConfigError as err:
                raise ConfigError(invalid_broker_setting("TOWER_AMQP_CA_FILE", err)) from err
        if self.amqp_cert_file is not None:
            variables = "TOWER_AMQP_CERT_FILE"
            if self.amqp_key_file is not None:
                variables += " or TOWER_AMQP_KEY_FILE"
            try:
                amqp.create_ssl_context(cert_file=self.amqp_cert_file, key_file=self.amqp_key_file)
            except amqp.AMQPConfigError as err:
                raise ConfigError(invalid_broker_setting(variables, err)) from err

    def broker_urls(self) -> tuple[amqp.URL, ...]:
        """The URLs of ``TOWER_AMQP_URL``, one per broker node, in order.

        Raises ``ConfigError`` naming the position of a URL that does not
        parse, without quoting any of it (a password may be anywhere in it).
        """
        texts = split_urls(self.amqp_url)
        if len(texts) == 1:
            try:
                return (amqp.URL.parse(texts[0]),)
            except amqp.AMQPConfigError as err:
                raise ConfigError(invalid_broker_setting("TOWER_AMQP_URL", err)) from err
        urls: list[amqp.URL] = []
        seen: dict[str, int] = {}
        for position, text in enumerate(texts, 1):
            which = f"TOWER_AMQP_URL (URL {position} of {len(texts)})"
            if not text:
                raise ConfigError(f"{which} is empty; separate the URLs with single commas")
            try:
                url = amqp.URL.parse(text)
            except amqp.AMQPConfigError as err:
                raise ConfigError(
                    f"{invalid_broker_setting(which, err)} (the URLs are separated by commas: "
                    "write a comma in a user name or password as %2C)"
                ) from err
            address = node_address(url)
            if address in seen:
                raise ConfigError(
                    f"TOWER_AMQP_URL is invalid: URLs {seen[address]} and {position} of "
                    f"{len(texts)} both point at {address}; list each node once"
                )
            seen[address] = position
            urls.append(url)
        return tuple(urls)

    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``amqps://`` URLs (one for every node); None for ``amqp://``.

        The files are read on every call, so a renewed certificate is used
        from the next connection on. Reading blocks: call it in a thread.
        """
        if not _is_amqps(split_urls(self.amqp_url)[0]):
            return None
        return amqp.create_ssl_context(
            ca_file=self.amqp_ca_file, cert_file=self.amqp_cert_file, key_file=self.amqp_key_file
        )


def setting_docs() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    rows = []
    for field in attrs.fields(Settings):
        shown = field.metadata["shown"] or f"`{field.default}`"
        rows.append((field.metadata["variable"], shown, field.metadata["doc"]))
    return rows
