"""The CLI against the real catalog (skipped until onlooker.store.catalog exists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onlooker.store.catalog")


def test_init_runs_show_status_on_a_real_empty_catalog(tmp_path: Path, invoke) -> None:
    assert invoke("init", str(tmp_path)).exit_code == 0
    again = invoke("init", str(tmp_path))
    assert again.exit_code == 0 and "already instrumented" in again.stdout
    assert (tmp_path / ".onlooker" / ".gitignore").exists()

    runs = invoke("-C", str(tmp_path), "runs")
    assert runs.exit_code == 0 and "no runs yet" in runs.stderr, runs.stderr
    assert json.loads(invoke("-C", str(tmp_path), "runs", "--json").stdout) == []

    missing = invoke("-C", str(tmp_path), "show", "12345")
    assert missing.exit_code == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr

    status = invoke("-C", str(tmp_path), "status", "--json")
    assert status.exit_code == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["running"] is False and isinstance(data["catalog"], dict)


def test_runs_and_show_on_a_real_filled_catalog(tmp_path: Path, invoke) -> None:
    from onlooker.store.catalog import Catalog

    assert invoke("init", str(tmp_path)).exit_code == 0
    with Catalog.init(tmp_path) as cat:
        ids = []
        for i, argv in enumerate((["python", "src/prepare.py", "data/data.csv"],
                                  ["python", "src/train.py", "--n-est", "50"])):
            run_id = cat.begin_run(command=argv, cwd=str(tmp_path), exe="/usr/bin/python3",
                                   pid=100 + i, pid_start=1, user="me", hostname="box",
                                   started_at=1_700_000_000.0 + 60 * i, tier="netlink+inotify")
            ids.append(run_id)
            step = cat.add_step(run_id, pid=100 + i, ppid=1, parent_step_id=None, argv=argv,
                                cwd=str(tmp_path), exe=None, started_at=1_700_000_000.0 + 60 * i)
            cat.update_step(step, status="completed", exit_code=0,
                            ended_at=1_700_000_010.0 + 60 * i)
        cat.update_run(ids[0], status="completed", exit_code=0, ended_at=1_700_000_005.0)
        cat.update_run(ids[1], status="failed", exit_code=2, ended_at=1_700_000_090.0)
        version = cat.add_version(str(tmp_path / "model.pkl"), hash="blake3:" + "ab" * 32,
                                  size=2048, mtime_ns=1, kind="model", stored=True,
                                  created_at=1_700_000_080.0)
        cat.link(ids[1], version, "output")
        cat.set_params(ids[1], {"n_est": (50, "argv")})

    table = invoke("-C", str(tmp_path), "runs")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [str(ids[1]), str(ids[0])]
    assert "failed (2)" in lines[1]

    data = json.loads(invoke("-C", str(tmp_path), "runs", "--json").stdout)
    assert data[0]["outputs"][0]["path"] == "model.pkl"
    assert {"id", "command", "status", "exit_code", "inputs", "outputs", "params"} <= set(data[0])

    shown = invoke("-C", str(tmp_path), "show", "last")
    assert shown.exit_code == 0, shown.stderr
    assert "python src/train.py --n-est 50" in shown.stdout
    assert "model.pkl  model  2.0 KiB  " + "ab" * 6 in shown.stdout
    full = json.loads(invoke("-C", str(tmp_path), "show", str(ids[1]), "--json").stdout)
    assert full["params"] == {"n_est": 50} and len(full["steps"]) == 1
    stopped = invoke("-C", str(tmp_path), "status", "--json")
    assert json.loads(stopped.stdout)["catalog"]["runs"] == 2
