"""`onlooker telemetry` and the telemetry section of `show`, on a real catalog."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from onlooker.store.catalog import Catalog


def filled(tmp_path: Path, invoke, *, gpu: bool = True) -> int:
    assert invoke("init", str(tmp_path)).exit_code == 0
    t0 = time.time() - 30
    with Catalog.init(tmp_path) as cat:
        run = cat.begin_run(command=["python", "train.py"], cwd=str(tmp_path), exe=None, pid=1,
                            pid_start=1, user="ana", hostname="box", started_at=t0, tier="poll")
        rows = []
        for i in range(20):
            data = {"cpu_pct": 150.0 + i, "cpu_s": 1.5 * i, "rss": (100 + i) * 2**20,
                    "read_bytes": 2**20 * i, "write_bytes": 0}
            if gpu:
                data.update({"gpu.0.procs": 1, "gpu.0.mem": 2 * 2**30, "gpu.0.util": 70.0,
                             "dev.0.util": 95.0})
            rows.append((run, t0 + i, data))
        cat.add_telemetry(rows)
        cat.update_run(run, status="completed", exit_code=0, ended_at=t0 + 20)
    return run


def test_show_has_a_telemetry_section(tmp_path: Path, invoke) -> None:
    run = filled(tmp_path, invoke)
    out = invoke("-C", str(tmp_path), "show", str(run))
    assert out.exit_code == 0, out.stderr
    text = out.stdout
    assert "telemetry" in text and "peak RSS 119.0 MiB" in text
    assert "gpu 0" in text and "peak 2.0 GiB, mean util 70%" in text and "whole device 95%" in text
    shown = json.loads(invoke("-C", str(tmp_path), "show", str(run), "--json").stdout)
    tele = shown["telemetry"]
    assert tele["samples"] == 20 and tele["gpus"]["0"]["mem_peak"] == 2 * 2**30


def test_telemetry_json_csv_and_plot(tmp_path: Path, invoke) -> None:
    run = filled(tmp_path, invoke)
    data = json.loads(invoke("-C", str(tmp_path), "telemetry", "last", "--json").stdout)
    assert data["run"] == run and len(data["series"]) == 20
    assert set(data["series"][0]) == {"t", "span", "n", "values", "min", "max"}
    assert data["summary"]["cpu_pct_peak"] == 169.0
    text = invoke("-C", str(tmp_path), "telemetry", str(run), "--csv").stdout
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 20 and float(table[3]["cpu_pct"]) == 153.0
    assert {"time", "rss.max", "gpu.0.mem"} <= set(table[0])
    plot = invoke("-C", str(tmp_path), "telemetry", str(run))
    assert plot.exit_code == 0, plot.stderr
    assert "CPU %" in plot.stdout and "RSS (MiB)" in plot.stdout and "GPU 0 memory" in plot.stdout
    assert "\x1b[" not in plot.stdout  # no colour codes when not a terminal


def test_cpu_only_run_and_errors(tmp_path: Path, invoke) -> None:
    run = filled(tmp_path, invoke, gpu=False)
    plot = invoke("-C", str(tmp_path), "telemetry", str(run))
    assert plot.exit_code == 0 and "GPU" not in plot.stdout
    assert invoke("-C", str(tmp_path), "telemetry", "9999").exit_code == 1
    both = invoke("-C", str(tmp_path), "telemetry", str(run), "--csv", "--json")
    assert both.exit_code == 2
