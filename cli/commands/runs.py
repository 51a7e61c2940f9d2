"""`onlooker runs`: the catalog's runs, newest first."""

from __future__ import annotations

import shlex
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import (
    emit,
    emit_json,
    human_duration,
    json_option,
    local_time,
    note,
    table,
    terminal_width,
)

STATUSES = ("running", "completed", "failed", "ended", "lost")
EMPTY_HINT = "no runs yet: run your scripts as usual while the agent watches"


def command_text(argv: Any) -> str:
    if isinstance(argv, (list, tuple)):
        return shlex.join(str(a) for a in argv)
    return str(argv or "")


def status_text(run: dict[str, Any]) -> str:
    status = str(run.get("status") or "?")
    if run.get("exit_code") not in (None, 0):
        return f"{status} ({run['exit_code']})"
    if run.get("signal"):
        return f"{status} (sig {run['signal']})"
    return status


def render_runs(runs: list[dict[str, Any]], width: int | None = None) -> str:
    """The runs table: ID, STATUS, STARTED, DURATION, COMMAND (cut to width), IN, OUT."""
    rows = [
        (
            run.get("id"),
            status_text(run),
            local_time(run.get("started_at")),
            human_duration(run.get("duration")),
            command_text(run.get("command")),
            len(run.get("inputs") or ()),
            len(run.get("outputs") or ()),
        )
        for run in runs
    ]
    headers = ("ID", "STATUS", "STARTED", "DURATION", "COMMAND", "IN", "OUT")
    return table(headers, rows, width=width or terminal_width(), shrink=4)


@click.command()
@json_option
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most N runs.")
@click.option("--status", "status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--all", "show_all", is_flag=True, help="Show every run (no limit).")
@pass_state
def runs(state: AppState, as_json: bool, limit: int, status: str | None, show_all: bool) -> None:
    """List runs, newest first."""
    with state.catalog() as catalog:
        found = catalog.runs(limit=None if show_all else limit, status=status)
    if as_json:
        emit_json(found)
        return
    if not found:
        note(EMPTY_HINT if status is None else f"no {status} runs")
        return
    emit(render_runs(found))
    if not show_all and len(found) == limit:
        note(f"(the {limit} newest; --all shows every run)")
