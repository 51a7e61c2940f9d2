"""The run table: the one place where runs and their processes are added and removed."""

from __future__ import annotations

from onlooker.agent.assembly.model import Proc, Run
from onlooker.agent.assembly.table import GONE_KEEP, RECENT, RunTable

from .fakes import info


def _run(table: RunTable, db_id: int, pid: int, t: float = 0.0) -> Run:
    i = info(pid, ["python", "train.py"], cwd="/p", started=t)
    run = Run(db_id=db_id, root_pid=pid, root_start=i.start_ticks, info=i, started=t)
    table.open(run)
    table.join(run, i, None)
    return run


def test_a_closed_runs_processes_still_claim_late_events_until_their_pid_is_reused():
    table = RunTable()
    run = _run(table, 1, 100)
    table.join(run, info(101, ["python", "-c", "x"], ppid=100, cwd="/p", started=0.1), None)
    assert table.alive() == [run] and table.watched_pids() == {100, 101}
    run.ended_at = 1.0
    run.members.clear()
    table.close(run)
    assert run.closed and table.runs == [] and table.recent == [run]
    assert table.procs == {} and table.proc(101).run is run  # a backlog's late event
    table.reused(101)  # pid 101 is another process's now
    assert table.proc(101) is None and table.proc(100).run is run


def test_a_pid_joined_by_a_new_run_is_that_runs():
    table = RunTable()
    old = _run(table, 1, 100)
    old.ended_at = 1.0
    table.close(old)
    new = _run(table, 2, 100, t=2.0)
    assert table.proc(100).run is new
    assert list(table.procs_of(old)) == [] and [p.pid for p in table.procs_of(new)] == [100]


def test_processes_of_no_run_are_known_but_watch_nothing():
    table = RunTable()
    table.track(Proc(7, 1, ("bash",), None))
    assert table.proc(7).run is None and table.watched_pids() == set()
    table.forget(7)
    assert table.proc(7) is None


def test_recent_runs_and_gone_processes_expire():
    table = RunTable()
    run = _run(table, 1, 100)
    run.ended_at = 10.0
    table.close(run)
    table.expire_recent(10.0 + RECENT - 1)
    table.expire_gone(10.0 + GONE_KEEP - 1)
    assert table.recent == [run] and table.proc(100) is not None
    table.expire_recent(10.0 + RECENT + 1)
    table.expire_gone(10.0 + GONE_KEEP + 1)
    assert table.recent == [] and table.proc(100) is None
