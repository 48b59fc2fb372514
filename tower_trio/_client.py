"""A small HTTP client for the commands that talk to a running tower."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Self

import attrs
import httpx

from ._errors import TowerError

if TYPE_CHECKING:
    from types import TracebackType

    from ._config import Settings

__all__ = ["Answer", "TowerClient", "TowerUnreachableError", "default_url", "encode"]

# Long enough for ``?wait=published``, which the tower bounds by TOWER_PUBLISH_TIMEOUT.
_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class TowerUnreachableError(TowerError):
    """No answer from the tower: not running, wrong address, or the network is down."""


def default_url(settings: Settings) -> str:
    """The tower's address from TOWER_HTTP_HOST and TOWER_HTTP_PORT, as a client dials it."""
    host = settings.http_host
    # A tower listening on every interface is reached on the loopback one.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}"


@attrs.frozen
class Answer:
    """One response: its status and its decoded JSON body (``None`` if it had none)."""

    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def problem(self) -> str:
        """The tower's error as one line: ``422 invalid trigger: spec: must not be empty``."""
        body = self.body
        if isinstance(body, dict) and "error" in body:
            details = [
                f"{d['field']}: {d['message']}"
                if isinstance(d, dict) and {"field", "message"} <= d.keys()
                else str(d)
                for d in body.get("details") or ()
            ]
            return f"{self.status} {body['error']}" + (f": {'; '.join(details)}" if details else "")
        text = " ".join(self.text.split())
        return f"{self.status} {text[:200]}" if text else str(self.status)


class TowerClient:
    """Blocking calls to the tower's HTTP API, one keep-alive connection for many."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=_TIMEOUT, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Answer:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            reason = str(err) or type(err).__name__
            raise TowerUnreachableError(
                f"cannot reach the tower at {self.url}: {reason}; is it running? "
                "(give its address with --url)"
            ) from err
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return Answer(response.status_code, body, response.text)

    def post_trigger(self, body: bytes, *, wait: bool = False, key: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        params = {"wait": "published"} if wait else {}
        return self._request("POST", "/triggers", content=body, headers=headers, params=params)

    def get_trigger(self, uuid: str) -> Answer:
        return self._request("GET", f"/triggers/{uuid}")

    def list_triggers(self, **params: str) -> Answer:
        return self._request("GET", "/triggers", params=params)


def encode(value: Any) -> bytes:
    """JSON for a request body, as compact as the tower writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
