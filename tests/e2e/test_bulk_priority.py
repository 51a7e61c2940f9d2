"""End to end: the agent's bulk work runs in its own idle-priority process, said by status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from .test_pipeline import cli, need_root, runs_json, started, wait_for
from .test_robustness import settle

pytestmark = pytest.mark.e2e


def status_json(project) -> dict:
    return json.loads(cli(project, "status", "--json").stdout)


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_hashing_runs_at_idle_priority_and_status_shows_it(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "data").mkdir()
    for i in range(200):
        (project / "data" / f"in{i}.csv").write_text(f"a,b\n{i},{i * 2}\n")
    # Written before the start: a file the scan finds first is nobody's edit.
    (project / "train.py").write_text("import time\ntime.sleep(0.3)\n"
                                      "open('model.txt', 'w').write(open('data/in1.csv').read())\n")
    started(project, tier)
    try:
        wait_for(lambda: status_json(project)["bulk"].get("cpu") not in (None, "starting"),
                 timeout=60)
        st = status_json(project)
        bulk = st["bulk"]
        assert bulk["where"] == "bulk process" and bulk["cpu"] in ("idle", "nice 19")
        pid = bulk["pid"]
        agent = st["pid"]
        assert pid != agent and psutil.Process(pid).ppid() == agent
        for tid in os.listdir(f"/proc/{pid}/task"):  # every thread of it, read back
            if bulk["cpu"] == "idle":
                assert os.sched_getscheduler(int(tid)) == os.SCHED_IDLE
            if bulk["io"] == "idle":
                assert psutil.Process(int(tid)).ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
        for tid in os.listdir(f"/proc/{agent}/task"):  # the event path is not lowered
            assert os.sched_getscheduler(int(tid)) == os.SCHED_OTHER
        for key in ("queue", "hashing", "hash_bytes", "pending_events", "scanning"):
            assert key in st["backlog"]
        assert "hashing" in cli(project, "status").stdout

        subprocess.run([sys.executable, "train.py"], cwd=project, check=True)
        settle(project)
        runs = runs_json(project)
        # The bulk process's own reads are the agent's: no run of its own, no input.
        assert [r["command"][-1] for r in runs] == ["train.py"]
        show = json.loads(cli(project, "show", str(runs[0]["id"]), "--json").stdout)
        assert {e["path"] for e in show["outputs"]} == {"model.txt"}
        assert {e["path"] for e in show["inputs"]} == {"data/in1.csv"}
        # Nothing the bulk process read was taken for anyone's edit.
        assert status_json(project)["counts"]["versions_no_run"] == 0
    finally:
        cli(project, "stop", check=False)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the bulk process outlived the agent"
        time.sleep(0.05)
