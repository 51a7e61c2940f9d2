"""rm, gc and du on real catalogs and object stores (store/manage.py)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time

import pytest

from onlooker.store import manage
from onlooker.store.catalog import Catalog
from onlooker.store.errors import NoSuchRun
from onlooker.store.manage import RunIsRunning
from onlooker.store.objects import hash_bytes

T0 = time.time() - 10 * 86400  # ten days ago: old enough for any grace period


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def new_run(cat, started_at=T0, status="completed"):
    run_id = cat.begin_run(command=["python", "train.py"], cwd=str(cat.project),
                           exe="/usr/bin/python3", pid=4242, pid_start=99, user="ana",
                           hostname="box", started_at=started_at, tier="netlink")
    if status != "running":
        cat.update_run(run_id, status=status, ended_at=started_at + 5)
    return run_id


def put(cat, run_id, path, data: bytes, role, at, *, stored=True):
    """A version of `path` with `data` (its bytes in the store when `stored`), linked."""
    h = cat.objects.put_bytes(data) if stored else hash_bytes(data)
    vid = cat.add_version(path, hash=h, size=len(data), mtime_ns=0, kind="other",
                          stored=stored, created_at=at)
    if run_id is not None:
        cat.link(run_id, vid, role, access="read" if role == "meta" else None)
    return h


def age_objects(cat, seconds=7200):
    """Make every object on disk look written `seconds` ago (past the grace period)."""
    then = time.time() - seconds
    for folder, _, names in os.walk(cat.objects.root):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then))


def files_under(root) -> dict[str, str]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            p = os.path.join(folder, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def all_rows(cat) -> dict[str, list]:
    conn = sqlite3.connect(cat.path)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {n: sorted(map(repr, conn.execute(f"SELECT * FROM {n}"))) for n in names}
    conn.close()
    return out


def readable(cat, h) -> bool:
    """The object is in the store and its bytes hash to its name."""
    if not cat.objects.has(h):
        return False
    with cat.objects.open(h) as f:
        return hash_bytes(f.read()) == h


@pytest.fixture
def two_runs(cat):
    """Run 1 and a later run 2 sharing data.csv; each with its own code, model, diff."""
    r1 = new_run(cat, T0)
    shared = put(cat, r1, "data/data.csv", b"a,b\n1,2\n" * 50, "input", T0)
    code1 = put(cat, r1, "train.py", b"print('v1')\n", "code", T0)
    model1 = put(cat, r1, "model.pkl", b"model one" * 100, "output", T0)
    meta1 = put(cat, r1, ".cache/tool.json", b"{\"tool\": 1}", "meta", T0)
    diff1 = cat.objects.put_bytes(b"diff --git a/train.py b/train.py\n+v1\n")
    cat.update_run(r1, git_diff=diff1)
    cat.set_params(r1, {"lr": (0.1, "argv")})
    cat.set_metrics(r1, "metrics.json", [("acc", None, 0.5, None, None)])
    cat.add_telemetry([(r1, T0 + 1, {"cpu": 1.0})])
    cat.tag(r1, "first")
    s1 = cat.add_step(r1, pid=1, ppid=0, parent_step_id=None, argv=["python"], cwd=None,
                      exe=None, started_at=T0)
    r2 = new_run(cat, T0 + 100)
    put(cat, r2, "data/data.csv", b"a,b\n1,2\n" * 50, "input", T0 + 100)
    code2 = put(cat, r2, "train.py", b"print('v2')\n", "code", T0 + 100)
    model2 = put(cat, r2, "model.pkl", b"model two" * 100, "output", T0 + 100)
    meta2 = put(cat, r2, ".cache/tool.json", b"{\"tool\": 2}", "meta", T0 + 100)
    cat.set_params(r2, {"lr": (0.2, "argv")})
    age_objects(cat)
    return {"r1": r1, "r2": r2, "shared": shared, "code1": code1, "model1": model1,
            "meta1": meta1, "diff1": diff1, "code2": code2, "model2": model2, "meta2": meta2,
            "step1": s1}


def count(cat, table, run_id, column="run_id"):
    return cat._execute(f"SELECT count(*) FROM {table} WHERE {column} = ?",
                        (run_id,)).fetchone()[0]


# ---- rm ---------------------------------------------------------------------------------


def test_rm_removes_exactly_the_runs_rows(cat, two_runs):
    r1, r2 = two_runs["r1"], two_runs["r2"]
    before = {t: count(cat, t, r2) for t in ("io", "params", "steps", "metrics", "telemetry")}
    versions = cat._execute("SELECT count(*) FROM versions").fetchone()[0]
    objects = files_under(cat.objects.root)
    result = cat.remove_runs([r1])
    assert result["removed"] == [r1]
    assert result["rows"]["io"] == 4 and result["rows"]["tags"] == 1
    tables = manage._run_tables(cat)
    assert {"io", "params", "steps", "metrics", "telemetry", "tags"} <= {t for t, _ in tables}
    for table, column in tables:  # every table tied to runs, later migrations' too
        assert count(cat, table, r1, column) == 0, table
    assert count(cat, "runs", r1, "id") == 0
    assert {t: count(cat, t, r2) for t in before} == before
    # versions stay, and so do the objects until gc
    assert cat._execute("SELECT count(*) FROM versions").fetchone()[0] == versions
    assert files_under(cat.objects.root) == objects
    assert cat._execute("SELECT count(*) FROM versions WHERE run_id = ?",
                        (r1,)).fetchone()[0] == 0
    with pytest.raises(NoSuchRun):
        cat.run(r1)
    assert cat.run(r2)["id"] == r2


def test_rm_hands_a_shared_output_to_the_next_writer(cat):
    r1, r2 = new_run(cat, T0), new_run(cat, T0 + 10)
    h = put(cat, r1, "out.txt", b"same", "output", T0)
    vid = cat._execute("SELECT id FROM versions WHERE hash = ?", (h,)).fetchone()[0]
    cat.link(r2, vid, "output")
    cat.remove_runs([r1])
    assert cat._execute("SELECT run_id FROM versions WHERE id = ?", (vid,)).fetchone()[0] == r2
    assert cat.writers(h)[0]["run_id"] == r2


def test_rm_refuses_unknown_and_running_runs_and_changes_nothing(cat, two_runs):
    running = new_run(cat, T0 + 200, status="running")
    rows = all_rows(cat)
    with pytest.raises(NoSuchRun):
        cat.remove_runs([two_runs["r1"], 999])
    with pytest.raises(RunIsRunning, match="still running"):
        cat.remove_runs([two_runs["r1"], running])
    assert all_rows(cat) == rows


# ---- gc ---------------------------------------------------------------------------------


def test_gc_after_rm_frees_exactly_what_only_the_removed_run_used(cat, two_runs):
    t = two_runs
    cat.remove_runs([t["r1"]])
    only_r1 = [t["code1"], t["model1"], t["meta1"], t["diff1"]]
    sizes = {}
    for h in only_r1:
        with cat.objects.open(h) as f:
            sizes[h] = len(f.read())
    report = cat.gc(grace=0)
    assert report["freed"] == {"objects": 4, "bytes": sum(sizes.values())}
    for h in only_r1:
        assert not cat.objects.has(h)
    run2 = cat.run(t["r2"])
    for entry in run2["inputs"] + run2["outputs"] + run2["code"] + run2["meta"]:
        assert readable(cat, entry["hash"]), entry
    # the catalog now says the collected versions are only referenced
    stored = dict(cat._execute("SELECT hash, stored FROM versions").fetchall())
    assert stored[t["model1"]] == 0 and stored[t["model2"]] == 1
    # a second gc has nothing left to do
    assert cat.gc(grace=0)["freed"] == {"objects": 0, "bytes": 0}


def test_gc_keeps_every_run_and_the_current_tree(cat, two_runs):
    """Without rm, nothing a run in the catalog used goes; history no run used does."""
    old = put(cat, None, "notes.txt", b"draft one", None, T0)
    now_ = put(cat, None, "notes.txt", b"draft two", None, T0 + 50)
    age_objects(cat)
    report = cat.gc(grace=0)
    assert report["freed"]["objects"] == 1
    assert not cat.objects.has(old) and readable(cat, now_)
    for key in ("shared", "code1", "model1", "meta1", "diff1", "code2", "model2", "meta2"):
        assert readable(cat, two_runs[key]), key


def test_dry_run_changes_nothing_and_says_what_gc_would_free(cat, two_runs):
    cat.remove_runs([two_runs["r1"]])
    files, rows = files_under(cat.objects.root), all_rows(cat)
    planned = cat.gc(dry_run=True, grace=0)
    assert files_under(cat.objects.root) == files and all_rows(cat) == rows
    assert planned["dry_run"] is True and planned["freed"]["objects"] == 4
    assert cat.gc(grace=0)["freed"] == planned["freed"]


def test_young_objects_are_kept_for_the_grace_period(cat, two_runs):
    fresh = cat.objects.put_bytes(b"written a moment ago, no row names it yet")
    report = cat.gc()
    assert cat.objects.has(fresh) and report["young"]["objects"] == 1
    assert report["freed"]["objects"] == 0
    cat.gc(grace=0)
    assert not cat.objects.has(fresh)


def test_older_than_removes_old_runs_and_keep_tagged_spares_tagged_ones(cat, two_runs):
    recent = new_run(cat, time.time() - 60)
    running = new_run(cat, T0 - 100, status="running")
    files, rows = files_under(cat.objects.root), all_rows(cat)
    planned = cat.gc(dry_run=True, older_than="1d", keep_tagged=True, grace=0)
    assert planned["removed_runs"] == [two_runs["r2"]]  # r1 is tagged, `running` runs
    assert files_under(cat.objects.root) == files and all_rows(cat) == rows
    report = cat.gc(older_than="1d", keep_tagged=True, grace=0)
    assert report["removed_runs"] == [two_runs["r2"]]
    ids = {r["id"] for r in cat.runs()}
    assert ids == {two_runs["r1"], recent, running}
    assert readable(cat, two_runs["code2"])  # only r2 read it, but it is the current file
    assert readable(cat, two_runs["model1"])  # the tagged run's closure stays
    report = cat.gc(older_than="1d", grace=0)  # without --keep-tagged: tagged ones too
    assert report["removed_runs"] == [two_runs["r1"]]
    assert {r["id"] for r in cat.runs()} == {recent, running}
    assert report["freed"]["objects"] == 4 and not cat.objects.has(two_runs["model1"])
    with pytest.raises(manage.BadDuration):
        cat.gc(older_than="thirty days")


def test_gc_repacks_packs_keeping_live_objects(cat):
    r1, r2 = new_run(cat, T0), new_run(cat, T0 + 10)
    with cat.objects.batch():
        mine = [cat.objects.put_bytes(b"r1 small %d" % i) for i in range(40)]
        theirs = [cat.objects.put_bytes(b"r2 small %d" % i) for i in range(40)]
    assert cat.objects.packs.any() and not cat.objects.path_for(mine[0]).exists()
    for i, h in enumerate(mine):
        vid = cat.add_version(f"a/{i}", hash=h, size=len(b"r1 small %d" % i), mtime_ns=0,
                              kind="other", stored=True, created_at=T0)
        cat.link(r1, vid, "output")
        # a later content at each path, so r1's is history
        put(cat, r2, f"a/{i}", b"later %d" % i, "output", T0 + 10)
    for i, h in enumerate(theirs):
        vid = cat.add_version(f"b/{i}", hash=h, size=len(b"r2 small %d" % i), mtime_ns=0,
                              kind="other", stored=True, created_at=T0 + 10)
        cat.link(r2, vid, "input")
    age_objects(cat)
    pack_bytes = sum(p.stat().st_size for p in cat.objects.packs.dir.glob("*.pack"))
    other = Catalog(cat.store_dir)  # a second reader with the old index loaded
    assert readable(other, theirs[0])
    cat.remove_runs([r1])
    report = cat.gc(grace=0)
    assert report["freed"]["objects"] == 40
    assert all(not cat.objects.has(h) for h in mine)
    assert all(readable(cat, h) for h in theirs)
    assert all(readable(other, h) for h in theirs)  # retries past the pack that went
    other.close()
    after = sum(p.stat().st_size for p in cat.objects.packs.dir.glob("*.pack"))
    assert after == pack_bytes - report["freed"]["bytes"]


def test_an_object_linked_while_gc_runs_is_kept(cat, two_runs, monkeypatch):
    """The agent links a run to an unreferenced old object between gc's look at the
    catalog and its write transaction: the recheck keeps it."""
    lone = put(cat, None, "old.txt", b"first", None, T0)
    put(cat, None, "old.txt", b"second", None, T0 + 1)
    age_objects(cat)
    agent = Catalog(cat.store_dir)
    entries = cat.objects.entries

    def entries_then_agent_links():
        yield from entries()
        run = new_run(agent, time.time())
        vid = agent.add_version("copy.txt", hash=lone, size=5, mtime_ns=0, kind="other",
                                stored=True, created_at=T0)
        agent.link(run, vid, "input")

    monkeypatch.setattr(cat.objects, "entries", entries_then_agent_links)
    cat.gc(grace=0)
    agent.close()
    assert readable(cat, lone)


def test_an_object_deduped_against_in_the_last_instant_is_put_back(cat, two_runs,
                                                                   monkeypatch):
    """The agent finds a garbage content again and commits a stored version of it after
    gc's transaction, before the trash is emptied: gc puts the object back."""
    cat.remove_runs([two_runs["r1"]])
    agent = Catalog(cat.store_dir)
    named = manage._named_as_stored

    def agent_dedups_then_check(catalog, hashes):
        run = new_run(agent, time.time())
        vid = agent.add_version("again.pkl", hash=two_runs["model1"], size=900, mtime_ns=0,
                                kind="other", stored=True, created_at=time.time())
        agent.link(run, vid, "output")
        return named(catalog, hashes)

    monkeypatch.setattr(manage, "_named_as_stored", agent_dedups_then_check)
    report = cat.gc(grace=0)
    agent.close()
    assert readable(cat, two_runs["model1"])
    assert report["freed"]["objects"] == 3
    assert not list((cat.objects.tmp).glob("gc-*"))  # the trash is gone


