"""`onlooker runs`: the catalog's runs, newest first."""

from __future__ import annotations

import shlex
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.metrics_view import number_text
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


REDACTED = "***"
GROUPS = ("metrics", "params", "telemetry")  # column specs GROUP.KEY look into these
# Top-level fields of a run (the JSON contract) that make sense as a column.
FIELDS = ("id", "status", "exit_code", "signal", "started_at", "ended_at", "duration", "cwd",
          "tier", "command")


def _quote(arg: str) -> str:
    # A redacted value reads as what it is, not as a quoted glob ('--api-key=***').
    if arg == REDACTED:
        return arg
    if arg.endswith("=" + REDACTED):
        return _quote(arg[:-len(REDACTED)]) + REDACTED
    return shlex.quote(arg)


def command_text(argv: Any) -> str:
    if isinstance(argv, (list, tuple)):
        return " ".join(_quote(str(a)) for a in argv)
    return str(argv or "")


def column_text(spec: str, value: Any) -> str:
    if spec == "duration":
        return human_duration(value)
    if spec in ("started_at", "ended_at"):
        return local_time(value)
    if spec == "command":
        return command_text(value)
    return number_text(value)


def check_column(spec: str) -> None:
    """A usage error unless `spec` names a group key or a run field."""
    group, _, rest = spec.lstrip("-").partition(".")
    if group in GROUPS and rest:
        return
    if spec.lstrip("-") in FIELDS:
        return
    raise click.UsageError(
        f"unknown column '{spec}': use metrics.KEY, params.KEY, telemetry.KEY or one of "
        f"{', '.join(FIELDS)}")


def status_text(run: dict[str, Any]) -> str:
    status = str(run.get("status") or "?")
    if run.get("exit_code") not in (None, 0):
        return f"{status} ({run['exit_code']})"
    if run.get("signal"):
        return f"{status} (sig {run['signal']})"
    return status


_SERIES_FIELDS = ("last", "last_step", "min", "min_step", "max", "max_step", "count", "final")


def _lookup(mapping: Any, rest: str) -> Any:
    """`rest` in a run's params/metrics/telemetry: the key as written, else the one key
    ending in `:rest` or `.rest` (`test.f1` finds `summary.json:test.f1`), else a nested
    path (`gpus.0.mem_peak`); a series gives its last value unless a field is named
    (`val_loss.min`)."""
    found = _find(mapping, rest)
    if isinstance(found, dict) and "last" in found:
        return found["last"]
    return found


def _find(mapping: Any, rest: str) -> Any:
    if not isinstance(mapping, dict) or not rest:
        return None
    found = mapping.get(rest)
    if found is None:
        hits = [k for k in mapping if str(k).endswith((f":{rest}", f".{rest}"))]
        found = mapping[hits[0]] if len(hits) == 1 else None
    if found is None:
        head, _, tail = rest.rpartition(".")
        if head and tail in _SERIES_FIELDS:
            series = _find(mapping, head)
            return series.get(tail) if isinstance(series, dict) else None
        first, _, more = rest.partition(".")
        if more and isinstance(mapping.get(first), dict):
            return _find(mapping[first], more)
    return found


def column_value(run: dict[str, Any], spec: str) -> Any:
    """The value of a column spec (`metrics.test.f1`, `params.lr`, `telemetry.rss_peak`,
    or a top-level field such as `duration`) for one run; None when it has none."""
    group, _, rest = spec.partition(".")
    if group in GROUPS and rest:
        return _lookup(run.get(group), rest)
    return run.get(spec)


def sort_runs(runs: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """Runs ordered by a column spec, `-spec` descending; runs without a value last."""
    descending = spec.startswith("-")
    spec = spec.lstrip("-")

    def key(run: dict[str, Any]) -> tuple[int, Any]:
        value = column_value(run, spec)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return (1, str(value)) if value is not None else (2, "")
        return (0, value)

    present = [r for r in runs if key(r)[0] < 2]
    missing = [r for r in runs if key(r)[0] == 2]
    numbers = sorted((r for r in present if key(r)[0] == 0), key=key, reverse=descending)
    texts = sorted((r for r in present if key(r)[0] == 1), key=key, reverse=descending)
    return numbers + texts + missing


def render_runs(runs: list[dict[str, Any]], width: int | None = None,
                columns: list[str] | None = None) -> str:
    """The runs table: ID, STATUS, STARTED, DURATION, COMMAND (cut to width), IN, OUT,
    then one column per extra spec."""
    columns = columns or []
    rows = [
        (
            run.get("id"),
            status_text(run),
            local_time(run.get("started_at")),
            human_duration(run.get("duration")),
            command_text(run.get("command")),
            len(run.get("inputs") or ()),
            len(run.get("outputs") or ()),
            *(column_text(c, column_value(run, c)) for c in columns),
        )
        for run in runs
    ]
    headers = ("ID", "STATUS", "STARTED", "DURATION", "COMMAND", "IN", "OUT",
               *(c.upper() for c in columns))
    return table(headers, rows, width=width or terminal_width(), shrink=4)


def _columns(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


@click.command()
@json_option
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most N runs.")
@click.option("--status", "status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--all", "show_all", is_flag=True, help="Show every run (no limit).")
@click.option("--columns", "columns_text", metavar="SPEC,...",
              help="Add columns: metrics.KEY, params.KEY, telemetry.KEY (e.g. "
                   "metrics.test.f1,params.lr); with --json each run gets a `columns` object.")
@click.option("--sort", "sort_spec", metavar="[-]SPEC",
              help="Sort by a column spec (or a field such as duration); -SPEC descending. "
                   "Sorts all runs, then shows the first N.")
@pass_state
def runs(state: AppState, as_json: bool, limit: int, status: str | None, show_all: bool,
         columns_text: str | None, sort_spec: str | None) -> None:
    """List runs, newest first (or in --sort order)."""
    columns = _columns(columns_text)
    for spec in [*columns, *([sort_spec] if sort_spec else [])]:
        check_column(spec)
    with state.catalog() as catalog:
        fetch = None if show_all or sort_spec else limit
        found = catalog.runs(limit=fetch, status=status)
    if sort_spec:
        found = sort_runs(found, sort_spec)
        if not show_all:
            found = found[:limit]
    if as_json:
        if columns:
            for run in found:
                run["columns"] = {c: column_value(run, c) for c in columns}
        emit_json(found)
        return
    if not found:
        note(EMPTY_HINT if status is None else f"no {status} runs")
        return
    emit(render_runs(found, columns=columns))
    if not show_all and len(found) == limit:
        note(f"(the {limit} newest; --all shows every run)")
