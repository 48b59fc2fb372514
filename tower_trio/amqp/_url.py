"""Parsing of ``amqp://`` and ``amqps://`` URLs."""

from __future__ import annotations

import math
from typing import ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import attrs

from ._errors import AMQPConfigError

DEFAULT_CONNECT_TIMEOUT = 10.0
FRAME_MIN_SIZE = 4096
_MAX_SHORT = 65535
_MAX_LONG = 2**32 - 1


def _query_int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise AMQPConfigError(
            f"invalid {name}={text!r} in the AMQP URL: expected a whole number from {low} to {high}"
        )
    return value


@attrs.frozen
class URL:
    """Where and how to connect: ``amqp://user:pass@host:port/vhost?options``.

    ``amqps://`` is the same over TLS, on port 5671 unless one is given. The
    password is left out of ``repr()``; use :meth:`redacted` in logs.
    """

    DEFAULT_PORTS: ClassVar[dict[str, int]] = {"amqp": 5672, "amqps": 5671}

    scheme: str
    host: str
    port: int
    username: str
    password: str = attrs.field(repr=False)
    vhost: str
    heartbeat: int | None = None
    frame_max: int | None = None
    channel_max: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def parse(cls, url: str) -> URL:
        """Parse ``url``; raise :class:`AMQPConfigError` naming what is wrong.

        No message quotes the user name or password, nor any piece of them:
        a password with an unencoded ``/``, ``?`` or ``#`` would otherwise
        turn up as a port, a vhost, an option or a fragment.
        """
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in cls.DEFAULT_PORTS:
            # Not quoted: without "://" the text before the first ":" is as
            # likely a user name and password as a scheme.
            raise AMQPConfigError(
                "invalid AMQP URL: the scheme must be amqp:// or amqps:// (AMQP over TLS)"
            )
        authority_end = min(
            (at for delimiter in "/?#" if (at := rest.find(delimiter)) >= 0), default=len(rest)
        )
        if "@" in rest[authority_end:]:
            # The userinfo ends at the last "@"; finding one after the host means
            # a delimiter cut the userinfo short, so everything here may be secret.
            raise AMQPConfigError(
                "invalid AMQP URL: an '@' after the host; percent-encode a '/', '?' or '#' "
                "in the user name or password (as %2F, %3F, %23) and an '@' in the vhost (%40)"
            )
        # urllib's messages quote the host and port, where a password cut short
        # by a delimiter would sit: they are replaced, and left out of the chain.
        try:
            parts = urlsplit(url)
        except ValueError:
            raise AMQPConfigError(
                "invalid AMQP URL: the host cannot be read; write an IPv6 address in "
                "[brackets] and percent-encode '[' and ']' in the user name or password"
            ) from None
        try:
            port = parts.port
        except ValueError:
            raise AMQPConfigError(
                "invalid AMQP URL: the port must be a whole number from 0 to 65535"
            ) from None
        if parts.fragment:
            raise AMQPConfigError("invalid AMQP URL: it must not have a #fragment")
        path = parts.path
        if path in ("", "/"):
            vhost = "/"
        else:
            raw_vhost = path[1:]
            if "/" in raw_vhost:
                raise AMQPConfigError(
                    f"invalid vhost {raw_vhost!r} in the AMQP URL: write a '/' inside "
                    "a vhost name as %2F"
                )
            vhost = unquote(raw_vhost)
        options = cls._parse_query(parts.query)
        heartbeat = options.get("heartbeat")
        frame_max = options.get("frame_max")
        channel_max = options.get("channel_max")
        return cls(
            scheme=scheme,
            host=parts.hostname or "localhost",
            port=cls.DEFAULT_PORTS[scheme] if port is None else port,
            username="guest" if parts.username is None else unquote(parts.username),
            password="guest" if parts.password is None else unquote(parts.password),
            vhost=vhost,
            heartbeat=None if heartbeat is None else int(heartbeat),
            frame_max=None if frame_max is None else int(frame_max),
            channel_max=None if channel_max is None else int(channel_max),
            connect_timeout=options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        )

    @property
    def tls(self) -> bool:
        """Whether the connection runs over TLS (``amqps://``)."""
        return self.scheme == "amqps"

    @staticmethod
    def _parse_query(query: str) -> dict[str, int | float]:
        options: dict[str, int | float] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as err:
            raise AMQPConfigError(f"invalid query string in the AMQP URL: {err}") from err
        for name, text in pairs:
            if name in ("heartbeat", "frame_max", "channel_max"):
                key = name
            elif name == "connection_timeout":
                key = "connect_timeout"
            else:
                raise AMQPConfigError(
                    f"unknown option {name!r} in the AMQP URL; the known options are "
                    "heartbeat, frame_max, channel_max and connection_timeout"
                )
            if key in options:
                raise AMQPConfigError(f"option {name!r} is given twice in the AMQP URL")
            if key in ("heartbeat", "channel_max"):
                options[key] = _query_int(name, text, 0, _MAX_SHORT)
            elif key == "frame_max":
                value = _query_int(name, text, 0, _MAX_LONG)
                if 0 < value < FRAME_MIN_SIZE:
                    raise AMQPConfigError(
                        f"invalid frame_max={text!r} in the AMQP URL: AMQP needs at "
                        f"least {FRAME_MIN_SIZE} bytes (or 0 for the broker's limit)"
                    )
                options[key] = value
            else:
                options[key] = _parse_timeout(text)
        return options

    def redacted(self) -> str:
        """The URL with the password replaced by ``***``, safe for logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        # "/" is written %2F: unambiguous for every client that reads it back.
        vhost = quote(self.vhost, safe="")
        query = []
        for name, value in (
            ("heartbeat", self.heartbeat),
            ("frame_max", self.frame_max),
            ("channel_max", self.channel_max),
        ):
            if value is not None:
                query.append(f"{name}={value}")
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT:
            query.append(f"connection_timeout={self.connect_timeout:g}")
        suffix = "?" + "&".join(query) if query else ""
        user = quote(self.username, safe="")
        return f"{self.scheme}://{user}:***@{host}:{self.port}/{vhost}{suffix}"


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise AMQPConfigError(
            f"invalid connection_timeout={text!r} in the AMQP URL: expected a "
            "positive number of seconds"
        )
    return value
