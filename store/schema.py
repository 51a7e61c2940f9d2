"""The catalog's schema as an ordered list of migrations, tracked in PRAGMA user_version."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from .errors import SchemaTooNew, SchemaTooOld

log = logging.getLogger(__name__)

# Migration N (1-based) brings a catalog from user_version N-1 to N. Never edit a
# released entry: append a new one.
MIGRATIONS: list[tuple[str, tuple[Any, ...]]] = [
    (
        "create everything",
        (
            """CREATE TABLE envs (
                id INTEGER PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,      -- blake3 of the canonical JSON
                data TEXT NOT NULL              -- JSON object
            )""",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                command TEXT NOT NULL,          -- JSON list (argv)
                cwd TEXT, exe TEXT,
                pid INTEGER, pid_start INTEGER, -- with pid, the process identity
                user TEXT, hostname TEXT,
                status TEXT NOT NULL,
                exit_code INTEGER, signal INTEGER,
                started_at REAL NOT NULL,       -- Unix seconds
                ended_at REAL,
                tier TEXT,
                env_id INTEGER REFERENCES envs(id),
                git_commit TEXT, git_branch TEXT, git_dirty INTEGER,
                git_diff TEXT,                  -- object hash of the diff, or NULL
                note TEXT
            )""",
            "CREATE INDEX runs_started ON runs(started_at DESC, id DESC)",
            "CREATE INDEX runs_status ON runs(status, started_at DESC)",
            """CREATE TABLE steps (
                id INTEGER PRIMARY KEY,
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                pid INTEGER, ppid INTEGER,
                parent_step_id INTEGER REFERENCES steps(id) ON DELETE SET NULL,
                argv TEXT NOT NULL,             -- JSON list
                cwd TEXT, exe TEXT,
                started_at REAL NOT NULL, ended_at REAL,
                status TEXT NOT NULL,
                exit_code INTEGER, signal INTEGER
            )""",
            "CREATE INDEX steps_run ON steps(run_id, started_at, id)",
            """CREATE TABLE assets (
                id INTEGER PRIMARY KEY,
                path TEXT NOT NULL UNIQUE,      -- project-relative posix, or absolute
                kind TEXT NOT NULL DEFAULT 'other'
            )""",
            # One row per content of an asset. run_id is the first run seen writing
            # it (NULL: a change no run made); every reader/writer is in io.
            """CREATE TABLE versions (
                id INTEGER PRIMARY KEY,
                asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
                hash TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                stored INTEGER NOT NULL DEFAULT 0,
                run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
                created_at REAL NOT NULL,       -- first seen, Unix seconds
                seen_at REAL NOT NULL,          -- last seen: a path back to old content
                UNIQUE (asset_id, hash)
            )""",
            "CREATE INDEX versions_hash ON versions(hash)",
            "CREATE INDEX versions_run ON versions(run_id)",
            "CREATE INDEX versions_seen ON versions(asset_id, seen_at)",
            """CREATE TABLE io (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                step_id INTEGER REFERENCES steps(id) ON DELETE SET NULL,
                version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('input', 'output', 'code'))
            )""",
            # Unique per step too, so two steps of a make pipeline may read one file.
            "CREATE UNIQUE INDEX io_unique ON io(run_id, version_id, role, ifnull(step_id, 0))",
            "CREATE INDEX io_version ON io(version_id, role)",
            "CREATE INDEX io_step ON io(step_id)",
            """CREATE TABLE params (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                key TEXT NOT NULL,
                value TEXT NOT NULL,            -- JSON
                source TEXT NOT NULL,
                PRIMARY KEY (run_id, key)
            ) WITHOUT ROWID""",
            """CREATE TABLE stat_cache (
                dev INTEGER NOT NULL, ino INTEGER NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (dev, ino)
            ) WITHOUT ROWID""",
        ),
    ),
]

