"""`onlooker runs`: the catalog's runs, newest first."""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.tag import TAGS_HEADER, any_tagged, tags_text
from onlooker.cli.metrics_view import number_text
from onlooker.cli.output import (
    CliError,
    emit,
    emit_json,
    human_duration,
    json_option,
    local_time,
    note,
    table,
    terminal_width,
)
from onlooker.store import query

STATUSES = ("running", "completed", "failed", "ended", "lost")
EMPTY_HINT = "no runs yet: run your scripts as usual while the agent watches"


# The rule and the sorting live in the store (one for every command and for Python
# users); these names stay importable from here.
REDACTED = query.REDACTED
GROUPS = query.GROUPS
FIELDS = query.COLUMN_FIELDS
column_value = query.column_value
sort_runs = query.sort_runs
command_text = query.command_line


def column_text(spec: str, value: Any) -> str:
    if spec == "duration":
        return human_duration(value)
    if spec in ("started_at", "ended_at"):
        return local_time(value)
    if spec == "command":
        return command_text(value)
    return fold(number_text(value))


def check_column(spec: str) -> None:
    """A usage error unless `spec` names a group key or a run field."""
    try:
        query.check_column(spec)
    except query.QueryError as err:
        raise CliError(str(err), exit_code=2) from err


def fold(text: str, width: int = 60) -> str:
    """A long or multi-line value folded to one readable line: its first line, cut,
    with its size (`first line … (12 lines, 480 chars)`)."""
    lines = text.splitlines() or [""]
    if len(lines) == 1 and len(text) <= width:
        return text
    first = lines[0] if len(lines[0]) <= width else lines[0][:width]
    size = f"{len(lines)} lines, {len(text)} chars" if len(lines) > 1 else f"{len(text)} chars"
    return f"{first} … ({size})"


@functools.lru_cache(maxsize=256)
def _program(path: str) -> str:
    """An absolute program path as people type it: its basename when PATH finds that
    same file under that name (`/usr/bin/python3.11` -> `python3.11`), else the path."""
    name = os.path.basename(path)
    if not os.path.isabs(path) or not name:
        return path
    found = shutil.which(name)
    try:
        return name if found is not None and os.path.samefile(found, path) else path
    except OSError:
        return path


def typed_command(argv: Any) -> str:
    """The command line for the runs table: the program as typed (see `_program`); the
    JSON keeps the exact argv."""
    if isinstance(argv, (list, tuple)) and argv:
        return command_text([_program(str(argv[0])), *argv[1:]])
    return command_text(argv)


def status_text(run: dict[str, Any]) -> str:
    status = str(run.get("status") or "?")
    if run.get("exit_code") not in (None, 0):
        return f"{status} ({run['exit_code']})"
    if run.get("signal"):
        return f"{status} (sig {run['signal']})"
    return status


def render_runs(runs: list[dict[str, Any]], width: int | None = None,
                columns: list[str] | None = None) -> str:
    """The runs table: ID, STATUS, STARTED, DURATION, COMMAND (cut to width), IN, OUT,
    then one column per extra spec."""
    columns = columns or []
    tagged = any_tagged(runs)  # a TAGS column only where a shown run has a tag
    rows = [
        (
            run.get("id"),
            status_text(run),
            local_time(run.get("started_at")),
            human_duration(run.get("duration")),
            run.get("name") or typed_command(run.get("command")),  # name: a kernel's notebook
            len(run.get("inputs") or ()),
            len(run.get("outputs") or ()),
            *((tags_text(run),) if tagged else ()),
            *(column_text(c, column_value(run, c)) for c in columns),
        )
        for run in runs
    ]
    headers = ("ID", "STATUS", "STARTED", "DURATION", "COMMAND", "IN", "OUT",
               *((TAGS_HEADER,) if tagged else ()), *(c.upper() for c in columns))
    return table(headers, rows, width=width or terminal_width(), shrink=4)


