"""HTTP poll: items that appear in a JSON HTTP API become triggers.

Every ``interval`` seconds the plugin GETs ``url``, picks the items out of
the answer with a path (``data.items``, ``$.data[*]``), identifies each one
by its ``item_id`` path and turns each item not seen before into a trigger
through a template whose strings may name parts of the item
(``"{item.volume}"``). The ids of the items sent are kept in the plugin's
state, so an item triggers once, also across restarts.

Paths are a small, documented subset of JSONPath, implemented here rather
than taken from a library: the plugin needs member, index and wildcard
steps and nothing more, and a tiny grammar keeps the error messages exact
("$.data has no 'items'") and the behaviour easy to document in full.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio

from tower_trio import ConfigError, InvalidTriggerError, Trigger
from tower_trio.plugin import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ResponseTooLargeError,
    State,
    open_http_client,
    poll,
    report_item_error,
    secret,
    trigger_from_json,
)

_VARIABLE = "PLUGIN_HTTP_POLL_"
_KEY_PREFIX = "http_poll:"
_SEEN_PREFIX = "seen:"
# An id longer than this is replaced by its hash, so that the idempotency
# key (at most 256 characters) and the state key stay short.
MAX_ID_LENGTH = 200
# Decoding a body this large would hold up every other task in the tower.
_PARSE_IN_THREAD = 256 * 1024
# Header names that carry credentials by convention; such a header in the
# shown PLUGIN_HTTP_POLL_HEADERS would put the credential in GET /plugins.
_CREDENTIAL_HEADER_WORDS = ("auth", "cookie", "key", "password", "secret", "session", "token")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")


class PathError(ValueError):
    """A path that cannot be read, or that does not fit the document it is applied to."""


class TemplateError(ValueError):
    """A template that cannot be used, whatever the item."""


class ApiError(Exception):
    """The API did not answer successfully: an HTTP error status, a timeout, no connection."""


class ResponseError(Exception):
    """The API answered, but not with JSON holding items where the path says."""


# -- paths ---------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_@$-]+")
_STEP = re.compile(
    r"""
      \.(?P<name>[A-Za-z0-9_@$-]+)
    | (?:\.\*|\[\*\])(?P<star>)
    | \[(?P<index>-?[0-9]+)\]
    | \['(?P<single>[^']*)'\]
    | \["(?P<double>[^"]*)"\]
    """,
    re.VERBOSE,
)

Step = str | int | None
"""A member name, a list index, or ``None`` for the wildcard ``[*]``."""


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _child(where: str, key: str) -> str:
    return f"{where}.{key}" if _NAME.fullmatch(key) else f"{where}[{json.dumps(key)}]"


def _step(where: str, value: Any, step: Step) -> list[tuple[str, Any]]:
    if step is None:
        if isinstance(value, list):
            return [(f"{where}[{i}]", element) for i, element in enumerate(value)]
        if isinstance(value, dict):
            return [(_child(where, key), element) for key, element in value.items()]
        raise PathError(f"{where} is {_kind(value)}, not a list or object to take [*] of")
    if isinstance(step, int):
        if not isinstance(value, list):
            raise PathError(f"{where} is {_kind(value)}, not a list")
        if not -len(value) <= step < len(value):
            raise PathError(f"{where} has no element [{step}] (it has {len(value)})")
        return [(f"{where}[{step}]", value[step])]
    if not isinstance(value, dict):
        raise PathError(f"{where} is {_kind(value)}, not an object")
    if step not in value:
        raise PathError(f"{where} has no {step!r}")
    return [(_child(where, step), value[step])]


@attrs.frozen
class JsonPath:
    """A parsed path: a root, then member, index and wildcard steps."""

    text: str
    root: str
    steps: tuple[Step, ...]

    @property
    def fans_out(self) -> bool:
        """Whether the path has a wildcard, and so may match many values."""
        return any(step is None for step in self.steps)

    def matches(self, document: Any) -> list[Any]:
        """Every value the path reaches; raises PathError saying where it stops."""
        found: list[tuple[str, Any]] = [(self.root, document)]
        for step in self.steps:
            found = [match for where, value in found for match in _step(where, value, step)]
        return [value for _, value in found]

    def value(self, document: Any) -> Any:
        """The value the path reaches; with a wildcard, the list of every match."""
        found = self.matches(document)
        return found if self.fans_out else found[0]

    def items(self, document: Any) -> list[Any]:
        """The items: the wildcard's matches, or else the elements of the list reached."""
        if self.fans_out:
            return self.matches(document)
        found = self.value(document)
        if not isinstance(found, list):
            raise PathError(
                f"{self.text!r} leads to {_kind(found)}, not a list of items "
                "(end the path with [*] to take each member of an object)"
            )
        return found


