"""`onlooker sql QUERY`: one read-only SQL statement over the catalog's documented views."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import EXIT_USAGE, CliError, emit, emit_json, json_option, note, table

CELL_MAX = 80  # characters of one value in the table; --json and --csv print them whole


def _cell(value: Any) -> tuple[str, bool]:
    """A value as the table shows it, and whether it was cut."""
    if value is None:
        return "", False
    text = str(value).replace("\r\n", "\n").replace("\n", "\\n").replace("\t", " ")
    if len(text) > CELL_MAX:
        return text[:CELL_MAX - 1] + "…", True
    return text, False


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, bool]:
    """The result as a table (NULL is an empty cell), and whether any value was cut."""
    cut = False
    cells = []
    for row in rows:
        line = []
        for value in row:
            text, was_cut = _cell(value)
            cut = cut or was_cut
            line.append(text)
        cells.append(line)
    return table(list(columns), cells), cut


def render_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 CSV with a header row; NULL is an empty field."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue()


@click.command()
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@click.argument("query", metavar="QUERY")
@pass_state
def sql(state: AppState, as_json: bool, as_csv: bool, query: str) -> None:
    """Run one read-only SQL statement over the catalog's views ('-' reads it from stdin).

    Views: runs, params, metrics, inputs, code, outputs, steps, versions,
    lineage_edges, tags, notes (columns in the user guide; in the file itself they are
    v_runs, v_params, ...). Example:

        onlooker sql "SELECT run_id, value FROM params WHERE key = 'lr'"
    """
    from onlooker.store.views import QueryError, records

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    if query == "-":
        query = sys.stdin.read()
    with state.catalog() as catalog:
        try:
            columns, rows = catalog.sql(query)
        except QueryError as err:
            raise CliError(str(err), exit_code=EXIT_USAGE) from err
    if as_json:
        emit_json(records(columns, rows))
    elif as_csv:
        click.echo(render_csv(columns, rows), nl=False)
    else:
        text, cut = render_table(columns, rows)
        emit(text)
        note(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
        if cut:
            note(f"values longer than {CELL_MAX} characters were cut: --json or --csv prints "
                 "them whole")