MIGRATIONS += [
    (
        "telemetry: samples of each run's process tree",
        (
            # One row per sample, or per bucket once old samples are downsampled.
            """CREATE TABLE telemetry (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                t REAL NOT NULL,                -- Unix seconds: the sample, or the bucket start
                span REAL NOT NULL DEFAULT 0,   -- seconds the row covers (0: one raw sample)
                n INTEGER NOT NULL DEFAULT 1,   -- samples folded into the row
                data TEXT NOT NULL              -- JSON, see store/telemetry.py
            )""",
            "CREATE INDEX telemetry_run ON telemetry(run_id, t)",
        ),
    ),
    (
        "metrics: numbers runs left in files and logs",
        (
            """CREATE TABLE metrics (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                key TEXT NOT NULL,              -- e.g. summary.json:test.f1
                step REAL,                      -- NULL: a final value
                value REAL,                     -- NULL with `text` for NaN / inf
                text TEXT,
                source TEXT NOT NULL,           -- the file it was read from
                wall REAL                       -- Unix seconds, where the file says
            )""",
            "CREATE INDEX metrics_run ON metrics(run_id, key, step)",
        ),
    ),
]

MIGRATIONS += [
    (
        "io: the meta role (tools' files), read/write access, and the basis of attribution",
        (
            # SQLite cannot change a CHECK constraint in place: the table is made again
            # and every row copied. Nothing references io, so dropping it is safe.
            """CREATE TABLE io_new (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                step_id INTEGER REFERENCES steps(id) ON DELETE SET NULL,
                version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('input', 'output', 'code', 'meta')),
                -- read or write; follows the role except for meta, where it is the fact
                access TEXT NOT NULL CHECK (access IN ('read', 'write')
                    AND (role = 'meta' OR access = CASE role WHEN 'output' THEN 'write'
                                                             ELSE 'read' END)),
                -- how the file was given to the run: fanotify, fd, argv, window, rescan,
                -- ambiguous (store/records.py BASES); NULL where not known
                basis TEXT
            )""",
            """INSERT INTO io_new (run_id, step_id, version_id, role, access, basis)
               SELECT run_id, step_id, version_id, role,
                      CASE role WHEN 'output' THEN 'write' ELSE 'read' END, NULL FROM io""",
            "DROP TABLE io",
            "ALTER TABLE io_new RENAME TO io",
            "CREATE UNIQUE INDEX io_unique ON io(run_id, version_id, role, access,"
            " ifnull(step_id, 0))",
            "CREATE INDEX io_version ON io(version_id, role)",
            "CREATE INDEX io_step ON io(step_id)",
        ),
    ),
]



def _iso(column: str) -> str:
    """SQL for Unix seconds -> `2026-11-26T20:31:04.123Z`, exactly as records.iso
    writes it (truncated to the millisecond), so views and `--json` agree."""
    return (f"strftime('%Y-%m-%dT%H:%M:%S', CAST({column} AS INTEGER), 'unixepoch') ||"
            f" printf('.%03dZ', CAST(round(({column} - CAST({column} AS INTEGER)) * 1000000)"
            f" AS INTEGER) / 1000)")


# The strongest basis among a run's links of one file (records.BASES order).
_BASIS = (
    "CASE min(CASE io.basis WHEN 'fanotify' THEN 0 WHEN 'fd' THEN 1 WHEN 'argv' THEN 2"
    " WHEN 'window' THEN 3 WHEN 'rescan' THEN 4 WHEN 'ambiguous' THEN 5 END)"
    " WHEN 0 THEN 'fanotify' WHEN 1 THEN 'fd' WHEN 2 THEN 'argv' WHEN 3 THEN 'window'"
    " WHEN 4 THEN 'rescan' WHEN 5 THEN 'ambiguous' END"
)
# A version the run itself wrote is no input of it (records.group_files says why).
_NOT_WRITTEN_BY_IT = (
    "NOT EXISTS (SELECT 1 FROM io w WHERE w.run_id = io.run_id AND"
    " w.version_id = io.version_id AND w.access = 'write')"
)


def _reads(role: str) -> str:
    return (
        f"SELECT io.run_id AS run_id, a.path AS path, v.hash AS hash, v.size AS size,"
        f" a.kind AS kind, {_BASIS} AS basis"
        f" FROM io JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
        f" WHERE io.role = '{role}' AND {_NOT_WRITTEN_BY_IT}"
        f" GROUP BY io.run_id, io.version_id"
    )


# Migration 5's views: the documented SQL contract (docs/user-guide.md, "SQL over the
# catalog"). They are named v_* in the file, beside the tables they read; `onlooker sql`
# also offers them under their plain names (store/views.py). Frozen like every released
# migration: a change is a new migration that drops and re-creates the view.
V5_VIEWS: dict[str, str] = {
    "runs": (
        "SELECT r.id AS run_id, r.command AS command,"
        " (SELECT group_concat(j.value, ' ') FROM json_each(r.command) j) AS command_line,"
        " r.cwd AS cwd, r.exe AS exe, r.status AS status, r.exit_code AS exit_code,"
        f" r.signal AS signal, {_iso('r.started_at')} AS started_at,"
        f" {_iso('r.ended_at')} AS ended_at, r.ended_at - r.started_at AS duration,"
        " r.pid AS pid, r.user AS user, r.hostname AS hostname, r.tier AS tier,"
        " r.git_commit AS git_commit, r.git_branch AS git_branch, r.git_dirty AS git_dirty,"
        " r.note AS note FROM runs r"
    ),
    "params": (
        "SELECT run_id, key,"
        " CASE WHEN json_valid(value) THEN json_extract(value, '$') ELSE value END AS value,"
        " value AS value_json, source FROM params"
    ),
    "metrics": (
        "SELECT run_id, key, step, value, text, source, wall FROM metrics"
    ),
    "inputs": _reads("input"),
    "code": _reads("code"),
    "outputs": (
        "SELECT io.run_id AS run_id, a.path AS path, v.hash AS hash, v.size AS size,"
        f" a.kind AS kind, {_BASIS} AS basis,"
        " io.version_id = (SELECT max(w.version_id) FROM io w JOIN versions wv"
        " ON wv.id = w.version_id WHERE w.run_id = io.run_id AND w.role = 'output'"
        " AND wv.asset_id = v.asset_id) AS is_last"
        " FROM io JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
        " WHERE io.role = 'output' GROUP BY io.run_id, io.version_id"
    ),
    "steps": (
        "SELECT s.id AS step_id, s.run_id AS run_id, s.parent_step_id AS parent_step_id,"
        " s.pid AS pid, s.ppid AS ppid, s.argv AS argv, s.cwd AS cwd, s.exe AS exe,"
        f" {_iso('s.started_at')} AS started_at, {_iso('s.ended_at')} AS ended_at,"
        " s.ended_at - s.started_at AS duration, s.status AS status,"
        " s.exit_code AS exit_code, s.signal AS signal FROM steps s"
    ),
    "versions": (
        "SELECT a.path AS path, v.hash AS hash, v.size AS size, a.kind AS kind,"
        " v.stored AS stored, v.run_id AS run_id, "
        f"{_iso('v.created_at')} AS created_at, {_iso('v.seen_at')} AS seen_at"
        " FROM versions v JOIN assets a ON a.id = v.asset_id"
    ),
    # One row per (run that wrote a version, run that later read it): the graph of runs
    # through the versions between them. A read of a version no run wrote (raw data)
    # has from_run_id NULL. Meta files are never lineage; code reads say role 'code'.
    "lineage_edges": (
        "WITH producers AS ("
        " SELECT version_id, run_id FROM io WHERE role = 'output'"
        " UNION SELECT v.id, v.run_id FROM versions v WHERE v.run_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM io m WHERE m.version_id = v.id AND m.run_id = v.run_id"
        " AND m.role = 'meta')),"
        " reads AS (SELECT DISTINCT io.run_id, io.version_id, io.role FROM io"
        f" WHERE io.role IN ('input', 'code') AND {_NOT_WRITTEN_BY_IT})"
        " SELECT p.run_id AS from_run_id, rd.run_id AS to_run_id, a.path AS path,"
        " v.hash AS hash, rd.role AS role"
        " FROM reads rd JOIN versions v ON v.id = rd.version_id"
        " JOIN assets a ON a.id = v.asset_id JOIN runs c ON c.id = rd.run_id"
        " LEFT JOIN (SELECT pp.version_id, pp.run_id, pr.started_at FROM producers pp"
        " JOIN runs pr ON pr.id = pp.run_id) p"
        # a run cannot have read what a run started after it wrote
        " ON p.version_id = rd.version_id AND p.started_at <= c.started_at"
    ),
    "tags": f"SELECT run_id, name, {_iso('created_at')} AS tagged_at FROM tags",
    "notes": "SELECT id AS run_id, note AS text FROM runs WHERE note IS NOT NULL",
}
V5_VIEW_PREFIX = "v_"

