"""End to end: the agent restarted (after a SIGKILL) finds runs the catalog still has
open whose processes are gone. One whose end the agent had seen and recorded before it
died (its root's exit code), only not closed yet, is closed as it ended; one whose end
nobody saw is `lost`, with no end time: the catalog never invents one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from onlooker.store.catalog import Catalog

from .test_pipeline import cli, show_json, wait_for

pytestmark = pytest.mark.e2e


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _open_run(cat: Catalog, project, argv: list[str], end: dict | None) -> int:
    pid, now = _dead_pid(), time.time()
    run = cat.begin_run(command=argv, cwd=str(project), exe=sys.executable, pid=pid,
                        pid_start=1, user="u", hostname="h", started_at=now - 5, tier="test")
    step = cat.add_step(run, pid=pid, ppid=1, parent_step_id=None, argv=argv,
                        cwd=str(project), exe=sys.executable, started_at=now - 5)
    if end is not None:
        cat.update_step(step, ended_at=now - 1, **end)
    return run


def test_a_run_whose_end_was_recorded_is_closed_as_it_ended(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    cli(project, "init")
    cat = Catalog.init(project)
    with cat.transaction():
        seen = _open_run(cat, project, ["python", "a.py"],
                         {"status": "failed", "exit_code": 3})
        unseen = _open_run(cat, project, ["python", "b.py"], None)
    cat.close()
    cli(project, "start")
    try:
        wait_for(lambda: show_json(project, unseen)["status"] != "running", 30)
    finally:
        cli(project, "stop")
    ended = show_json(project, seen)
    assert (ended["status"], ended["exit_code"]) == ("failed", 3)
    assert ended["ended_at"] is not None
    lost = show_json(project, unseen)
    assert lost["status"] == "lost" and lost["ended_at"] is None


def test_an_output_a_killed_agent_owed_a_closed_run_lands_on_it(tmp_path):
    # the agent closed the run, then died before its model's hash was recorded
    project = tmp_path / "proj"
    project.mkdir()
    cli(project, "init")
    cli(project, "start")
    cli(project, "stop")  # agent.json: when the agent was last alive
    cat = Catalog.init(project)
    now = time.time()
    with cat.transaction():
        run = _open_run(cat, project, ["python", "train.py", "--out", "out"], None)
        cat.update_run(run, status="completed", exit_code=0, ended_at=now - 1)
    cat.close()
    model = project / "out" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    os.utime(model, (now - 2, now - 2))  # inside the run's span
    cli(project, "start")
    try:
        wait_for(lambda: "out/model.pt" in {o["path"] for o in show_json(project, run)["outputs"]},
                 30)
    finally:
        cli(project, "stop")
    (out,) = show_json(project, run)["outputs"]
    assert out["basis"] == "rescan"
