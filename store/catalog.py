"""The project catalog: runs, steps, asset versions, io, params and envs in SQLite."""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import records, schema, views
from .diff import diff_runs
from .errors import NoSuchRun, NotInitialized, StoreError, sqlite_error
from .metrics import MetricsMixin
from .objects import ObjectStore, hash_bytes
from .private import Owner, make_dir, open_private
from .tags import TagsMixin
from .telemetry import TelemetryMixin

log = logging.getLogger(__name__)

STORE_DIR = ".onlooker"
CATALOG_NAME = "catalog.db"
OBJECTS_NAME = "objects"
BUSY_TIMEOUT_MS = 10_000
# Asset ids the agent wrote lately (path -> (id, kind)), so that a new version of a
# known file costs one statement; bounded, as a project may hold millions of files
# (about 120 bytes an entry: 50,000 of them are 6 MB of the agent's memory).
_ASSET_IDS_MAX = 50_000

_RUN_FIELDS = {"status", "exit_code", "signal", "ended_at", "env_id", "git_commit", "git_branch",
               "git_dirty", "git_diff", "command", "note", "cwd", "exe", "tier",
               "notebook", "notebook_via"}  # notebook*: schema 7 (kernel runs)
_STEP_FIELDS = {"status", "exit_code", "signal", "ended_at", "argv", "cwd", "exe",
                "parent_step_id", "cell", "source", "started_at"}  # cell, source: schema 7
_JSON_FIELDS = {"command", "argv"}
_NTH_NEWEST = re.compile(r"-([1-9][0-9]*)")
_FILES_SQL = (
    "SELECT DISTINCT io.run_id, io.role, io.access, io.basis, a.path, v.hash, v.size, a.kind,"
    " v.id AS vid"
    " FROM io JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
)


_text = records.safe_text


class _Transaction:
    """`Catalog.transaction()`: a plain context manager, not a generator one, because the
    agent enters it a few times per file it records (a joined one costs 0.2 us instead
    of 1 us). Its state is the catalog's, so one instance serves every use."""

    __slots__ = ("_cat",)

    def __init__(self, cat: Catalog) -> None:
        self._cat = cat

    def __enter__(self) -> None:
        cat = self._cat
        cat._lock.acquire()
        if cat._depth:
            cat._depth += 1
            return
        try:
            cat._execute("BEGIN IMMEDIATE")
        except BaseException:
            cat._lock.release()
            raise
        cat._depth = 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        cat = self._cat
        try:
            if cat._depth > 1:
                cat._depth -= 1
                return False
            cat._depth = 0
            if exc_type is None:
                cat._execute("COMMIT")
                return False
            cat._asset_ids.clear()  # ids made in this transaction are gone with it
            cat._fresh_version = None
            if cat._conn.in_transaction:  # SQLite may have rolled back already
                cat._conn.execute("ROLLBACK")
            return False
        finally:
            cat._lock.release()


@functools.cache  # (built once per column: link() runs once per file)
def _rank(column: str) -> str:
    """SQL: a basis's strength, records.BASES order (lower is stronger), NULL last."""
    whens = " ".join(f"WHEN '{b}' THEN {i}" for i, b in enumerate(records.BASES))
    return f"(CASE {column} {whens} ELSE {len(records.BASES)} END)"


