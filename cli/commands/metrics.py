"""`onlooker metrics RUN [KEY]`: a run's metric series, as a table, a plot, JSON or CSV."""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.show import resolve
from onlooker.cli.metrics_view import metrics_table, number_text
from onlooker.cli.output import CliError, emit, emit_json, json_option, note, table, terminal_width
from onlooker.store.query import QueryError, match_key


def match_keys(keys: list[str], wanted: str) -> list[str]:
    """KEY by the one rule every command shares (store/query/keys.py `match_key`): as
    written, else the one key ending in `:KEY`, `.KEY` or `/KEY` (`val_loss` finds
    `training.log:val_loss`); several such keys are a usage error naming them."""
    try:
        found = match_key(keys, wanted)
    except QueryError as err:
        raise CliError(str(err), exit_code=2) from err
    return [] if found is None else [found]


def _csv(series: dict[str, list[dict]], finals: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "step", "value", "wall"])
    for key, value in finals.items():
        writer.writerow([key, "", value, ""])
    for key, points in series.items():
        for p in points:
            writer.writerow([key, p["step"], p["value"], "" if p["wall"] is None else p["wall"]])
    return buf.getvalue().rstrip("\n")


def _plot(series: dict[str, list[dict]]) -> str | None:
    """A terminal line plot of the series (plotext), or None when it is not installed."""
    try:
        import plotext as plt
    except ImportError:
        return None
    plt.clear_figure()
    plt.plotsize(min(terminal_width(), 120), 20)
    for key, points in series.items():
        xs = [p["step"] for p in points if isinstance(p["value"], float)]
        ys = [p["value"] for p in points if isinstance(p["value"], float)]
        if xs:
            plt.plot(xs, ys, label=key, marker="braille")
    plt.xlabel("step")
    return str(plt.build())


@click.command()
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (key,step,value,wall).")
@click.option("--plot/--no-plot", default=None,
              help="Plot the series (default: when KEY is given and stdout is a terminal).")
@click.argument("run_ref", metavar="RUN")
@click.argument("key", required=False)
@pass_state
def metrics(state: AppState, as_json: bool, as_csv: bool, plot: bool | None, run_ref: str,
            key: str | None) -> None:
    """Show RUN's metrics; with KEY, that metric's points (plotted in a terminal).

    RUN is an id, or 'last' / -1 for the newest. KEY is a metric key or its last part
    (`val_loss` for `training.log:val_loss`).
    """
    if as_json and as_csv:
        raise CliError("give --json or --csv, not both", exit_code=2)
    with state.catalog() as catalog:
        run = resolve(catalog, run_ref)
        summary = run.get("metrics") or {}
        keys = match_keys(list(summary), key) if key is not None else list(summary)
        if key is not None and not keys:
            raise CliError(f"run {run['id']} has no metric '{key}'"
                           + (f" (it has: {', '.join(list(summary)[:8])})" if summary else ""))
        all_series = catalog.metric_series(run["id"])
    series = {k: all_series[k] for k in keys if k in all_series}
    finals = {k: (summary[k]["final"] if isinstance(summary[k], dict) else summary[k])
              for k in keys if not isinstance(summary[k], dict) or "final" in summary[k]}
    if as_json:
        emit_json({"run": run["id"], "finals": finals, "series": series})
        return
    if as_csv:
        emit(_csv(series, finals))
        return
    if not keys:
        note(f"run {run['id']} has no metrics")
        return
    if plot is None:
        plot = key is not None and sys.stdout.isatty()
    if plot and series:
        drawn = _plot(series)
        if drawn is None:
            note("plotting needs the plotext package (pip install plotext); showing a table")
        else:
            emit(drawn)
    if key is None:
        emit(metrics_table(summary))
        return
    for k, points in series.items():
        if not plot:
            emit(table(("STEP", k), [(number_text(p["step"]), number_text(p["value"]))
                                     for p in points]))
    if finals:
        emit(table(None, [(k, number_text(v)) for k, v in finals.items()]))
