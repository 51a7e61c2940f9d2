"""Twins: same command, code, inputs and params (meta ignored); nondeterministic
outputs among completed twins; `twin_of` in both query paths; many runs of one command."""

from __future__ import annotations

import pytest

from onlooker.store.catalog import Catalog
from onlooker.store.objects import hash_bytes
from onlooker.store.query import filter_runs, query
from onlooker.store.twins import signatures, twin_groups, twins_of

T0 = 1_795_000_000.0


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def make_run(cat: Catalog, *, argv=("python", "train.py"), inputs=(), code=(), outputs=(),
             meta=(), params=None, status="completed", at: float = 0.0) -> int:
    """A run reading/writing (path, content) pairs; content as bytes."""
    run = cat.begin_run(command=list(argv), cwd=str(cat.project), exe=None, pid=1, pid_start=1,
                        user="ana", hostname="box", started_at=T0 + at, tier="netlink")
    for role, files in (("input", inputs), ("code", code), ("output", outputs),
                        ("meta", meta)):
        for path, data in files:
            vid = cat.add_version(path, hash=hash_bytes(data), size=len(data), mtime_ns=1,
                                  kind="other", stored=False, created_at=T0 + at)
            cat.link(run, vid, role, access="read" if role == "meta" else None)
    if params:
        cat.set_params(run, {k: (v, "argv") for k, v in params.items()})
    cat.update_run(run, status=status, ended_at=T0 + at + 1)
    return run


BASE = dict(inputs=[("data.csv", b"a,b\n1,2\n")], code=[("train.py", b"print(1)\n")],
            params={"lr": 0.1})


def test_identical_runs_are_twins_and_each_difference_breaks_it(cat):
    a = make_run(cat, **BASE, outputs=[("model.pkl", b"M1")], meta=[(".gitignore", b"x")])
    b = make_run(cat, **BASE, outputs=[("model.pkl", b"M1")], meta=[(".gitignore", b"y")],
                 at=10)
    c = make_run(cat, **{**BASE, "params": {"lr": 0.2}}, at=20)
    d = make_run(cat, **{**BASE, "inputs": [("data.csv", b"other")]}, at=30)
    e = make_run(cat, **{**BASE, "code": [("train.py", b"print(2)\n")]}, at=40)
    f = make_run(cat, **BASE, argv=("python", "train.py", "--fast"), at=50)
    g = make_run(cat, **BASE, at=60)  # same computation, other outputs: still a twin
    assert cat.twins(a) == [b, g]
    assert cat.twins(b) == [a, g]
    for other in (c, d, e, f):
        assert cat.twins(other) == []
    assert twin_groups(cat) == [[a, b, g]]
    assert twins_of(cat, [a, c]) == {a: [b, g], c: []}


def test_a_running_run_has_no_twins_yet(cat):
    a = make_run(cat, **BASE)
    b = make_run(cat, **BASE, status="running", at=5)
    assert cat.twins(a) == [] and cat.twins(b) == []
    assert b not in signatures(cat)


def test_a_version_the_run_wrote_itself_is_no_read(cat):
    # run b read the checkpoint it wrote; a never saw it: still the same computation
    a = make_run(cat, **BASE, outputs=[("ckpt.pt", b"C")])
    b = make_run(cat, **BASE, outputs=[("ckpt.pt", b"C")], at=5)
    vid = cat.add_version("ckpt.pt", hash=hash_bytes(b"C"), size=1, mtime_ns=1, kind="other",
                          stored=False, created_at=T0)
    cat.link(b, vid, "input")
    assert cat.twins(a) == [b]


def test_nondeterministic_outputs_are_named(cat):
    a = make_run(cat, **BASE, outputs=[("model.pkl", b"M1"), ("log.txt", b"same")])
    b = make_run(cat, **BASE, outputs=[("model.pkl", b"M2"), ("log.txt", b"same")], at=5)
    crashed = make_run(cat, **BASE, outputs=[("model.pkl", b"half")], status="failed", at=9)
    assert cat.twins(a) == [b, crashed]
    assert cat.nondeterministic(a) == ["model.pkl"]
    assert cat.nondeterministic(b) == ["model.pkl"]
    assert cat.nondeterministic(crashed) == []  # a crash is no nondeterminism
    lone = make_run(cat, argv=("python", "other.py"), outputs=[("x", b"1")], at=20)
    assert cat.nondeterministic(lone) == []


def test_twin_of_in_the_query_language_both_paths(cat):
    a = make_run(cat, **BASE)
    b = make_run(cat, **BASE, at=5)
    c = make_run(cat, **BASE, at=9)
    other = make_run(cat, **{**BASE, "params": {"lr": 0.3}}, at=12)
    assert [r["id"] for r in query(cat, f"twin_of = {a}")] == [c, b]
    assert [r["id"] for r in query(cat, f"twin_of in ({other}, {b})")] == [c, a]
    assert [r["id"] for r in query(cat, f"not twin_of = {a}")] == [other, a]
    assert [r["id"] for r in query(cat, f"twin_of != {a}")] == [other, a]
    assert query(cat, "twin_of = 999") == [] and query(cat, "twin_of = abc") == []
    # the Python path over dicts that carry "twins" (as `show --json` prints them)
    runs = [{**cat.run(i), "twins": cat.twins(i)} for i in (other, c, b, a)]
    for text in (f"twin_of = {a}", f"twin_of in ({other}, {b})", f"not twin_of = {a}",
                 f"twin_of != {a}", "twin_of = 999"):
        assert [r["id"] for r in filter_runs(runs, text)] == \
            [r["id"] for r in query(cat, text)], text


def test_twin_of_rejects_a_glob(cat):
    from onlooker.store.query import QueryError

    with pytest.raises(QueryError, match="twin_of"):
        query(cat, "twin_of ~ '1*'")


def test_twins_among_thousands_of_runs_of_one_command(tmp_path):
    # Every run a candidate (the worst case); the speed of this is a benchmark
    # (benchmarks/bench_twins.py), not a timed test.
    with Catalog.init(tmp_path) as cat:
        with cat.transaction():
            for i in range(2_000):
                make_run(cat, inputs=[(f"data/{i % 50}.csv", b"%d" % (i % 50))],
                         code=[("train.py", b"print(1)\n")], params={"lr": i % 200},
                         at=float(i))
        groups = twin_groups(cat)
        mine = cat.twins(1)
    # i and j are twins when i = j (mod 200): 200 groups of 10
    assert len(groups) == 200 and all(len(g) == 10 for g in groups)
    assert mine == list(range(201, 2_001, 200))
