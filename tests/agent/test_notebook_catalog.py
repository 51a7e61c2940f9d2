"""A kernel run as the catalog keeps it and the commands show it: cells as steps in the
JSON contract, the run's notebook and name, `runs`, `show`, `diff` of two kernel runs,
and a catalog of the schema before cells, read as it is."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlooker.cli.main import cli
from onlooker.store import schema
from onlooker.store.catalog import Catalog

T0 = 1_795_000_000.0
KERNEL = ["python", "-m", "ipykernel_launcher", "-f", "/run/user/1/kernel-k.json"]


def kernel_run(cat: Catalog, root: Path, sources: list[str], *, t: float = T0) -> int:
    run = cat.begin_run(command=KERNEL, cwd=str(root), exe=None, pid=7, pid_start=1,
                        user="me", hostname="box", started_at=t, tier="netlink+fanotify")
    cat.update_run(run, notebook="notebooks/explore.ipynb", notebook_via="kernel")
    top = cat.add_step(run, pid=7, ppid=1, parent_step_id=None, argv=KERNEL, cwd=str(root),
                       exe=None, started_at=t)
    data = cat.add_version("data/train.csv", hash="blake3:" + "1" * 64, size=10, mtime_ns=1,
                           kind="dataset", stored=True, created_at=t)
    for i, src in enumerate(sources, 1):
        sid = cat.add_step(run, pid=7, ppid=1, parent_step_id=top, argv=[], cwd=str(root),
                           exe=None, started_at=t + i)
        cat.update_step(sid, cell=i, source=src, ended_at=t + i + 0.25, status="completed")
        if i == 1:
            cat.link(run, data, "input", sid, basis="window")
    cat.update_step(top, status="completed", ended_at=t + 10)
    cat.update_run(run, status="completed", exit_code=0, ended_at=t + 10)
    return run


@pytest.fixture
def project(tmp_path):
    with Catalog.init(tmp_path) as cat:
        kernel_run(cat, tmp_path, ["import csv\nrows = list(csv.reader(open('d.csv')))",
                                   "alpha = 0.5"])
        kernel_run(cat, tmp_path, ["import csv\nrows = list(csv.reader(open('d.csv')))",
                                   "alpha = 0.7", "print(alpha)"], t=T0 + 100)
        cat.begin_run(command=["python", "train.py"], cwd=str(tmp_path), exe=None, pid=9,
                      pid_start=1, user="me", hostname="box", started_at=T0 + 200,
                      tier="netlink+fanotify")
    return tmp_path


def run_cli(project: Path, *args: str):
    return CliRunner().invoke(cli, ["-C", str(project), *args])


def test_cells_and_the_notebook_are_in_the_json_contract(project):
    with Catalog(project / ".onlooker", readonly=True) as cat:
        run = cat.run(1)
        other = cat.run(3)
        listed = {r["id"]: r for r in cat.runs()}
        queried = {r["id"]: r for r in cat.query(["status = completed"])}
    assert run["notebook"] == {"path": "notebooks/explore.ipynb", "found_by": "kernel"}
    assert run["name"] == "notebooks/explore.ipynb (kernel)"
    assert other["notebook"] is None and other["name"] is None
    cells = [s for s in run["steps"] if s["cell"] is not None]
    assert [(c["cell"], c["source"], c["argv"]) for c in cells] == [
        (1, "import csv\nrows = list(csv.reader(open('d.csv')))", []), (2, "alpha = 0.5", [])]
    assert cells[0]["inputs"] == ["data/train.csv"] and cells[1]["inputs"] == []
    assert [s["cell"] for s in run["steps"] if s["argv"]] == [None]  # the kernel process
    # every way of listing runs says the same
    assert listed[1]["name"] == queried[1]["name"] == run["name"]
    assert listed[3]["notebook"] is None


def test_runs_names_a_kernel_run_by_its_notebook_and_show_lists_its_cells(project):
    listed = run_cli(project, "runs")
    assert listed.exit_code == 0, listed.stderr
    assert "notebooks/explore.ipynb (kernel)" in listed.stdout
    assert "python train.py" in listed.stdout
    shown = run_cli(project, "show", "1")
    assert shown.exit_code == 0, shown.stderr
    text = shown.stdout
    assert "notebooks/explore.ipynb (kernel; found by kernel)" in text
    cells = text[text.index("\ncells\n"):]
    lines = [ln.split() for ln in cells.strip().splitlines()[2:]]
    assert lines[0][:4] == ["[1]", "completed", "0.25s", "import"]
    assert lines[0][-1] == "<data/train.csv"
    assert lines[1][:5] == ["[2]", "completed", "0.25s", "alpha", "="]
    steps = text[text.index("\nsteps\n"):text.index("\ncells\n")]
    assert "ipykernel_launcher" in steps and "[1]" not in steps  # cells only once
    assert "\ncells\n" not in run_cli(project, "show", "3").stdout


def test_diff_of_two_kernel_runs_compares_their_cells(project):
    with Catalog(project / ".onlooker", readonly=True) as cat:
        got = cat.diff(1, 2)["sections"]["cells"]
        same = cat.diff(1, 2, all=True)["sections"]["cells"]
        none = cat.diff(3, 3, all=True)["sections"]
    assert [(e["key"], e["change"], e["old"], e["new"]) for e in got] == [
        ("cell 2", "changed", "alpha = 0.5", "alpha = 0.7"),
        ("cell 3", "added", None, "print(alpha)")]
    assert got[0]["old_source"] == "alpha = 0.5" and "+alpha = 0.7" in got[0]["diff"]
    assert same[0]["key"] == "cell 1" and same[0]["change"] == "same"
    assert "cells" not in none  # no kernel run: no such section
    text = run_cli(project, "diff", "1", "2")
    assert text.exit_code == 0, text.stderr
    assert "cells" in text.stdout and "alpha = 0.5 -> alpha = 0.7" in text.stdout
    as_json = json.loads(run_cli(project, "diff", "1", "2", "--json").stdout)
    assert as_json["sections"]["cells"] == got


def test_a_catalog_from_before_cells_reads_as_it_is_and_migrates(tmp_path):
    with Catalog.init(tmp_path) as cat:
        run = cat.begin_run(command=["python", "x.py"], cwd=str(tmp_path), exe=None, pid=1,
                            pid_start=1, user="me", hostname="box", started_at=T0,
                            tier="poll+inotify")
        cat.add_step(run, pid=1, ppid=0, parent_step_id=None, argv=["python", "x.py"],
                     cwd=str(tmp_path), exe=None, started_at=T0)
    db = tmp_path / ".onlooker" / "catalog.db"
    conn = sqlite3.connect(db)
    for table, column in (("steps", "cell"), ("steps", "source"), ("runs", "notebook"),
                          ("runs", "notebook_via")):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute(f"PRAGMA user_version = {schema.NOTEBOOK_SINCE - 1}")
    conn.commit()
    conn.close()
    with Catalog(tmp_path / ".onlooker", readonly=True) as old:
        r = old.run(run)
        assert r["notebook"] is None and r["steps"][0]["cell"] is None
        assert old.runs()[0]["name"] is None
    with Catalog(tmp_path / ".onlooker") as cat:  # a writer migrates
        assert cat.schema_version == schema.LATEST
        assert cat.run(run)["steps"][0]["source"] is None
