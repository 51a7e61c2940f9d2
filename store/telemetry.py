"""Telemetry in the catalog: per-run samples, downsampling, series and summaries.

A row of `telemetry` is one raw sample (`span` 0, `n` 1, `data` {metric: number})
or a bucket of downsampled rows (`span` its width in seconds, `n` the samples in it,
`data` {metric: [min, mean, max, k]}, k the samples that had the metric). Buckets
merge exactly (min of mins, max of maxes, mean weighted by k), so downsampling
again into a coarser bucket stays honest and a spike stays visible as a max.

Resolution by age (`TIERS`): full for `keep_full_seconds` (10 min), then 10 s
buckets up to 1 h old, 1 min up to 6 h, 5 min up to 24 h, 30 min beyond. Buckets
start at multiples of their width (Unix time), so compaction is idempotent. A
week-long run at 1 Hz keeps about 1,700 rows instead of 600,000.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

# (age limit in seconds, bucket width): rows younger than the limit (and older than
# the previous one) are folded into buckets of that width.
TIERS: tuple[tuple[float, float], ...] = (
    (3600.0, 10.0),
    (6 * 3600.0, 60.0),
    (24 * 3600.0, 300.0),
    (math.inf, 1800.0),
)
# Metrics that only grow; the summary reads their last (largest) value.
CUMULATIVE = ("cpu_s", "read_bytes", "write_bytes")

_STATS_SQL = """
SELECT tl.run_id AS run_id, j.key AS key,
  min(CASE WHEN j.type = 'array' THEN json_extract(j.value, '$[0]') ELSE j.value END) AS lo,
  max(CASE WHEN j.type = 'array' THEN json_extract(j.value, '$[2]') ELSE j.value END) AS hi,
  sum(CASE WHEN j.type = 'array'
      THEN json_extract(j.value, '$[1]') * json_extract(j.value, '$[3]')
      ELSE j.value END) AS total,
  sum(CASE WHEN j.type = 'array' THEN json_extract(j.value, '$[3]') ELSE 1 END) AS k,
  min(tl.t) AS first, max(tl.t + tl.span) AS last
FROM telemetry tl, json_each(tl.data) j
WHERE tl.run_id IN ({ids}) AND j.type IN ('integer', 'real', 'array')
GROUP BY tl.run_id, j.key
"""
_RUNS_SQL = """
SELECT run_id, count(*) AS rows, sum(n) AS n, min(t) AS first, max(t + span) AS last
FROM telemetry WHERE run_id IN ({ids}) GROUP BY run_id
"""


def _stats(value: Any) -> list[float] | None:
    """A stored value as [min, mean, max, k]; None for anything not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [value, value, value, 1]
    if isinstance(value, list) and len(value) == 4:
        return value
    return None


