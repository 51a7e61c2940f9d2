"""store/series.py: LTTB and a metric series cut to what a chart shows."""

from __future__ import annotations

import math
import random
import time

from onlooker.agent.metrics import Metric
from onlooker.store.catalog import Catalog
from onlooker.store.series import lttb, metric_points, series_keys


def test_lttb_keeps_the_ends_the_count_and_a_spike():
    xs = list(range(10_000))
    ys = [0.0] * 10_000
    ys[4321] = 9.0
    keep = lttb(xs, ys, 500)
    assert len(keep) == 500 and keep[0] == 0 and keep[-1] == 9_999
    assert keep == sorted(set(keep))
    assert 4321 in keep
    assert lttb(xs[:10], ys[:10], 500) == list(range(10))


def test_lttb_follows_the_shape():
    xs = [i / 100 for i in range(20_000)]
    ys = [math.sin(x) for x in xs]
    keep = lttb(xs, ys, 400)
    # a bucket spans half a radian; the point kept in a peak's bucket is near the peak
    assert max(ys[i] for i in keep) > 0.995 and min(ys[i] for i in keep) < -0.995


def _catalog(tmp_path, points):
    cat = Catalog.init(tmp_path)
    with cat.transaction():
        run = cat.begin_run(command=["python", "t.py"], cwd=str(tmp_path), exe="python",
                            pid=1, pid_start=1, user="u", hostname="h",
                            started_at=time.time(), tier="t")
        cat.set_metrics(run, "log", points)
        cat.set_metrics(run, "summary.json", [Metric("summary.json:acc", None, 0.9)])
    return cat, run


def test_a_short_series_is_whole_with_non_finite_values_as_none(tmp_path):
    cat, run = _catalog(tmp_path, [Metric("loss", 0.0, 1.0), Metric("loss", 1.0, math.nan),
                                   Metric("loss", 2.0, 0.5)])
    with cat:
        got = metric_points(cat, run, "loss")
        assert got == {"run": run, "key": "loss", "count": 3, "downsampled": False,
                       "step": [0.0, 1.0, 2.0], "value": [1.0, None, 0.5]}
        assert series_keys(cat, run) == ["loss"]  # the final value is no series


def test_a_long_series_is_downsampled_to_real_points(tmp_path):
    rng = random.Random(5)
    values = [rng.random() for _ in range(50_000)]
    values[12_345] = 40.0
    values[777] = math.inf
    cat, run = _catalog(tmp_path, [Metric("loss", float(i), v) for i, v in enumerate(values)])
    with cat:
        got = metric_points(cat, run, "loss", max_points=1000)
    assert got["count"] == 50_000 and got["downsampled"] is True
    assert len(got["step"]) == 1000 and got["step"] == sorted(got["step"])
    assert got["step"][0] == 0.0 and got["step"][-1] == 49_999.0
    for step, value in zip(got["step"], got["value"], strict=True):
        assert values[int(step)] == value  # each point drawn is a point of the series
    assert 12_345.0 in got["step"] and 777.0 not in got["step"]
