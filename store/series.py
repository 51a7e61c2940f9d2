"""Long metric series cut to what a chart can show (LTTB), read straight from the catalog.

A chart 1,000 pixels wide cannot show a million points, and a browser that is sent
them freezes. `metric_points` returns a series of at most `max_points` points that
keeps its shape: Largest-Triangle-Three-Buckets (Steinarsson, "Downsampling Time
Series for Visual Representation", 2013), preceded by a min/max preselection inside
SQLite (MinMaxLTTB, Van Der Donckt et al., 2023) so that a million rows are folded
in one aggregate pass over the (run_id, key, step) index and never become Python
objects. The first and last points and each preselected bucket's extremes survive,
so a spike stays visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_POINTS = 2000
# MinMax buckets per LTTB bucket: each gives its min and max, so LTTB picks from
# about 2 * PRESELECT candidates per output point (the paper finds 4 candidates enough).
PRESELECT = 2

_WHERE = "run_id = ? AND key = ? AND step IS NOT NULL"
# Each an index seek (a bounded count, not a count of a million rows).
_FEW_SQL = f"SELECT count(*) FROM (SELECT 1 FROM metrics WHERE {_WHERE} LIMIT ?)"
_LO_SQL = f"SELECT min(step) FROM metrics WHERE {_WHERE}"
_HI_SQL = f"SELECT max(step) FROM metrics WHERE {_WHERE}"
_ALL_SQL = f"SELECT step, value FROM metrics WHERE {_WHERE} ORDER BY step, rowid"
# One pass over the index range: per bucket its min, max and rows (no bare columns:
# with two aggregates SQLite does not say which row a bare `step` would come from);
# then each extreme's step is sought inside its own bucket (_STEPS_SQL), which reads
# about a bucket's rows once more instead of a second GROUP BY over all of them.
_BUCKETS_SQL = ("SELECT CAST((step - ?) * ? / ? AS INTEGER) AS b, min(value), max(value),"
                f" count(*) FROM metrics WHERE {_WHERE} GROUP BY b")
_STEP_OF = (f"(SELECT step FROM metrics WHERE {_WHERE} AND step >= t.s0 AND step <= t.s1"
            " AND value = t.{v} LIMIT 1)")
_STEPS_SQL = ("WITH t(s0, s1, lo, hi) AS (VALUES {rows}) SELECT " + _STEP_OF.format(v="lo")
              + ", t.lo, " + _STEP_OF.format(v="hi") + ", t.hi FROM t")
_VALUES_CHUNK = 3000  # rows of 4 bound values, under SQLite's 32,766 variables
_END_SQL = (f"SELECT step, value FROM metrics WHERE {_WHERE} AND step = ?"
            " AND value IS NOT NULL ORDER BY rowid {way} LIMIT 1")


def lttb(xs: Sequence[float], ys: Sequence[float], n: int) -> list[int]:
    """The indexes of the `n` points of (xs, ys) that LTTB keeps, in order: the first,
    the last, and in each of n - 2 equal buckets between them the point making the
    largest triangle with the point kept before it and the next bucket's mean."""
    size = len(xs)
    if n >= size or size <= 2:
        return list(range(size))
    if n < 3:
        return [0, size - 1][:max(n, 0)]
    every = (size - 2) / (n - 2)
    kept = [0]
    a = 0
    for i in range(n - 2):
        start = int(i * every) + 1
        end = int((i + 1) * every) + 1
        nxt_end = min(int((i + 2) * every) + 1, size)
        nxt = range(end, nxt_end) if end < nxt_end else range(size - 1, size)
        avg_x = sum(xs[j] for j in nxt) / len(nxt)
        avg_y = sum(ys[j] for j in nxt) / len(nxt)
        ax, ay = xs[a], ys[a]
        best, best_area = start, -1.0
        for j in range(start, end):
            area = abs((ax - avg_x) * (ys[j] - ay) - (ax - xs[j]) * (avg_y - ay))
            if area > best_area:
                best, best_area = j, area
        kept.append(best)
        a = best
    kept.append(size - 1)
    return kept


def metric_points(catalog: Any, run_id: int, key: str,
                  max_points: int = DEFAULT_POINTS) -> dict[str, Any]:
    """One metric series of a run for a chart: {"run", "key", "count" (points stored),
    "downsampled", "step": [...], "value": [...]} with at most `max_points` points in
    step order. A value that is not a finite number (stored as the text "nan", "inf")
    is None in a series drawn whole, and left out of a downsampled one. The key is
    taken as written (resolve it first with store.query.match_key)."""
    max_points = max(3, int(max_points))
    args = (run_id, key)
    with catalog._snapshot():
        few = catalog._execute(_FEW_SQL, (*args, max_points + 1)).fetchone()[0]
        lo = catalog._execute(_LO_SQL, args).fetchone()[0]
        hi = catalog._execute(_HI_SQL, args).fetchone()[0]
        if few <= max_points or lo == hi:
            rows = catalog._execute(_ALL_SQL, args).fetchall()
            return {"run": run_id, "key": key, "count": len(rows), "downsampled": False,
                    "step": [r[0] for r in rows], "value": [_finite(r[1]) for r in rows]}
        buckets = max_points * PRESELECT
        width = (hi - lo) / buckets
        slack = width * 1e-6  # a step on a bucket's edge, whatever the rounding
        found: dict[float, float] = {}
        count = 0
        spans: list[tuple[float, float, float, float]] = []
        for b, low, high, n in catalog._execute(_BUCKETS_SQL, (lo, buckets, hi - lo, *args)):
            count += n
            if low is not None:  # a bucket of NaNs only has nothing to draw
                spans.append((lo + b * width - slack, lo + (b + 1) * width + slack, low, high))
        for i in range(0, len(spans), _VALUES_CHUNK):
            chunk = spans[i:i + _VALUES_CHUNK]
            sql = _STEPS_SQL.format(rows=",".join("(?, ?, ?, ?)" for _ in chunk))
            bound = [x for span in chunk for x in span]
            for low_step, low, high_step, high in catalog._execute(sql, (*bound, *args, *args)):
                if low_step is not None:
                    found[low_step] = low
                if high_step is not None:
                    found[high_step] = high
        for step, way in ((lo, "ASC"), (hi, "DESC")):  # the ends are always drawn
            row = catalog._execute(_END_SQL.format(way=way), (*args, step)).fetchone()
            if row is not None:
                found[row[0]] = row[1]
    xs = sorted(found)
    ys = [found[x] for x in xs]
    keep = lttb(xs, ys, max_points)
    return {"run": run_id, "key": key, "count": count, "downsampled": len(keep) < count,
            "step": [xs[i] for i in keep], "value": [ys[i] for i in keep]}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# Distinct keys by index seeks, one per key (a million points of one key are not read).
_KEYS_SQL = ("WITH RECURSIVE k(key) AS (SELECT min(key) FROM metrics WHERE run_id = ?1"
             " UNION ALL SELECT (SELECT min(key) FROM metrics WHERE run_id = ?1 AND key > k.key)"
             " FROM k WHERE k.key IS NOT NULL) SELECT key FROM k WHERE key IS NOT NULL AND"
             " EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = ?1 AND m.key = k.key"
             " AND m.step IS NOT NULL)")


def series_keys(catalog: Any, run_id: int) -> list[str]:
    """The keys of the run's metric series (keys with at least one point at a step),
    sorted; the final values alone are left out."""
    with catalog._snapshot():
        return [r[0] for r in catalog._execute(_KEYS_SQL, (run_id,))]