def merge(datas: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Fold raw samples and buckets into one bucket: {metric: [min, mean, max, k]}."""
    acc: dict[str, list[float]] = {}
    for data in datas:
        for key, value in data.items():
            s = _stats(value)
            if s is None:
                continue
            cur = acc.get(key)
            if cur is None:
                acc[key] = [s[0], s[1] * s[3], s[2], s[3]]
            else:
                cur[0] = min(cur[0], s[0])
                cur[1] += s[1] * s[3]
                cur[2] = max(cur[2], s[2])
                cur[3] += s[3]
    return {key: [lo, _tidy(total / k), hi, k] for key, (lo, total, hi, k) in acc.items() if k}


def _tidy(value: float) -> float:
    return round(value, 6)


def _check_tiers(tiers: Sequence[tuple[float, float]]) -> None:
    prev_limit, prev_width = 0.0, 0.0
    for limit, width in tiers:
        if width <= 0 or limit <= prev_limit:
            raise ValueError("telemetry tiers need growing age limits and positive widths")
        if prev_width and (width < prev_width or (width / prev_width) % 1):
            raise ValueError("each telemetry bucket width must be a multiple of the one before")
        prev_limit, prev_width = limit, width


class TelemetryMixin:
    """Catalog methods for the `telemetry` table (migration 2)."""

    _execute: Any
    transaction: Any
    _snapshot: Any
    _conn: Any

    # ---- writes (the agent) --------------------------------------------------------
    def add_telemetry(self, rows: Iterable[tuple[int, float, dict]]) -> int:
        """Store raw samples (run id, Unix time, {metric: number}); returns how many."""
        values = [(int(run_id), float(t), json.dumps(data, separators=(",", ":")))
                  for run_id, t, data in rows]
        if values:
            with self.transaction():
                self._conn.executemany(
                    "INSERT INTO telemetry (run_id, t, span, n, data) VALUES (?, ?, 0, 1, ?)",
                    values)
        return len(values)

    def compact_telemetry(self, now: float, *, keep_full_seconds: float = 600.0,
                          bucket_seconds: Sequence[tuple[float, float]] = TIERS) -> int:
        """Downsample rows older than `keep_full_seconds` into buckets that grow with
        age (`bucket_seconds`: (age limit, width) pairs); returns rows removed.

        Only runs that can still have rows to fold are visited: running ones and
        those that ended recently enough (every run on the first call of a Catalog).
        """
        _check_tiers(bucket_seconds)
        since = getattr(self, "_telemetry_compacted", None)
        horizon = max((limit for limit, _ in bucket_seconds if limit != math.inf),
                      default=math.inf)
        if since is None or horizon == math.inf:
            run_ids = [r[0] for r in self._execute("SELECT DISTINCT run_id FROM telemetry")]
        else:
            # A run that ended before this has no row left short of the last tier.
            cutoff = since - horizon - max(w for _, w in bucket_seconds)
            run_ids = [r[0] for r in self._execute(
                "SELECT id FROM runs WHERE ended_at IS NULL OR ended_at >= ?", (cutoff,))]
        removed = 0
        with self.transaction():
            for run_id in run_ids:
                lo = keep_full_seconds
                for limit, width in bucket_seconds:
                    if limit > lo:
                        removed += self._fold(run_id, now - limit, now - lo, width)
                    lo = max(lo, limit)
        self._telemetry_compacted = now
        return removed

    def _fold(self, run_id: int, start: float, end: float, width: float) -> int:
        """Fold rows of one run with start <= t < end into buckets of `width`."""
        rows = self._execute(
            "SELECT rowid, t, span, n, data FROM telemetry WHERE run_id = ? AND t >= ?"
            " AND t < ? AND span <= ? ORDER BY t", (run_id, start, end, width)).fetchall()
        groups: dict[float, list[Any]] = {}
        for row in rows:
            groups.setdefault(math.floor(row["t"] / width) * width, []).append(row)
        removed = 0
        for key, group in groups.items():
            if len(group) == 1 and group[0]["span"] == width:
                continue  # already this bucket
            datas = []
            for row in group:
                try:
                    datas.append(json.loads(row["data"]))
                except ValueError:
                    continue  # an unreadable row is dropped with its bucket
            self._conn.executemany("DELETE FROM telemetry WHERE rowid = ?",
                                   [(row["rowid"],) for row in group])
            self._execute(
                "INSERT INTO telemetry (run_id, t, span, n, data) VALUES (?, ?, ?, ?, ?)",
                (run_id, key, width, sum(int(row["n"]) for row in group),
                 json.dumps(merge(datas), separators=(",", ":"))))
            removed += len(group) - 1
        return removed

    # ---- reads ---------------------------------------------------------------------
    def telemetry(self, run_id: int) -> list[dict[str, Any]]:
        """The run's series, oldest first: {"t", "span", "n", "values", "min", "max"}.

        `t` is Unix seconds (a bucket's start); `values` holds each metric's value (a
        bucket's mean), `min` and `max` its extremes (equal to the value for a raw
        sample). A metric the sample lacked is absent.
        """
        rows = self._execute("SELECT t, span, n, data FROM telemetry WHERE run_id = ?"
                             " ORDER BY t, rowid", (run_id,)).fetchall()
        out = []
        for row in rows:
            try:
                data = json.loads(row["data"])
            except ValueError:
                continue
            values, lows, highs = {}, {}, {}
            for key, value in data.items():
                s = _stats(value)
                if s is None:
                    continue
                lows[key], values[key], highs[key] = s[0], s[1], s[2]
            out.append({"t": row["t"], "span": row["span"], "n": row["n"], "values": values,
                        "min": lows, "max": highs})
        return out

    def telemetry_summary(self, run_id: int) -> dict[str, Any] | None:
        """What the run used (see `telemetry_summaries`); None without telemetry."""
        return self.telemetry_summaries([run_id]).get(run_id)

    def telemetry_summaries(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        """run id -> summary, for runs that have telemetry; two queries for them all.

        Keys: `samples`, `duration` (first sample to last, seconds), `cpu_seconds`,
        `cpu_pct_mean`, `cpu_pct_peak`, `rss_peak`, `read_bytes`, `write_bytes`,
        `gpus` ({device index: {"mem_peak", "util_mean", "device_util_mean"}}: the
        run's own peak memory and mean SM %, and the whole device's mean utilization
        while the run was on it, as context) and `gpu_hours` (per device, first to
        last sample the run held it, summed). A figure never sampled is None.
        """
        ids = sorted({int(r) for r in run_ids})
        if not ids:
            return {}
        out: dict[int, dict[str, Any]] = {}
        stats: dict[int, dict[str, Any]] = {}
        with self._snapshot():
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for r in self._execute(_RUNS_SQL.format(ids=marks), chunk):
                    out[r["run_id"]] = {"samples": r["n"], "duration": r["last"] - r["first"]}
                for r in self._execute(_STATS_SQL.format(ids=marks), chunk):
                    stats.setdefault(r["run_id"], {})[r["key"]] = r
        for run_id, summary in out.items():
            summary.update(_summarize(stats.get(run_id, {})))
        return out


def _summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    def hi(key: str) -> Any:
        row = metrics.get(key)
        return None if row is None else row["hi"]

    def mean(key: str) -> float | None:
        row = metrics.get(key)
        return None if row is None or not row["k"] else round(row["total"] / row["k"], 2)

    gpus: dict[str, dict[str, Any]] = {}
    gpu_seconds = 0.0
    for key, row in metrics.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "gpu" and parts[2] == "procs":
            dev = parts[1]
            gpus[dev] = {"mem_peak": hi(f"gpu.{dev}.mem"), "util_mean": mean(f"gpu.{dev}.util"),
                         "device_util_mean": mean(f"dev.{dev}.util")}
            gpu_seconds += max(0.0, row["last"] - row["first"])
    cpu_s = hi("cpu_s")
    return {
        "cpu_seconds": cpu_s,
        "cpu_pct_mean": mean("cpu_pct"),
        "cpu_pct_peak": hi("cpu_pct"),
        "rss_peak": hi("rss"),
        "read_bytes": hi("read_bytes"),
        "write_bytes": hi("write_bytes"),
        "gpus": dict(sorted(gpus.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)),
        "gpu_hours": round(gpu_seconds / 3600.0, 6) if gpus else None,
    }
