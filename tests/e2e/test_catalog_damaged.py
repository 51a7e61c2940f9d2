"""End to end: the catalog damaged on disk while the agent watches (a disk error, a
write from outside). The agent notices at its next write, says so once in one sentence
and exits non-zero (no loop of tracebacks, nothing for a supervisor to restart into);
every command says the same with the remedy; `onlooker doctor --fix` and `onlooker
start` bring the project back."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from onlooker.agent.lifecycle import FAILED_MARK

from .test_pipeline import cli, need_root, runs_json, show_json, started, wait_for
from .test_robustness import BOTH, agent_log, gone, status_json

pytestmark = pytest.mark.e2e

# longer than the poll tier's 100 ms promise, so both tiers see the run
SCRIPT = "import sys, time\ntime.sleep(0.3)\nopen(sys.argv[1], 'w').write(sys.argv[1])\n"


def _run(project, out: str) -> None:
    subprocess.run([sys.executable, "train.py", out], cwd=project, check=True, timeout=60)


def _damage(catalog) -> None:
    """Every page after the first overwritten, once the WAL is folded into the file
    (the agent's connection then reads the damaged pages at its next write)."""
    with sqlite3.connect(catalog) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(catalog)
    with open(catalog, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 4096))


@BOTH
def test_a_catalog_damaged_while_watched_stops_the_agent_once(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    started(project, tier)
    pid = status_json(project)["pid"]
    try:
        _run(project, "a.txt")
        # the poll tier may not learn an exit code: `ended`
        wait_for(lambda: [r["status"] for r in runs_json(project)] in (["completed"], ["ended"]),
                 30)
        _damage(project / ".onlooker" / "catalog.db")
        for i in range(3):  # runs the agent can no longer record
            _run(project, f"b{i}.txt")
        wait_for(lambda: gone(pid), timeout=30)
    finally:
        if not gone(pid):
            cli(project, "stop", check=False)
    log = agent_log(project)
    said = [ln for ln in log.splitlines() if "the agent stopped" in ln]
    assert len(said) == 1, said
    assert "not a usable onlooker catalog" in said[0] and "doctor --fix" in said[0]
    assert "Traceback" not in log and f"ERROR __main__: {FAILED_MARK}" not in log

    for args in (["status"], ["runs"], ["show", "1"]):
        res = cli(project, *args, check=False)
        assert res.returncode == 1, (args, res.stdout)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "doctor --fix" in lines[0], (args, res.stderr)
        assert "internal error" not in res.stderr and "Traceback" not in res.stderr

    cli(project, "doctor", "--fix")
    cli(project, "start")
    try:
        _run(project, "c.txt")

        def recorded():
            done = [r for r in runs_json(project) if r["status"] != "running"
                    and "c.txt" in " ".join(r["command"])]
            return done and "c.txt" in {f["path"] for f in
                                        show_json(project, done[0]["id"])["outputs"]}

        # the rebuilt catalog is one the agent writes to again
        try:
            wait_for(recorded, 30)
        except AssertionError:
            raise AssertionError(f"{runs_json(project)}\n{agent_log(project)[-3000:]}") from None
    finally:
        cli(project, "stop")
