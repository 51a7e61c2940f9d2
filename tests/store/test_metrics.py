"""The metrics table: replacing a source's rows, the summary shape, series in order."""

from __future__ import annotations

import time

import pytest

from onlooker.agent.metrics import Metric
from onlooker.store.catalog import Catalog
from onlooker.store.errors import NoSuchRun


@pytest.fixture
def cat(tmp_path):
    with Catalog.init(tmp_path) as catalog:
        yield catalog


def new_run(cat: Catalog) -> int:
    return cat.begin_run(command=["python", "train.py"], cwd=str(cat.project), exe=None,
                         pid=4242, pid_start=99, user="ana", hostname="box",
                         started_at=time.time(), tier="netlink")


def test_finals_and_series_summaries(cat):
    run = new_run(cat)
    cat.set_metrics(run, "summary.json", [Metric("summary.json:test.f1", None, 0.91),
                                          Metric("summary.json:bad", None, None, "nan")])
    cat.set_metrics(run, "train.log", [
        Metric("loss", 1.0, 0.9), Metric("loss", 2.0, 0.3), Metric("loss", 3.0, 0.4),
        Metric("loss", 4.0, None, "nan"), Metric("loss", None, 0.35),
        Metric("acc", 1.0, 0.5, None, 1700000000.0), Metric("acc", 1.0, 0.6),
    ])
    got = cat.metrics_of(run)
    assert got["summary.json:test.f1"] == 0.91
    assert got["summary.json:bad"] == "nan"
    assert got["loss"] == {"last": "nan", "last_step": 4.0, "min": 0.3, "min_step": 2.0,
                           "max": 0.9, "max_step": 1.0, "count": 4, "final": 0.35}
    # Two points at one step: the one written later is the last.
    assert got["acc"]["last"] == 0.6 and got["acc"]["count"] == 2
    assert list(got) == sorted(got)
    assert cat.run(run)["metrics"] == got
    assert cat.runs()[0]["metrics"] == got


def test_a_rewritten_file_replaces_only_its_own_rows(cat):
    run = new_run(cat)
    cat.set_metrics(run, "a.csv", [Metric("a.csv:x", 0.0, 1.0), Metric("a.csv:x", 1.0, 2.0)])
    cat.set_metrics(run, "b.json", [Metric("b.json:y", None, 5.0)])
    cat.set_metrics(run, "a.csv", [Metric("a.csv:x", 0.0, 1.0)])
    got = cat.metrics_of(run)
    assert got["a.csv:x"]["count"] == 1 and got["b.json:y"] == 5.0
    cat.set_metrics(run, "a.csv", [])
    assert set(cat.metrics_of(run)) == {"b.json:y"}


def test_series_and_many_runs(cat):
    runs = [new_run(cat) for _ in range(3)]
    for i, run in enumerate(runs[:2]):
        cat.set_metrics(run, "m.csv", [Metric("m.csv:loss", float(s), 1.0 / (s + 1 + i),
                                              None, 1700000000.0 + s) for s in (2, 0, 1)])
    series = cat.metric_series(runs[0])
    assert [p["step"] for p in series["m.csv:loss"]] == [0.0, 1.0, 2.0]
    assert series["m.csv:loss"][0] == {"step": 0.0, "value": 1.0, "wall": 1700000000.0,
                                       "source": "m.csv"}
    assert cat.metric_series(runs[0], "nope") == {}
    many = cat.metrics_for(runs)
    assert set(many) == set(runs[:2])
    assert many[runs[1]]["m.csv:loss"]["min"] == pytest.approx(1 / 4)
    assert cat.metrics_of(runs[2]) == {}


def test_nonfinite_numbers_are_stored_as_text(cat):
    run = new_run(cat)
    cat.set_metrics(run, "x", [("k", None, float("inf"), None)])
    assert cat.metrics_of(run) == {"k": "inf"}


def test_unknown_run(cat):
    with pytest.raises(NoSuchRun):
        cat.set_metrics(999, "x", [Metric("k", None, 1.0)])
