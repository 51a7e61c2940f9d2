"""SQL views (migration 5): columns and values of each, read-only queries, old catalogs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from onlooker.store import schema, views
from onlooker.store.catalog import Catalog
from onlooker.store.errors import SchemaTooOld, StoreError
from onlooker.store.views import QueryError, ReadOnlyQuery

H = {n: "blake3:" + str(n) * 64 for n in range(1, 9)}
T0 = 1_795_000_000.0

# The contract (docs/user-guide.md, "SQL over the catalog"): names and order of columns.
COLUMNS = {
    "runs": ["run_id", "command", "command_line", "cwd", "exe", "status", "exit_code",
             "signal", "started_at", "ended_at", "duration", "pid", "user", "hostname", "tier",
             "git_commit", "git_branch", "git_dirty", "note"],
    "params": ["run_id", "key", "value", "value_json", "source"],
    "metrics": ["run_id", "key", "step", "value", "text", "source", "wall"],
    "inputs": ["run_id", "path", "hash", "size", "kind", "basis"],
    "code": ["run_id", "path", "hash", "size", "kind", "basis"],
    "outputs": ["run_id", "path", "hash", "size", "kind", "basis", "is_last"],
    "steps": ["step_id", "run_id", "parent_step_id", "pid", "ppid", "argv", "cwd", "exe",
              "started_at", "ended_at", "duration", "status", "exit_code", "signal"],
    "versions": ["path", "hash", "size", "kind", "stored", "run_id", "created_at", "seen_at"],
    "lineage_edges": ["from_run_id", "to_run_id", "path", "hash", "role"],
    "tags": ["run_id", "name", "tagged_at"],
    "notes": ["run_id", "text"],
}


def _run(cat, started_at, argv):
    return cat.begin_run(command=argv, cwd=str(cat.project), exe="/usr/bin/python3", pid=4242,
                         pid_start=int(started_at), user="ana", hostname="box",
                         started_at=started_at, tier="netlink")


def build(cat) -> dict[str, int]:
    """A two-stage pipeline: prep reads raw data and writes clean data (twice), train
    reads it and its code and writes a model; both touch tool files (meta)."""
    root = cat.project
    prep = _run(cat, T0, ["python", "prep.py", "data/raw.csv"])
    train = _run(cat, T0 + 100, ["python", "train.py", "--lr", "0.1"])
    early = _run(cat, T0 - 50, ["python", "peek.py"])  # read the clean data before prep ran
    with cat.transaction():
        step = cat.add_step(prep, pid=4242, ppid=1, parent_step_id=None,
                            argv=["python", "prep.py", "data/raw.csv"], cwd=str(root),
                            exe=None, started_at=T0 + 0.5)
        child = cat.add_step(prep, pid=4243, ppid=4242, parent_step_id=step,
                             argv=["sort", "data/raw.csv"], cwd=str(root), exe="/usr/bin/sort",
                             started_at=T0 + 1)
        cat.update_step(child, status="completed", exit_code=0, ended_at=T0 + 1.25)
        raw = cat.add_version(str(root / "data/raw.csv"), hash=H[1], size=100, mtime_ns=1,
                              kind="dataset", stored=True, created_at=T0 - 1000)
        clean1 = cat.add_version("data/clean.csv", hash=H[2], size=50, mtime_ns=2,
                                 kind="dataset", stored=True, created_at=T0 + 2)
        clean2 = cat.add_version("data/clean.csv", hash=H[3], size=60, mtime_ns=3,
                                 kind="dataset", stored=True, created_at=T0 + 3)
        code = cat.add_version("train.py", hash=H[4], size=20, mtime_ns=4, kind="code",
                               stored=True, created_at=T0 - 1000)
        model = cat.add_version("model.pt", hash=H[5], size=9000, mtime_ns=5, kind="model",
                                stored=False, created_at=T0 + 110)
        gitfile = cat.add_version(".git/index", hash=H[6], size=7, mtime_ns=6, kind="other",
                                  stored=False, created_at=T0 + 5)
        cat.link(prep, raw, "input", step, basis="argv")
        cat.link(prep, raw, "input", child, basis="fanotify")  # the stronger basis wins
        cat.link(prep, clean1, "output", child, basis="fd")
        cat.link(prep, clean2, "output", child, basis="fd")
        cat.link(prep, gitfile, "meta", access="write")
        cat.link(train, clean2, "input", basis="fd")
        cat.link(train, code, "code", basis="argv")
        cat.link(train, model, "output", basis="fd")
        cat.link(train, gitfile, "meta", access="read")
        cat.link(early, clean2, "input", basis="window")
        cat.set_params(train, {"lr": (0.1, "argv"), "epochs": (3, "argv"),
                               "name": ("run a", "argv"), "amp": (True, "argv"),
                               "none": (None, "argv"), "layers": ([64, 32], "cfg.yaml")})
        cat.set_metrics(train, "metrics.json", [("acc", None, 0.9, None), ("loss", 1, 0.5, None),
                                                ("loss", 2, float("nan"), None, T0 + 120)])
        cat.update_run(prep, status="completed", exit_code=0, ended_at=T0 + 10.25,
                       git_commit="abc", git_branch="main", git_dirty=True)
        cat.update_run(train, status="failed", exit_code=3, ended_at=T0 + 160)
    cat.tag(train, "best", "baseline")
    cat.set_note(train, "lr too high,\nsee \"notes\"")
    return {"prep": prep, "train": train, "early": early, "step": step, "child": child}


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def q(cat, sql, *params):
    return cat.sql(sql, params)[1]


def test_every_view_is_in_the_file_and_has_its_documented_columns(cat):
    build(cat)
    names = {r[0] for r in cat._conn.execute("SELECT name FROM sqlite_master WHERE"
                                             " type = 'view'")}
    assert names == {f"v_{n}" for n in COLUMNS}
    assert set(views.VIEWS) == set(COLUMNS)
    for name, columns in COLUMNS.items():
        assert cat.sql(f"SELECT * FROM {name}")[0] == columns, name
        # the file's own view (what sqlite-utils, datasette and pandas see) is the same
        got = cat._conn.execute(f"SELECT * FROM v_{name}")
        assert [d[0] for d in got.description] == columns


def test_runs_view_matches_the_json_contract(cat):
    ids = build(cat)
    rows = {r[0]: r for r in q(cat, "SELECT * FROM runs")}
    assert set(rows) == {ids["prep"], ids["train"], ids["early"]}
    for run in cat.runs():
        row = dict(zip(COLUMNS["runs"], rows[run["id"]], strict=True))
        assert row["started_at"] == run["started_at"] and row["ended_at"] == run["ended_at"]
        assert row["status"] == run["status"] and row["exit_code"] == run["exit_code"]
        assert row["note"] == run["note"]
        assert row["command_line"] == " ".join(run["command"])
    train = dict(zip(COLUMNS["runs"], rows[ids["train"]], strict=True))
    assert train["command"] == '["python","train.py","--lr","0.1"]'
    assert train["duration"] == 60 and train["exit_code"] == 3
    prep = dict(zip(COLUMNS["runs"], rows[ids["prep"]], strict=True))
    assert (prep["git_commit"], prep["git_branch"], prep["git_dirty"]) == ("abc", "main", 1)
    assert prep["duration"] == 10.25 and prep["started_at"] == "2026-11-18T11:06:40.000Z"


def test_params_are_sql_values_with_their_json_beside(cat):
    ids = build(cat)
    got = {r[1]: r[2:] for r in q(cat, "SELECT * FROM params WHERE run_id = ?", ids["train"])}
    assert got == {"lr": (0.1, "0.1", "argv"), "epochs": (3, "3", "argv"),
                   "name": ("run a", '"run a"', "argv"), "amp": (1, "true", "argv"),
                   "none": (None, "null", "argv"), "layers": ("[64,32]", "[64,32]", "cfg.yaml")}
    assert q(cat, "SELECT run_id FROM params WHERE key = 'lr' AND value > 0.05") == [
        (ids["train"],)]


def test_metrics_keep_steps_and_non_finite_values_apart(cat):
    ids = build(cat)
    got = q(cat, "SELECT run_id, key, step, value, text, source, wall FROM metrics"
                 " ORDER BY key, step")
    assert got == [(ids["train"], "acc", None, 0.9, None, "metrics.json", None),
                   (ids["train"], "loss", 1.0, 0.5, None, "metrics.json", None),
                   (ids["train"], "loss", 2.0, None, "nan", "metrics.json", T0 + 120)]


def test_file_views_agree_with_the_run_dicts_and_leave_meta_out(cat):
    ids = build(cat)
    for run_id in ids.values():
        try:
            run = cat.run(run_id)
        except StoreError:
            continue  # a step id, not a run
        for view, key in (("inputs", "inputs"), ("code", "code")):
            rows = q(cat, f"SELECT path, hash, size, kind, basis FROM {view} WHERE run_id = ?"
                          " ORDER BY path", run_id)
            assert rows == [(f["path"], f["hash"], f["size"], f["kind"], f["basis"])
                            for f in run[key]], (view, run_id)
        last = q(cat, "SELECT path, hash, size, kind, basis FROM outputs WHERE run_id = ?"
                      " AND is_last ORDER BY path", run_id)
        assert last == [(f["path"], f["hash"], f["size"], f["kind"], f["basis"])
                        for f in run["outputs"]]
    # every version written is there; is_last marks the one `show` lists
    assert q(cat, "SELECT hash, is_last FROM outputs WHERE path = 'data/clean.csv'"
                  " ORDER BY hash") == [(H[2], 0), (H[3], 1)]
    assert q(cat, "SELECT basis FROM inputs WHERE path = 'data/raw.csv'") == [("fanotify",)]
    for view in ("inputs", "code", "outputs", "lineage_edges"):
        assert q(cat, f"SELECT count(*) FROM {view} WHERE path = '.git/index'") == [(0,)]
    assert q(cat, "SELECT count(*) FROM versions WHERE path = '.git/index'") == [(1,)]


def test_lineage_edges_join_writers_to_later_readers(cat):
    ids = build(cat)
    got = set(q(cat, "SELECT * FROM lineage_edges"))
    assert got == {
        (None, ids["prep"], "data/raw.csv", H[1], "input"),  # raw data: no run wrote it
        (ids["prep"], ids["train"], "data/clean.csv", H[3], "input"),
        (None, ids["train"], "train.py", H[4], "code"),
        # read before prep started: prep cannot be where it came from
        (None, ids["early"], "data/clean.csv", H[3], "input"),
    }
    upstream = q(cat, "WITH RECURSIVE up(id) AS (SELECT ? UNION SELECT e.from_run_id FROM"
                      " lineage_edges e JOIN up ON e.to_run_id = up.id WHERE e.from_run_id IS"
                      " NOT NULL) SELECT id FROM up ORDER BY id", ids["train"])
    assert upstream == sorted([(ids["prep"],), (ids["train"],)])


def test_steps_versions_tags_notes(cat):
    ids = build(cat)
    steps = q(cat, "SELECT step_id, run_id, parent_step_id, argv, exe, duration, status,"
                   " exit_code FROM steps ORDER BY step_id")
    assert steps == [(ids["step"], ids["prep"], None, '["python","prep.py","data/raw.csv"]',
                      None, None, "running", None),
                     (ids["child"], ids["prep"], ids["step"], '["sort","data/raw.csv"]',
                      "/usr/bin/sort", 0.25, "completed", 0)]
    versions = {(r[0], r[1]): r[2:] for r in q(cat, "SELECT * FROM versions")}
    assert versions[("data/clean.csv", H[3])][:4] == (60, "dataset", 1, ids["prep"])
    assert versions[("model.pt", H[5])][:4] == (9000, "model", 0, ids["train"])
    assert versions[("data/raw.csv", H[1])][3] is None
    assert versions[("model.pt", H[5])][4:] == (cat.versions("model.pt")[0]["created_at"],
                                                 cat.versions("model.pt")[0]["seen_at"])
    assert [r[:2] for r in q(cat, "SELECT * FROM tags ORDER BY name")] == [
        (ids["train"], "baseline"), (ids["train"], "best")]
    assert q(cat, "SELECT * FROM notes") == [(ids["train"], 'lr too high,\nsee "notes"')]


def test_plain_names_are_the_views_and_main_names_the_tables(cat):
    build(cat)
    assert cat.sql("SELECT * FROM runs LIMIT 1")[0][0] == "run_id"
    assert cat.sql("SELECT * FROM main.runs LIMIT 1")[0][0] == "id"
    assert cat.sql("SELECT * FROM v_runs LIMIT 1")[0][0] == "run_id"
    # SQLite looks up temp before main: checked on a bare file, without our views
    path = cat.store_dir / "bare.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER)")
    conn.execute("INSERT INTO runs VALUES (7)")
    conn.commit()
    conn.execute("CREATE TEMP VIEW runs AS SELECT id * 10 AS x FROM main.runs")
    assert conn.execute("SELECT * FROM runs").fetchall() == [(70,)]
    conn.close()


@pytest.mark.parametrize("sql", [
    "DELETE FROM runs", "DELETE FROM main.runs", "UPDATE main.runs SET status = 'x'",
    "INSERT INTO main.tags VALUES (1, 'x', 0)", "DROP TABLE main.runs", "DROP VIEW v_runs",
    "CREATE TABLE t (a)", "CREATE TEMP TABLE t (a)", "PRAGMA query_only = 0",
    "PRAGMA user_version = 1", "BEGIN", "VACUUM", "REINDEX",
    "WITH x AS (SELECT 1) DELETE FROM main.runs", "UPDATE sqlite_master SET name = 'x'",
])
def test_writes_are_refused_in_one_sentence(cat, sql):
    build(cat)
    before = cat._conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    with pytest.raises(ReadOnlyQuery, match="only reads") as info:
        cat.sql(sql)
    assert "\n" not in str(info.value)
    assert cat._conn.execute("SELECT count(*) FROM runs").fetchone()[0] == before
    assert schema.version(cat._conn) == schema.LATEST


def test_attach_and_vacuum_into_make_no_file(cat, tmp_path):
    for sql in (f"ATTACH '{tmp_path / 'new.db'}' AS x", f"VACUUM INTO '{tmp_path / 'copy.db'}'"):
        with pytest.raises(ReadOnlyQuery):
            cat.sql(sql)
    assert not (tmp_path / "new.db").exists() and not (tmp_path / "copy.db").exists()


def test_read_only_helpers_and_sql_errors_are_sentences(cat):
    build(cat)
    assert [r[1] for r in q(cat, "PRAGMA table_info(runs)")][:2] == ["run_id", "command"]
    assert q(cat, "SELECT count(*) FROM json_each('[1,2,3]')") == [(3,)]
    assert q(cat, "SELECT 1e999, x'00ff'") == [("inf", "00ff")]
    for sql, match in (("SELEC 1", "syntax error"), ("SELECT nope FROM runs", "no such column"),
                       ("SELECT * FROM nowhere", "no such table"), ("  ", "empty"),
                       ("SELECT 1; SELECT 2", "one statement")):
        with pytest.raises(QueryError, match=match) as info:
            cat.sql(sql)
        assert not isinstance(info.value, ReadOnlyQuery) and "\n" not in str(info.value)


def test_unique_names_and_records():
    assert views.unique_names(["run_id", "key", "run_id", "run_id_2"]) == [
        "run_id", "key", "run_id_2", "run_id_2_2"]
    assert views.records(["a", "a"], [(1, 2)]) == [{"a": 1, "a_2": 2}]


def test_sql_reads_beside_an_open_write_transaction(cat):
    ids = build(cat)
    writer = sqlite3.connect(cat.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET status = 'x'")
    try:  # WAL: the reader sees the last commit and is not blocked
        assert ("failed",) in q(cat, "SELECT status FROM runs WHERE run_id = ?", ids["train"])
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# ---- older catalogs ------------------------------------------------------------------------
def v4_catalog(store: Path) -> dict[str, list[tuple]]:
    """A catalog as schema 4 left it, filled through the schema itself; returns every
    table's rows."""
    store.mkdir(parents=True)
    (store / "objects").mkdir()
    conn = sqlite3.connect(store / "catalog.db")
    conn.execute("PRAGMA journal_mode = WAL")
    for _, statements in schema.MIGRATIONS[:4]:
        for sql in statements:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 4")
    conn.executescript(f"""
        INSERT INTO envs (id, hash, data) VALUES (1, 'h', '{{"python": "3.11"}}');
        INSERT INTO runs (id, command, cwd, pid, pid_start, hostname, status, exit_code,
                          started_at, ended_at, tier, env_id, note)
            VALUES (1, '["python","prep.py"]', '/p', 10, 1, 'box', 'completed', 0,
                    {T0}, {T0 + 5}, 'netlink', 1, 'kept'),
                   (2, '["python","train.py"]', '/p', 11, 1, 'box', 'failed', 1,
                    {T0 + 10}, {T0 + 12}, 'poll', NULL, NULL);
        INSERT INTO steps (id, run_id, pid, ppid, argv, started_at, status)
            VALUES (1, 1, 10, 1, '["python","prep.py"]', {T0}, 'completed');
        INSERT INTO assets (id, path, kind) VALUES (1, 'data/raw.csv', 'dataset'),
            (2, 'data/clean.csv', 'dataset'), (3, '.dvc/tmp/lock', 'other');
        INSERT INTO versions (id, asset_id, hash, size, mtime_ns, stored, run_id, created_at,
                              seen_at)
            VALUES (1, 1, '{H[1]}', 10, 1, 1, NULL, {T0}, {T0}),
                   (2, 2, '{H[2]}', 20, 2, 1, 1, {T0 + 3}, {T0 + 3}),
                   (3, 3, '{H[3]}', 1, 3, 0, NULL, {T0 + 1}, {T0 + 1});
        INSERT INTO io (run_id, step_id, version_id, role, access, basis) VALUES
            (1, 1, 1, 'input', 'read', 'fd'), (1, 1, 2, 'output', 'write', 'fd'),
            (1, NULL, 3, 'meta', 'write', 'window'), (2, NULL, 2, 'input', 'read', 'argv');
        INSERT INTO params (run_id, key, value, source) VALUES (2, 'lr', '0.1', 'argv');
        INSERT INTO metrics (run_id, key, step, value, source) VALUES
            (2, 'metrics.json:acc', NULL, 0.9, 'metrics.json');
        INSERT INTO telemetry (run_id, t, data) VALUES (1, {T0 + 1}, '{{"cpu": 1.0}}');
        INSERT INTO stat_cache VALUES (1, 2, 10, 1, '{H[1]}');
    """)
    conn.commit()
    rows = _tables(conn)
    conn.close()
    return rows


