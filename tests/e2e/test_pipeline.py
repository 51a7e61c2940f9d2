"""End to end: the real agent on a temp git project running an unchanged pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .pipeline import EXPECTED, STAGES, run_stage, write_project

pytestmark = pytest.mark.e2e

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main"]
TIERS = {
    "privileged": "",
    "unprivileged": '[capture]\nprocess = "poll"\nfiles = "inotify"\n',
}


def cli(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([*ONLOOKER, "-C", str(project), *args], capture_output=True,
                         text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"onlooker {' '.join(args)} failed: {res.stderr}\n{res.stdout}")
    return res


def started(project: Path, tier: str) -> None:
    cli(project, "init")
    if TIERS[tier]:
        (project / ".onlooker" / "config.toml").write_text(TIERS[tier])
    cli(project, "start")


def runs_json(project: Path) -> list[dict]:
    return json.loads(cli(project, "runs", "--json").stdout)


def show_json(project: Path, run_id: int) -> dict:
    return json.loads(cli(project, "show", str(run_id), "--json").stdout)


def paths(entries: list[dict]) -> set[str]:
    return {e["path"] for e in entries}


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def need_root(tier: str) -> None:
    if tier == "privileged" and os.geteuid() != 0:
        pytest.skip("the privileged tiers need root")


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_four_stage_pipeline_is_captured_exactly(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project)
    started(project, tier)
    try:
        status = json.loads(cli(project, "status", "--json").stdout)
        want = {"privileged": ("netlink", "fanotify"), "unprivileged": ("poll", "inotify")}[tier]
        assert (status["tiers"]["process"]["name"], status["tiers"]["files"]["name"]) == want
        for _, args in STAGES:
            run_stage(project, args)
    finally:
        cli(project, "stop")
    runs = runs_json(project)
    by_stage = {}
    for r in runs:
        stage = Path(r["command"][1]).stem
        assert stage not in by_stage, f"two runs for {stage}: {runs}"
        by_stage[stage] = r
    assert set(by_stage) == {s for s, _ in STAGES}
    for stage, want in EXPECTED.items():
        run = show_json(project, by_stage[stage]["id"])
        if tier == "privileged":
            assert run["status"] == "completed" and run["exit_code"] == 0, run
        else:  # polling sees each end, and the exit code only when it catches a zombie
            assert (run["status"], run["exit_code"]) in (("completed", 0), ("ended", None)), run
        assert paths(run["inputs"]) == want["inputs"], (stage, run["inputs"])
        assert paths(run["outputs"]) == want["outputs"], (stage, run["outputs"])
        assert paths(run["code"]) == want["code"], (stage, run["code"])
        for entry in run["inputs"] + run["outputs"] + run["code"]:
            assert entry["hash"].startswith("blake3:") and entry["size"] > 0
        assert run["git"]["commit"] and run["git"]["dirty"] is False
        assert run["env"]["python"]["version"].startswith(f"{sys.version_info[0]}.")
        assert run["steps"][0]["argv"] == run["command"]
    train = show_json(project, by_stage["train"]["id"])
    assert train["params"]["n-est"] == 50
    # the script's argparse names its positionals (`features`, `model`)
    assert train["params"]["features"] == "data/features"
    assert not any(k.startswith("argv[") for k in train["params"]), train["params"]
    assert train["params"]["params.yaml:train.seed"] == 20170428
    assert train["params"]["params.yaml:prepare.split"] == 0.25
    assert {e["kind"] for e in train["outputs"]} == {"model"}
    assert "params.yaml:train.seed" not in show_json(project, by_stage["evaluate"]["id"])["params"]
    # lineage by hash: what prepare wrote is what featurize read
    prep = {e["path"]: e["hash"] for e in show_json(project, by_stage["prepare"]["id"])["outputs"]}
    feat = {e["path"]: e["hash"] for e in show_json(project, by_stage["featurize"]["id"])["inputs"]}
    assert prep["data/prepared/train.csv"] == feat["data/prepared/train.csv"]


CONCURRENT = '''
import sys, time
with open("params.yaml") as f:
    f.read()
with open(sys.argv[1], "w") as out:
    for i in range(10):
        out.write("x" * 100)
        out.flush()
        time.sleep(0.05)
'''


def test_two_runs_at_once_land_on_the_right_runs(tmp_path):
    need_root("privileged")
    project = tmp_path / "proj"
    write_project(project, git=False)
    (project / "src" / "slow.py").write_text(CONCURRENT)
    started(project, "privileged")
    try:
        procs = [subprocess.Popen([sys.executable, "src/slow.py", f"out{i}.txt"], cwd=project)
                 for i in (1, 2)]
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    finally:
        cli(project, "stop")
    runs = runs_json(project)
    assert len(runs) == 2
    for r in runs:
        full = show_json(project, r["id"])
        assert paths(full["outputs"]) == {r["command"][2]}
        assert paths(full["inputs"]) == {"params.yaml"}


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_failed_run_and_a_change_no_run_made(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project, git=False)
    (project / "src" / "fail.py").write_text("import sys, time\ntime.sleep(0.15)\n"
                                             "open('partial.txt','w').write('x')\n"
                                             "sys.exit(3)\n")
    started(project, tier)
    try:
        res = subprocess.run([sys.executable, "src/fail.py"], cwd=project)
        assert res.returncode == 3
        # A person edits data a moment later, once the agent has closed the run.
        wait_for(lambda: [r["status"] for r in runs_json(project)] not in ([], ["running"]))
        with open(project / "data" / "by-hand.csv", "w") as f:  # a person, not a run
            f.write("a,b\n")
    finally:
        cli(project, "stop")
    (run,) = runs_json(project)
    if tier == "privileged":
        assert run["status"] == "failed" and run["exit_code"] == 3
    else:  # polling sees the end but not always the exit code
        assert run["status"] in ("failed", "ended")
        assert run["exit_code"] in (3, None)
    assert paths(run["outputs"]) == {"partial.txt"}
    assert paths(run["inputs"]) == set()
