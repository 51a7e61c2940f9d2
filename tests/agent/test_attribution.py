"""The pid-less attribution rules, each alone (agent/assembly/attribution.py)."""

from __future__ import annotations

from onlooker.agent.assembly import attribution
from onlooker.agent.assembly.attribution import (
    Evidence,
    held_open,
    named_in_argv,
    sequential_pipeline,
    stream_marker,
)
from onlooker.agent.assembly.model import Proc, Run

from .fakes import info

T = 100.0


def run(db_id, started, *, ended_at=None, ended_after=None, marker=0, argv_paths=()):
    r = Run(db_id=db_id, root_pid=db_id, root_start=0,
            info=info(db_id, ["python", "x.py"], cwd="/p", started=started), started=started)
    r.ended_at, r.ended_after, r.marker = ended_at, ended_after, marker
    r.argv_paths = set(argv_paths)
    return r


def ev(t=T, path="/p/out.csv", holders=None):
    return Evidence(t, path, holders or {})


def test_sequential_pipeline_prefers_the_one_surely_alive_after_the_other_ended():
    first = run(1, T - 5, ended_at=T + 0.05, ended_after=T - 0.3)  # polling saw its end late
    second = run(2, T - 0.2)
    assert sequential_pipeline([first, second], ev()) is second
    overlapping = run(3, T - 5, ended_at=T + 0.05, ended_after=T - 0.1)  # alive after 2 began
    assert sequential_pipeline([overlapping, second], ev()) is None


def test_held_open_names_the_run_whose_process_holds_the_file():
    a, b = run(1, T - 1), run(2, T - 1)
    proc = Proc(pid=7, start_ticks=0, argv=("python",), exe=None, run=b)
    assert held_open([a, b], ev(holders={2: proc})) is b
    assert held_open([a, b], ev()) is None


def test_named_in_argv_needs_exactly_one_candidate_naming_the_file_or_its_folder():
    a = run(1, T - 1, argv_paths={"/p/data"})
    b = run(2, T - 1, argv_paths={"/p/other.csv"})
    assert named_in_argv([a, b], ev(path="/p/data/train.csv")) is a
    both = run(3, T - 1, argv_paths={"/p/data/"})
    assert named_in_argv([a, both], ev(path="/p/data/train.csv")) is None


def test_stream_marker_names_the_latest_when_all_others_ended_before_it_began():
    old = run(1, T - 5, ended_at=T + 0.1, marker=3)
    old.ended_after = T - 0.5
    new = run(2, T - 0.2, marker=9)
    assert stream_marker([old, new], ev()) is new
    still = run(3, T - 5, marker=3)  # not ended: cannot tell
    assert stream_marker([still, new], ev()) is None


def test_decide_takes_the_first_rule_that_names_one_run_with_its_basis():
    a = run(1, T - 1, argv_paths={"/p/out.csv"})
    b = run(2, T - 1)
    proc = Proc(pid=7, start_ticks=0, argv=("python",), exe=None, run=b)
    # fd evidence comes before argv: the process holding the file says more
    assert attribution.decide([a, b], ev(holders={2: proc})) == (b, "fd")
    assert attribution.decide([a, b], ev()) == (a, "argv")
    assert attribution.decide([run(3, T - 1), run(4, T - 1)], ev()) is None
