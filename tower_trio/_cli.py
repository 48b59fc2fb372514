"""The ``tower-trio`` command line.

One entry point with subcommands: ``run`` serves; ``validate``, ``plugins``
and ``config`` work offline; ``send`` and ``triggers`` talk to a running
tower over its HTTP API. Errors are one line on stderr, never a traceback;
the exit codes are documented in docs/cli.md.

One concept, kept whole although past 400 lines: the command line, its
argparse declarations and one short function per subcommand.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import attrs
import trio

from . import amqp
from ._broker_advice import describe_broker_error
from ._client import Answer, TowerClient, TowerUnreachableError, default_url, encode
from ._config import Settings
from ._errors import JournalError, PluginError, TowerError
from ._journal_url import PostgresURL
from ._logging import configure_logging
from ._models import InvalidTriggerError
from ._nodes import split_urls
from ._plugins import DiscoveredPlugin, build_config, discover_plugins, select_plugins
from ._schemas import ProtocolSchemas, load_schemas
from ._secrets import REDACTED, is_secret
from ._serialization import trigger_from_wire
from ._supervisor import run_tower
from ._version import __version__
from ._vocabulary import MAX_LIST_LIMIT, DeliveryStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TOWER_ERROR = 4
EXIT_INTERRUPTED = 130
# What a shell reports for a tool that SIGPIPE ended (128 + 13), as `head` expects.
EXIT_BROKEN_PIPE = 141

_TOKEN_VARIABLE = "TOWER_TOKEN"
# The journal's delivery statuses, which GET /triggers?status= accepts.
_STATUSES = tuple(status.value for status in DeliveryStatus)
# ``send`` shows progress by itself on a terminal from this many triggers on.
_PROGRESS_FROM = 10
_PROGRESS_EVERY = 0.1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tower-trio",
        description="Control tower for lab automation: publishes protocol triggers to RabbitMQ.",
        epilog="Settings come from TOWER_* environment variables; see docs/configuration.md. "
        "Exit codes: see docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"tower-trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "run",
        help="run the tower: HTTP API, watcher plugins and publisher",
        description="Run until SIGINT/SIGTERM: the first drains, a second stops at once.",
    )

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--url",
        help="the tower's HTTP address (default: from TOWER_HTTP_HOST and TOWER_HTTP_PORT)",
    )

    send = commands.add_parser(
        "send",
        parents=[client],
        help="send trigger files to a running tower",
        description="POST each trigger (a JSON object, or an array of them) to a running "
        "tower and print the uuid of each, one per line. With an API token, set TOWER_TOKEN.",
    )
    send.add_argument("files", nargs="+", metavar="FILE", help="a trigger file, or - for stdin")
    send.add_argument(
        "--wait", action="store_true", help="wait for the broker's confirm (?wait=published)"
    )
    send.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="send as Idempotency-Key; with several triggers, the Nth gets KEY-N",
    )
    send.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help=f"a progress line on stderr (default: on a terminal, from {_PROGRESS_FROM} triggers)",
    )

    validate = commands.add_parser(
        "validate",
        help="check trigger files offline",
        description="Check trigger files with the rules of POST /triggers, without a tower. "
        "Exits 1 if any is invalid, listing every reason.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="a trigger file, or - for stdin")

    plugins = commands.add_parser(
        "plugins",
        help="list the discovered plugins and their configuration",
        description="List the plugins `run` would find, whether each one's configuration is "
        "complete and the PLUGIN_* variables it reads. Exits 1 if `run` would refuse them.",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON")

    config = commands.add_parser(
        "config",
        help="show the effective configuration, secrets masked",
        description="Show every TOWER_* setting as `run` would use it, and the PLUGIN_* "
        "variables that are set; passwords, tokens and keys are masked.",
    )
    config.add_argument("--json", action="store_true", help="print JSON")

    triggers = commands.add_parser(
        "triggers",
        help="look up triggers in a running tower's journal",
        description="Look up triggers and their delivery status through GET /triggers.",
    )
    lookups = triggers.add_subparsers(dest="lookup", metavar="LOOKUP", required=True)
    get = lookups.add_parser(
        "get", parents=[client], help="one trigger, as JSON", description="Print one trigger."
    )
    get.add_argument("uuid", metavar="UUID")
    listing = lookups.add_parser(
        "list",
        parents=[client],
        help="recent triggers, newest first",
        description="List recent triggers, newest first, one per line.",
    )
    listing.add_argument("--status", choices=_STATUSES)
    listing.add_argument("--api-version", metavar="API_VERSION")
    listing.add_argument("--protocol")
    listing.add_argument("--source")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")
    return parser


# -- run ---------------------------------------------------------------------------


def _run(environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    urls = settings.broker_urls()
    discovered = discover_plugins(settings.plugins_dir)
    plugins, skipped = select_plugins(discovered, settings.plugins, environ)
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=_secrets(urls, discovered.values(), environ, journal=settings.journal_url),
    )
    _tune_collector()
    try:
        return trio.run(run_tower, settings, plugins, skipped)
    except* JournalError as group:
        # The journal is opened inside the tower's nursery, so a data dir that
        # cannot hold it arrives in an exception group; unwrapped, it is the
        # one-line start-up error that `main` prints.
        raise _first_leaf(group) from None


COLLECTOR_THRESHOLDS = (5000, 20, 20)
"""Container allocations between collections of the youngest generation, then
collections of each generation between two of the next (CPython: 700, 10, 10)."""


def _tune_collector() -> None:
    # A request allocates a few hundred containers that die with it; at
    # CPython's default the youngest generation was collected every few
    # requests, a tenth of the CPU per request under load. What exists now
    # (modules, settings, plugins) lives as long as the process: frozen, the
    # full collections stop walking it.
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def _first_leaf(group: BaseExceptionGroup[JournalError]) -> JournalError:
    leaf = group.exceptions[0]
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _secrets(
    urls: Iterable[amqp.URL],
    plugins: Iterable[DiscoveredPlugin],
    environ: Mapping[str, str],
    *,
    journal: Path | PostgresURL | None = None,
) -> list[str]:
    """Every secret value the logs must never show."""
    secrets = [shown for url in urls for shown in (url.password, quote(url.password, safe=""))]
    if isinstance(journal, PostgresURL) and journal.password:
        secrets.extend([journal.password, quote(journal.password, safe="")])
    for field in attrs.fields(Settings):
        raw = environ.get(field.metadata["variable"])
        if raw and is_secret(field):
            # From the environment, not the setting: tokens are kept as digests only.
            secrets.extend([raw.strip(), *(part.strip() for part in raw.split(","))])
    # Skipped plugins' values too: a half-configured plugin's key is still a key.
    for plugin in plugins:
        for field, variable in _plugin_variables(plugin):
            if is_secret(field) and environ.get(variable):
                secrets.append(environ[variable].strip())
    return [secret for secret in secrets if secret]


def _plugin_variables(plugin: DiscoveredPlugin) -> list[tuple[attrs.Attribute[Any], str]]:
    """Each field of the plugin's Config with the variable it is read from."""
    if plugin.config_class is None:
        return []
    names = plugin.config_variables()
    return [(field, names[field.name]) for field in attrs.fields(plugin.config_class)]


