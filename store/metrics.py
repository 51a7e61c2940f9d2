"""Metrics in the catalog: final values and series read from the files runs wrote."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .errors import NoSuchRun
from .records import safe_text

_CHUNK = 500  # run ids per query: well under SQLite's bound-parameter limit


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    ids = list(dict.fromkeys(int(i) for i in ids))
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _row(run_id: int, source: str, metric: Sequence[Any]) -> tuple[Any, ...]:
    key, step, value, text = metric[0], metric[1], metric[2], metric[3]
    wall = metric[4] if len(metric) > 4 else None
    if value is not None and not math.isfinite(value):  # NaN must never compare as a number
        value, text = None, text or ("nan" if math.isnan(value) else
                                     "inf" if value > 0 else "-inf")
    return (run_id, safe_text(str(key)), None if step is None else float(step),
            None if value is None else float(value), safe_text(text), source,
            None if wall is None else float(wall))


def _point(value: float | None, text: str | None) -> float | str | None:
    return value if value is not None else text


class MetricsMixin:
    """Catalog methods for the `metrics` table (migration 3).

    The JSON shape under `metrics` (docs/user-guide.md): a final value is
    `key: number` (or the text "nan"/"inf"/"-inf"); a series is `key: {"last",
    "last_step", "min", "min_step", "max", "max_step", "count"}`, plus `"final"`
    when the same key also has a value without a step.
    """

    # Provided by Catalog.
    _execute: Any
    transaction: Any
    _snapshot: Any
    _conn: sqlite3.Connection
    path: Any

    # ---- writes (the agent) ------------------------------------------------------
    def has_metrics(self, run_id: int, source: str) -> bool:
        """Whether `source` gave this run metrics before."""
        return self._execute("SELECT 1 FROM metrics WHERE run_id = ? AND source = ? LIMIT 1",
                             (run_id, self.relpath(source))).fetchone() is not None

    def set_metrics(self, run_id: int, source: str, metrics: Iterable[Sequence[Any]]) -> int:
        """Replace what `source` (a project-relative path) said about the run with
        `metrics` (Metric tuples: key, step, value, text, wall); returns how many."""
        source = self.relpath(source)
        rows = [_row(run_id, source, m) for m in metrics]
        with self.transaction():
            self._execute("DELETE FROM metrics WHERE run_id = ? AND source = ?",
                          (run_id, source))
            try:
                self._conn.executemany(
                    "INSERT INTO metrics (run_id, key, step, value, text, source, wall)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except sqlite3.IntegrityError as err:
                raise NoSuchRun(f"there is no run {run_id} in {self.path}") from err
        return len(rows)

    # ---- reads -------------------------------------------------------------------
    def metrics_of(self, run_id: int) -> dict[str, Any]:
        """The run's metrics as `show --json` puts them under `metrics`."""
        return self.metrics_for([run_id]).get(int(run_id), {})

    def metrics_for(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        """run id -> its metrics (as metrics_of); runs without any are left out."""
        finals: dict[tuple[int, str], float | str | None] = {}
        stats: dict[tuple[int, str], dict[str, Any]] = {}
        with self._snapshot():
            for chunk in _chunks(run_ids):
                marks = ",".join("?" * len(chunk))
                where = f"run_id IN ({marks})"
                for r in self._execute(f"SELECT run_id, key, value, text FROM metrics WHERE"
                                       f" {where} AND step IS NULL ORDER BY rowid", chunk):
                    finals[(r[0], r[1])] = _point(r[2], r[3])
                # count over the (run_id, key, step) index, the last point by one seek
                # down it per series: a window over every row took 4 s for a series of
                # a million points
                for r in self._execute(
                        f"SELECT g.run_id, g.key, g.n, l.value, l.text, l.step FROM (SELECT"
                        f" run_id, key, count(*) AS n FROM metrics WHERE {where} AND step IS"
                        f" NOT NULL GROUP BY run_id, key) g JOIN metrics l ON l.rowid = (SELECT"
                        f" rowid FROM metrics m WHERE m.run_id = g.run_id AND m.key = g.key"
                        f" AND m.step IS NOT NULL ORDER BY m.step DESC, m.rowid DESC LIMIT 1)",
                        chunk):
                    stats[(r[0], r[1])] = {"last": _point(r[3], r[4]), "last_step": r[5],
                                           "min": None, "min_step": None, "max": None,
                                           "max_step": None, "count": r[2]}
                # SQLite takes the bare `step` from the row holding the min (or max).
                for agg in ("min", "max"):
                    for r in self._execute(
                            f"SELECT run_id, key, {agg}(value), step FROM metrics WHERE {where}"
                            f" AND step IS NOT NULL AND value IS NOT NULL GROUP BY run_id, key",
                            chunk):
                        entry = stats.get((r[0], r[1]))
                        if entry is not None:
                            entry[agg], entry[f"{agg}_step"] = r[2], r[3]
        out: dict[int, dict[str, Any]] = {}
        for (run_id, key) in sorted(set(finals) | set(stats)):
            if (run_id, key) in stats:
                entry = stats[(run_id, key)]
                if (run_id, key) in finals:
                    entry["final"] = finals[(run_id, key)]
                out.setdefault(run_id, {})[key] = entry
            else:
                out.setdefault(run_id, {})[key] = finals[(run_id, key)]
        return out

    def metric_series(self, run_id: int, key: str | None = None) -> dict[str, list[dict]]:
        """key -> its points in step order, [{"step", "value", "wall", "source"}] where
        `value` is a number or the text of a non-finite one; one key, or every series."""
        sql = ("SELECT key, step, value, text, wall, source FROM metrics WHERE run_id = ?"
               " AND step IS NOT NULL")
        args: list[Any] = [run_id]
        if key is not None:
            sql += " AND key = ?"
            args.append(key)
        out: dict[str, list[dict]] = {}
        with self._snapshot():
            rows = self._execute(sql + " ORDER BY key, step, rowid", args).fetchall()
        for r in rows:
            out.setdefault(r[0], []).append({"step": r[1], "value": _point(r[2], r[3]),
                                             "wall": r[4], "source": r[5]})
        return out
