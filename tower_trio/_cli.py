"""The ``tower-trio`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import trio

from . import amqp
from ._config import Settings
from ._errors import TowerError
from ._logging import configure_logging
from ._plugins import discover_plugins, select_plugins
from ._supervisor import run_tower
from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["main"]

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tower-trio",
        description="Control tower for lab automation: publishes protocol triggers to RabbitMQ.",
        epilog="Settings come from TOWER_* environment variables; see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"tower-trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "run",
        help="run the tower: HTTP API, watcher plugins and publisher",
        description="Run until SIGINT/SIGTERM: the first drains, a second stops at once.",
    )
    return parser


def _run(environ: Mapping[str, str]) -> int:
    settings = Settings.from_environ(environ)
    try:
        amqp.URL.parse(settings.amqp_url)
    except amqp.AMQPConfigError as err:
        raise TowerError(f"TOWER_AMQP_URL is invalid: {err}") from err
    discovered = discover_plugins(settings.plugins_dir)
    plugins, skipped = select_plugins(discovered, settings.plugins, environ)
    configure_logging(settings.log_level)
    return trio.run(run_tower, settings, plugins, skipped)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        if args.command == "run":
            return _run(environ)
    except TowerError as err:
        # Start-up errors are for a person at a terminal: one line, no traceback.
        print(f"tower-trio: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover
