"""Another user's process in the project starts no run: the catalog is the project
owner's to read (0700), and a run would put that user's command line and environment
in it. Their processes are still known (as outsiders), and said once in the log."""

from __future__ import annotations

import dataclasses

import pytest

from onlooker.agent import config
from onlooker.agent.assembly.assembler import Assembler, Probes
from onlooker.agent.events import ProcExec

from .fakes import FakeCatalog, FakeClock, FakeHasher, FakeIgnore, info

T0 = 1000.0
OWNER, OTHER = 1000, 1001


@pytest.fixture
def project(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    return tmp_path


def _asm(project, run_uids):
    cat = FakeCatalog()
    asm = Assembler(config.load(project), cat, FakeHasher(), FakeIgnore(project),
                    probes=Probes(), tier="test", agent_started=T0 - 100,
                    clock=FakeClock(T0), run_uids=run_uids)
    return asm, cat


def _exec(asm, project, pid, uid, ppid=1):
    proc = dataclasses.replace(info(pid, ["python", "train.py"], ppid=ppid, cwd=str(project),
                                    started=T0), uid=uid)
    asm.handle(ProcExec(T0, proc))


def test_only_the_owners_processes_start_runs(project, caplog):
    asm, cat = _asm(project, {OWNER, 0})
    caplog.set_level("INFO")
    _exec(asm, project, 10, OTHER)
    _exec(asm, project, 11, OTHER)
    assert cat.runs == {}
    said = [r for r in caplog.records if "are not recorded" in r.getMessage()]
    assert len(said) == 1  # once per user, not per process
    _exec(asm, project, 12, OWNER)
    assert len(cat.runs) == 1


def test_another_users_child_of_an_owners_run_is_part_of_it(project):
    # `sudo` or a setuid helper inside the owner's run: still the owner's run
    asm, cat = _asm(project, {OWNER})
    _exec(asm, project, 10, OWNER)
    _exec(asm, project, 11, OTHER, ppid=10)
    (run,) = asm.runs
    assert 11 in run.members


def test_without_a_restriction_anyones_process_starts_a_run(project):
    asm, cat = _asm(project, None)
    _exec(asm, project, 10, OTHER)
    assert len(cat.runs) == 1
