"""Catalog: schema and migrations, write/read round trip, ordering, idempotence, WAL readers."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from onlooker.store import schema
from onlooker.store.catalog import Catalog
from onlooker.store.errors import (
    CatalogCorrupt,
    NoSuchRun,
    NotInitialized,
    SchemaTooNew,
    StoreError,
)

H1 = "blake3:" + "1" * 64
H2 = "blake3:" + "2" * 64
H3 = "blake3:" + "3" * 64
T0 = 1_795_000_000.0
RUN_KEYS = {"id", "command", "cwd", "status", "exit_code", "signal", "started_at", "ended_at",
            "duration", "params", "inputs", "outputs", "code", "meta", "git", "tier", "metrics",
            "telemetry", "tags", "note", "origin", "notebook", "name"}


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def new_run(cat, started_at=T0, command=("python", "train.py")):
    return cat.begin_run(command=list(command), cwd=str(cat.project), exe="/usr/bin/python3",
                         pid=4242, pid_start=99, user="ana", hostname="box",
                         started_at=started_at, tier="netlink")


def test_init_creates_wal_catalog_and_is_idempotent(tmp_path):
    c = Catalog.init(tmp_path)
    c.close()
    assert (tmp_path / ".onlooker" / "catalog.db").is_file()
    assert (tmp_path / ".onlooker" / "objects").is_dir()
    conn = sqlite3.connect(tmp_path / ".onlooker" / "catalog.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = Catalog(tmp_path / ".onlooker")  # re-running migrations changes nothing
    assert schema.version(again._conn) == schema.LATEST
    again.close()
    conn = sqlite3.connect(tmp_path / ".onlooker" / "catalog.db")
    assert schema.migrate(conn, "x") == schema.LATEST


def test_missing_project(tmp_path):
    with pytest.raises(NotInitialized, match="onlooker init"):
        Catalog(tmp_path / ".onlooker", readonly=True)
    with pytest.raises(NotInitialized, match=str(tmp_path)):
        Catalog.find(tmp_path / "a" / "b")


def test_find_walks_up(tmp_path):
    Catalog.init(tmp_path).close()
    deep = tmp_path / "src" / "models"
    deep.mkdir(parents=True)
    c = Catalog.find(deep)
    assert c.project == tmp_path and c.readonly
    c.close()


def test_not_sqlite_and_newer_schema(tmp_path):
    store = tmp_path / ".onlooker"
    store.mkdir()
    (store / "catalog.db").write_bytes(b"this is not a database at all" * 100)
    for readonly in (False, True):
        with pytest.raises(CatalogCorrupt, match="not a usable onlooker catalog"):
            Catalog(store, readonly=readonly)
    (store / "catalog.db").unlink()
    Catalog(store).close()
    conn = sqlite3.connect(store / "catalog.db")
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    for readonly in (False, True):
        with pytest.raises(SchemaTooNew, match="upgrade onlooker"):
            Catalog(store, readonly=readonly)


def test_round_trip(cat):
    run = new_run(cat, command=["python", "train.py", "--lr", "0.1"])
    root = cat.project
    with cat.transaction():
        step = cat.add_step(run, pid=4243, ppid=4242, parent_step_id=None,
                            argv=["python", "prep.py"], cwd=str(root), exe=None,
                            started_at=T0 + 1)
        step2 = cat.add_step(run, pid=4244, ppid=4242, parent_step_id=step,
                             argv=["python", "fit.py"], cwd=str(root), exe=None,
                             started_at=T0 + 2)
        data = cat.add_version(str(root / "data" / "train.csv"), hash=H1, size=10, mtime_ns=1,
                               kind="dataset", stored=True, created_at=T0)
        code = cat.add_version("train.py", hash=H2, size=20, mtime_ns=2, kind="code",
                               stored=True, created_at=T0)
        model = cat.add_version(str(root / "model.pt"), hash=H3, size=30, mtime_ns=3,
                                kind="model", stored=False, created_at=T0 + 3)
        outside = cat.add_version("/srv/shared/vocab.txt", hash=H2, size=20, mtime_ns=2,
                                  kind="other", stored=False, created_at=T0)
        cat.link(run, data, "input", step)
        cat.link(run, data, "input", step2)  # two steps read one file
        cat.link(run, outside, "input")
        cat.link(run, code, "code")
        cat.link(run, model, "output", step2)
        cat.link(run, model, "output", step2)  # idempotent
        params = {"lr": (0.1, "argv"), "epochs": (10, "argv"), "name": ("x", "argv"),
                  "layers": ([64, 32], "config.yaml"), "flag": (True, "argv"),
                  "none": (None, "argv"), "nested": ({"a": 1.0}, "config.yaml")}
        cat.set_params(run, params)
        env = cat.put_env({"python": "3.11", "packages": {"torch": "2.5"}})
        cat.update_step(step, status="ok", exit_code=0, ended_at=T0 + 1.5)
        cat.update_run(run, status="ok", exit_code=0, ended_at=T0 + 10.25, env_id=env,
                       git_commit="abc123", git_branch="main", git_dirty=True, git_diff=H1)
    assert cat.put_env({"packages": {"torch": "2.5"}, "python": "3.11"}) == env  # dedup

    r = cat.run(run)
    assert set(r) == RUN_KEYS | {"env", "steps"}
    assert r["command"] == ["python", "train.py", "--lr", "0.1"]
    assert r["status"] == "ok" and r["exit_code"] == 0 and r["signal"] is None
    assert r["started_at"].endswith("Z") and r["duration"] == 10.25
    assert r["params"] == {k: v for k, (v, _) in params.items()}
    assert type(r["params"]["epochs"]) is int and type(r["params"]["lr"]) is float
    assert [f["path"] for f in r["inputs"]] == ["/srv/shared/vocab.txt", "data/train.csv"]
    assert r["inputs"][1] == {"path": "data/train.csv", "hash": H1, "size": 10,
                              "kind": "dataset", "basis": None}
    assert [f["path"] for f in r["outputs"]] == ["model.pt"]
    assert [f["path"] for f in r["code"]] == ["train.py"]
    assert r["env"] == {"python": "3.11", "packages": {"torch": "2.5"}}
    assert r["git"] == {"commit": "abc123", "branch": "main", "dirty": True, "diff": H1}
    assert [s["argv"][1] for s in r["steps"]] == ["prep.py", "fit.py"]
    s1, s2 = r["steps"]
    assert s1["inputs"] == ["data/train.csv"] and s1["outputs"] == [] and s1["status"] == "ok"
    assert s2["parent"] == s1["id"] and s2["outputs"] == ["model.pt"]
    assert s2["ended_at"] is None and s2["status"] == "running"
    assert cat.writers(H3) == [{"run_id": run, "step_id": step2, "path": "model.pt"}]
    assert cat.versions("model.pt")[0]["run_id"] == run  # linking an output names its producer


def test_runs_order_filter_and_contents(cat):
    ids = [new_run(cat, started_at=T0 + i) for i in range(5)]
    cat.update_run(ids[1], status="failed", exit_code=1, ended_at=T0 + 50)
    v = cat.add_version("a.txt", hash=H1, size=1, mtime_ns=1, kind="other", stored=False,
                        created_at=T0)
    cat.link(ids[1], v, "output")
    cat.set_params(ids[1], {"k": ("v", "argv")})
    runs = cat.runs()
    assert [r["id"] for r in runs] == ids[::-1]
    assert all(set(r) == RUN_KEYS for r in runs)
    assert [r["id"] for r in cat.runs(limit=2)] == ids[:2:-1][:2]
    failed = cat.runs(status="failed")
    assert [r["id"] for r in failed] == [ids[1]]
    assert failed[0]["outputs"][0]["path"] == "a.txt" and failed[0]["params"] == {"k": "v"}
    assert [r["id"] for r in cat.runs(status="running", limit=1)] == [ids[4]]
    assert cat.runs(status="nope") == []
    assert [r["id"] for r in cat.open_runs()] == [i for i in ids if i != ids[1]]
    assert cat.open_runs()[0].keys() >= {"id", "pid", "pid_start", "started_at"}


def test_runs_fast_with_ten_thousand(cat):
    v = cat.add_version("data.csv", hash=H1, size=1, mtime_ns=1, kind="dataset",
                        stored=False, created_at=T0)
    with cat.transaction():
        for i in range(10_000):
            run = new_run(cat, started_at=T0 + i)
            cat.link(run, v, "input")
            cat.set_params(run, {"lr": (i / 10, "argv"), "seed": (i, "argv")})
    start = time.perf_counter()
    runs = cat.runs()
    elapsed = time.perf_counter() - start
    assert len(runs) == 10_000 and runs[0]["params"]["seed"] == 9_999
    assert runs[-1]["inputs"][0]["path"] == "data.csv"
    assert elapsed < 3.0, elapsed


def test_add_version_idempotent_and_latest(cat):
    run = new_run(cat)
    a = cat.add_version("m.txt", hash=H1, size=1, mtime_ns=1, kind="other", stored=False,
                        created_at=T0)
    assert cat.add_version(str(cat.project / "m.txt"), hash=H1, size=1, mtime_ns=1,
                           kind="metrics", stored=True, created_at=T0 + 1, run_id=run) == a
    b = cat.add_version("m.txt", hash=H2, size=2, mtime_ns=2, kind="metrics", stored=False,
                        created_at=T0 + 2)
    assert b != a
    assert cat.latest_version("m.txt") == {"hash": H2, "size": 2, "mtime_ns": 2}
    cat.add_version("m.txt", hash=H1, size=1, mtime_ns=3, kind="metrics", stored=False,
                    created_at=T0 + 3)  # the content went back to the first one
    assert cat.latest_version("m.txt") == {"hash": H1, "size": 1, "mtime_ns": 3}
    history = cat.versions("m.txt")
    assert [v["hash"] for v in history] == [H1, H2]
    assert history[0]["run_id"] == run and history[0]["stored"] is True
    assert history[0]["kind"] == "metrics"
    assert cat.latest_version("other.txt") is None
    assert cat.counts() == {"runs": 1, "steps": 0, "assets": 1, "versions": 2, "objects": 1,
                            "objects_bytes": 1}


def test_a_rolled_back_asset_is_made_again(cat):
    # The agent remembers asset ids to save a statement per version; a transaction
    # rolled back takes the ids it made with it, and the next version still lands.
    with pytest.raises(RuntimeError), cat.transaction():
        cat.add_version("new.csv", hash=H1, size=1, mtime_ns=1, kind="dataset",
                        stored=False, created_at=T0)
        raise RuntimeError("the batch failed")
    assert cat.versions("new.csv") == []
    cat.add_version("new.csv", hash=H2, size=2, mtime_ns=2, kind="dataset", stored=False,
                    created_at=T0 + 1)
    assert [v["hash"] for v in cat.versions("new.csv")] == [H2]
    # a known asset whose kind changes is updated, not served from memory
    cat.add_version("new.csv", hash=H1, size=1, mtime_ns=3, kind="metrics", stored=False,
                    created_at=T0 + 2)
    assert {v["kind"] for v in cat.versions("new.csv")} == {"metrics"}


def test_relpath(cat):
    root = cat.project
    assert cat.relpath(str(root / "a" / "b.csv")) == "a/b.csv"
    assert cat.relpath("a/./b.csv") == "a/b.csv"
    assert cat.relpath("/elsewhere/x") == "/elsewhere/x"
    assert cat.relpath(str(root) + "x/y") == str(root) + "x/y"  # a sibling, not inside


def test_errors(cat, tmp_path):
    with pytest.raises(NoSuchRun):
        cat.run(12345)
    with pytest.raises(NoSuchRun):
        cat.update_run(12345, status="ok")
    with pytest.raises(ValueError):
        cat.update_run(new_run(cat), bogus=1)
    with pytest.raises(ValueError):
        cat.link(1, 1, "reads")
    with pytest.raises(StoreError):
        cat.link(999, 999, "input")  # foreign keys are on
    reader = Catalog(cat.store_dir, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        new_run(reader)
    reader.close()


def test_transaction_rollback_and_nesting(cat):
    with pytest.raises(RuntimeError):
        with cat.transaction():
            new_run(cat)
            with cat.transaction():
                new_run(cat)
            raise RuntimeError("boom")
    assert cat.runs() == []


def test_stat_cache(cat):
    assert cat.stat_lookup(1, 2, 3, 4) is None
    cat.stat_store([(1, 2, 3, 4, H1), (1, 5, 3, 4, H2)])
    assert cat.stat_lookup(1, 2, 3, 4) == H1
    assert cat.stat_lookup(1, 2, 3, 5) is None
    cat.stat_store([(1, 2, 9, 9, H3)])  # same inode, new stat: replaces
    assert cat.stat_lookup(1, 2, 3, 4) is None and cat.stat_lookup(1, 2, 9, 9) == H3


def test_reader_not_blocked_by_writer(cat):
    new_run(cat)
    reader = Catalog(cat.store_dir, readonly=True)
    holding = threading.Event()
    release = threading.Event()

    def writer():
        with cat.transaction():
            new_run(cat, started_at=T0 + 5)
            holding.set()
            assert release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(10)
        start = time.perf_counter()
        seen = reader.runs()  # no "database is locked", no waiting on busy_timeout
        assert time.perf_counter() - start < 1.0
        assert len(seen) == 1  # the open transaction is invisible
        assert reader.counts()["runs"] == 1
    finally:
        release.set()
        t.join()
    deadline = time.monotonic() + 5
    while len(reader.runs()) != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(reader.runs()) == 2
    reader.close()


def test_names_that_are_not_utf8_are_stored_not_fatal(tmp_path):
    import os as _os

    cat = Catalog.init(tmp_path)
    odd = _os.fsdecode(b"data/caf\xe9.csv")
    with cat.transaction():
        rid = cat.begin_run(command=["python", "x.py", odd], cwd=str(tmp_path / _os.fsdecode(
            b"d\xff")), exe=None, pid=1, pid_start=1, user=None, hostname="h",
            started_at=T0, tier="t")
        vid = cat.add_version(odd, hash=H1, size=1, mtime_ns=1, kind="dataset", stored=False,
                              created_at=T0)
        cat.link(rid, vid, "input")
    run = cat.run(rid)
    assert run["command"][2] == odd  # argv round-trips exactly
    assert run["inputs"][0]["path"] == "data/caf\\xe9.csv"


def test_opening_the_catalog_does_not_import_pandas_or_numpy(tmp_path):
    # sqlite-utils imports both at import time; with pandas installed that cost every
    # CLI call most of a second.
    import subprocess
    import sys

    for name in ("pandas", "numpy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("IMPORTED = True\n")
    code = ("import sys; import onlooker.store.catalog; "
            "print('pandas' in sys.modules, 'numpy' in sys.modules); "
            "import pandas; print(pandas.IMPORTED)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]


def test_run_files_keep_a_resumed_checkpoint_as_input_and_hide_intermediates(cat):
    run = new_run(cat)
    ckpt_old = cat.add_version("ckpt/last.pt", hash=H1, size=1, mtime_ns=1, kind="model",
                               stored=True, created_at=T0)
    ckpt_new = cat.add_version("ckpt/last.pt", hash=H2, size=2, mtime_ns=2, kind="model",
                               stored=True, created_at=T0 + 5, run_id=run)
    mid = cat.add_version("data/clean.csv", hash="blake3:" + "3" * 64, size=3, mtime_ns=3,
                          kind="dataset", stored=True, created_at=T0 + 1, run_id=run)
    cat.link(run, ckpt_old, "input")  # resumed from the checkpoint another run wrote...
    cat.link(run, ckpt_new, "output")  # ...and overwrote it
    cat.link(run, mid, "output")  # one step wrote it, another read it
    cat.link(run, mid, "input")
    got = cat.run(run)
    assert [(f["path"], f["hash"]) for f in got["inputs"]] == [("ckpt/last.pt", H1)]
    assert sorted((f["path"], f["hash"]) for f in got["outputs"]) == [
        ("ckpt/last.pt", H2), ("data/clean.csv", "blake3:" + "3" * 64)]
    assert [r["inputs"] for r in cat.runs() if r["id"] == run] == [got["inputs"]]


# ---- roles: meta files, access and basis ---------------------------------------------------
def _v3_catalog(store):
    """A catalog as schema 3 left it, with a run, steps, versions, io, params, metrics."""
    store.mkdir(parents=True)
    (store / "objects").mkdir()
    conn = sqlite3.connect(store / "catalog.db")
    for _, statements in schema.MIGRATIONS[:3]:
        for sql in statements:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 3")
    conn.executescript(f"""
        INSERT INTO envs (id, hash, data) VALUES (1, 'h', '{{"python": "3.11"}}');
        INSERT INTO runs (id, command, cwd, pid, pid_start, hostname, status, exit_code,
                          started_at, ended_at, tier, env_id)
            VALUES (1, '["python","train.py"]', '/p', 10, 1, 'box', 'completed', 0,
                    {T0}, {T0 + 5}, 'netlink', 1),
                   (2, '["python","eval.py"]', '/p', 11, 1, 'box', 'failed', 1,
                    {T0 + 10}, {T0 + 12}, 'poll', NULL);
        INSERT INTO steps (id, run_id, pid, ppid, argv, started_at, status)
            VALUES (1, 1, 10, 1, '["python","train.py"]', {T0}, 'completed'),
                   (2, 1, 12, 10, '["python","fit.py"]', {T0 + 1}, 'completed');
        INSERT INTO assets (id, path, kind) VALUES (1, 'data/train.csv', 'dataset'),
            (2, 'train.py', 'code'), (3, 'model.pt', 'model'), (4, 'ckpt/last.pt', 'model');
        INSERT INTO versions (id, asset_id, hash, size, mtime_ns, stored, run_id, created_at,
                              seen_at)
            VALUES (1, 1, '{H1}', 10, 1, 1, NULL, {T0}, {T0}),
                   (2, 2, '{H2}', 20, 2, 1, NULL, {T0}, {T0}),
                   (3, 3, '{H3}', 30, 3, 0, 1, {T0 + 3}, {T0 + 3}),
                   (4, 4, '{H1}', 10, 4, 1, NULL, {T0}, {T0}),
                   (5, 4, '{H2}', 20, 5, 1, 1, {T0 + 4}, {T0 + 4});
        INSERT INTO io (run_id, step_id, version_id, role) VALUES
            (1, 1, 1, 'input'), (1, 2, 1, 'input'), (1, NULL, 2, 'code'),
            (1, 2, 3, 'output'), (1, NULL, 4, 'input'), (1, NULL, 5, 'output'),
            (2, NULL, 3, 'input');
        INSERT INTO params (run_id, key, value, source) VALUES (1, 'lr', '0.1', 'argv');
        INSERT INTO metrics (run_id, key, step, value, source) VALUES
            (1, 'metrics.json:acc', NULL, 0.9, 'metrics.json');
        INSERT INTO telemetry (run_id, t, data) VALUES (1, {T0 + 1}, '{{"cpu": 1.0}}');
        INSERT INTO stat_cache VALUES (1, 2, 10, 1, '{H1}');
    """)
    conn.commit()
    tables = ("envs", "runs", "steps", "assets", "versions", "params", "metrics", "telemetry",
              "stat_cache")
    before = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    io = conn.execute("SELECT run_id, step_id, version_id, role FROM io").fetchall()
    conn.close()
    return before, io


def test_a_v3_catalog_migrates_and_reads_back_the_same(tmp_path):
    store = tmp_path / ".onlooker"
    before, old_io = _v3_catalog(store)
    with pytest.raises(Exception, match="needs upgrading"):
        Catalog(store, readonly=True)
    cat = Catalog(store)
    try:
        assert schema.version(cat._conn) == schema.LATEST
        for table, rows in before.items():
            got = cat._conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            width = len(rows[0]) if rows else 0  # later migrations add columns (NULL here)
            assert [tuple(r)[:width] for r in got] == rows, table
            assert all(v is None for r in got for v in tuple(r)[width:]), table
        io = cat._conn.execute("SELECT run_id, step_id, version_id, role, access, basis FROM io"
                               ).fetchall()
        access = {"input": "read", "code": "read", "output": "write"}
        assert sorted(map(repr, map(tuple, io))) == sorted(
            repr((*row, access[row[3]], None)) for row in old_io)
        r = cat.run(1)
        assert [(f["path"], f["hash"]) for f in r["inputs"]] == [("ckpt/last.pt", H1),
                                                                 ("data/train.csv", H1)]
        assert r["inputs"][1] == {"path": "data/train.csv", "hash": H1, "size": 10,
                                  "kind": "dataset", "basis": None}
        assert sorted(f["path"] for f in r["outputs"]) == ["ckpt/last.pt", "model.pt"]
        assert [f["path"] for f in r["code"]] == ["train.py"] and r["meta"] == []
        assert r["params"] == {"lr": 0.1} and r["env"] == {"python": "3.11"}
        assert r["metrics"]["metrics.json:acc"] is not None
        assert [s["inputs"] for s in r["steps"]] == [["data/train.csv"], ["data/train.csv"]]
        assert r["steps"][1]["outputs"] == ["model.pt"]
        assert [x["inputs"][0]["path"] for x in cat.runs() if x["id"] == 2] == ["model.pt"]
        assert cat.writers(H3) == [{"run_id": 1, "step_id": 2, "path": "model.pt"}]
        # the migrated catalog takes the new links
        v = cat.add_version(".gitignore", hash=H1, size=1, mtime_ns=9, kind="other",
                            stored=True, created_at=T0)
        cat.link(1, v, "meta", access="read", basis="fanotify")
        assert cat.run(1)["meta"][0]["access"] == "read"
    finally:
        cat.close()
    again = Catalog(store, readonly=True)  # and readers open it
    assert again.run(2)["inputs"][0]["path"] == "model.pt"
    again.close()


def test_meta_files_are_kept_apart_and_are_no_lineage(cat):
    run = new_run(cat)
    other = new_run(cat, started_at=T0 + 100)
    with cat.transaction():
        step = cat.add_step(run, pid=4243, ppid=4242, parent_step_id=None,
                            argv=["python", "train.py"], cwd=None, exe=None, started_at=T0)
        data = cat.add_version("data/train.csv", hash=H1, size=10, mtime_ns=1, kind="dataset",
                               stored=True, created_at=T0)
        ignore = cat.add_version(".gitignore", hash=H2, size=5, mtime_ns=1, kind="other",
                                 stored=True, created_at=T0)
        # the agent may give a meta file's version the run as producer: a meta write undoes it
        tag_a = cat.add_version("mlruns/0/r/meta.yaml", hash=H3, size=3, mtime_ns=2,
                                kind="config", stored=True, created_at=T0 + 1, run_id=run)
        tag_b = cat.add_version("mlruns/0/r/meta.yaml", hash=H1, size=4, mtime_ns=3,
                                kind="config", stored=True, created_at=T0 + 2)
        model = cat.add_version("model.pt", hash=H2, size=7, mtime_ns=4, kind="model",
                                stored=False, created_at=T0 + 3)
        cat.link(run, data, "input", step, basis="fanotify")
        cat.link(run, data, "input", None, basis="window")  # a second link, weaker basis
        cat.link(run, ignore, "meta", step, access="read", basis="fd")
        cat.link(run, tag_a, "meta", step, access="write", basis="fanotify")
        cat.link(run, tag_b, "meta", step, access="write", basis="fanotify")
        cat.link(run, tag_b, "meta", step, access="read", basis="fanotify")  # read back
        cat.link(run, model, "output", step, basis="argv")
        cat.link(other, tag_b, "meta", access="read", basis="rescan")
    r = cat.run(run)
    assert r["inputs"] == [{"path": "data/train.csv", "hash": H1, "size": 10, "kind": "dataset",
                            "basis": "fanotify"}]
    assert r["outputs"] == [{"path": "model.pt", "hash": H2, "size": 7, "kind": "model",
                             "basis": "argv"}]
    assert r["meta"] == [
        {"path": ".gitignore", "hash": H2, "size": 5, "kind": "other", "basis": "fd",
         "access": "read"},
        {"path": "mlruns/0/r/meta.yaml", "hash": H1, "size": 4, "kind": "config",
         "basis": "fanotify", "access": "write"},  # rewritten: its last version; no read back
    ]
    assert [x["meta"] for x in cat.runs() if x["id"] == run] == [r["meta"]]
    assert r["steps"][0]["inputs"] == ["data/train.csv"]  # meta is no step's input or output
    assert r["steps"][0]["outputs"] == ["model.pt"]
    # never producers, never writers: a meta write is no lineage
    assert cat.versions("mlruns/0/r/meta.yaml")[0]["run_id"] is None
    assert all(v["run_id"] is None for v in cat.versions("mlruns/0/r/meta.yaml"))
    assert cat.writers(H3) == [] and {w["path"] for w in cat.writers(H1)} == set()
    assert cat.versions("model.pt")[0]["run_id"] == run
    assert cat.run(other)["meta"][0]["access"] == "read" and cat.run(other)["inputs"] == []
    # a link made again keeps its strongest basis (a guess gives way to evidence, never
    # the other way), and fills one that was not known
    cat.link(run, model, "output", step, basis="window")
    plain = cat.add_version("b.csv", hash=H3, size=1, mtime_ns=1, kind="dataset",
                            stored=False, created_at=T0)
    cat.link(run, plain, "input")
    cat.link(run, plain, "input", basis="rescan")
    shared = cat.add_version("c.csv", hash=H1, size=1, mtime_ns=1, kind="dataset",
                             stored=False, created_at=T0)
    cat.link(run, shared, "input", basis="ambiguous")
    cat.link(run, shared, "input", basis="fd")
    got = {f["path"]: f["basis"] for f in cat.run(run)["inputs"] + cat.run(run)["outputs"]}
    assert got == {"b.csv": "rescan", "c.csv": "fd", "data/train.csv": "fanotify",
                   "model.pt": "argv"}
    # unlink picks the meta read or write
    cat.unlink(run, tag_b, "meta", step, access="read")
    assert cat._conn.execute("SELECT access FROM io WHERE run_id = ? AND version_id = ?",
                             (run, tag_b)).fetchall()[0][0] == "write"
    cat.unlink(run, tag_b, "meta", step)  # the write of the first content is left
    assert [(m["path"], m["hash"]) for m in cat.run(run)["meta"]] == [
        (".gitignore", H2), ("mlruns/0/r/meta.yaml", H3)]


def test_link_refuses_unknown_basis_and_missing_access(cat):
    run = new_run(cat)
    v = cat.add_version("a.txt", hash=H1, size=1, mtime_ns=1, kind="other", stored=False,
                        created_at=T0)
    with pytest.raises(ValueError, match="basis"):
        cat.link(run, v, "input", basis="guess")
    with pytest.raises(ValueError, match="access"):
        cat.link(run, v, "meta")
    with pytest.raises(ValueError, match="write"):
        cat.link(run, v, "input", access="write")
    cat.link(run, v, "output", access="write", basis="fd")  # the implied access is fine
    assert cat.run(run)["outputs"][0]["basis"] == "fd"
    with pytest.raises(StoreError):  # the schema holds the rule too
        cat._execute("INSERT INTO io (run_id, version_id, role, access) VALUES (?, ?,"
                     " 'input', 'write')", (run, v))


def test_resolve_run_reads_ids_last_and_nth_newest(cat):
    with pytest.raises(NoSuchRun, match="no runs yet"):
        cat.resolve_run("last")
    first = new_run(cat, started_at=T0)
    second = new_run(cat, started_at=T0 + 10)
    assert cat.resolve_run("last") == cat.resolve_run("-1") == second
    assert cat.resolve_run("-2") == first == cat.resolve_run(str(first)) == cat.resolve_run(first)
    with pytest.raises(NoSuchRun, match="only 2 runs"):
        cat.resolve_run("-3")
    with pytest.raises(NoSuchRun, match="no run 99"):
        cat.resolve_run("99")
    with pytest.raises(NoSuchRun, match="'best' is not a run"):
        cat.resolve_run("best")