# -- reading trigger files -----------------------------------------------------------


@attrs.frozen
class _Item:
    """One trigger from a file: where it came from, and its decoded JSON."""

    label: str
    wire: Any


@attrs.frozen
class _FileProblem:
    label: str
    reason: str


def _read_items(path: str) -> list[_Item] | _FileProblem:
    label = "<stdin>" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as err:
        return _FileProblem(label, f"cannot read: {err.strerror or err}")
    try:
        wire = json.loads(raw)
    except ValueError as err:
        return _FileProblem(label, f"malformed JSON: {err}")
    except RecursionError:
        return _FileProblem(label, "malformed JSON: nested too deeply")
    if isinstance(wire, list):
        if not wire:
            return _FileProblem(label, "holds an empty array; nothing to send")
        return [_Item(f"{label}[{n}]", item) for n, item in enumerate(wire)]
    return [_Item(label, wire)]


def _check(item: _Item, max_bytes: int, schemas: ProtocolSchemas) -> list[str]:
    """The reasons POST /triggers would refuse ``item``; empty if it would accept it."""
    if len(encode(item.wire)) > max_bytes:
        return [f"larger than {max_bytes} bytes (TOWER_MAX_BODY_BYTES)"]
    try:
        trigger = trigger_from_wire(item.wire, source="http")
    except InvalidTriggerError as err:
        return [f"{e.field}: {e.message}" for e in err.errors]
    return [f"{e.field}: {e.message}" for e in schemas.check(trigger)]


