"""AMQP over TLS: the client's SSL context, the handshake, and what its failures mean.

OpenSSL reports a failed handshake as a reason code ("CERTIFICATE_VERIFY_FAILED",
"WRONG_VERSION_NUMBER", an alert sent by the broker). Operators see only a log
line, so each code is turned into what went wrong and what to check, in terms
of the URL and :func:`create_ssl_context`'s files; the error's
:class:`TLSFailure` lets an application name its own settings instead.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from ._errors import AMQPConfigError, TLSError, TLSFailure

if TYPE_CHECKING:
    import os

    from ._url import URL

# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_EMAIL_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH: Final = frozenset({62, 63, 64})

# What OpenSSL says when the bytes that came back are not a TLS record, as
# when an AMQP server answers a ClientHello with its protocol header. The
# wording differs between OpenSSL releases.
_NOT_TLS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
    }
)

# Alerts a broker sends when it does not accept the client's certificate.
_CLIENT_CERT_REFUSED: Final = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    }
)

_CLIENT_CERT_ADVICE: Final = (
    "check the client certificate and key (cert_file and key_file of create_ssl_context), "
    "and that the broker trusts the CA that signed that certificate"
)

# The first bytes of a TLS record (handshake or alert), as a TLS port answers
# an AMQP protocol header.
_TLS_RECORD_STARTS: Final = (b"\x15\x03", b"\x16\x03")


def create_ssl_context(
    *,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A client TLS context for ``amqps://``, built from PEM files.

    The broker's certificate is verified against ``ca_file`` (a CA bundle), or
    against the system's CAs without one, and must be valid for the host name
    in the URL. ``cert_file`` (with ``key_file``, unless the key is in the same
    file) is the client certificate for brokers that require one. The key must
    not be encrypted: a service cannot type a password.

    Raises :class:`AMQPConfigError` naming the file that cannot be used. The
    files are read here; in async code, call this in a thread.
    """
    if key_file is not None and cert_file is None:
        raise AMQPConfigError(
            "a client key was given without a client certificate; give the certificate too"
        )
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except OSError as err:
        raise AMQPConfigError(
            f"cannot use the CA file {str(ca_file)!r}: {_file_reason(err)}; it must be "
            "a PEM bundle of the CA certificates that signed the broker's certificate"
        ) from err
    if cert_file is not None:
        key = "" if key_file is None else f" with the key {str(key_file)!r}"
        key_path = cert_file if key_file is None else key_file
        try:
            context.load_cert_chain(
                cert_file, key_file, password=lambda: _refuse_password(key_path)
            )
        except OSError as err:
            raise AMQPConfigError(
                f"cannot use the client certificate {str(cert_file)!r}{key}: "
                f"{_file_reason(err)}; it must be a PEM certificate, and the key its "
                "private key in PEM"
            ) from err
    return context


def _refuse_password(key_file: str | os.PathLike[str]) -> NoReturn:
    # Without a password callback OpenSSL would prompt on the terminal, and a
    # service would hang at start-up instead of saying what is wrong.
    raise AMQPConfigError(
        f"the client key in {str(key_file)!r} is encrypted, and there is no one to type "
        "its password; store it unencrypted, readable only by the service's user "
        "(`openssl pkey -in KEY -out KEY.plain`)"
    )


def _file_reason(err: OSError) -> str:
    if isinstance(err, ssl.SSLError):
        return _reason_text(err)
    return (err.strerror or str(err)).lower()


def _reason_text(err: ssl.SSLError) -> str:
    # OpenSSL's reason codes are its messages in upper case with underscores
    # ("KEY_VALUES_MISMATCH"); str(err) adds the C source line.
    if err.reason:
        return str(err.reason).lower().replace("_", " ")
    return str(err)


async def open_tls_stream(
    tcp: trio.abc.Stream, url: URL, ssl_context: ssl.SSLContext | None
) -> trio.SSLStream[trio.abc.Stream]:
    """Run the TLS handshake over ``tcp``; close it and raise :class:`TLSError` on failure."""
    try:
        if ssl_context is None:
            # Loading the system's CAs reads a few hundred certificates.
            ssl_context = await trio.to_thread.run_sync(create_ssl_context)
        stream = trio.SSLStream(tcp, ssl_context, server_hostname=url.host)
        await stream.do_handshake()
    except trio.BrokenResourceError as err:
        await trio.aclose_forcefully(tcp)
        raise tls_error(url, err, handshake_done=False) from err
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


