"""Files changed while the agent was down, when a run the catalog had open is found
dead at restart (`lost`) beside one still alive (re-attached): the command lines decide
where they can. A run that ended just before the agent was killed is often lost only
because the agent had not closed it yet, and without this the next run's first
checkpoints were nobody's (1 run in 50 SIGKILLs, tests/reliability)."""

from __future__ import annotations

import pytest

from onlooker.agent.events import HashDone

from .test_assembler import T0, fh, info, make


@pytest.fixture
def project(tmp_path):
    p = tmp_path / "proj"
    p.mkdir()
    return p


def _reattached(asm, project, argv, started):
    row = {"id": 2, "pid": 20, "pid_start": int(started * 100), "root_step": None,
           "started_at": asm.clock.to_wall(started)}
    asm.catalog.runs[2] = {"status": "running"}
    asm.reattach(row, info(20, argv, cwd=str(project), started=started), [])


def _lost(asm, project, argv, started, run_id=1, ended=None):
    """A run the catalog had open whose process was gone at the agent's start (its
    end recorded at `ended`, or not known)."""
    asm.catalog.runs[run_id] = {"status": "lost"}
    asm.note_lost(asm.clock.to_wall(started),
                  {"id": run_id, "pid": 10 + run_id, "pid_start": 1, "command": argv,
                   "cwd": str(project), "root_step": None},
                  ended_at=None if ended is None else asm.clock.to_wall(ended))


def _changed_while_down(asm, project, rel):
    changed = int(asm.clock.to_wall(T0 - 2) * 1e9)
    asm.handle(HashDone(T0 + 1, f"{project}/{rel}", fh(rel, 0), size=1, mtime_ns=changed))


def test_the_reattached_run_naming_the_folder_gets_it_beside_a_lost_one(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "ckpt.py", "out/r46", "30"], T0 - 9)
    _reattached(asm, project, ["python", "ckpt.py", "out/r47", "30"], T0 - 5)
    _changed_while_down(asm, project, "out/r47/ckpt_3.pt")
    assert set(cat.io(2, "output")) == {"out/r47/ckpt_3.pt"}
    assert asm.runs[0].files[f"{project}/out/r47/ckpt_3.pt"].basis == "rescan"


def test_a_file_the_lost_run_names_too_stays_nobodys(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "ckpt.py", "--out=out"], T0 - 9)
    _reattached(asm, project, ["python", "ckpt.py", "out/r47"], T0 - 5)
    _changed_while_down(asm, project, "out/r47/ckpt_3.pt")
    assert cat.io(2, "output") == {}


def test_a_file_no_command_line_names_stays_nobodys_beside_a_lost_run(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "ckpt.py", "out/r46"], T0 - 9)
    _reattached(asm, project, ["python", "ckpt.py", "out/r47"], T0 - 5)
    _changed_while_down(asm, project, "notes/todo.md")
    assert cat.io(2, "output") == {}


def test_the_lost_run_naming_the_folder_gets_its_last_output(project):
    # r46 wrote its model just before it ended and the agent was killed, before the
    # agent had closed it: at restart it is lost, and its model is still its own
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "ckpt.py", "out/r46", "30"], T0 - 9)
    _reattached(asm, project, ["python", "ckpt.py", "out/r47", "30"], T0 - 1)
    _changed_while_down(asm, project, "out/r46/model.pt")
    assert set(cat.io(1, "output")) == {"out/r46/model.pt"}
    assert cat.io(2, "output") == {}


def test_two_lost_runs_naming_the_same_folder_leave_it_nobodys(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "ckpt.py", "out"], T0 - 9, run_id=1)
    _lost(asm, project, ["python", "ckpt.py", "out"], T0 - 8, run_id=3)
    _changed_while_down(asm, project, "out/model.pt")
    assert cat.io(1, "output") == {} and cat.io(3, "output") == {}


def test_a_file_changed_after_a_recorded_end_is_the_reattached_runs(project):
    # the run before ended (its exit recorded) before the file changed: by time alone
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "ckpt.py", "out"], T0 - 9, ended=T0 - 6)
    _reattached(asm, project, ["python", "ckpt.py"], T0 - 5)
    _changed_while_down(asm, project, "out/model.pt")
    assert set(cat.io(2, "output")) == {"out/model.pt"} and cat.io(1, "output") == {}


def test_a_run_closed_with_an_output_unhashed_gets_it_by_its_span(project):
    # closed just before the SIGKILL, its model's hash still owed: the only run whose
    # recorded span holds the change, and no run alive now
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "train.py"], T0 - 9, ended=T0 - 1.5)
    _changed_while_down(asm, project, "model.pt")  # at T0 - 2
    assert set(cat.io(1, "output")) == {"model.pt"}


def test_a_change_after_the_closed_runs_end_is_nobodys(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "train.py"], T0 - 9, ended=T0 - 4)
    _changed_while_down(asm, project, "model.pt")  # at T0 - 2
    assert cat.io(1, "output") == {}


def test_a_lost_run_naming_the_project_itself_names_nothing_in_it(project):
    # `python train.py .` names no file in particular (the rule of every run's argv)
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _lost(asm, project, ["python", "train.py", "."], T0 - 9)
    _changed_while_down(asm, project, "out/model.pt")
    assert cat.io(1, "output") == {}