def parse_path(text: str, *, root: str = "$") -> JsonPath:
    """Parse ``data.items``, ``$.data[*]``, ``rows[0]['a b']`` and the like.

    The root (``$``, or ``item`` in templates) may be left out of a ``$``
    path: ``data.items`` is ``$.data.items``.
    """
    rest = text.strip()
    if not rest:
        raise PathError(f"a path cannot be empty; {root} is the whole document")
    if rest == root or rest.startswith((root + ".", root + "[")):
        rest = rest[len(root) :]
    elif root != "$":
        raise PathError(f"{text.strip()!r} must start with {root!r}, like {root}.name")
    elif not rest.startswith((".", "[")):
        rest = "." + rest
    steps: list[Step] = []
    position = 0
    while position < len(rest):
        match = _STEP.match(rest, position)
        if match is None:
            raise PathError(
                f"cannot read {text.strip()!r} from {rest[position:]!r}; a path is made of "
                ".name, [index], [*] and ['any name'] steps, like data.items or $.data[*]"
            )
        if match["star"] is not None:
            steps.append(None)
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(match["name"] or match["single"] or match["double"] or "")
        position = match.end()
    return JsonPath(text.strip(), root, tuple(steps))


# -- templates -----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _item: value


def _at(path: JsonPath, where: str) -> Callable[[Any], Any]:
    def render(item: Any) -> Any:
        try:
            return path.value(item)
        except PathError as err:
            raise PathError(f"template {where}: {err}") from None

    return render


def _compile_string(text: str, where: str) -> Callable[[Any], Any]:
    parts: list[str | JsonPath] = []
    literal = ""
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal += text[position : match.start()]
        position = match.end()
        token = match[0]
        if token in ("{{", "}}"):
            literal += token[0]
            continue
        if match[1] is None:
            raise TemplateError(
                f"template {where}: a lone {token!r}; write {token * 2} for a literal brace"
            )
        try:
            path = parse_path(match[1], root="item")
        except PathError as err:
            raise TemplateError(f"template {where}: {err}") from None
        if literal:
            parts.append(literal)
        literal = ""
        parts.append(path)
    literal += text[position:]
    if literal:
        parts.append(literal)
    paths = [part for part in parts if isinstance(part, JsonPath)]
    if not paths:
        return _constant("".join(str(part) for part in parts))
    if len(parts) == 1:
        # A string that is one placeholder keeps the value's JSON type.
        return _at(paths[0], where)
    renders = [_constant(part) if isinstance(part, str) else _at(part, where) for part in parts]
    return lambda item: "".join(_text(render(item)) for render in renders)


def _compile(node: Any, where: str) -> Callable[[Any], Any]:
    if isinstance(node, dict):
        members = [
            (key, _compile(value, f"{where}.{key}" if where else key))
            for key, value in node.items()
        ]
        return lambda item: {key: render(item) for key, render in members}
    if isinstance(node, list):
        elements = [_compile(value, f"{where}[{i}]") for i, value in enumerate(node)]
        return lambda item: [render(item) for render in elements]
    if isinstance(node, str):
        return _compile_string(node, where)
    return _constant(node)


@attrs.frozen
class Template:
    """Turns an item into the JSON of a trigger."""

    render: Callable[[Any], Any]

    @classmethod
    def whole_item(cls) -> Template:
        """The default: the item is the trigger."""
        return cls(lambda item: item)