MIGRATIONS += [
    (
        "tags and notes on runs, and the SQL views",
        (
            # A label a person puts on runs; one name may be on many runs. Notes live in
            # runs.note (there since schema 1): one per run, replaced in place.
            """CREATE TABLE tags (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                created_at REAL NOT NULL,       -- Unix seconds the tag was put on
                PRIMARY KEY (run_id, name)
            ) WITHOUT ROWID""",
            "CREATE INDEX tags_name ON tags(name, run_id)",
            *(f"CREATE VIEW {V5_VIEW_PREFIX}{name} AS {body}" for name, body in V5_VIEWS.items()),
        ),
    ),
]

MIGRATIONS += [
    (
        "run_origin: where an imported run came from (onlooker import)",
        (
            # One row per run that `onlooker import` brought in; local runs have none.
            # uid is the run's identity across projects (store/share.py run_uid), so a
            # second import of the same archive finds the run already here. IF NOT
            # EXISTS: a catalog hand-lowered to an older user_version keeps the table.
            """CREATE TABLE IF NOT EXISTS run_origin (
                run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
                uid TEXT NOT NULL UNIQUE,
                host TEXT,                      -- the exporting machine
                project TEXT,                   -- the exporting project's folder
                source_id INTEGER,              -- the run's id there
                exported_at REAL,               -- Unix seconds
                imported_at REAL NOT NULL,
                onlooker_version TEXT           -- of the exporting onlooker
            )""",
        ),
    ),
]
ORIGIN_SINCE = len(MIGRATIONS)  # the schema version that made run_origin (6)


def _add_column(table: str, column: str, decl: str) -> Callable[[sqlite3.Connection], None]:
    """ALTER TABLE ADD COLUMN unless the column is there (SQLite has no IF NOT EXISTS for
    columns; a catalog hand-lowered to an older user_version keeps them)."""
    def apply(conn: sqlite3.Connection) -> None:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    return apply


MIGRATIONS += [
    (
        "notebooks: cells as steps, and the notebook a kernel run serves",
        (
            # A cell a Jupyter kernel executed is a step of the kernel's run: its execution
            # count and source (NULL for a process step). Added columns, so every older
            # read of steps stays as it was.
            _add_column("steps", "cell", "INTEGER"),
            _add_column("steps", "source", "TEXT"),
            # The project notebook a kernel run executes (project-relative), and how it
            # was found (agent/assembly/kernel.py FOUND_BY); NULL for other runs.
            _add_column("runs", "notebook", "TEXT"),
            _add_column("runs", "notebook_via", "TEXT"),
        ),
    ),
]
NOTEBOOK_SINCE = len(MIGRATIONS)  # the schema version that made cells and notebooks (7)

LATEST = len(MIGRATIONS)
# The oldest schema a read-only open still reads: migration 5 only adds what readers do
# without (no tags yet, no views), so a CLI reading a catalog the agent has not migrated
# yet keeps working. A migration that changes what readers rely on raises this.
READABLE_FROM = 4


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check(conn: sqlite3.Connection, where: str, *, readonly: bool) -> int:
    """The catalog's schema version; raise if this onlooker cannot use it."""
    found = version(conn)
    if found > LATEST:
        raise SchemaTooNew(
            f"the catalog at {where} has schema version {found}, newer than this onlooker "
            f"understands ({LATEST}): upgrade onlooker"
        )
    if readonly and found < READABLE_FROM:
        raise SchemaTooOld(
            f"the catalog at {where} has schema version {found} and needs upgrading to "
            f"{LATEST}: run `onlooker start` (or any writing command) once"
        )
    return found


def require(found: int, needed: int, where: str, what: str) -> None:
    """Raise SchemaTooOld when a reader that accepted an older schema (READABLE_FROM)
    asks for something a later migration adds."""
    if found < needed:
        raise SchemaTooOld(
            f"the catalog at {where} has schema version {found}, and {what} needs version "
            f"{needed}: run `onlooker start` (or any writing command, such as `onlooker tag`)"
            " once to upgrade it"
        )


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Apply pending migrations, each in its own IMMEDIATE transaction; idempotent.

    Safe against a second process migrating at the same time: the version is
    re-read under the write lock.
    """
    while True:
        if check(conn, where, readonly=False) >= LATEST:
            return LATEST
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = check(conn, where, readonly=False)
            if current >= LATEST:
                conn.execute("COMMIT")
                return LATEST
            name, statements = MIGRATIONS[current]
            for sql in statements:
                if callable(sql):  # a step that looks before it changes (_add_column)
                    sql(conn)
                else:
                    conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("catalog %s migrated to schema %d (%s)", where, current + 1, name)