# -- validate ------------------------------------------------------------------------


def _validate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    schemas = load_schemas(settings.schemas_dir, strict=settings.schemas_strict)
    failed = False
    for path in args.files:
        items = _read_items(path)
        if isinstance(items, _FileProblem):
            print(f"{items.label}: {items.reason}")
            failed = True
            continue
        problems = [
            (item.label, reason)
            for item in items
            for reason in _check(item, settings.max_body_bytes, schemas)
        ]
        if problems:
            failed = True
            for label, reason in problems:
                print(f"{label}: {reason}")
        else:
            label = "<stdin>" if path == "-" else path
            count = f" ({len(items)} triggers)" if len(items) > 1 else ""
            print(f"{label}: ok{count}")
    return EXIT_FAILED if failed else EXIT_OK


# -- send ----------------------------------------------------------------------------


@attrs.define
class _Progress:
    """``sent 12/40, 1 failed`` on stderr: rewritten in place on a terminal, else every 10%."""

    total: int
    stream: TextIO
    enabled: bool
    done: int = 0
    failed: int = 0
    _shown_at: float = 0.0
    _shown_tenth: int = 0

    def step(self, *, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if not self.enabled:
            return
        if self.stream.isatty():
            now = time.monotonic()
            if now - self._shown_at >= _PROGRESS_EVERY or self.done == self.total:
                self._shown_at = now
                end = "\n" if self.done == self.total else ""
                print(f"\r{self._line()}", end=end, file=self.stream, flush=True)
        elif (tenth := self.done * 10 // self.total) > self._shown_tenth:
            self._shown_tenth = tenth
            print(self._line(), file=self.stream, flush=True)

    def error(self, message: str) -> None:
        """Report ``message`` as an error line of its own, off the progress line."""
        if self.enabled and self.stream.isatty() and 0 < self.done < self.total:
            print(file=self.stream)
        _error(message, self.stream)

    def _line(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"sent {self.done}/{self.total}{failed}"


def _send(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    items: list[_Item] = []
    code = EXIT_OK
    for path in args.files:
        read = _read_items(path)
        if isinstance(read, _FileProblem):
            _error(f"{read.label}: {read.reason}")
            code = EXIT_FAILED
        else:
            items.extend(read)
    enabled = args.progress
    if enabled is None:
        enabled = sys.stderr.isatty() and len(items) >= _PROGRESS_FROM
    progress = _Progress(len(items), sys.stderr, enabled)
    key = args.idempotency_key
    with _client(args, settings, environ) as client:
        for n, item in enumerate(items, start=1):
            item_key = key if key is None or len(items) == 1 else f"{key}-{n}"
            outcome = _send_one(client, item, wait=args.wait, key=item_key, report=progress)
            progress.step(ok=outcome == EXIT_OK)
            code = max(code, outcome)
    return code


def _send_one(
    client: TowerClient, item: _Item, *, wait: bool, key: str | None, report: _Progress
) -> int:
    answer = client.post_trigger(encode(item.wire), wait=wait, key=key)
    body = answer.body if isinstance(answer.body, dict) else {}
    uuid = body.get("uuid")
    if answer.ok or (answer.status == 504 and uuid):
        # The trigger is in the tower's journal: its uuid is worth printing either way.
        print(uuid, flush=True)
    status = body.get("status")
    if answer.status == 504:
        report.error(f"{item.label}: {uuid} is journaled but not yet confirmed")
        return EXIT_TOWER_ERROR
    # Without --wait, success is "the tower has it": the broker's verdict comes later.
    if wait and answer.ok and status in (DeliveryStatus.UNROUTABLE, DeliveryStatus.FAILED):
        report.error(f"{item.label}: {uuid} was {status}")
        return EXIT_FAILED
    if answer.ok:
        return EXIT_OK
    report.error(f"{item.label}: {answer.problem()}")
    return EXIT_TOWER_ERROR if answer.status >= 500 else EXIT_FAILED


def _client(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> TowerClient:
    return TowerClient(args.url or default_url(settings), token=environ.get(_TOKEN_VARIABLE))


# -- triggers get / list -----------------------------------------------------------------


def _triggers(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    with _client(args, settings, environ) as client:
        if args.lookup == "get":
            answer = client.get_trigger(args.uuid)
            if not answer.ok:
                return _refused(answer)
            print(json.dumps(answer.body, indent=2, ensure_ascii=False))
            return EXIT_OK
        if not 1 <= args.limit <= MAX_LIST_LIMIT:
            _error(f"--limit must be from 1 to {MAX_LIST_LIMIT}")
            return EXIT_USAGE
        params = {"limit": str(args.limit)}
        for option, name in (
            ("status", "status"),
            ("api_version", "apiVersion"),
            ("protocol", "protocol"),
            ("source", "source"),
        ):
            if getattr(args, option) is not None:
                params[name] = getattr(args, option)
        answer = client.list_triggers(**params)
        if not answer.ok:
            return _refused(answer)
        items = answer.body.get("items", []) if isinstance(answer.body, dict) else []
        for item in items:
            if args.json:
                print(json.dumps(item, ensure_ascii=False))
            else:
                print(_trigger_line(item))
        return EXIT_OK


def _trigger_line(item: Mapping[str, Any]) -> str:
    source = (item.get("metadata") or {}).get("source") or "-"
    return "  ".join(
        [
            str(item.get("uuid")),
            f"{item.get('status', '?'):<10}",
            str(item.get("createdAt", "-")),
            str(item.get("apiVersion")),
            str(item.get("protocol")),
            source,
        ]
    )


def _refused(answer: Answer) -> int:
    _error(answer.problem())
    return EXIT_TOWER_ERROR if answer.status >= 500 else EXIT_FAILED


# -- plugins ------------------------------------------------------------------------


def _plugins(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    wanted = settings.plugins
    discovered = discover_plugins(settings.plugins_dir)
    report = [_plugin_report(p, wanted, environ) for p in discovered.values()]
    unknown = [name for name in wanted or () if name not in discovered]
    # What `run` refuses: a plugin it would start with a bad value, a named one that
    # is not ready, a named one that does not exist.
    refused = bool(unknown) or any(
        entry["state"] != "ready" if entry["named"] else entry["state"] == "invalid" and not wanted
        for entry in report
    )
    if args.json:
        print(json.dumps({"plugins": report, "notInstalled": unknown}, indent=2))
    else:
        if not report:
            print(f"no plugins in {settings.plugins_dir} or in installed packages")
        for entry in report:
            runs = "runs" if entry["runs"] else "does not run"
            print(f"{entry['name']}: {entry['state']}, {runs}  ({entry['origin']})")
            if entry["reason"]:
                print(f"    {entry['reason']}")
            for variable in entry["variables"]:
                need = "required" if variable["required"] else "optional"
                given = "set" if variable["set"] else "not set"
                print(f"    {variable['name']}  {need}, {given}")
        for name in unknown:
            print(f"{name}: not installed, but named in TOWER_PLUGINS")
    return EXIT_FAILED if refused else EXIT_OK


def _plugin_report(
    plugin: DiscoveredPlugin, wanted: tuple[str, ...] | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    variables = []
    if plugin.config_class is not None:
        names = plugin.config_variables()
        variables = [
            {
                "name": names[field.name],
                "required": field.default is attrs.NOTHING,
                "set": names[field.name] in environ,
            }
            for field in attrs.fields(plugin.config_class)
        ]
    state, reason = "ready", ""
    try:
        build_config(plugin, environ)
    except PluginError as err:
        state = "incomplete" if "is not set" in str(err) else "invalid"
        reason = str(err)
    named = wanted is not None and plugin.name in wanted
    return {
        "name": plugin.name,
        "origin": plugin.origin,
        "state": state,
        "named": named,
        "runs": state == "ready" and (wanted is None or named),
        "reason": reason,
        "variables": variables,
    }


# -- config ------------------------------------------------------------------------


def _config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    rows: list[tuple[str, str, str]] = []
    for field in attrs.fields(Settings):
        variable = field.metadata["variable"]
        value = getattr(settings, field.name)
        if variable in environ:
            origin = "environment"
        elif field.name == "data_dir" and value != field.default:
            origin = "STATE_DIRECTORY"
        else:
            origin = "default"
        rows.append((variable, _shown(field, value), origin))
    try:
        discovered = discover_plugins(settings.plugins_dir)
    except PluginError:
        # `config` is for finding out what is wrong; a broken plugin must not hide the rest.
        discovered = {}
    for plugin in discovered.values():
        for field, variable in _plugin_variables(plugin):
            if variable in environ:
                shown = REDACTED if is_secret(field) else environ[variable]
                rows.append((variable, shown, "environment"))
    if args.json:
        print(json.dumps({v: {"value": s, "source": o} for v, s, o in rows}, indent=2))
    else:
        width = max(len(v) for v, _, _ in rows)
        for variable, shown, origin in rows:
            print(f"{variable:<{width}}  {shown}  ({origin})")
    return EXIT_OK


def _shown(field: attrs.Attribute[Any], value: Any) -> str:
    if value is None:
        return "(unset)"
    if field.name == "amqp_url":
        return ",".join(_shown_url(url) for url in split_urls(value))
    if is_secret(field):
        return REDACTED
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _shown_url(url: str) -> str:
    try:
        return amqp.URL.parse(url).redacted()
    except amqp.AMQPConfigError as err:
        # An unparsable URL may have its password anywhere; the parser's
        # message never quotes it, so it alone says what is wrong.
        return f"(invalid URL, not shown: {err})"


# -- main ------------------------------------------------------------------------------


def _error(message: str, stream: TextIO | None = None) -> None:
    print(f"tower-trio: error: {message}", file=stream or sys.stderr, flush=True)


_COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "validate": _validate,
    "send": _send,
    "triggers": _triggers,
    "plugins": _plugins,
    "config": _config,
}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        try:
            return _main(argv, environ)
        finally:
            # Flushed here, where a closed pipe can still be caught, rather than
            # at interpreter exit (also after --help, which exits through SystemExit).
            if sys.stdout is not None:  # None when started with stdout closed
                sys.stdout.flush()
    except BrokenPipeError:
        # The reader has gone (`| head`): stop quietly, as a tool that SIGPIPE
        # ended would; `send` sends nothing more, since no uuid could be shown.
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    # Python flushes stdout once more at exit; into /dev/null that flush cannot
    # print "Exception ignored ... BrokenPipeError".
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return  # no file descriptor behind it, so no exit flush that could fail
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> int:
    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        if args.command == "run":
            return _run(environ)
        return _COMMANDS[args.command](args, environ)
    except TowerUnreachableError as err:
        _error(str(err))
        return EXIT_UNREACHABLE
    except TowerError as err:
        # Errors are for a person at a terminal: one line, no traceback.
        _error(str(err))
        return EXIT_USAGE
    except amqp.AMQPError as err:
        # The AMQP client's errors are not TowerErrors (it is a library of its
        # own); one that gets this far is still one line, in the tower's terms.
        _error(describe_broker_error(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