def parse_template(text: str, origin: str = "the template") -> Template:
    """A template from its JSON text; raises TemplateError saying what to fix."""
    try:
        document = json.loads(text)
    except ValueError as err:
        raise TemplateError(f"{origin} is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise TemplateError(f"{origin} must be a JSON object: the trigger to send")
    return Template(_compile(document, ""))


def _is_inline(template: str) -> bool:
    return template.lstrip().startswith("{")


async def load_template(template: str) -> Template:
    """The template PLUGIN_HTTP_POLL_TEMPLATE names: none, inline JSON or a JSON file."""
    if not template.strip():
        return Template.whole_item()
    variable = f"{_VARIABLE}TEMPLATE"
    if _is_inline(template):
        origin = variable
        text = template
    else:
        origin = f"the template file {variable}={template}"
        try:
            text = await trio.Path(template).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"cannot read {origin}: {err}; create it, or give the template inline as JSON"
            ) from None
    try:
        return parse_template(text, origin)
    except TemplateError as err:
        raise ConfigError(str(err)) from None


# -- configuration -------------------------------------------------------------------------


def parse_headers(text: str) -> list[tuple[str, str]]:
    """``Name: value; Name: value``, or a JSON object of strings, as (name, value) pairs.

    Messages name entries by position, never by content: the text may be a secret.
    """
    text = text.strip()
    if not text:
        return []
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise ValueError("is not valid JSON") from None
        if not isinstance(document, dict) or not all(
            isinstance(value, str) for value in document.values()
        ):
            raise ValueError("must be a JSON object of strings, or 'Name: value; Name: value'")
        pairs = [(str(name).strip(), value.strip()) for name, value in document.items()]
    else:
        pairs = []
        for number, entry in enumerate(filter(None, map(str.strip, text.split(";"))), 1):
            name, colon, value = entry.partition(":")
            if not colon:
                raise ValueError(f"entry {number} is not 'Name: value'")
            pairs.append((name.strip(), value.strip()))
    for number, (name, value) in enumerate(pairs, 1):
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"entry {number} does not start with a header name")
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"the value of {name} must be printable ASCII")
    return pairs


def _public_headers(text: str) -> None:
    for name, _ in parse_headers(text):
        if any(word in name.lower() for word in _CREDENTIAL_HEADER_WORDS):
            raise ValueError(
                f"{name} looks like a credential, and this variable is shown in GET /plugins; "
                f"put it in {_VARIABLE}SECRET_HEADERS, which is masked"
            )


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValueError("cannot be read as a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be an http:// or https:// URL")


def _check_item_id(text: str) -> None:
    if text.strip():
        parse_path(text)


def _check_template(text: str) -> None:
    # A template file is read when the plugin starts; inline JSON can be checked now.
    if _is_inline(text):
        parse_template(text)


def _check_token(token: str) -> None:
    if token and not _TOKEN.fullmatch(token):
        raise ValueError("must be printable ASCII without spaces")


