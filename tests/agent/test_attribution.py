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


def ev(t=T, path="/p/out.csv", holders=None, *, write=True, readers=None, read_by=None):
    return Evidence(t, path, holders or {}, write=write, readers=readers or {},
                    read_by=read_by or readers or {})


def proc(r, pid=7):
    return Proc(pid=pid, start_ticks=0, argv=("python",), exe=None, run=r)


def test_sequential_pipeline_prefers_the_one_surely_alive_after_the_other_ended():
    first = run(1, T - 5, ended_at=T + 0.05, ended_after=T - 0.3)  # polling saw its end late
    second = run(2, T - 0.2)
    assert sequential_pipeline([first, second], ev()) is second
    overlapping = run(3, T - 5, ended_at=T + 0.05, ended_after=T - 0.1)  # alive after 2 began
    assert sequential_pipeline([overlapping, second], ev()) is None


def test_held_open_names_the_run_whose_process_holds_the_file():
    a, b = run(1, T - 1), run(2, T - 1)
    assert held_open([a, b], ev(holders={2: proc(b)})) is b
    assert held_open([a, b], ev()) is None


def test_held_open_for_a_read_needs_a_sighting_left_to_explain_the_close():
    a, b = run(1, T - 1), run(2, T - 1)
    # b was seen reading it, but that sighting explained an earlier close already (or
    # came after this one): this close may be a's as well as b's
    assert held_open([a, b], ev(holders={2: proc(b)}, write=False)) is None
    assert held_open([a, b], ev(write=False, readers={2: proc(b)})) is b


def test_share_gives_a_read_to_the_readers_seen_else_to_every_candidate_labelled():
    a, b, c = run(1, T - 1), run(2, T - 1), run(3, T - 1)
    pa, pb = proc(a, 7), proc(b, 8)
    # two seen holding it, with sightings left: the close is one of theirs, both read it
    assert attribution.share([a, b, c], ev(write=False, readers={1: pa, 2: pb})) == [
        (a, "fd"), (b, "fd")]
    # their sightings spent: anyone's close; those seen reading did read it
    assert attribution.share([a, b, c], ev(write=False, read_by={1: pa})) == [
        (a, "fd"), (b, "ambiguous"), (c, "ambiguous")]
    # a write: held open for writing says nothing the close does not, when several may
    assert attribution.share([a, b], ev(read_by={1: pa})) == [
        (a, "ambiguous"), (b, "ambiguous")]


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
    # fd evidence comes before argv: the process holding the file says more
    assert attribution.decide([a, b], ev(holders={2: proc(b)})) == (b, "fd")
    assert attribution.decide([a, b], ev()) == (a, "argv")
    assert attribution.decide([run(3, T - 1), run(4, T - 1)], ev()) is None