def ssl_error_in(err: BaseException | None) -> ssl.SSLError | None:
    """The SSL error behind ``err`` (trio keeps it as the cause), if there is one."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return cause
        cause = cause.__cause__
    return None


def tls_error(url: URL, err: BaseException | None, *, handshake_done: bool) -> TLSError:
    """What a failure of a TLS connection before the AMQP handshake means, and what to do."""
    cause = ssl_error_in(err)
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = str(cause.verify_message or _reason_text(cause)).rstrip(".")
        if cause.verify_code in _NAME_MISMATCH:
            return TLSError(
                url.host,
                url.port,
                f"the broker's certificate is not valid for the name {url.host!r} ({detail})",
                "connect with a host name the certificate was issued for (the host in the URL)",
                TLSFailure.NAME_MISMATCH,
            )
        return TLSError(
            url.host,
            url.port,
            f"the broker's certificate is not trusted ({detail})",
            "check the CAs the SSL context trusts (ca_file of create_ssl_context): they must "
            "include the CA that signed the broker's certificate (without ca_file, the "
            "system's CAs are trusted)",
            TLSFailure.UNTRUSTED,
        )
    if cause is not None and not _is_eof(cause):
        code = str(cause.reason or "")
        detail = _reason_text(cause)
        if code in _NOT_TLS:
            return TLSError(
                url.host,
                url.port,
                f"the server does not answer in TLS ({detail})",
                "this looks like a plain AMQP port: use the broker's TLS port (5671 by "
                "default) with amqps://, or amqp:// for this one",
                TLSFailure.NOT_TLS,
            )
        if code.endswith("CERTIFICATE_REQUIRED"):
            failure = TLSFailure.CLIENT_CERT_REQUIRED
            advice = (
                "the broker requires a client certificate: give one (cert_file and "
                "key_file of create_ssl_context)"
            )
        elif code in _CLIENT_CERT_REFUSED:
            failure = TLSFailure.CLIENT_CERT_REFUSED
            advice = _CLIENT_CERT_ADVICE
        else:
            failure = TLSFailure.HANDSHAKE_REFUSED
            advice = (
                "check that the broker accepts TLS 1.2 or later and, if it requires client "
                "certificates, give one (cert_file and key_file of create_ssl_context)"
            )
        return TLSError(
            url.host, url.port, f"the broker refused the TLS handshake ({detail})", advice, failure
        )
    # No alert came, only a closed socket. With TLS 1.3 a broker checks the
    # client certificate after the client has finished its handshake and
    # sent the AMQP header; it then closes the socket with that header
    # unread, and the reset discards its alert before it can be read.
    if handshake_done:
        return TLSError(
            url.host,
            url.port,
            f"the broker closed the connection right after the TLS handshake ({_drop_reason(err)})",
            "it most likely refused the client certificate or the lack of one; "
            + _CLIENT_CERT_ADVICE,
            TLSFailure.CLOSED_AFTER_HANDSHAKE,
        )
    return TLSError(
        url.host,
        url.port,
        f"the server closed the connection during the TLS handshake ({_drop_reason(err)})",
        "check that this is the broker's TLS port and, if the broker requires client "
        "certificates, " + _CLIENT_CERT_ADVICE,
        TLSFailure.CLOSED_DURING_HANDSHAKE,
    )


def _is_eof(err: ssl.SSLError) -> bool:
    return isinstance(err, ssl.SSLEOFError) or err.reason == "UNEXPECTED_EOF_WHILE_READING"


def _drop_reason(err: BaseException | None) -> str:
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__
    return str(err or "") or "the socket was closed"


def looks_like_tls(data: bytes | bytearray) -> bool:
    """Whether ``data``, the first bytes a server sent, start a TLS record."""
    return data.startswith(_TLS_RECORD_STARTS)


def tls_port_error(url: URL) -> TLSError:
    """The error for an ``amqp://`` URL that points at a TLS port."""
    return TLSError(
        url.host,
        url.port,
        "the server answered in TLS, but the URL is amqp://",
        "use an amqps:// URL for this port",
        TLSFailure.TLS_PORT,
    )