def _tables(conn, added: dict[str, int] | None = None) -> dict[str, list[tuple]]:
    """Every table's rows; `added`: table -> columns later migrations appended (cut off,
    and checked to be NULL)."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    out = {}
    for t in names:
        rows = [tuple(r) for r in conn.execute(f"SELECT * FROM {t}")]
        cut = (added or {}).get(t, 0)
        if cut:
            assert all(v is None for r in rows for v in r[-cut:]), t
            rows = [r[:-cut] for r in rows]
        out[t] = sorted(repr(r) for r in rows)
    return out


def test_a_v4_catalog_is_read_as_it_is_and_migrates_keeping_every_row(tmp_path):
    store = tmp_path / ".onlooker"
    before = v4_catalog(store)
    with Catalog(store, readonly=True) as old:  # the CLI reads it before the agent migrates
        assert old.schema_version == 4
        assert [(r["id"], r["tags"], r["note"]) for r in old.runs()] == [
            (2, [], None), (1, [], "kept")]
        assert old.run(1)["outputs"][0]["path"] == "data/clean.csv"
        assert old.resolve_run("last") == 2
        with pytest.raises(SchemaTooOld, match="version 4.*`onlooker start`"):
            old.sql("SELECT * FROM runs")
        with pytest.raises(StoreError, match="read-only"):
            old.tag(1, "x")
    conn = sqlite3.connect(store / "catalog.db")
    assert schema.version(conn) == 4 and _tables(conn) == before  # the reader changed nothing
    conn.close()
    with Catalog(store) as cat:  # a writer migrates
        assert cat.schema_version == schema.LATEST
        after = _tables(cat._conn, added={"runs": 2, "steps": 2})  # schema 7: notebooks
        assert after.pop("tags") == []
        assert after.pop("run_origin") == []
        assert after == before
        assert q(cat, "SELECT run_id, note FROM runs ORDER BY run_id") == [(1, "kept"),
                                                                            (2, None)]
        assert q(cat, "SELECT from_run_id, to_run_id, path FROM lineage_edges ORDER BY 2") == [
            (None, 1, "data/raw.csv"), (1, 2, "data/clean.csv")]
        assert cat.tag(2, "first") == ["first"]


def test_a_v3_catalog_still_needs_a_writer_first(tmp_path):
    store = tmp_path / ".onlooker"
    store.mkdir()
    conn = sqlite3.connect(store / "catalog.db")
    for _, statements in schema.MIGRATIONS[:3]:
        for sql in statements:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooOld, match="needs upgrading"):
        Catalog(store, readonly=True)


# ---- other readers of the file -------------------------------------------------------------
def test_sqlite_utils_reads_the_views_from_the_file(cat):
    import sqlite_utils

    ids = build(cat)
    db = sqlite_utils.Database(cat.path)
    try:
        assert {f"v_{n}" for n in COLUMNS} <= set(db.view_names())
        train = next(r for r in db["v_runs"].rows if r["run_id"] == ids["train"])
        assert train["status"] == "failed" and train["note"].startswith("lr too high")
        lr = list(db.query("SELECT value FROM v_params WHERE key = 'lr'"))
        assert lr == [{"value": 0.1}]
    finally:
        db.close()


def test_pandas_reads_the_views_from_the_file(cat):
    pd = pytest.importorskip("pandas")
    ids = build(cat)
    conn = sqlite3.connect(f"file:{cat.path}?mode=ro", uri=True)
    try:
        frame = pd.read_sql_query("SELECT * FROM v_metrics WHERE key = 'loss' ORDER BY step",
                                  conn)
        assert list(frame.columns) == COLUMNS["metrics"]
        assert frame["run_id"].tolist() == [ids["train"]] * 2
    finally:
        conn.close()
