"""The HTTP client handed to plugins: one origin, a byte cap and a deadline per request.

httpx alone would send a plugin's credential headers (``X-Api-Key``) to
whatever host a redirect names, bound only each network operation (so a
server sending a byte every few seconds holds a request for ever), and read
an answer of any size, decompressed, into memory. ``PluginHTTPClient``
closes all three, for every way a plugin sends a request (``get``,
``request``, ``stream``, ``send``): every one of them goes through ``send``.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import trio

from ._errors import PluginError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""What a plugin's HTTP client reads of one answer at most, unless told otherwise: 10 MiB."""

# What plugin clients ask for, and all that they accept: the decoded size of
# these can be counted in bounded steps before httpx decodes them.
ACCEPT_ENCODING = "gzip, deflate"
# Encodings httpx decodes that the counter cannot follow; refused rather
# than decoded without a bound.
_UNCOUNTED_ENCODINGS = frozenset({"br", "zstd"})
# Output per inflate step while counting: what counting costs in memory.
_INFLATE_STEP = 64 * 1024
# Statuses (and HEAD) whose Content-Length describes no body on the wire.
_NO_BODY_STATUSES = frozenset({204, 304})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ResponseTooLargeError(PluginError, httpx.RequestError):
    """An answer (decompressed) is larger than the client's ``max_response_bytes``."""

    def __init__(self, message: str, *, limit: int, request: httpx.Request) -> None:
        super().__init__(message, request=request)
        self.limit = limit


class RequestDeadlineError(PluginError, httpx.TimeoutException):
    """A request, redirects and answer included, took longer than the client's ``timeout``."""

    def __init__(self, message: str, *, timeout: float, request: httpx.Request) -> None:
        super().__init__(message, request=request)
        self.timeout = timeout


class CrossOriginRedirectError(PluginError, httpx.RequestError):
    """A redirect led to another origin, where the plugin's credentials must not go."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _show_origin(url: httpx.URL) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _show(request: httpx.Request) -> str:
    # Without user:password, so that no message carries a credential from the URL.
    url = request.url.copy_with(username=None, password=None)
    return f"{request.method} {url}"


def _too_large(request: httpx.Request, limit: int) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"{_show(request)}: the answer is larger than {limit} bytes (the client's "
        "max_response_bytes, counted after decompression); it was not read further",
        limit=limit,
        request=request,
    )


@contextmanager
def _within(deadline: float, timeout: float, request: httpx.Request) -> Iterator[None]:
    """Run the block until ``deadline``; past it, raise RequestDeadlineError."""
    with trio.move_on_at(deadline) as scope:
        yield
    if scope.cancelled_caught:
        raise RequestDeadlineError(
            f"{_show(request)} did not finish within {timeout:g} s (the client's timeout, "
            "which bounds connecting, redirects and reading the answer)",
            timeout=timeout,
            request=request,
        )


class _DecodedSize:
    """Counts what an answer decodes to, a bounded step at a time, keeping none of it.

    It inflates gzip and deflate exactly as httpx's decoders do (deflate:
    zlib-wrapped, or raw if the first chunk says otherwise), so that the
    count is the size httpx will produce, known before httpx produces it.
    """

    def __init__(self, encoding: str | None) -> None:
        self.total = 0
        self._encoding = encoding
        self._first = True
        self._inflater: Any = None
        if encoding == "gzip":
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()

    def add(self, chunk: bytes, limit: int) -> None:
        """Count ``chunk``; stops counting early once ``total`` exceeds ``limit``."""
        if self._inflater is None:
            self.total += len(chunk)
            return
        first, self._first = self._first, False
        try:
            self._inflate(chunk, limit)
        except zlib.error:
            if not (first and self._encoding == "deflate"):
                raise
            # As httpx does: start the first chunk again as raw deflate.
            self.total = 0
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self._inflate(chunk, limit)

    def _inflate(self, chunk: bytes, limit: int) -> None:
        inflater = self._inflater
        out = inflater.decompress(chunk, _INFLATE_STEP)
        self.total += len(out)
        # Output is pending while input is left over or a step came back full.
        while (
            out and self.total <= limit and (inflater.unconsumed_tail or len(out) == _INFLATE_STEP)
        ):
            out = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
            self.total += len(out)


async def _unwind(chunks: AsyncIterator[bytes]) -> None:
    """End httpx's layered stream generators through their own clean-up.

    Stopping between two of their yields would leave every layer suspended
    until the garbage collector finalises it (trio warns about each one). A
    read in a cancelled scope makes the innermost layer raise ``Cancelled``
    at its next socket read, which each layer above handles on its way out;
    only what is already buffered is read, and dropped.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        async for _ in chunks:
            pass


