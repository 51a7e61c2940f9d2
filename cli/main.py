"""The `onlooker` command: the click group, its global options and the one error boundary."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import click

from onlooker.cli.commands import AppState, setup_logging
from onlooker.cli.output import EXIT_ERROR, to_cli_error

log = logging.getLogger(__name__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onlooker")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


# name -> module:attribute, in cli/commands/. A command's module is imported when the
# command runs (or --help lists them all): importing all of them cost every call
# 0.1 s before its arguments were even read.
COMMANDS = {
    # capture
    "init": "init:init", "start": "start:start", "stop": "stop:stop",
    "status": "status:status", "watch": "watch:watch", "run": "run:run",
    # explore
    "runs": "runs:runs", "show": "show:show", "metrics": "metrics:metrics",
    "telemetry": "telemetry:telemetry", "diff": "diff:diff", "lineage": "lineage:lineage",
    "pipeline": "pipeline:pipeline", "outdated": "pipeline:outdated", "sql": "sql:sql",
    "ui": "ui:ui",
    # manage
    "tag": "tag:tag", "note": "tag:note_command", "rm": "manage:rm", "gc": "manage:gc",
    "du": "manage:du", "doctor": "doctor:doctor",
    # version, execute
    "restore": "restore:restore", "reproduce": "reproduce:reproduce",
    # share
    "export": "share:export_command", "import": "share:import_command",
    "demo": "demo:demo",
    # the privileged service (root runs it; everyone may ask it)
    "service": "service:service_group",
}


class _LazyCommands(MutableMapping):
    """click.Group's `commands`, each imported on first use."""

    def __init__(self, spec: dict[str, str]) -> None:
        self._spec = dict(spec)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attr = self._spec[name].partition(":")  # KeyError: no such command
            found = getattr(importlib.import_module(f"onlooker.cli.commands.{module}"), attr)
            self._loaded[name] = found
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command
        self._spec.setdefault(name, "")

    def __delitem__(self, name: str) -> None:
        del self._spec[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._spec)

    def __len__(self) -> int:
        return len(self._spec)


def _print_version(ctx: click.Context) -> None:
    # read when asked: importlib.metadata costs every other call 30 ms
    click.echo(f"onlooker, version {_version()}")
    ctx.exit(0)


class OnlookerGroup(click.Group):
    """Turns domain errors from any command into one sentence and exit 1, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # `onlooker runs | head`: the reader left; that is not an error.
            _silence_stdout()
            ctx.exit(0)
        except Exception as err:
            cli_err = to_cli_error(err)
            if cli_err is None:
                raise
            log.debug("command failed", exc_info=True)
            raise cli_err from err


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (tests, embedding)
        pass


@click.group(cls=OnlookerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C", "--project", "project", metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Act on the project at DIR (default: the folder holding .onlooker/, found upward "
         "from the current folder).",
)
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-vv for debug).")
@click.option("--version", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, _p, on: _print_version(ctx) if on else None,
              help="Show the version and exit.")
@click.pass_context
def cli(ctx: click.Context, project: Path | None, verbose: int) -> None:
    """Track ML experiments without changing them.

    Instrument a project once (`onlooker init`, `onlooker start`), then work as always:
    every run's command, inputs, outputs, params, code and environment land in the
    project's catalog. Inspect them with `onlooker runs` and `onlooker show`.
    """
    ctx.obj = AppState(project_option=project, verbose=verbose)
    setup_logging(verbose)


cli.commands = _LazyCommands(COMMANDS)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `onlooker` script."""
    try:
        cli.main(args=argv, prog_name="onlooker")
    except Exception as err:  # a bug: still one line unless asked for the traceback
        if os.environ.get("ONLOOKER_DEBUG"):
            raise
        sqlite3 = sys.modules.get("sqlite3")  # loaded if a catalog was opened at all
        if sqlite3 is not None and isinstance(err, sqlite3.DatabaseError):
            # a read of a damaged catalog the store did not translate: the user's fault
            # is none, the remedy is known
            click.echo(f"onlooker: the catalog is damaged ({err}): `onlooker doctor` says"
                       " what is wrong, and `onlooker doctor --fix` rebuilds it", err=True)
            sys.exit(EXIT_ERROR)
        click.echo(
            f"onlooker: internal error: {type(err).__name__}: {err} "
            "(set ONLOOKER_DEBUG=1 to see the traceback)",
            err=True,
        )
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
