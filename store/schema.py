"""The catalog's schema as an ordered list of migrations, tracked in PRAGMA user_version."""

from __future__ import annotations

import logging
import sqlite3

from .errors import SchemaTooNew, SchemaTooOld

log = logging.getLogger(__name__)

# Migration N (1-based) brings a catalog from user_version N-1 to N. Never edit a
# released entry: append a new one.
MIGRATIONS: list[tuple[str, tuple[str, ...]]] = [
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

LATEST = len(MIGRATIONS)


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
    if readonly and found < LATEST:
        raise SchemaTooOld(
            f"the catalog at {where} has schema version {found} and needs upgrading to "
            f"{LATEST}: run `onlooker start` (or any writing command) once"
        )
    return found


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
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("catalog %s migrated to schema %d (%s)", where, current + 1, name)
