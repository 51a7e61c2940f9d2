"""Series from CSV/TSV logs with a header (Keras CSVLogger, Lightning, DVCLive)."""

from __future__ import annotations

import csv
import logging

from onlooker.agent.metrics.base import Metric, complete_lines, number, wall_seconds

log = logging.getLogger(__name__)

# Header names (lowercased) that say where in training a row is, best first: the
# first one present is the step; none of them is itself a metric.
STEP_COLUMNS = ("step", "global_step", "trainer/global_step", "steps", "iteration",
                "iterations", "iter", "it", "batch", "epoch", "epochs")
WALL_COLUMNS = ("timestamp", "wall_time", "walltime", "wall", "time", "created_at")
_SAMPLE_ROWS = 50


def _delimiter(rel_path: str, header: str) -> str:
    low = rel_path.lower()
    if low.endswith(".tsv") or ("\t" in header and "," not in header):
        return "\t"
    if "," not in header and ";" in header:
        return ";"
    return ","


def _rows(rel_path: str, text: str) -> tuple[list[str], list[list[str]]] | None:
    lines = [line for line in complete_lines(text) if line.strip()]
    if len(lines) < 1:
        return None
    delim = _delimiter(rel_path, lines[0])
    try:
        rows = list(csv.reader(lines, delimiter=delim, strict=True))
    except csv.Error:
        return None
    header = [h.strip() for h in rows[0]]
    if len(header) < 1 or any(number(h) is not None for h in header if h):
        return None  # no header: the first row is data
    return header, rows[1:]


def _numeric_share(col: int, rows: list[list[str]]) -> tuple[int, int]:
    """(numeric cells, non-empty cells) in the first rows of column `col`."""
    numeric = filled = 0
    for row in rows[:_SAMPLE_ROWS]:
        if col < len(row) and row[col].strip():
            filled += 1
            numeric += number(row[col]) is not None
    return numeric, filled


def _is_wall(col: int, rows: list[list[str]]) -> bool:
    for row in rows[:_SAMPLE_ROWS]:
        got = number(row[col]) if col < len(row) else None
        if got is not None and got[0] is not None:
            return wall_seconds(got[0]) is not None
    return False


def looks_like_log(rel_path: str, text: str) -> bool:
    """A CSV written as a training log: a step/epoch column and mostly numeric columns.

    Used for files not named as metrics (Keras `CSVLogger('training.log')`); a step
    column is required so that a dataset of numbers is not taken for metrics.
    """
    parsed = _rows(rel_path, text)
    if parsed is None:
        return False
    header, rows = parsed
    names = [h.lower() for h in header]
    if len(header) < 2 or not rows or not any(n in STEP_COLUMNS for n in names):
        return False
    numeric_cols = 0
    for col in range(len(header)):
        numeric, filled = _numeric_share(col, rows)
        numeric_cols += filled > 0 and numeric == filled
    return numeric_cols * 3 >= len(header) * 2


def parse_table(rel_path: str, text: str) -> list[Metric]:
    """A series per numeric column, keyed `rel_path:column`, in row order.

    The step is the first step-like column (step, global_step, epoch...), else
    the row's index. Empty cells (Lightning's sparse rows) are skipped; a row with
    the wrong number of fields is corrupt and skipped; a non-numeric cell in a
    numeric column is skipped, never guessed.
    """
    parsed = _rows(rel_path, text)
    if parsed is None:
        return []
    header, rows = parsed
    names = [h.lower() for h in header]
    step_col = next((names.index(n) for n in STEP_COLUMNS if n in names), None)
    wall_col = next((names.index(n) for n in WALL_COLUMNS if n in names), None)
    if wall_col is not None and not _is_wall(wall_col, rows):
        wall_col = None  # a "time" column of durations is a metric, not a clock
    metric_cols = []
    for col, name in enumerate(names):
        if col in (step_col, wall_col) or name in STEP_COLUMNS or not header[col]:
            continue
        numeric, filled = _numeric_share(col, rows)
        if filled == 0 or numeric * 2 >= filled:  # a text column (a phase name) is no metric
            metric_cols.append(col)
    out: list[Metric] = []
    skipped = 0
    for index, row in enumerate(rows):
        if len(row) != len(header):
            skipped += 1
            continue
        if step_col is None:
            step: float | None = float(index)
        else:
            got = number(row[step_col])
            if got is None or got[0] is None:
                skipped += 1
                continue
            step = got[0]
        wall = None
        if wall_col is not None:
            got = number(row[wall_col])
            wall = wall_seconds(got[0]) if got is not None and got[0] is not None else None
        for col in metric_cols:
            got = number(row[col])
            if got is not None:
                out.append(Metric(f"{rel_path}:{header[col]}", step, got[0], got[1], wall))
    if skipped:
        log.debug("%s: skipped %d malformed rows", rel_path, skipped)
    return out