class _BoundedStream(httpx.AsyncByteStream):
    """An answer's raw bytes, each read bounded by the deadline, the decoded total by a cap."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        *,
        request: httpx.Request,
        encoding: str | None,
        limit: int,
        deadline: float,
        timeout: float,
    ) -> None:
        self._inner = inner
        self._request = request
        self._encoding = encoding
        self._limit = limit
        self._deadline = deadline
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = _DecodedSize(self._encoding)
        chunks = aiter(self._inner)
        while True:
            # No yield inside the deadline's scope: it would leak into the reader.
            with _within(self._deadline, self._timeout, self._request):
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
            error: httpx.RequestError | None = None
            try:
                size.add(chunk, self._limit)
            except zlib.error as err:
                error = httpx.DecodingError(
                    f"{_show(self._request)}: the {self._encoding} answer is corrupt: {err}",
                    request=self._request,
                )
            if error is None and size.total > self._limit:
                error = _too_large(self._request, self._limit)
            if error is not None:
                await _unwind(chunks)
                raise error
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class PluginHTTPClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that keeps a plugin's requests on one origin and bounded.

    - **Redirects** are followed only to the origin (scheme, host, port) of
      the request; one to another origin raises ``CrossOriginRedirectError``,
      so no header the plugin set (``X-Api-Key``, a cookie) reaches a host
      it was not meant for.
    - **Time**: ``timeout`` seconds bound each request as a whole, from
      connecting through redirects to the last byte of the answer (for
      ``stream()``, to the last byte read); past it, ``RequestDeadlineError``
      (an ``httpx.TimeoutException``).
    - **Size**: an answer larger than ``max_response_bytes``, counted after
      gzip or deflate decoding, raises ``ResponseTooLargeError`` as soon as
      it is known, with at most one network read past the cap in memory.
    """

    def __init__(
        self,
        *,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float,
        max_response_bytes: int,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"open_http_client: timeout must be positive, got {timeout}")
        if max_response_bytes < 1:
            raise ValueError(
                f"open_http_client: max_response_bytes must be at least 1, got {max_response_bytes}"
            )
        merged = httpx.Headers({"Accept-Encoding": ACCEPT_ENCODING})
        merged.update(headers or {})
        super().__init__(
            base_url=base_url,
            headers=merged,
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
        )
        self.deadline_seconds = timeout
        self.max_response_bytes = max_response_bytes

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        # Typed loosely: httpx does not export the types of its own defaults.
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        deadline = trio.current_time() + self.deadline_seconds
        follow = follow_redirects if isinstance(follow_redirects, bool) else self.follow_redirects
        with _within(deadline, self.deadline_seconds, request):
            response = await self._send_within_origin(request, auth=auth, follow=follow)
            try:
                self._bound(response, deadline)
                if not stream:
                    await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    async def _send_within_origin(
        self,
        request: httpx.Request,
        *,
        auth: Any,
        follow: bool,
    ) -> httpx.Response:
        # httpx follows redirects itself only with follow_redirects=True, and
        # then strips nothing but Authorization; here each hop is checked first.
        history: list[httpx.Response] = []
        while True:
            response = await super().send(request, stream=True, auth=auth, follow_redirects=False)
            following = response.next_request
            if not follow or following is None:
                response.history = history
                return response
            # The redirect's own body is never read: it is not wanted, nor bounded.
            await response.aclose()
            if _origin(following.url) != _origin(request.url):
                raise CrossOriginRedirectError(
                    f"{_show(request)} was redirected to another origin "
                    f"({_show_origin(following.url)}); plugin HTTP clients follow redirects "
                    f"only within {_show_origin(request.url)}, so that the plugin's credentials "
                    "never reach another host: configure the URL the redirect leads to",
                    request=request,
                )
            if len(history) >= self.max_redirects:
                raise httpx.TooManyRedirects(
                    f"{_show(request)}: more than {self.max_redirects} redirects",
                    request=request,
                )
            history.append(response)
            request = following

    def _bound(self, response: httpx.Response, deadline: float) -> None:
        request = response.request
        encodings = [
            value.strip().lower()
            for value in response.headers.get_list("content-encoding", split_commas=True)
        ]
        layers = [value for value in encodings if value in {"gzip", "deflate"}]
        uncounted = [value for value in encodings if value in _UNCOUNTED_ENCODINGS]
        if uncounted or len(layers) > 1:
            raise httpx.DecodingError(
                f"{_show(request)} answered with Content-Encoding {', '.join(encodings)}; "
                f"plugin HTTP clients accept {ACCEPT_ENCODING} (one layer) only, since the "
                "decoded size of anything else cannot be bounded while reading it",
                request=request,
            )
        length = response.headers.get("content-length", "")
        if (
            not layers
            and request.method != "HEAD"
            and response.status_code not in _NO_BODY_STATUSES
            and length.isdigit()
            and int(length) > self.max_response_bytes
        ):
            raise _too_large(request, self.max_response_bytes)
        if not isinstance(response.stream, httpx.AsyncByteStream):  # pragma: no cover
            raise TypeError("an async client's answer has an async stream")
        response.stream = _BoundedStream(
            response.stream,
            request=request,
            encoding=layers[0] if layers else None,
            limit=self.max_response_bytes,
            deadline=deadline,
            timeout=self.deadline_seconds,
        )
