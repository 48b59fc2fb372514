"""The HTTP client plugins get from ``open_http_client``: one origin, a byte cap, a deadline.

The fake APIs are real HTTP servers on local ports, and their answers are
real: a body of 200 MB streamed lazily, a gzip bomb, a server that dribbles
a byte at a time. The waits that matter here are for real sockets, so these
tests use small real timeouts, each bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import json
import tracemalloc
import zlib
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from tests._fakes import JSON_CONTENT, AsgiFake, send_response
from tower_trio import PluginError
from tower_trio.plugin import (
    CrossOriginRedirectError,
    RequestDeadlineError,
    ResponseTooLargeError,
    open_http_client,
)
from tower_trio.testing import serve_fake_api

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests._fakes import Receive, Scope, Send

MiB = 1024 * 1024
CHUNK = 64 * 1024
ZEROS = bytes(CHUNK)
HUGE = 200 * MiB
BOMB = 100 * MiB
LIMIT = 1 * MiB
API_KEY = "k3y-that-stays-home"
PAYLOAD = {"data": [{"id": n, "note": "x" * 50} for n in range(200)]}


@functools.cache
def gzip_bomb() -> bytes:
    """BOMB bytes of zeros, gzip-compressed to about a thousandth of that."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(BOMB // MiB)]
    return b"".join([*parts, compressor.flush()])


