"""Telemetry in the catalog: raw samples, honest downsampling, series and summaries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.store.catalog import Catalog
from onlooker.store.telemetry import merge

T0 = 1_795_000_000.0


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def new_run(cat: Catalog, started_at: float = T0) -> int:
    return cat.begin_run(command=["python", "train.py"], cwd=str(cat.project), exe=None,
                         pid=1, pid_start=1, user="ana", hostname="box",
                         started_at=started_at, tier="netlink")


def raw_stats(rows: list[tuple[float, dict]]) -> dict[str, tuple[float, float, float]]:
    out: dict[str, list[float]] = {}
    for _, data in rows:
        for key, value in data.items():
            out.setdefault(key, []).append(value)
    return {k: (min(v), sum(v) / len(v), max(v)) for k, v in out.items()}


def series_stats(series: list[dict]) -> dict[str, tuple[float, float, float]]:
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    total: dict[str, float] = {}
    k: dict[str, int] = {}
    for p in series:
        for key, value in p["values"].items():
            lo[key] = min(lo.get(key, math.inf), p["min"][key])
            hi[key] = max(hi.get(key, -math.inf), p["max"][key])
            # a bucket's mean covers n samples (every metric here is in every sample)
            total[key] = total.get(key, 0.0) + value * p["n"]
            k[key] = k.get(key, 0) + p["n"]
    return {key: (lo[key], total[key] / k[key], hi[key]) for key in lo}


def test_round_trip_and_summary(cat) -> None:
    run = new_run(cat)
    gib = 2**30
    rows = [(run, T0 + i, {"cpu_pct": 50.0 + 50 * (i == 2), "cpu_s": 0.5 * i, "rss": gib + i,
                           "read_bytes": 100 * i, "write_bytes": 10 * i,
                           "gpu.1.procs": 1, "gpu.1.mem": (i + 1) * gib, "gpu.1.util": 40.0,
                           "dev.1.util": 90.0})
            for i in range(4)]
    assert cat.add_telemetry(rows) == 4
    series = cat.telemetry(run)
    assert [p["t"] for p in series] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert series[2]["values"]["cpu_pct"] == 100.0 == series[2]["max"]["cpu_pct"]
    s = cat.telemetry_summary(run)
    assert s == {"samples": 4, "duration": 3.0, "cpu_seconds": 1.5, "cpu_pct_mean": 62.5,
                 "cpu_pct_peak": 100.0, "rss_peak": gib + 3, "read_bytes": 300,
                 "write_bytes": 30,
                 "gpus": {"1": {"mem_peak": 4 * gib, "util_mean": 40.0,
                                "device_util_mean": 90.0}},
                 "gpu_hours": round(3 / 3600, 6)}
    assert cat.run(run)["telemetry"] == s
    assert cat.runs()[0]["telemetry"] == s
    other = new_run(cat)
    assert cat.telemetry_summary(other) is None
    assert set(cat.telemetry_summaries([run, other])) == {run}


def test_week_long_run_stays_small_and_keeps_its_spike(cat) -> None:
    run = new_run(cat)
    week = 7 * 24 * 3600
    step = 5  # every 5 s: enough to exercise every tier, quick to write
    rows = [(run, T0 + i, {"cpu_pct": 10.0, "rss": 1000}) for i in range(0, week, step)]
    rows[len(rows) // 3] = (rows[len(rows) // 3][0], rows[len(rows) // 3][1],
                            {"cpu_pct": 999.0, "rss": 1000})
    cat.add_telemetry(rows)
    now = T0 + week
    cat.compact_telemetry(now)
    series = cat.telemetry(run)
    assert len(series) < 2000, len(series)
    assert max(p["max"]["cpu_pct"] for p in series) == 999.0
    assert sum(p["n"] for p in series) == len(rows)
    # idempotent: compacting again at the same time changes nothing
    assert cat.compact_telemetry(now) == 0
    assert cat.telemetry(run) == series
    # recent samples stay at full resolution
    recent = [p for p in series if p["t"] >= now - 600]
    assert recent and all(p["span"] == 0 for p in recent)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.tuples(st.floats(0, 5000, allow_nan=False),
                                 st.integers(0, 2**40)), min_size=1, max_size=80),
       gap=st.floats(0.2, 400), ages=st.lists(st.floats(0, 3 * 86400), min_size=1, max_size=3))
def test_downsampling_keeps_min_max_mean_honest(tmp_path_factory, values, gap, ages) -> None:
    with Catalog.init(tmp_path_factory.mktemp("c")) as cat:
        run = new_run(cat)
        rows = [(T0 + i * gap, {"cpu_pct": v, "rss": m}) for i, (v, m) in enumerate(values)]
        cat.add_telemetry([(run, t, d) for t, d in rows])
        end = rows[-1][0]
        for age in sorted(ages):  # compact repeatedly as time passes
            cat.compact_telemetry(end + age)
        got = series_stats(cat.telemetry(run))
        want = raw_stats(rows)
        assert set(got) == set(want)
        for key in want:
            assert got[key][0] == want[key][0] and got[key][2] == want[key][2]
            assert got[key][1] == pytest.approx(want[key][1], rel=1e-6, abs=1e-6)
        assert sum(p["n"] for p in cat.telemetry(run)) == len(rows)
        summary = cat.telemetry_summary(run)
        assert summary["cpu_pct_peak"] == want["cpu_pct"][2]
        assert summary["rss_peak"] == want["rss"][2]


def test_merge_counts_missing_metrics_honestly() -> None:
    got = merge([{"a": 1, "gpu.0.util": 10.0}, {"a": 3}, {"a": [0, 2.0, 5, 2]}])
    assert got["a"] == [0, 2.0, 5, 4]
    assert got["gpu.0.util"] == [10.0, 10.0, 10.0, 1]


def test_bad_tiers(cat) -> None:
    with pytest.raises(ValueError):
        cat.compact_telemetry(T0, bucket_seconds=((3600, 10), (7200, 25)))
