"""`onlooker rm`, `gc`, `du` against a real catalog: confirmation, --yes, JSON, errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlooker.cli.commands import manage as manage_cli
from onlooker.cli.main import cli
from onlooker.store.catalog import Catalog

T0 = time.time() - 10 * 86400


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def one_sentence(res, code: int, *words: str) -> None:
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert isinstance(res.exception, SystemExit), res.exception  # no traceback
    assert "Traceback" not in res.stderr, res.stderr
    # the sentence is the last line (click puts its usage lines, rm its question, first)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(("onlooker: ", "Error: ")), res.stderr
    for word in words:
        assert word in last, last


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two ended runs ten days old; run 1 alone wrote model.pkl's first content."""
    with Catalog.init(tmp_path) as cat:
        for i, data in enumerate((b"model one" * 50, b"model two" * 50)):
            run_id = cat.begin_run(command=["python", "train.py"], cwd=str(tmp_path),
                                   exe=None, pid=100 + i, pid_start=1, user="me",
                                   hostname="box", started_at=T0 + i, tier="netlink")
            cat.update_run(run_id, status="completed", exit_code=0, ended_at=T0 + i + 1)
            h = cat.objects.put_bytes(data)
            vid = cat.add_version("model.pkl", hash=h, size=len(data), mtime_ns=0,
                                  kind="model", stored=True, created_at=T0 + i)
            cat.link(run_id, vid, "output")
    then = time.time() - 7200
    for folder, _, names in os.walk(tmp_path / ".onlooker" / "objects"):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then))
    return tmp_path


def run_ids(project: Path) -> list[int]:
    with Catalog.find(project) as cat:
        return sorted(r["id"] for r in cat.runs())


def test_rm_without_a_terminal_needs_yes(project):
    res = invoke("-C", str(project), "rm", "1")
    one_sentence(res, 2, "--yes")
    assert run_ids(project) == [1, 2]
    res = invoke("-C", str(project), "rm", "1", "--yes", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["removed"] == [1]
    assert run_ids(project) == [2]


def test_rm_asks_on_a_terminal(project, monkeypatch):
    monkeypatch.setattr(manage_cli, "_interactive", lambda: True)
    res = invoke("-C", str(project), "rm", "last", input="n\n")
    one_sentence(res, 1, "nothing removed")
    assert run_ids(project) == [1, 2]
    res = invoke("-C", str(project), "rm", "-1", input="y\n")
    assert res.exit_code == 0 and "Remove run 2" in res.stderr, res.stderr
    assert run_ids(project) == [1]


def test_rm_errors_are_one_sentence(project):
    one_sentence(invoke("-C", str(project), "rm", "99", "--yes"), 1, "no run 99")
    one_sentence(invoke("-C", str(project), "rm", "nonsense", "--yes"), 2, "not a run")
    assert invoke("-C", str(project), "rm").exit_code == 2
    with Catalog.init(project) as cat:
        running = cat.begin_run(command=["python"], cwd=str(project), exe=None, pid=1,
                                pid_start=1, user=None, hostname="box", started_at=T0,
                                tier="netlink")
    one_sentence(invoke("-C", str(project), "rm", str(running), "--yes"), 1, "still running")
    assert run_ids(project) == [1, 2, running]


def test_gc_dry_run_then_gc_and_du(project):
    assert invoke("-C", str(project), "rm", "1", "--yes").exit_code == 0
    before = json.loads(invoke("-C", str(project), "du", "--json").stdout)
    assert before["total"]["unreferenced"]["objects"] == 1
    dry = invoke("-C", str(project), "gc", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and planned["freed"]["objects"] == 1
    assert json.loads(invoke("-C", str(project), "du", "--json").stdout) == before
    res = invoke("-C", str(project), "gc")
    assert res.exit_code == 0 and "freed 1 objects" in res.stdout, res.stdout
    after = json.loads(invoke("-C", str(project), "du", "--json").stdout)
    assert after["total"]["objects"] == before["total"]["objects"] - 1
    assert [r["id"] for r in after["runs"]] == [2]
    table = invoke("-C", str(project), "du", "-1")
    assert table.exit_code == 0 and "FREES" in table.stdout and "store:" in table.stdout
    assert table.stdout.splitlines()[1].split()[0] == "2"


def test_gc_older_than_and_its_errors(project):
    with Catalog.init(project) as cat:
        cat.tag(1, "keep")
    res = invoke("-C", str(project), "gc", "--older-than", "1d", "--keep-tagged", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["removed_runs"] == [2]
    assert run_ids(project) == [1]
    one_sentence(invoke("-C", str(project), "gc", "--older-than", "soon"), 2, "duration")
    one_sentence(invoke("-C", str(project), "gc", "--keep-tagged"), 2, "--older-than")
    one_sentence(invoke("-C", str(project), "du", "7"), 1, "no run 7")
    one_sentence(invoke("-C", str(project / "nowhere"), "gc"), 1)