def compressed(payload: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(payload) + compressor.flush()


@attrs.frozen
class Seen:
    path: str
    headers: dict[str, str]


@attrs.define
class FakeApi(AsgiFake):
    """An API whose paths each answer in one of the ways a hostile or broken server might."""

    elsewhere: str = ""
    """Base URL of another server, where ``/away`` redirects."""
    requests: list[Seen] = attrs.Factory(list)
    sent: int = 0
    """Body bytes handed to the server for sending, before the client hung up."""

    async def respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.requests.append(Seen(scope["path"], headers))
        async with trio.open_nursery() as nursery:

            async def hang_up_with_the_client() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(hang_up_with_the_client)
            await self.answer(scope["path"], send)
            nursery.cancel_scope.cancel()

    async def answer(self, path: str, send: Send) -> None:
        payload = json.dumps(PAYLOAD).encode()
        if path == "/data":
            await self.reply(send, 200, payload)
        elif path == "/moved":
            await self.reply(send, 302, b"", [(b"location", b"/data")])
        elif path == "/away":
            await self.reply(send, 302, b"", [(b"location", f"{self.elsewhere}/data".encode())])
        elif path == "/loop":
            await self.reply(send, 302, b"", [(b"location", b"/loop")])
        elif path.startswith("/bytes/"):
            await self.reply(send, 200, b"x" * int(path.rpartition("/")[2]))
        elif path in ("/huge", "/huge-declared"):
            await self.stream_zeros(send, declared=path == "/huge-declared")
        elif path == "/bomb":
            await self.reply(send, 200, gzip_bomb(), [(b"content-encoding", b"gzip")])
        elif path == "/gzip":
            body = compressed(payload, zlib.MAX_WBITS | 16)
            await self.reply(send, 200, body, [(b"content-encoding", b"gzip")])
        elif path == "/deflate":
            body = compressed(payload, zlib.MAX_WBITS)
            await self.reply(send, 200, body, [(b"content-encoding", b"deflate")])
        elif path == "/raw-deflate":
            body = compressed(payload, -zlib.MAX_WBITS)
            await self.reply(send, 200, body, [(b"content-encoding", b"deflate")])
        elif path == "/corrupt":
            await self.reply(send, 200, b"not gzip at all", [(b"content-encoding", b"gzip")])
        elif path == "/brotli":
            await self.reply(send, 200, b"\x0b\x02\x80{}\x03", [(b"content-encoding", b"br")])
        elif path == "/dribble":
            await self.dribble(send)
        else:
            await self.reply(send, 404, b"{}")

    async def reply(
        self, send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        await send_response(send, status, body, [JSON_CONTENT, *headers])

    async def stream_zeros(self, send: Send, *, declared: bool) -> None:
        # One 64 KiB buffer sent again and again: the server never holds the 200 MB.
        headers = [(b"content-length", str(HUGE).encode())] if declared else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(HUGE // CHUNK):
            await send({"type": "http.response.body", "body": ZEROS, "more_body": True})
            self.sent += CHUNK
        await send({"type": "http.response.body", "body": b""})

    async def dribble(self, send: Send) -> None:
        """One byte every 0.1 s for 30 s: no read ever waits long, the whole takes for ever."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(300):
            await send({"type": "http.response.body", "body": b" ", "more_body": True})
            self.sent += 1
            await trio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
async def api(nursery: trio.Nursery) -> tuple[FakeApi, str]:
    fake = FakeApi()
    url: str = await nursery.start(serve_fake_api, fake)
    return fake, url


@pytest.fixture
async def other(nursery: trio.Nursery) -> tuple[FakeApi, str]:
    fake = FakeApi()
    url: str = await nursery.start(serve_fake_api, fake)
    return fake, url


def client(url: str, **limits: Any) -> httpx.AsyncClient:
    return open_http_client(base_url=url, headers={"X-Api-Key": API_KEY}, **limits)


async def get(url: str, path: str, **limits: Any) -> httpx.Response:
    """One request with a fresh plugin client, the answer read."""
    async with client(url, **limits) as http:
        return await http.get(path)


async def stream(url: str, path: str, received: list[int], **limits: Any) -> None:
    """Read an answer through client.stream(), noting the size of each chunk handed out."""
    async with client(url, **limits) as http, http.stream("GET", path) as response:
        async for chunk in response.aiter_bytes():
            received.append(len(chunk))


class TestRedirects:
    async def test_a_same_origin_redirect_is_followed_with_the_headers(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """A redirect within the origin works as before, the plugin's headers kept."""
        fake, url = api
        with trio.fail_after(10):
            async with client(url) as http:
                response = await http.get("/moved")
        assert response.json() == PAYLOAD
        assert [seen.path for seen in fake.requests] == ["/moved", "/data"]
        assert all(seen.headers["x-api-key"] == API_KEY for seen in fake.requests)
        assert [r.status_code for r in response.history] == [302]

    async def test_a_redirect_to_another_origin_is_refused_and_the_other_host_gets_nothing(
        self, api: tuple[FakeApi, str], other: tuple[FakeApi, str]
    ) -> None:
        """Another port is another origin: the request fails there, naming both origins."""
        fake, url = api
        elsewhere, elsewhere_url = other
        fake.elsewhere = elsewhere_url
        with trio.fail_after(10), pytest.raises(CrossOriginRedirectError) as caught:
            await get(url, "/away")
        assert elsewhere.requests == []
        message = str(caught.value)
        assert f"GET {url}/away was redirected to another origin ({elsewhere_url})" in message
        assert "configure the URL the redirect leads to" in message
        assert API_KEY not in message
        assert isinstance(caught.value, httpx.HTTPError)
        assert isinstance(caught.value, PluginError)

    async def test_a_redirect_not_followed_is_returned_as_it_is(
        self, api: tuple[FakeApi, str], other: tuple[FakeApi, str]
    ) -> None:
        """With follow_redirects=False the plugin gets the 302 and decides for itself."""
        fake, url = api
        fake.elsewhere = other[1]
        with trio.fail_after(10):
            async with client(url) as http:
                response = await http.get("/away", follow_redirects=False)
        assert response.status_code == 302
        assert response.next_request is not None
        assert other[0].requests == []

    async def test_a_redirect_loop_ends(self, api: tuple[FakeApi, str]) -> None:
        """A redirect that leads back to itself stops after httpx's max_redirects."""
        fake, url = api
        with trio.fail_after(10), pytest.raises(httpx.TooManyRedirects, match="more than 20"):
            await get(url, "/loop")
        assert len(fake.requests) == 21


class TestResponseSize:
    async def test_a_200_mb_answer_fails_fast_with_memory_bounded(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """Reading stops just past the cap: the error names it, memory stays near it."""
        fake, url = api
        tracemalloc.start()
        try:
            with trio.fail_after(10), pytest.raises(ResponseTooLargeError) as caught:
                await get(url, "/huge", max_response_bytes=LIMIT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert str(caught.value) == (
            f"GET {url}/huge: the answer is larger than {LIMIT} bytes (the client's "
            "max_response_bytes, counted after decompression); it was not read further"
        )
        assert caught.value.limit == LIMIT
        # The cap and one read in memory, plus the servers' own buffers; not 200 MB.
        assert peak < 16 * MiB
        # What the sockets between server and client can buffer, beyond the cap.
        assert fake.sent < LIMIT + 32 * MiB

    async def test_a_declared_length_over_the_cap_is_refused_before_reading(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """Content-Length alone tells: nothing of the body is read."""
        _, url = api
        with trio.fail_after(10), pytest.raises(ResponseTooLargeError, match="larger than"):
            await get(url, "/huge-declared", max_response_bytes=LIMIT)

    async def test_the_stream_api_is_capped_too(self, api: tuple[FakeApi, str]) -> None:
        """client.stream() hands out bytes until the cap, then raises."""
        _, url = api
        received: list[int] = []
        with trio.fail_after(10), pytest.raises(ResponseTooLargeError):
            await stream(url, "/huge", received, max_response_bytes=LIMIT)
        assert 0 < sum(received) <= LIMIT

    @pytest.mark.parametrize(("size", "fits"), [(1000, True), (1001, False)])
    async def test_the_cap_is_inclusive(
        self, api: tuple[FakeApi, str], size: int, fits: bool
    ) -> None:
        """An answer of exactly max_response_bytes is read; one byte more is not."""
        _, url = api
        with trio.fail_after(10):
            async with client(url, max_response_bytes=1000) as http:
                if fits:
                    assert len((await http.get(f"/bytes/{size}")).content) == size
                else:
                    with pytest.raises(ResponseTooLargeError):
                        await http.get(f"/bytes/{size}")

    async def test_a_gzip_bomb_fails_on_its_decompressed_size(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """100 KB of gzip that inflates to 100 MB is refused, never inflated in memory."""
        _, url = api
        assert len(gzip_bomb()) < LIMIT
        tracemalloc.start()
        try:
            with trio.fail_after(10), pytest.raises(ResponseTooLargeError) as caught:
                await get(url, "/bomb", max_response_bytes=LIMIT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "counted after decompression" in str(caught.value)
        assert peak < 16 * MiB

    @pytest.mark.parametrize("path", ["/gzip", "/deflate", "/raw-deflate"])
    async def test_compressed_answers_within_the_cap_are_decoded(
        self, api: tuple[FakeApi, str], path: str
    ) -> None:
        """gzip, zlib deflate and raw deflate answers read as httpx reads them."""
        _, url = api
        with trio.fail_after(10):
            async with client(url, max_response_bytes=LIMIT) as http:
                response = await http.get(path)
        assert response.json() == PAYLOAD

    async def test_a_corrupt_gzip_answer_is_a_decoding_error(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """What cannot be inflated to be counted is refused as httpx would refuse it."""
        _, url = api
        with trio.fail_after(10), pytest.raises(httpx.DecodingError, match="answer is corrupt"):
            await get(url, "/corrupt")

    async def test_only_encodings_that_can_be_counted_are_asked_for_or_accepted(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """The client asks for gzip or deflate; a brotli answer is refused, saying why."""
        fake, url = api
        with trio.fail_after(10), pytest.raises(httpx.DecodingError) as caught:
            await get(url, "/brotli")
        assert fake.requests[0].headers["accept-encoding"] == "gzip, deflate"
        assert "accept gzip, deflate (one layer) only" in str(caught.value)


class TestDeadline:
    async def test_a_dribbling_server_fails_at_the_overall_deadline(
        self, api: tuple[FakeApi, str]
    ) -> None:
        """A byte every 0.1 s never trips a per-read timeout; the 0.5 s deadline does."""
        fake, url = api
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(RequestDeadlineError) as caught:
            await get(url, "/dribble", timeout=0.5)
        assert 0.5 <= trio.current_time() - started < 2
        assert fake.sent >= 2
        assert str(caught.value) == (
            f"GET {url}/dribble did not finish within 0.5 s (the client's timeout, "
            "which bounds connecting, redirects and reading the answer)"
        )
        assert isinstance(caught.value, httpx.TimeoutException)
        assert isinstance(caught.value, PluginError)

    async def test_the_deadline_covers_reading_a_stream(self, api: tuple[FakeApi, str]) -> None:
        """With client.stream() the deadline runs on while the plugin reads."""
        _, url = api
        received: list[int] = []
        with trio.fail_after(5), pytest.raises(RequestDeadlineError):
            await stream(url, "/dribble", received, timeout=0.5)
        assert received

    async def test_the_client_is_usable_after_a_deadline(self, api: tuple[FakeApi, str]) -> None:
        """A request cut short leaves no broken connection behind for the next one."""
        _, url = api
        with trio.fail_after(5):
            async with client(url, timeout=0.5) as http:
                with pytest.raises(RequestDeadlineError):
                    await http.get("/dribble")
                assert (await http.get("/data")).json() == PAYLOAD


class TestArguments:
    @pytest.mark.parametrize(
        ("limits", "message"),
        [
            ({"timeout": 0}, "timeout must be positive"),
            ({"max_response_bytes": 0}, "max_response_bytes must be at least 1"),
        ],
    )
    def test_limits_are_checked(self, limits: dict[str, Any], message: str) -> None:
        """A limit that would refuse every request is a mistake, said at once."""
        with pytest.raises(ValueError, match=message):
            open_http_client(**limits)
