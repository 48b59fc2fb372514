"""URL parsing and redaction."""

from __future__ import annotations

import pytest

from tower_trio import amqp


class TestParse:
    """URL.parse."""

    def test_defaults(self) -> None:
        """A bare amqp:// URL means guest/guest on localhost:5672, vhost "/"."""
        url = amqp.URL.parse("amqp://")
        assert (url.scheme, url.host, url.port) == ("amqp", "localhost", 5672)
        assert (url.username, url.password, url.vhost) == ("guest", "guest", "/")
        assert (url.heartbeat, url.frame_max, url.channel_max) == (None, None, None)
        assert url.connect_timeout == 10.0

    def test_every_part(self) -> None:
        """User, password, host, port, vhost and options are all read, percent-decoded."""
        url = amqp.URL.parse(
            "amqp://lab%40user:p%3Ass@broker.example:5673/lab%2Fone"
            "?heartbeat=15&frame_max=8192&channel_max=10&connection_timeout=2.5"
        )
        assert (url.username, url.password) == ("lab@user", "p:ss")
        assert (url.host, url.port, url.vhost) == ("broker.example", 5673, "lab/one")
        assert (url.heartbeat, url.frame_max, url.channel_max) == (15, 8192, 10)
        assert url.connect_timeout == 2.5

    @pytest.mark.parametrize(
        ("text", "vhost"),
        [
            ("amqp://h", "/"),
            ("amqp://h/", "/"),
            ("amqp://h/%2F", "/"),
            ("amqp://h/%2f", "/"),
            ("amqp://h/lab", "lab"),
            ("amqp://h/a%20b", "a b"),
        ],
    )
    def test_vhost(self, text: str, vhost: str) -> None:
        """The vhost is the percent-decoded path, "/" when empty."""
        assert amqp.URL.parse(text).vhost == vhost

    def test_ipv6_host(self) -> None:
        """A bracketed IPv6 host is accepted."""
        url = amqp.URL.parse("amqp://[::1]:5673/")
        assert (url.host, url.port) == ("::1", 5673)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("http://localhost/", "the scheme must be amqp:// or amqps://"),
            ("amqp://localhost:99999/", "invalid AMQP URL"),
            ("amqp://localhost/a/b", "write a '/' inside a vhost name as %2F"),
            ("amqp://localhost/?heartbeat=soon", "invalid heartbeat='soon'"),
            ("amqp://localhost/?heartbeat=-1", "from 0 to 65535"),
            ("amqp://localhost/?frame_max=100", "at least 4096 bytes"),
            ("amqp://localhost/?channel_max=70000", "invalid channel_max"),
            ("amqp://localhost/?connection_timeout=0", "positive number of seconds"),
            ("amqp://localhost/?hearbeat=5", "unknown option 'hearbeat'"),
            ("amqp://localhost/?heartbeat=5&heartbeat=6", "given twice"),
        ],
    )
    def test_invalid(self, text: str, message: str) -> None:
        """Invalid URLs raise AMQPConfigError naming the problem."""
        with pytest.raises(amqp.AMQPConfigError, match=message):
            amqp.URL.parse(text)

    def test_invalid_url_hides_password(self) -> None:
        """The error for an unparsable URL does not repeat its password."""
        with pytest.raises(amqp.AMQPConfigError) as info:
            amqp.URL.parse("amqp://user:secret@localhost:notaport/")
        assert "secret" not in str(info.value)


class TestRedacted:
    """URL.redacted and repr."""

    def test_password_is_hidden(self) -> None:
        """redacted() replaces the password with *** and keeps the rest."""
        url = amqp.URL.parse("amqp://lab:secret@broker:5673/lab%2Fone?heartbeat=15")
        assert url.redacted() == "amqp://lab:***@broker:5673/lab%2Fone?heartbeat=15"

    def test_default_vhost(self) -> None:
        """The default vhost "/" redacts to %2F, which parses back to "/"."""
        url = amqp.URL.parse("amqp://broker")
        assert url.redacted() == "amqp://guest:***@broker:5672/%2F"
        assert amqp.URL.parse(url.redacted()).vhost == "/"

    def test_repr_hides_password(self) -> None:
        """repr() of a URL, which ends up in logs, leaves the password out."""
        assert "secret" not in repr(amqp.URL.parse("amqp://lab:secret@broker/"))
