"""The `onlooker` command: the click group, its global options and the one error boundary."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from onlooker.cli.commands import AppState, setup_logging
from onlooker.cli.commands.demo import demo
from onlooker.cli.commands.diff import diff
from onlooker.cli.commands.doctor import doctor
from onlooker.cli.commands.init import init
from onlooker.cli.commands.lineage import lineage
from onlooker.cli.commands.manage import du, gc, rm
from onlooker.cli.commands.metrics import metrics
from onlooker.cli.commands.pipeline import outdated, pipeline
from onlooker.cli.commands.reproduce import reproduce
from onlooker.cli.commands.restore import restore
from onlooker.cli.commands.run import run
from onlooker.cli.commands.runs import runs
from onlooker.cli.commands.share import export_command, import_command
from onlooker.cli.commands.show import show
from onlooker.cli.commands.sql import sql
from onlooker.cli.commands.start import start
from onlooker.cli.commands.status import status
from onlooker.cli.commands.stop import stop
from onlooker.cli.commands.tag import note_command, tag
from onlooker.cli.commands.telemetry import telemetry
from onlooker.cli.commands.ui import ui
from onlooker.cli.commands.watch import watch
from onlooker.cli.output import EXIT_ERROR, to_cli_error

log = logging.getLogger(__name__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onlooker")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


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
@click.version_option(_version(), "--version", prog_name="onlooker")
@click.pass_context
def cli(ctx: click.Context, project: Path | None, verbose: int) -> None:
    """Track ML experiments without changing them.

    Instrument a project once (`onlooker init`, `onlooker start`), then work as always:
    every run's command, inputs, outputs, params, code and environment land in the
    project's catalog. Inspect them with `onlooker runs` and `onlooker show`.
    """
    ctx.obj = AppState(project_option=project, verbose=verbose)
    setup_logging(verbose)


for _command in (init, start, stop, status, watch, run,  # capture
                 runs, show, metrics, telemetry, diff, lineage, pipeline, outdated, sql,  # explore
                 tag, note_command, rm, gc, du,  # manage
                 restore, reproduce,  # version, execute
                 export_command, import_command,  # share
                 doctor, demo, ui):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `onlooker` script."""
    try:
        cli.main(args=argv, prog_name="onlooker")
    except Exception as err:  # a bug: still one line unless asked for the traceback
        if os.environ.get("ONLOOKER_DEBUG"):
            raise
        click.echo(
            f"onlooker: internal error: {type(err).__name__}: {err} "
            "(set ONLOOKER_DEBUG=1 to see the traceback)",
            err=True,
        )
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