def _valid(check: Callable[[str], object]) -> Callable[[Any, attrs.Attribute[str], str], None]:
    def validate(_instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
        try:
            check(value)
        except ValueError as err:
            raise ValueError(f"{_VARIABLE}{attribute.name.upper()}: {err}") from None

    return validate


@attrs.frozen
class Config:
    url: str = attrs.field(validator=_valid(_check_url))
    """The URL to GET (PLUGIN_HTTP_POLL_URL); shown in GET /plugins, so no credentials in it."""
    interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Seconds between polls (PLUGIN_HTTP_POLL_INTERVAL)."""
    items: str = attrs.field(default="$", validator=_valid(parse_path))
    """Path to the items in the answer (PLUGIN_HTTP_POLL_ITEMS)."""
    item_id: str = attrs.field(default="", validator=_valid(_check_item_id))
    """Path to an item's unique id (PLUGIN_HTTP_POLL_ITEM_ID); unset: a hash of the item."""
    template: str = attrs.field(default="", validator=_valid(_check_template))
    """The trigger to make of an item: inline JSON or a JSON file (PLUGIN_HTTP_POLL_TEMPLATE)."""
    headers: str = attrs.field(default="", validator=_valid(_public_headers))
    """Extra request headers, shown in GET /plugins (PLUGIN_HTTP_POLL_HEADERS)."""
    secret_headers: str = secret(default="", validator=_valid(parse_headers))
    """Request headers that carry credentials, masked (PLUGIN_HTTP_POLL_SECRET_HEADERS)."""
    token: str = secret(default="", validator=_valid(_check_token))
    """Sent as ``Authorization: Bearer <token>``, masked (PLUGIN_HTTP_POLL_TOKEN)."""
    timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Seconds one request may take, answer included (PLUGIN_HTTP_POLL_TIMEOUT)."""
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES, validator=attrs.validators.ge(1)
    )
    """The largest answer read, decompressed (PLUGIN_HTTP_POLL_MAX_RESPONSE_BYTES)."""
    remember: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    """How many item ids to keep in state (PLUGIN_HTTP_POLL_REMEMBER)."""

    def __attrs_post_init__(self) -> None:
        self.request_headers()

    def request_headers(self) -> dict[str, str]:
        """Every header to send; raises ValueError if two settings name the same header."""
        given = [*parse_headers(self.headers), *parse_headers(self.secret_headers)]
        if self.token:
            given.append(("Authorization", f"Bearer {self.token}"))
        headers = {"accept": ("Accept", "application/json")}
        named: set[str] = set()
        for name, value in given:
            lowered = name.lower()
            if lowered in named:
                raise ValueError(
                    f"the header {name} is given twice (in {_VARIABLE}HEADERS, "
                    f"{_VARIABLE}SECRET_HEADERS, or {_VARIABLE}TOKEN, which sends Authorization)"
                )
            named.add(lowered)
            headers[lowered] = (name, value)
        return dict(headers.values())

    def secrets(self) -> list[str]:
        """Every credential text, to be kept out of messages; longest first."""
        values = [value for _, value in parse_headers(self.secret_headers)]
        if self.token:
            values += [f"Bearer {self.token}", self.token]
        return sorted({value for value in values if value}, key=len, reverse=True)


# -- the watcher ---------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _with_item_id(wire: Any, item_id: str) -> Any:
    """``metadata.spec.itemId`` set to the item's id, unless the template sets it."""
    if not isinstance(wire, dict):
        return wire
    metadata = wire.get("metadata", {})
    if not isinstance(metadata, dict) or not isinstance(metadata.get("spec", {}), dict):
        return wire
    spec = {"itemId": item_id, **metadata.get("spec", {})}
    return {**wire, "metadata": {**metadata, "spec": spec}}


@attrs.define
class Watcher:
    """One plugin run: the client, what the config says, and the ids already sent."""

    client: httpx.AsyncClient
    config: Config
    items: JsonPath
    item_id: JsonPath | None
    template: Template
    send_channel: trio.abc.SendChannel[Trigger]
    state: State
    _secrets: list[str]
    # Item id → when it was sent, oldest first; mirrors the "seen:" keys of the state.
    _seen: dict[str, int] = attrs.Factory(dict)
    _last: int = 0
    # Digests of the items that failed in the latest poll: reported once, not every poll.
    _failed: set[str] = attrs.Factory(set)

    @classmethod
    async def start(
        cls,
        client: httpx.AsyncClient,
        config: Config,
        template: Template,
        send_channel: trio.abc.SendChannel[Trigger],
        state: State,
    ) -> Watcher:
        item_id = None
        if config.item_id.strip():
            # Read from the item, so its messages say "item has no 'id'".
            item_id = attrs.evolve(parse_path(config.item_id), root="item")
        watcher = cls(
            client,
            config,
            parse_path(config.items),
            item_id,
            template,
            send_channel,
            state,
            config.secrets(),
        )
        seen = []
        keys = state.keys()  # State offers keys(), not iteration
        for key in keys:
            if key.startswith(_SEEN_PREFIX):
                seen.append((int(await state.get(key, 0)), key[len(_SEEN_PREFIX) :]))
        for sent, item in sorted(seen):
            watcher._seen[item] = sent
        watcher._last = max((sent for sent, _ in seen), default=0)
        return watcher

    def redact(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    async def fetch(self) -> Any:
        """The decoded answer; raises ApiError or ResponseError, never with a credential."""
        url = self.config.url
        try:
            response = await self.client.get(url)
        except httpx.TimeoutException:
            raise ApiError(
                f"GET {url} timed out after {self.config.timeout:g} s, answer included; "
                f"raise {_VARIABLE}TIMEOUT if the API is that slow"
            ) from None
        except ResponseTooLargeError:
            raise ApiError(
                f"GET {url} answered more than {_VARIABLE}MAX_RESPONSE_BYTES="
                f"{self.config.max_response_bytes} bytes; raise it if the API's answers "
                "are really that large"
            ) from None
        except httpx.HTTPError as err:
            # The cause is dropped: only this message is vetted for credentials.
            raise ApiError(self.redact(f"GET {url} failed: {type(err).__name__}: {err}")) from None
        if not response.is_success:
            raise ApiError(
                f"GET {url} answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
            )
        content = response.content
        try:
            if len(content) > _PARSE_IN_THREAD:
                return await trio.to_thread.run_sync(json.loads, content)
            return json.loads(content)
        except (ValueError, RecursionError) as err:
            raise ResponseError(f"GET {url} did not answer JSON: {err}") from None

    async def poll_once(self) -> None:
        """One GET; each new item becomes a trigger. A bad answer raises (backoff)."""
        body = await self.fetch()
        try:
            items = self.items.items(body)
        except PathError as err:
            raise ResponseError(
                f"GET {self.config.url}: {_VARIABLE}ITEMS={self.items.text} finds no items: {err}"
            ) from None
        present: set[str] = set()
        failed: set[str] = set()
        for index, item in enumerate(items):
            await trio.lowlevel.checkpoint()
            await self.handle(index, item, present, failed)
        self._failed = failed
        await self.forget_old(present)

    def identify(self, item: Any) -> str:
        if self.item_id is None:
            return f"sha256:{_digest(item)}"
        value = self.item_id.value(item)
        if value is None or value == "":
            raise PathError(f"{self.item_id.text} is {'null' if value is None else 'empty'}")
        text = value if isinstance(value, str) else _canonical(value)
        if len(text) > MAX_ID_LENGTH:
            return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
        return text

    async def handle(self, index: int, item: Any, present: set[str], failed: set[str]) -> None:
        try:
            item_id = self.identify(item)
        except PathError as err:
            self.fail(f"item {index}", item, str(err), failed)
            return
        present.add(item_id)
        if item_id in self._seen:
            return
        try:
            wire = _with_item_id(self.template.render(item), item_id)
            trigger = trigger_from_json(wire, key=_KEY_PREFIX + item_id)
        except (PathError, InvalidTriggerError) as err:
            self.fail(f"item {item_id}", item, str(err), failed)
            return
        await self.send_channel.send(trigger)
        # Sent, then saved: a crash in between resends it, and the journal drops
        # the second copy by its idempotency key.
        self._last += 1
        await self.state.set(_SEEN_PREFIX + item_id, self._last)
        self._seen[item_id] = self._last

    def fail(self, label: str, item: Any, message: str, failed: set[str]) -> None:
        digest = _digest(item)
        if digest not in self._failed:
            report_item_error(label, self.redact(message))
        failed.add(digest)

    async def forget_old(self, present: set[str]) -> None:
        """Drop the oldest ids beyond ``remember``, but never one the API still lists."""
        excess = len(self._seen) - self.config.remember
        for item_id in list(self._seen):
            if excess <= 0:
                return
            if item_id in present:
                continue
            await self.state.delete(_SEEN_PREFIX + item_id)
            del self._seen[item_id]
            excess -= 1


async def run(send_channel: trio.abc.SendChannel[Trigger], config: Config, state: State) -> None:
    template = await load_template(config.template)
    async with open_http_client(
        headers=config.request_headers(),
        timeout=config.timeout,
        max_response_bytes=config.max_response_bytes,
    ) as client:
        watcher = await Watcher.start(client, config, template, send_channel, state)
        await poll(watcher.poll_once, interval=config.interval, what="API")
