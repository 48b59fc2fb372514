"""URL parsing and redaction."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# Characters that end the userinfo early when left unencoded: "/" starts the
# path (the vhost), "?" the query, "#" the fragment; "@" and ":" do not.
_DELIMITERS = "/?#@:"
# Letters that occur in no error message, so a fragment found in one can only
# have come from the password.
_PLAIN = "JKVWXZjkqwxz"


def _fragments(password: str) -> set[str]:
    """Every piece of ``password`` of three characters or more that holds a plain letter."""
    return {
        password[start:end]
        for start in range(len(password))
        for end in range(start + 3, len(password) + 1)
        if any(char in _PLAIN for char in password[start:end])
    }


def _shown_text(url: str) -> str:
    """What the library lets anyone see of ``url``: its error, or its redacted form."""
    try:
        return amqp.URL.parse(url).redacted()
    except amqp.AMQPConfigError as err:
        error = err
    # The chain is shown too, by a traceback or a log line with exc_info: it
    # must not carry urllib's own message, which quotes the port.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return str(error)


class TestCredentialsNeverEchoed:
    """Neither an error message nor redacted() repeats the userinfo, or any piece of it."""

    @pytest.mark.parametrize(
        "password",
        [
            "Jkq/Vwx/Zjk",
            "Jkq?Vwx",
            "Jkq#Vwx",
            "Jkq@Vwx",
            "Jkq:Vwx",
            "1234/Jkqvwx",
            "1234?heartbeat=Jkqvwx",
            "Jkq#Vwx/Zjk?Kqw@Xzj",
            "[Jkqvwx]",
            "Jkq]Vwx[",
        ],
    )
    def test_password_with_a_delimiter(self, password: str) -> None:
        """A password with an unencoded delimiter never shows up in what the parser says."""
        shown = _shown_text(f"amqp://lab:{password}@rabbit:5672/%2F")
        for fragment in _fragments(password):
            assert fragment not in shown

    @pytest.mark.parametrize("delimiter", ["/", "?", "#"])
    def test_delimiter_in_password_is_named_with_its_fix(self, delimiter: str) -> None:
        """A '/', '?' or '#' in the password is refused with the encoding to use instead."""
        with pytest.raises(amqp.AMQPConfigError, match="percent-encode") as info:
            amqp.URL.parse(f"amqp://lab:Jkq{delimiter}Vwx@rabbit:5672/%2F")
        assert "%2F" in str(info.value)

    @pytest.mark.parametrize("user", ["Jkq/Vwx", "Jkq?Vwx", "Jkq#Vwx"])
    def test_user_name_with_a_delimiter(self, user: str) -> None:
        """A user name cut short by a delimiter is refused without being quoted."""
        with pytest.raises(amqp.AMQPConfigError) as info:
            amqp.URL.parse(f"amqp://{user}:pw@rabbit:5672/%2F")
        for fragment in _fragments(user):
            assert fragment not in str(info.value)

    def test_password_with_at_sign_parses(self) -> None:
        """An '@' in the password is unambiguous (the last '@' ends the userinfo) and accepted."""
        url = amqp.URL.parse("amqp://lab:Jkq@Vwx@rabbit:5672/%2F")
        assert (url.username, url.password, url.host) == ("lab", "Jkq@Vwx", "rabbit")

    def test_bad_port_is_not_quoted(self) -> None:
        """A port that is not a number is refused without quoting the text where it stood."""
        with pytest.raises(amqp.AMQPConfigError, match="from 0 to 65535") as info:
            amqp.URL.parse("amqp://lab:Jkqvwx")
        assert "Jkqvwx" not in str(info.value)

    @hypothesis.settings(max_examples=300, deadline=None)
    @given(
        user=st.text(alphabet="bcdfgh", min_size=1, max_size=8),
        password=st.text(alphabet=_PLAIN + _DELIMITERS + "[]", min_size=3, max_size=24),
    )
    def test_any_password(self, user: str, password: str) -> None:
        """For any user and password, no piece of the password is shown."""
        shown = _shown_text(f"amqp://{user}:{password}@rabbit:5672/%2F")
        for fragment in _fragments(password):
            assert fragment not in shown