class Catalog(TelemetryMixin, MetricsMixin, TagsMixin):
    """One project's catalog. The agent's assembler is its only writer; any number of
    readers (CLI, notebooks) may open it at once, read-only, without blocking it."""

    def __init__(self, store_dir: Path, *, project: Path | None = None,
                 readonly: bool = False) -> None:
        self.store_dir = Path(os.path.abspath(store_dir))
        self.project = Path(os.path.abspath(project if project is not None
                                            else self.store_dir.parent))
        self.path = self.store_dir / CATALOG_NAME
        self.readonly = readonly
        self._roots = {str(self.project), os.path.realpath(self.project)}
        self._lock = threading.RLock()
        self._depth = 0
        self._txn = _Transaction(self)
        self._asset_ids: dict[str, tuple[int, str]] = {}
        # The version add_version just inserted for a new path: no io row can name it
        # yet, so its first link is a plain insert (see link)
        self._fresh_version: int | None = None
        if readonly and not self.path.is_file():
            raise NotInitialized(
                f"no onlooker project at {self.project}: run `onlooker init` there first"
            )
        # The store is the project owner's whoever opens it (root, the service's agent):
        # folders 0700, files 0600, and SQLite gives its -wal and -shm the db's owner and
        # mode (it fchowns them when it runs as root).
        self.owner = Owner.of(self.project)
        if not readonly:
            try:
                make_dir(self.store_dir / OBJECTS_NAME, self.owner)
                if not self.path.exists():
                    os.close(open_private(self.path, os.O_RDONLY, self.owner))
            except OSError as err:
                raise StoreError(f"cannot create {self.store_dir}: {err.strerror}") from err
        self._conn = self._connect()
        self.objects = ObjectStore(self.store_dir / OBJECTS_NAME, self.owner)

    @property
    def db(self) -> Any:
        """The catalog as a sqlite-utils Database, on the same connection. Made on first
        use: importing sqlite-utils costs every CLI call 30 ms, and most never need it."""
        db = self.__dict__.get("_db")
        if db is None:
            from ._sqlite_utils import sqlite_utils

            db = self.__dict__["_db"] = sqlite_utils.Database(self._conn)
        return db

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                conn = sqlite3.connect(self.path.as_uri() + "?mode=ro", uri=True,
                                       isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise sqlite_error(err, self.path) from err
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self.readonly:
                # an older schema a reader still reads stays as it is (READABLE_FROM)
                self.schema_version = schema.check(conn, str(self.path), readonly=True)
            else:
                conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
                conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable to app crashes
                self.schema_version = schema.migrate(conn, str(self.path))
        except sqlite3.Error as err:
            conn.close()
            raise sqlite_error(err, self.path) from err
        except StoreError:
            conn.close()
            raise
        return conn

    @classmethod
    def init(cls, project: Path) -> Catalog:
        """Create (or open and migrate) `<project>/.onlooker/`."""
        project = Path(project)
        if not project.is_dir():
            raise StoreError(f"cannot initialise {project}: it is not a folder")
        return cls(project / STORE_DIR, project=project)

    @classmethod
    def find(cls, start: Path, *, readonly: bool = True) -> Catalog:
        """The catalog of the nearest folder at or above `start` holding `.onlooker/`."""
        here = Path(os.path.abspath(start))
        for folder in (here, *here.parents):
            if (folder / STORE_DIR / CATALOG_NAME).is_file():
                return cls(folder / STORE_DIR, project=folder, readonly=readonly)
        raise NotInitialized(
            f"no onlooker project at {here} or any folder above it: run `onlooker init`"
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self.objects.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions ------------------------------------------------------------
    def transaction(self) -> _Transaction:
        """One write transaction; nested use joins the outer one."""
        if self.readonly:
            raise StoreError(f"the catalog at {self.path} was opened read-only")
        return self._txn

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one consistent state of the catalog."""
        with self._lock:
            if self._depth:
                yield
                return
            self._execute("BEGIN")
            try:
                yield
            finally:
                self._execute("COMMIT")

    def _execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, args)
        except sqlite3.IntegrityError as err:
            raise StoreError(f"catalog refused a write: {err}") from err
        except sqlite3.Error as err:
            raise sqlite_error(err, self.path) from err

    # ---- paths ---------------------------------------------------------------------
    def relpath(self, path: str | os.PathLike[str]) -> str:
        """The catalog's name for a path: project-relative posix inside, else absolute.
        A relative path is taken as already project-relative. Bytes that are not UTF-8
        (Linux names may hold any) are kept as `\\xNN` escapes: SQLite text is UTF-8."""
        text = _text(os.fspath(path))
        if not os.path.isabs(text):
            norm = os.path.normpath(text)  # POSIX separators already (Linux only)
            # the caller's own string where it is normal already: the agent keeps it as
            # a key elsewhere too, and one copy per file is enough (see _asset_ids)
            return text if norm == text else norm
        text = os.path.normpath(text)
        for root in self._roots:
            if text == root:
                return "."
            if text.startswith(root.rstrip(os.sep) + os.sep):
                return text[len(root.rstrip(os.sep)) + 1:]
        return text

    # ---- writes (the agent) ------------------------------------------------------
    def begin_run(self, *, command: list[str], cwd: str, exe: str | None, pid: int,
                  pid_start: int, user: str | None, hostname: str, started_at: float,
                  tier: str) -> int:
        with self.transaction():
            cur = self._execute(
                "INSERT INTO runs (command, cwd, exe, pid, pid_start, user, hostname, status,"
                " started_at, tier) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (records.dumps(list(command)), _text(cwd), _text(exe), pid, pid_start, user,
                 hostname, started_at, tier),
            )
        return int(cur.lastrowid or 0)

    def _update(self, table: str, allowed: set[str], row_id: int, fields: dict[str, Any]) -> int:
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {table} fields {sorted(unknown)}")
        if not fields:
            return 1
        values = []
        for key, value in fields.items():
            if key in _JSON_FIELDS and value is not None:
                value = records.dumps(list(value))
            elif key == "git_dirty" and value is not None:
                value = int(bool(value))
            values.append(value)
        sets = ", ".join(f"{key} = ?" for key in fields)
        with self.transaction():
            cur = self._execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*values, row_id))
        return cur.rowcount

    def update_run(self, run_id: int, **fields: Any) -> None:
        if self._update("runs", _RUN_FIELDS, run_id, fields) == 0:
            raise NoSuchRun(f"there is no run {run_id} in {self.path}")

    def add_step(self, run_id: int, *, pid: int, ppid: int, parent_step_id: int | None,
                 argv: list[str], cwd: str | None, exe: str | None, started_at: float) -> int:
        with self.transaction():
            cur = self._execute(
                "INSERT INTO steps (run_id, pid, ppid, parent_step_id, argv, cwd, exe,"
                " started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (run_id, pid, ppid, parent_step_id, records.dumps(list(argv)), _text(cwd),
                 _text(exe), started_at),
            )
        return int(cur.lastrowid or 0)

    def update_step(self, step_id: int, **fields: Any) -> None:
        if self._update("steps", _STEP_FIELDS, step_id, fields) == 0:
            raise StoreError(f"there is no step {step_id} in {self.path}")

    def add_version(self, path: str, *, hash: str, size: int, mtime_ns: int, kind: str,
                    stored: bool, created_at: float, run_id: int | None = None) -> int:
        """The version id of (path, hash), created on first sight; idempotent."""
        key = self.relpath(path)
        with self.transaction():
            known = self._asset_ids.get(key)
            new_asset = False
            if known is not None and known[1] == kind:
                asset_id = known[0]
            else:
                # A path seen for the first time (a run writing thousands of new files)
                # takes two plain inserts: an upsert with RETURNING costs about 2.5 times
                # as much in SQLite (18 us against 7 for the pair, measured here).
                cur = self._execute("INSERT OR IGNORE INTO assets (path, kind) VALUES (?, ?)",
                                    (key, kind))
                if cur.rowcount == 1:
                    asset_id, new_asset = cur.lastrowid, True
                else:
                    asset_id = self._execute(
                        "INSERT INTO assets (path, kind) VALUES (?, ?)"
                        " ON CONFLICT(path) DO UPDATE SET kind = excluded.kind RETURNING id",
                        (key, kind),
                    ).fetchone()[0]
                if len(self._asset_ids) >= _ASSET_IDS_MAX:
                    self._asset_ids.clear()
                self._asset_ids[key] = (asset_id, kind)
            self._fresh_version = None
            if new_asset:  # (a new asset has no version yet: nothing to conflict with)
                vid = int(self._execute(
                    "INSERT INTO versions (asset_id, hash, size, mtime_ns, stored, run_id,"
                    " created_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (asset_id, hash, size, mtime_ns, int(stored), run_id, created_at,
                     created_at)).lastrowid)
                self._fresh_version = vid
                return vid
            return int(self._execute(
                "INSERT INTO versions (asset_id, hash, size, mtime_ns, stored, run_id,"
                " created_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(asset_id, hash) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, stored = max(stored, excluded.stored),"
                " run_id = coalesce(run_id, excluded.run_id),"
                " seen_at = max(seen_at, excluded.seen_at) RETURNING id",
                (asset_id, hash, size, mtime_ns, int(stored), run_id, created_at, created_at),
            ).fetchone()[0])

    def link(self, run_id: int, version_id: int, role: str, step_id: int | None = None, *,
             producer_set: bool = False, basis: str | None = None,
             access: str | None = None) -> None:
        """Record that a run (one of its steps) used a version in a role.

        `producer_set`: the version already names the run that produced it (as
        add_version does when given a run), so there is none to set here. `basis`: how
        the file was attributed (records.BASES), None where not known; a link made again
        keeps the strongest basis it was given (a guess upgraded by evidence). `access`:
        for role ``meta`` (a tool's file), whether the run read or wrote it (required);
        the other roles imply it. A meta write is
        never the version's producer: meta is no lineage."""
        if role not in records.ROLES:
            raise ValueError(f"role must be one of {', '.join(records.ROLES)}, not {role!r}")
        if basis is not None and basis not in records.BASES:
            raise ValueError(f"basis must be one of {', '.join(records.BASES)}, not {basis!r}")
        access = records.access_for(role, access)
        with self.transaction():
            # The first link of a version just made for a new path cannot meet a row
            # already there: a plain insert, 1.6 us cheaper per file than the upsert.
            fresh, self._fresh_version = self._fresh_version == version_id, None
            if fresh:
                try:
                    self._conn.execute(
                        "INSERT INTO io (run_id, step_id, version_id, role, access, basis)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, step_id, version_id, role, access, basis))
                except sqlite3.IntegrityError:
                    fresh = False  # (the upsert below says what is wrong)
                except sqlite3.Error as err:
                    raise sqlite_error(err, self.path) from err
            if not fresh:
                self._execute(
                    "INSERT INTO io (run_id, step_id, version_id, role, access, basis)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, version_id, role, access,"
                    f" ifnull(step_id, 0)) DO UPDATE SET basis = CASE WHEN"
                    f" {_rank('excluded.basis')} < {_rank('io.basis')} THEN excluded.basis"
                    " ELSE io.basis END",
                    (run_id, step_id, version_id, role, access, basis))
            if role == "output" and not producer_set:
                # the first run seen writing a content is its producer
                self._execute("UPDATE versions SET run_id = ? WHERE id = ? AND run_id IS NULL",
                              (run_id, version_id))
            elif role == "meta" and access == "write":
                # a version given this run as producer (add_version's run_id) that the
                # run only wrote as a tool's file has no producer
                self._execute(
                    "UPDATE versions SET run_id = NULL WHERE id = ? AND run_id = ? AND NOT"
                    " EXISTS (SELECT 1 FROM io WHERE io.version_id = versions.id AND"
                    " io.run_id = versions.run_id AND io.role = 'output')",
                    (version_id, run_id))

    def set_params(self, run_id: int, params: dict[str, tuple[object, str]], *,
                   drop: Iterable[str] = ()) -> None:
        """Set a run's params (key -> (value, source)); `drop`: keys it no longer has
        (a second sweep job turns `lr` into `train.py#1:lr` and `train.py#2:lr`)."""
        rows = [(run_id, key, records.dumps(value), source)
                for key, (value, source) in params.items()]
        with self.transaction():
            gone = [(run_id, key) for key in drop if key not in params]
            if gone:
                self._conn.executemany("DELETE FROM params WHERE run_id = ? AND key = ?", gone)
            try:
                self._conn.executemany("INSERT OR REPLACE INTO params (run_id, key, value,"
                                       " source) VALUES (?, ?, ?, ?)", rows)
            except sqlite3.IntegrityError as err:
                raise NoSuchRun(f"there is no run {run_id} in {self.path}") from err

    def put_env(self, env: dict) -> int:
        """The id of this environment, stored once per distinct content."""
        text = records.canonical(env)
        digest = hash_bytes(text.encode("utf-8"))
        with self.transaction():
            row = self._execute("SELECT id FROM envs WHERE hash = ?", (digest,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = self._execute("INSERT INTO envs (hash, data) VALUES (?, ?)", (digest, text))
        return int(cur.lastrowid or 0)

    def first_started(self) -> float | None:
        """Unix time the first run began: the project has been watched since (None: no
        run yet)."""
        row = self._execute("SELECT min(started_at) FROM runs").fetchone()
        return row[0] if row and row[0] is not None else None

    def open_runs(self) -> list[dict]:
        """Runs still marked running, for the agent to re-attach or close after a restart."""
        extra = ", notebook, notebook_via" if self.schema_version >= schema.NOTEBOOK_SINCE \
            else ""
        rows = self._execute(f"SELECT id, pid, pid_start, started_at, hostname, command, cwd"
                             f"{extra} FROM runs WHERE status = 'running' ORDER BY id"
                             ).fetchall()
        return [{**dict(row), "command": records.loads(row["command"]) or []} for row in rows]

    def latest_version(self, path: str) -> dict | None:
        """The content last seen at `path`: {"hash", "size", "mtime_ns"} or None."""
        row = self._execute(
            "SELECT v.hash, v.size, v.mtime_ns FROM versions v JOIN assets a ON a.id = v.asset_id"
            " WHERE a.path = ? ORDER BY v.seen_at DESC, v.id DESC LIMIT 1",
            (self.relpath(path),),
        ).fetchone()
        return None if row is None else dict(row)

    def stat_lookup(self, dev: int, ino: int, size: int, mtime_ns: int) -> str | None:
        row = self._execute("SELECT hash FROM stat_cache WHERE dev = ? AND ino = ? AND size = ?"
                            " AND mtime_ns = ?", (dev, ino, size, mtime_ns)).fetchone()
        return None if row is None else row[0]

    def stat_store(self, rows: list[tuple[int, int, int, int, str]]) -> None:
        """Remember (dev, ino, size, mtime_ns) -> hash; a newer stat replaces the old."""
        with self.transaction():
            self._conn.executemany("INSERT OR REPLACE INTO stat_cache (dev, ino, size, mtime_ns,"
                                   " hash) VALUES (?, ?, ?, ?, ?)", rows)

    def stat_rows(self) -> list[tuple[int, int, int, int, str]]:
        """The whole stat cache, for the agent to hold in memory."""
        return [tuple(r) for r in self._execute(
            "SELECT dev, ino, size, mtime_ns, hash FROM stat_cache").fetchall()]

    def latest_versions(self) -> dict[str, str]:
        """path -> hash of the content last seen there, for every asset."""
        rows = self._execute(
            "SELECT a.path, v.hash FROM versions v JOIN assets a ON a.id = v.asset_id"
            " ORDER BY v.seen_at, v.id").fetchall()
        return {r[0]: r[1] for r in rows}

    def unlink(self, run_id: int, version_id: int, role: str, step_id: int | None = None,
               *, access: str | None = None) -> None:
        """Forget that a run (one of its steps) used a version in a role (a temp file it
        removed, say); for meta, `access` picks the read or the write link (None: both)."""
        with self.transaction():
            self._execute("DELETE FROM io WHERE run_id = ? AND version_id = ? AND role = ?"
                          " AND ifnull(step_id, 0) = ifnull(?, 0) AND (? IS NULL OR access = ?)",
                          (run_id, version_id, role, step_id, access, access))
            left = self._execute("SELECT 1 FROM io WHERE run_id = ? AND version_id = ? AND"
                                 " role = ?", (run_id, version_id, role)).fetchone()
            if role == "output" and left is None:
                self._execute("UPDATE versions SET run_id = NULL WHERE id = ? AND run_id = ?",
                              (version_id, run_id))

    def run_of_process(self, pid: int, pid_start: int) -> dict | None:
        """The run whose root is this process (pid and start ticks): id and status."""
        row = self._execute("SELECT id, status FROM runs WHERE pid = ? AND pid_start = ?"
                            " ORDER BY id DESC LIMIT 1", (pid, pid_start)).fetchone()
        return None if row is None else dict(row)

    def root_step(self, run_id: int, pid: int) -> int | None:
        """The id of a run's first step run by `pid` (its root), if recorded."""
        row = self._execute("SELECT id FROM steps WHERE run_id = ? AND pid = ? AND"
                            " parent_step_id IS NULL ORDER BY id LIMIT 1",
                            (run_id, pid)).fetchone()
        return None if row is None else int(row[0])

    def runs_ended_since(self, since: float) -> list[dict]:
        """Runs that ended at or after `since` (Unix seconds), as open_runs gives them
        plus ended_at: the runs a restarted agent may owe files it had seen but not
        recorded when it went down."""
        rows = self._execute("SELECT id, pid, pid_start, started_at, ended_at, command, cwd"
                             " FROM runs WHERE status != 'running' AND ended_at >= ?"
                             " ORDER BY id", (since,)).fetchall()
        return [{**dict(row), "command": records.loads(row["command"]) or []} for row in rows]

    def root_end(self, run_id: int, pid: int) -> dict | None:
        """{status, exit_code, signal, ended_at} of the last program a run's root process
        ran, where its end is recorded, else None: how the agent, restarted, tells a run
        that ended before it went down (only not closed yet) from one that ended while it
        was down. (An exec in place ends a step, not the process: only the last counts.)"""
        row = self._execute("SELECT status, exit_code, signal, ended_at FROM steps WHERE"
                            " run_id = ? AND pid = ? ORDER BY id DESC LIMIT 1",
                            (run_id, pid)).fetchone()
        return None if row is None or row["ended_at"] is None else dict(row)

    def last_cell(self, run_id: int) -> int:
        """The highest execution count among a kernel run's cell steps (0: none), for the
        agent re-attaching to a live kernel (schema 7)."""
        if self.schema_version < schema.NOTEBOOK_SINCE:
            return 0
        row = self._execute("SELECT max(cell) FROM steps WHERE run_id = ?", (run_id,)).fetchone()
        return int(row[0] or 0)

    def close_open_steps(self, run_id: int, *, status: str) -> None:
        """Give every still-running step of a run a final status (runs lost by the agent)."""
        with self.transaction():
            self._execute("UPDATE steps SET status = ? WHERE run_id = ? AND status = 'running'",
                          (status, run_id))

    # ---- reads (CLI, tests, notebooks) ---------------------------------------------
    def runs(self, *, limit: int | None = None, status: str | None = None) -> list[dict]:
        """Runs newest first, without env and steps; one query per table."""
        where, args = ("WHERE status = ?", [status]) if status is not None else ("", [])
        tail = f"{where} ORDER BY started_at DESC, id DESC"
        if limit is not None:
            tail += " LIMIT ?"
            args.append(int(limit))
        ids = f"SELECT id FROM runs {tail}"
        with self._snapshot():
            rows = self._execute(f"SELECT {records.RUN_COLUMNS} FROM runs {tail}", args)
            rows = rows.fetchall()
            params = records.group_params(self._execute(
                f"SELECT run_id, key, value FROM params WHERE run_id IN ({ids})", args))
            files = records.group_files(self._execute(
                f"{_FILES_SQL} WHERE io.run_id IN ({ids}) ORDER BY a.path, v.id", args))
        empty = records.empty_files()
        run_ids = [r["id"] for r in rows]
        tele = self.telemetry_summaries(run_ids)
        metrics = self.metrics_for(run_ids)
        tags = self.tags_for(run_ids)
        origins = self.origins_for(run_ids)
        notebooks = records.notebooks_for(self._execute, self.schema_version,
                                          schema.NOTEBOOK_SINCE, run_ids)
        out = []
        for r in rows:
            d = records.run_dict(r, params.get(r["id"], {}), files.get(r["id"], empty),
                                 tags=tags.get(r["id"], ()), origin=origins.get(r["id"]),
                                 notebook=notebooks.get(r["id"]))
            d["metrics"] = metrics.get(r["id"], {})
            d["telemetry"] = tele.get(r["id"])
            out.append(d)
        return out

    def query(self, where: str | Iterable[str] | None = None, *, since: Any = None,
              until: Any = None, status: str | None = None, sort: str | None = None,
              limit: int | None = None, offset: int = 0) -> list[dict]:
        """Runs passing every filter in `where` (the `--where` language, AND-ed), started
        in [since, until] (`2d`, an ISO date, Unix seconds), newest first or by `sort`
        (`-metrics.test.f1`), at most `limit` after the first `offset`; dicts as runs()
        gives them. See store/query/."""
        from .query import query

        found = query(self, where, since=since, until=until, status=status, sort=sort,
                      limit=limit, offset=offset)
        origins = self.origins_for([r["id"] for r in found])
        for r in found:
            r["origin"] = origins.get(r["id"])
        return found

    def resolve_run(self, ref: str | int) -> int:
        """A run reference as people type it -> its id: `12`, `last` (or `-1`) for the
        newest, `-2` for the one before, ..., or a tag name for the newest run carrying
        it. Raises NoSuchRun with a sentence that says what was wrong."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            text = str(ref)
        else:
            text = str(ref).strip()
        match = _NTH_NEWEST.fullmatch(text)
        if text == "last" or match:
            nth = int(match.group(1)) if match else 1
            row = self._execute("SELECT id FROM runs ORDER BY started_at DESC, id DESC"
                                " LIMIT 1 OFFSET ?", (nth - 1,)).fetchone()
            if row is None:
                total = self._execute("SELECT count(*) FROM runs").fetchone()[0]
                raise NoSuchRun("the catalog has no runs yet" if not total
                                else f"the catalog has only {total} runs")
            return int(row[0])
        if text.isdigit():
            row = self._execute("SELECT id FROM runs WHERE id = ?", (int(text),)).fetchone()
            if row is None:
                raise NoSuchRun(f"there is no run {text} in {self.path}")
            return int(row[0])
        tagged = self.run_tagged(text) if text else None
        if tagged is not None:
            return tagged
        raise NoSuchRun(f"'{text}' is not a run: give an id, 'last', -N for the Nth newest,"
                        " or a tag")

    def run(self, run_id: int) -> dict:
        """One run in full: the JSON contract with `env` and `steps`."""
        with self._snapshot():
            row = self._execute(f"SELECT {records.RUN_COLUMNS} FROM runs WHERE id = ?",
                                (run_id,)).fetchone()
            if row is None:
                raise NoSuchRun(f"there is no run {run_id} in {self.path}")
            params = records.group_params(self._execute(
                "SELECT run_id, key, value FROM params WHERE run_id = ?", (run_id,)))
            files = records.group_files(self._execute(
                f"{_FILES_SQL} WHERE io.run_id = ? ORDER BY a.path, v.id", (run_id,)))
            env = None
            if row["env_id"] is not None:
                got = self._execute("SELECT data FROM envs WHERE id = ?", (row["env_id"],))
                env = records.loads((got.fetchone() or [None])[0])
            step_rows = self._execute(f"SELECT {records.STEP_COLUMNS} FROM steps WHERE"
                                      " run_id = ? ORDER BY started_at, id", (run_id,)).fetchall()
            step_files = self._execute(
                "SELECT DISTINCT io.step_id, io.role, a.path FROM io"
                " JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
                " WHERE io.run_id = ? AND io.step_id IS NOT NULL AND io.role != 'meta'"
                " ORDER BY a.path", (run_id,)
            ).fetchall()
            cells = records.cells_of(self._execute, self.schema_version,
                                     schema.NOTEBOOK_SINCE, run_id)
            notebook = records.notebooks_for(self._execute, self.schema_version,
                                             schema.NOTEBOOK_SINCE, [run_id]).get(run_id)
        out = records.run_dict(row, params.get(run_id, {}),
                               files.get(run_id, records.empty_files()),
                               tags=self.tags_of(run_id),
                               origin=self.origins_for([run_id]).get(run_id),
                               notebook=notebook)
        by_step: dict[int, dict[str, list[str]]] = {}
        for f in step_files:
            slot = by_step.setdefault(f["step_id"], {"input": [], "output": [], "code": []})
            slot[f["role"]].append(f["path"])
        steps = []
        for s in step_rows:
            slot = by_step.get(s["id"], {"input": [], "output": [], "code": []})
            steps.append(records.step_dict(s, slot["input"] + slot["code"], slot["output"],
                                           cells.get(s["id"])))
        out["env"] = env
        out["steps"] = steps
        out["metrics"] = self.metrics_of(run_id)
        out["telemetry"] = self.telemetry_summary(run_id)
        return out

    def versions(self, path: str) -> list[dict]:
        """Every content seen at `path`, oldest first, with the run that wrote it."""
        rows = self._execute(
            "SELECT v.id, v.hash, v.size, v.mtime_ns, v.stored, v.run_id, v.created_at,"
            " v.seen_at, a.kind FROM versions v JOIN assets a ON a.id = v.asset_id"
            " WHERE a.path = ? ORDER BY v.created_at, v.id", (self.relpath(path),)).fetchall()
        return [{"id": r["id"], "hash": r["hash"], "size": r["size"], "mtime_ns": r["mtime_ns"],
                 "stored": bool(r["stored"]), "run_id": r["run_id"], "kind": r["kind"],
                 "created_at": records.iso(r["created_at"]),
                 "seen_at": records.iso(r["seen_at"])} for r in rows]

    def writers(self, hash: str) -> list[dict]:
        """Which runs wrote this content, and at which paths."""
        rows = self._execute(
            "SELECT DISTINCT io.run_id, io.step_id, a.path FROM io"
            " JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
            " WHERE v.hash = ? AND io.role = 'output'"
            " UNION SELECT v.run_id, NULL, a.path FROM versions v"
            " JOIN assets a ON a.id = v.asset_id WHERE v.hash = ? AND v.run_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM io WHERE io.version_id = v.id"
            " AND io.run_id = v.run_id AND io.role IN ('output', 'meta'))"
            " ORDER BY 1, 3", (hash, hash)).fetchall()
        return [dict(r) for r in rows]

    def diff(self, a: int | str, b: int | str, *, all: bool = False) -> dict:
        """What differs between runs a and b (ids or refs: `last`, `-N`), section by
        section, and its causes up the lineage; see store/diff/. `all`: also what
        is the same."""
        return diff_runs(self, a, b, all=all)

    def sql(self, query: str, params: Any = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One read-only SQL statement over the documented views (`runs`, `params`,
        `metrics`, `inputs`, `code`, `outputs`, `steps`, `versions`, `lineage_edges`,
        `tags`, `notes`; store/views.py): (column names, rows). Its own read-only
        connection, so it can never write, even on a catalog opened for writing."""
        return views.query(self.path, query, params, found=self.schema_version)

    # ---- lineage, the inferred pipeline, what is out of date (store/lineage.py, ...) ----
    def lineage(self, target: str, up: bool = True, depth: int | None = None, *,
                cwd: str | None = None) -> dict:
        """The runs and versions that led to `target` (`up=False`: that came from it):
        a PATH (its current version), `PATH@HASH` or a run; see lineage.lineage."""
        from .lineage import lineage

        return lineage(self, target, up=up, depth=depth, cwd=cwd)

    def producers(self, version_hash: str, path: str | None = None) -> list[int]:
        """The ids of the runs that wrote this content, oldest first (lineage.producers)."""
        from .lineage import producers

        return producers(self, version_hash, path)

    def pipeline(self) -> dict:
        """The workflow the project ran, inferred from its runs (pipeline.pipeline)."""
        from .pipeline import pipeline

        return pipeline(self)

    def twins(self, run_id: int) -> list[int]:
        """The runs that did the same computation as this one: same command, code
        versions, input versions and params (meta ignored); itself excluded, oldest
        first (twins.twins_of)."""
        from .twins import twins_of

        return twins_of(self, [run_id]).get(int(run_id), [])

    def nondeterministic(self, run_id: int) -> list[str]:
        """The outputs of this run that a completed twin wrote with other content."""
        from .twins import nondeterministic

        return nondeterministic(self, run_id, self.twins(run_id))

    def restore(self, run: int | str, paths: Iterable[str] | None = None,
                roles: Iterable[str] = ("inputs", "outputs", "code"), to: Any = None,
                force: bool = False, dry_run: bool = False, on_progress: Any = None) -> dict:
        """Write back the exact versions a run read or wrote, each checked by hash as it
        is written (restore.restore): a report per file."""
        from .restore import restore

        return restore(self, run, paths=paths, roles=roles, to=to, force=force,
                       dry_run=dry_run, on_progress=on_progress)

    def restore_version(self, path: str, hash_prefix: str, to: Any = None,
                        force: bool = False, dry_run: bool = False) -> dict:
        """Write back one version of one file, named by a prefix of its hash
        (`PATH@HASH`; restore.restore_version)."""
        from .restore import restore_version

        return restore_version(self, path, hash_prefix, to=to, force=force, dry_run=dry_run)

    def outdated(self, current: str = "disk", read_params: Any = None,
                 on_hash: Any = None) -> dict:
        """Outputs out of date and the runs to re-run, upstream first (outdated.outdated);
        `current`: "catalog" (the agent's last versions) or "disk" (hash the files)."""
        from .outdated import outdated

        return outdated(self, current=current, read_params=read_params, on_hash=on_hash)

    # ---- sharing runs between projects (store/share.py) -----------------------------
    def export(self, run_ids: Iterable[int], out_path: str | os.PathLike[str], *,
               include_secrets: bool = False) -> dict:
        """Write these runs' rows and the objects they need to one tar archive (a temp
        file renamed into place): {path, runs, objects, bytes, referenced, missing,
        withheld, size}; stored copies whose text holds a credential are left out
        (`withheld`) unless `include_secrets`."""
        from .share import export_runs

        return export_runs(self, run_ids, out_path, include_secrets=include_secrets)

    def import_archive(self, path: str | os.PathLike[str]) -> dict:
        """Add an export's runs in one transaction, after verifying every object by
        hash; runs already here are left alone, clashing ids renumbered: {runs,
        present, objects, bytes, mapping: [{source_id, id, imported}], ...}."""
        from .share import import_archive

        return import_archive(self, path)

    def origins_for(self, run_ids: Iterable[int]) -> dict[int, dict]:
        """run id -> where it was imported from (`origin` in the JSON contract); runs
        recorded here are left out."""
        from .share import origins_for

        return origins_for(self, list(run_ids))

    # ---- cleaning up: rm, gc, du (store/manage.py) -------------------------------------
    def remove_runs(self, run_ids: Iterable[int]) -> dict:
        """Remove runs and all their rows in one transaction; objects stay until gc
        (manage.remove_runs)."""
        from .manage import remove_runs

        return remove_runs(self, run_ids)

    def gc(self, dry_run: bool = False, keep_tagged: bool = False, older_than: Any = None,
           grace: Any = 3600.0) -> dict:
        """Remove objects no run needs, and with `older_than` (`30d`) old runs first
        (`keep_tagged`: untagged ones only); see manage.gc for what is kept and why."""
        from .manage import gc

        return gc(self, dry_run=dry_run, keep_tagged=keep_tagged, older_than=older_than,
                  grace=grace)

    def du(self, run_ids: Iterable[int] | None = None) -> dict:
        """Bytes in the object store per run (and what removing it would free) and in
        total (manage.du)."""
        from .manage import du

        return du(self, run_ids)

    def counts(self) -> dict:
        """Sizes for `status`: runs, steps, assets, versions, stored objects and bytes."""
        with self._snapshot():
            one = {t: self._execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("runs", "steps", "assets", "versions")}
            n, total = self._execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT hash, max(size) AS size"
                " FROM versions WHERE stored = 1 GROUP BY hash)").fetchone()
        return {**one, "objects": n, "objects_bytes": total}
