"""Structured logs: one event per line on stderr, rendered by structlog.

Every call names an event (``broker.connected``) and passes its fields as
keywords, so lines can be filtered and parsed without regular expressions.
Records from the standard library (Hypercorn, plugins that use ``logging``)
go through the same processor chain, so every line has the same shape:

- ``json``: one JSON object per line (the default when stderr is not a
  terminal): ``timestamp``, ``level``, ``logger``, ``event``, then the fields;
- ``console``: readable ``key=value`` lines, coloured on a terminal.

No secret reaches a line: the values handed to ``configure_logging`` (the
broker password, plugin secret fields) are replaced by ``***`` wherever they
appear, a field whose name says it is secret is masked whatever it holds,
and so is the password of any URL. Tracebacks are masked the same way.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from ._secrets import REDACTED, is_secret

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "LOG_FORMATS",
    "Logger",
    "configure_logging",
    "get_logger",
    "print_summary",
    "redact_text",
]

LOG_FORMATS = ("auto", "json", "console")

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@")
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "fields", "taskName"}
)
# A trigger passed as ``trigger=`` becomes the fields every trigger line carries.
_TRIGGER_FIELDS = ("uuid", "api_version", "protocol", "source")


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with each of ``secrets`` and every URL's password replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)


class Logger:
    """A thin wrapper so call sites read ``log.info("event", key=value)``."""

    def __init__(self, logger: logging.Logger, context: dict[str, Any] | None = None) -> None:
        self._logger = logger
        self._context = context or {}

    def bind(self, **fields: Any) -> Logger:
        """A logger that adds ``fields`` to every line, like a trigger's uuid."""
        return Logger(self._logger, {**self._context, **fields})

    def _log(
        self, level: int, event: str, exc_info: bool | BaseException, fields: dict[str, Any]
    ) -> None:
        if self._logger.isEnabledFor(level):
            # stacklevel: the record names the call site, not this wrapper.
            self._logger.log(
                level,
                event,
                exc_info=exc_info,
                extra={"fields": {**self._context, **fields}},
                stacklevel=3,
            )

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, False, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, False, fields)

    def exception(
        self, event: str, *, exc_info: BaseException | None = None, **fields: Any
    ) -> None:
        """An error with the traceback of ``exc_info``, or of the exception being handled."""
        self._log(logging.ERROR, event, True if exc_info is None else exc_info, fields)


def get_logger(name: str) -> Logger:
    return Logger(logging.getLogger(name))


def _from_record(_: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Time, level, logger and event first, then the fields, from the stdlib record."""
    record: logging.LogRecord = event_dict["_record"]
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    ordered: EventDict = {
        "timestamp": stamp.replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": event_dict.pop("event"),
    }
    fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    # ``extra=`` of code that logs through the standard library, like a plugin's.
    fields.update(
        (key, value)
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    )
    trigger = fields.pop("trigger", None)
    if trigger is not None and all(hasattr(trigger, name) for name in ("uuid", "protocol")):
        for name in _TRIGGER_FIELDS:
            value = getattr(trigger, name, None)
            if name == "source" and value is None:
                value = getattr(getattr(trigger, "metadata", None), "source", None)
            if value is not None:
                ordered[name] = value
    elif trigger is not None:
        ordered["trigger"] = trigger
    ordered.update(fields)
    ordered.update(event_dict)
    return ordered


class _Redact:
    """Masks secrets in every value of a line, tracebacks included."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, _: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        return {key: self._value(key, value) for key, value in event_dict.items()}

    def _value(self, key: str, value: Any) -> Any:
        if key.startswith("_"):
            return value
        if is_secret(key) and value not in (None, ""):
            return REDACTED
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(k): self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value("", item) for item in value]
        return redact_text(str(value), self._secrets)


def _renderer(log_format: str, stream: TextIO) -> Processor:
    if log_format == "json":
        return structlog.processors.JSONRenderer(default=str)
    return structlog.dev.ConsoleRenderer(
        colors=stream.isatty(),
        sort_keys=False,
        pad_event_to=24,
        # Rich tracebacks show local variables, and locals can hold secrets.
        exception_formatter=structlog.dev.plain_traceback,
    )


class _TowerHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler ``configure_logging`` installs; it knows how it renders."""

    def __init__(self, stream: TextIO, log_format: str) -> None:
        super().__init__(stream)
        self.log_format = log_format
        self.pretty = log_format == "console" and stream.isatty()


def resolve_format(log_format: str, stream: TextIO) -> str:
    """``auto`` is ``console`` on a terminal and ``json`` anywhere else."""
    if log_format == "auto":
        return "console" if stream.isatty() else "json"
    return log_format


def configure_logging(
    level: str,
    log_format: str = "auto",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Render every log record (ours and the standard library's) on ``stream``.

    Installs one handler on the root logger, replacing one installed before,
    and returns it. ``secrets`` are masked wherever they appear.
    """
    stream = sys.stderr if stream is None else stream
    log_format = resolve_format(log_format, stream)
    handler = _TowerHandler(stream, log_format)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_from_record],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _Redact(secrets),
                _renderer(log_format, stream),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _TowerHandler)]
    root.addHandler(handler)
    root.setLevel(level)
    tower = logging.getLogger("tower_trio")
    # Undo an older configuration that gave tower-trio a handler of its own.
    tower.propagate = True
    tower.setLevel(logging.NOTSET)
    return handler


def print_summary(title: str, rows: Sequence[tuple[str, str]]) -> bool:
    """Print a start-up summary box when the logs go to a person at a terminal.

    Returns whether it printed; elsewhere the log lines say the same.
    """
    handler = next((h for h in logging.getLogger().handlers if isinstance(h, _TowerHandler)), None)
    if handler is None or not handler.pretty:
        return False
    width = max((len(name) for name, _ in rows), default=0)
    lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
    rule = "─" * max(len(title) + 4, *(len(line) + 2 for line in lines))
    print(
        "\n".join(
            [f"┌{rule}", f"│ {title}", f"├{rule}", *(f"│{line}" for line in lines), f"└{rule}"]
        ),
        file=handler.stream,
        flush=True,
    )
    return True
