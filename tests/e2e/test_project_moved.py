"""End to end: a project moved, or its .onlooker/ removed, while the agent watches it:
the agent says so once and stops (no loop of warnings), and `onlooker start` in the
new place watches it again with its catalog."""

from __future__ import annotations

import shutil

import pytest

from .test_pipeline import cli, need_root, started, wait_for
from .test_robustness import BOTH, gone, status_json

pytestmark = pytest.mark.e2e


@BOTH
def test_a_moved_project_stops_its_agent_with_one_sentence(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    project.mkdir()
    started(project, tier)
    pid = status_json(project)["pid"]
    moved = tmp_path / "renamed"
    project.rename(moved)
    try:
        wait_for(lambda: gone(pid), timeout=30)
    finally:
        if not gone(pid):
            cli(moved, "stop", check=False)
    log = (moved / ".onlooker" / "agent.log").read_text()
    said = [ln for ln in log.splitlines() if "the agent stops" in ln]
    assert len(said) == 1 and f"{project} was moved or deleted" in said[0], said
    assert "Traceback" not in log
    cli(moved, "start")  # its catalog comes with it
    try:
        assert status_json(moved)["running"]
    finally:
        cli(moved, "stop")


def test_a_removed_store_stops_its_agent(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    started(project, "unprivileged")
    pid = status_json(project)["pid"]
    shutil.rmtree(project / ".onlooker")
    wait_for(lambda: gone(pid), timeout=30)