def _columns(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


CSV_FIELDS = ("id", "status", "started_at", "duration", "command", "inputs", "outputs", "tags")


def runs_csv(runs: list[dict[str, Any]], columns: list[str]) -> str:
    """One row per run with the table's columns, exact values (ISO times, seconds, the
    full command line), then the extra columns; quoted by the csv module."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, *columns])
    for run in runs:
        extra = []
        for spec in columns:
            value = column_value(run, spec)
            if spec == "command":
                value = command_text(value)
            elif isinstance(value, (list, dict)):
                value = query.as_text(value)
            extra.append("" if value is None else value)
        writer.writerow([run.get("id"), run.get("status"), run.get("started_at") or "",
                         "" if run.get("duration") is None else run["duration"],
                         command_text(run.get("command")), len(run.get("inputs") or ()),
                         len(run.get("outputs") or ()), tags_text(run), *extra])
    return buf.getvalue().rstrip("\n")


def _where_error(err: query.QueryError, texts: list[str], where: str | None) -> CliError:
    message = str(err)
    if len(texts) > 1 and where is not None:
        message = f"in --where {texts.index(where) + 1}: {message}"
    return CliError(message, exit_code=2)


@click.command()
@json_option
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV: one row per run with the shown columns (exact values).")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most N runs.")
@click.option("--status", "status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--all", "show_all", is_flag=True, help="Show every run (no limit).")
@click.option("--where", "where", metavar="EXPR", multiple=True,
              help="Only runs passing EXPR, e.g. \"params.lr > 0.01 and metrics.test.f1 >= 0.8\""
                   " (repeatable: all must hold; see the user guide, 'Finding runs').")
@click.option("--since", metavar="WHEN",
              help="Only runs started since WHEN: an age (2d, 12h, 30m) or a date / date-time.")
@click.option("--until", metavar="WHEN",
              help="Only runs started until WHEN: an age (2h) or a date / date-time.")
@click.option("--columns", "columns_text", metavar="SPEC,...",
              help="Add columns: metrics.KEY, params.KEY, telemetry.KEY (e.g. "
                   "metrics.test.f1,params.lr); with --json each run gets a `columns` object.")
@click.option("--sort", "sort_spec", metavar="[-]SPEC",
              help="Sort by a column spec (or a field such as duration); -SPEC descending. "
                   "Sorts all runs, then shows the first N.")
@pass_state
def runs(state: AppState, as_json: bool, as_csv: bool, limit: int, status: str | None,
         show_all: bool, where: tuple[str, ...], since: str | None, until: str | None,
         columns_text: str | None, sort_spec: str | None) -> None:
    """List runs, newest first (or in --sort order)."""
    if as_json and as_csv:
        raise CliError("give --json or --csv, not both", exit_code=2)
    columns = _columns(columns_text)
    for spec in [*columns, *([sort_spec] if sort_spec else [])]:
        check_column(spec)
    texts = list(where)
    for text in texts:  # a bad filter is refused before the catalog is opened
        try:
            query.parse(text)
        except query.QueryError as err:
            raise _where_error(err, texts, text) from err
    with state.catalog() as catalog:
        try:
            found = catalog.query(texts, since=since, until=until, status=status,
                                  sort=sort_spec, limit=None if show_all else limit)
            if columns:
                values = [{c: column_value(run, c) for c in columns} for run in found]
        except query.QueryError as err:
            raise _where_error(err, texts, None) from err
    if as_json:
        if columns:
            for run, cols in zip(found, values, strict=True):
                run["columns"] = cols
        emit_json(found)
        return
    if as_csv:
        emit(runs_csv(found, columns))
        return
    if not found:
        filtered = texts or since or until
        note(EMPTY_HINT if status is None and not filtered else
             "no runs match" if filtered else f"no {status} runs")
        return
    emit(render_runs(found, columns=columns))
    if not show_all and len(found) == limit:
        filtered = bool(texts or since or until)
        shown = f"the {limit} newest" if not sort_spec else f"the first {limit}"
        note(f"({shown}{' matching' if filtered else ''};"
             f" --all shows every {'match' if filtered else 'run'})")