# ---- du ---------------------------------------------------------------------------------


def test_du_says_what_removing_each_run_would_free(cat, two_runs):
    put(cat, two_runs["r2"], "big.bin", b"x" * 5000, "input", T0 + 100, stored=False)
    usage = cat.du()
    by_id = {r["id"]: r for r in usage["runs"]}
    r1 = by_id[two_runs["r1"]]
    assert r1["frees"]["objects"] == 4
    assert r1["objects"] == 5  # its four, and the shared data.csv
    assert by_id[two_runs["r2"]]["referenced_only"] == {"files": 1, "bytes": 5000}
    assert usage["total"]["objects"] == cat.objects.usage()[0]
    assert usage["total"]["bytes"] == cat.objects.usage()[1]
    assert usage["total"]["referenced_only"] == {"versions": 1, "bytes": 5000}
    assert [r["id"] for r in cat.du([two_runs["r2"]])["runs"]] == [two_runs["r2"]]
    with pytest.raises(NoSuchRun):
        cat.du([999])
    cat.remove_runs([two_runs["r1"]])
    assert cat.du()["total"]["unreferenced"]["bytes"] == r1["frees"]["bytes"]
    assert cat.gc(grace=0)["freed"]["bytes"] == r1["frees"]["bytes"]


def test_gc_removes_the_log_copies_of_removed_runs_only(cat, two_runs):
    logs = cat.store_dir / "logs"
    logs.mkdir()
    for name, run_id in (("a.log", two_runs["r1"]), ("b.log", two_runs["r2"])):
        (logs / name).write_bytes(b"epoch 1 loss 0.5\n")
        put(cat, run_id, logs / name, b"epoch 1 loss 0.5\n" + name.encode(), "output", T0)
    (logs / "unseen.log").write_bytes(b"the agent has not recorded this one yet")
    then = time.time() - 7200
    for p in logs.iterdir():
        os.utime(p, (then, then))
    cat.remove_runs([two_runs["r1"]])
    planned = cat.gc(dry_run=True, grace=0)
    assert planned["logs"]["files"] == 1 and (logs / "a.log").exists()
    report = cat.gc(grace=0)
    assert report["logs"] == {"files": 1, "bytes": len(b"epoch 1 loss 0.5\n")}
    assert sorted(p.name for p in logs.iterdir()) == ["b.log", "unseen.log"]


def test_two_gcs_at_once_take_turns(cat, two_runs):
    import threading

    cat.remove_runs([two_runs["r1"]])
    reports, errors = [], []

    def one_gc():
        try:
            with Catalog(cat.store_dir) as mine:
                reports.append(mine.gc(grace=0))
        except Exception as err:  # pragma: no cover - the failure is the assert below
            errors.append(err)

    threads = [threading.Thread(target=one_gc) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(r["freed"]["objects"] for r in reports) == [0, 4]
    for key in ("shared", "code2", "model2", "meta2"):
        assert readable(cat, two_runs[key]), key
