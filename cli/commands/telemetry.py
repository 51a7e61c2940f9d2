"""`onlooker telemetry RUN`: a run's CPU, memory and GPU use over time, drawn or exported."""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.show import resolve
from onlooker.cli.output import CliError, emit, emit_json, note, terminal_width
from onlooker.cli.telemetry_view import summary_rows
from onlooker.store.records import iso

_MIB = 1024 * 1024


def to_csv(series: list[dict[str, Any]]) -> str:
    """One line per sample or bucket: t, time, span, n, then each metric, its min and max."""
    metrics = sorted({key for point in series for key in point["values"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["t", "time", "span", "n"]
    for key in metrics:
        header += [key, f"{key}.min", f"{key}.max"]
    writer.writerow(header)
    for p in series:
        row: list[Any] = [p["t"], iso(p["t"]), p["span"], p["n"]]
        for key in metrics:
            row += [p["values"].get(key, ""), p["min"].get(key, ""), p["max"].get(key, "")]
        writer.writerow(row)
    return out.getvalue().rstrip("\n")


def _devices(series: list[dict[str, Any]]) -> list[str]:
    found = {key.split(".")[1] for p in series for key in p["values"]
             if key.startswith("gpu.") and key.count(".") == 2}
    return sorted(found, key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))


def draw(series: list[dict[str, Any]], *, width: int, color: bool) -> str:
    """CPU %, RSS, and per GPU its util and memory, against time since the first sample."""
    try:
        import plotext as plt
    except ImportError as err:
        raise CliError("drawing needs plotext (pip install 'plotext>=5.2,<6');"
                       " --csv and --json work without it") from err
    t0 = series[0]["t"]
    last = series[-1]["t"] + series[-1]["span"] - t0
    unit, scale = ("hours", 3600.0) if last > 3 * 3600 else (
        ("minutes", 60.0) if last > 180 else ("seconds", 1.0))
    coarse = any(p["span"] > 0 for p in series)
    panels: list[tuple[str, list[tuple[str, str, float]]]] = [
        ("CPU % (100 = one core)", [("cpu_pct", "cpu %", 1.0)]),
        ("RSS (MiB)", [("rss", "rss", 1.0 / _MIB)]),
    ]
    for dev in _devices(series):
        panels.append((f"GPU {dev} utilization %", [(f"gpu.{dev}.util", "run (SM %)", 1.0),
                                                    (f"dev.{dev}.util", "whole device", 1.0)]))
        panels.append((f"GPU {dev} memory (MiB)", [(f"gpu.{dev}.mem", "run", 1.0 / _MIB)]))
    plt.main()  # plotext keeps one global figure: start from its root, cleared
    plt.clear_figure()
    plt.subplots(len(panels), 1)
    plt.plotsize(max(40, width), 12 * len(panels))
    for i, (title, lines) in enumerate(panels, start=1):
        plt.subplot(i, 1)
        plt.theme("clear")
        plt.title(title)
        drawn = False
        for key, label, factor in lines:
            xs = [(p["t"] - t0) / scale for p in series if key in p["values"]]
            if not xs:
                continue
            plt.plot(xs, [p["values"][key] * factor for p in series if key in p["values"]],
                     label=label if len(lines) > 1 or coarse else None)
            if coarse:  # downsampled buckets: the peaks stay visible
                plt.plot(xs, [p["max"][key] * factor for p in series if key in p["values"]],
                         label=f"{label} (max)")
            drawn = True
        if not drawn:
            plt.title(f"{title}: not sampled")
        if i == len(panels):
            plt.xlabel(f"{unit} since the first sample")
    plt.main()
    text = plt.build()
    return text if color else plt.uncolorize(text)


@click.command()
@click.option("--csv", "as_csv", is_flag=True, help="Print the series as CSV.")
@click.option("--json", "as_json", is_flag=True,
              help="Print exact JSON: {run, summary, series} (stable keys).")
@click.argument("run_ref", metavar="RUN")
@pass_state
def telemetry(state: AppState, as_csv: bool, as_json: bool, run_ref: str) -> None:
    """Draw a run's CPU, RSS and GPU use over time (RUN: an id, 'last' or -N).

    The series is the run's own process tree, sampled every second while it ran;
    samples older than ten minutes are kept as buckets with min, mean and max.
    """
    if as_csv and as_json:
        raise CliError("give --csv or --json, not both", exit_code=2)
    with state.catalog() as catalog:
        run = resolve(catalog, run_ref)
        series = catalog.telemetry(run["id"])
    if as_json:
        emit_json({"run": run["id"], "summary": run.get("telemetry"), "series": series})
        return
    if not series:
        note(f"run {run['id']} has no telemetry (it ended before the first sample, or"
             " the agent was not sampling)")
        return
    if as_csv:
        emit(to_csv(series))
        return
    emit(draw(series, width=terminal_width(), color=sys.stdout.isatty()))
    summary = run.get("telemetry")
    if isinstance(summary, dict):
        emit("\n".join(f"{label}: {text}" for label, text in summary_rows(summary)))
