"""`onlooker doctor`: check a project's catalog and object store, say what is wrong in
sentences a person can act on, and repair what can be repaired.

Checks, each `ok`, `warn` or `error`:

- ``catalog``: it opens, and SQLite's `integrity_check` finds nothing. Repair: the
  damaged file is kept beside as `catalog.db.damaged-<time>` and replaced by a copy of
  its tables' rows, read without indexes, whose indexes are then built afresh (damaged
  indexes, the commonest harm, go away); when a table cannot be read, nothing changes.
- ``objects``: every object a version says is stored (and every stored git diff) is
  there, and with `verify` its bytes hash to its name. Repair: an object whose file in
  the project still has that content is put back from it; any other version becomes
  honestly "only referenced" (stored = 0), so restore says so instead of failing.
- ``runs``: runs marked running while no agent runs. The agent settles them when it
  starts (live ones re-attached, dead ones marked lost), so the advice is to start it.
- ``temporary files``: what a crashed writer left in `objects/tmp/`. Repair: removed
  (only those older than an hour: a younger one may be an import being written).
- ``garbage``: objects no run needs; `onlooker gc` frees them (never done here).

Repairs that write the catalog or the store need the agent stopped: it is their writer.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onlooker.agent import lifecycle
from onlooker.agent.config import STORE_DIR
from onlooker.agent.errors import AgentError
from onlooker.store.errors import HashError, StoreError
from onlooker.store.hashing import hash_file
from onlooker.store.objects import hash_bytes

CATALOG_NAME = "catalog.db"
TMP_AGE = 3600.0
_SHOW = 3  # paths named in a sentence

Progress = Callable[[int, int], None]


class DoctorError(AgentError):
    """The check cannot be made at all (not a project); one sentence."""


def _check(name: str, status: str, message: str, fix: str | None = None,
           fixed: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "message": message, "fix": fix, "fixed": fixed,
            **extra}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _integrity(path: Path) -> list[str]:
    """SQLite's complaints about the file (empty: none); one when it does not open."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        return [str(err)]
    try:
        rows = conn.execute("PRAGMA integrity_check(20)").fetchall()
        return [] if [r[0] for r in rows] == ["ok"] else [r[0] for r in rows]
    except sqlite3.Error as err:
        return [str(err)]
    finally:
        conn.close()


def _rebuild(path: Path) -> tuple[bool, str]:
    """Replace the catalog by a copy made from what of its tables can be read; (done,
    what happened). Rows past a damaged page of a table are lost, and said; a file
    whose schema cannot be read at all gives way to a new, empty catalog (the objects
    stay, and the agent's next start records the project's files again)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh = path.with_name(f".{path.name}.rebuilt-{stamp}")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    fresh.unlink(missing_ok=True)
    try:
        lost = _copy_tables(path, fresh)
    except sqlite3.Error as err:
        fresh.unlink(missing_ok=True)
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\0":  # never a catalog: not ours to replace
                return False, f"its tables cannot be read either ({err})"
        lost = None
        unreadable = str(err)
    else:
        left = _integrity(fresh)
        if left:
            fresh.unlink(missing_ok=True)
            return False, f"the copy of its tables is damaged too ({left[0]})"
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):  # they belong to the damaged file
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, kept.with_name(kept.name + suffix))
    if lost is None:
        from onlooker.store.catalog import Catalog

        Catalog(path.parent, project=path.parent.parent).close()  # a new, empty one
        return True, (f"nothing of it could be read ({unreadable}): a new, empty catalog"
                      " took its place (the stored objects are kept, and `onlooker start`"
                      f" records the project's files again); the damaged file is kept as"
                      f" {kept.name}")
    os.replace(fresh, path)
    said = f"; rows lost in {', '.join(lost)}" if lost else ""
    return True, f"rebuilt from its tables{said}; the damaged file is kept as {kept.name}"


def _copy_tables(path: Path, fresh: Path) -> list[str]:
    """Rows table by table, read without any index, into a new file whose indexes are
    built after: VACUUM INTO would copy a damaged index's pages as they are. A table
    that cannot be read to its end keeps the rows read before the damage; returns those
    tables' names (sqlite3.Error when not even the schema can be read)."""
    old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    new = sqlite3.connect(fresh)
    lost: list[str] = []
    try:
        version = old.execute("PRAGMA user_version").fetchone()[0]
        schema = old.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT"
                             " NULL ORDER BY rowid").fetchall()
        tables = [(n, q) for t, n, q in schema if t == "table" and not n.startswith("sqlite_")]
        with new:
            for _, sql in tables:
                new.execute(sql)
            for name, _ in tables:
                try:
                    cur = old.execute(f'SELECT * FROM "{name}" NOT INDEXED')
                    marks = ",".join("?" * len(cur.description))
                    while rows := cur.fetchmany(5000):
                        new.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
                except sqlite3.DatabaseError:
                    lost.append(name)
            for kind, _name, sql in schema:
                if kind in ("index", "trigger", "view"):
                    new.execute(sql)
            if any(n == "sqlite_sequence" for _, n, _ in schema):
                new.execute("DELETE FROM sqlite_sequence")
                try:
                    seqs = old.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
                except sqlite3.DatabaseError:
                    seqs = []  # AUTOINCREMENT then goes on from the rows kept
                new.executemany("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", seqs)
        new.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        old.close()
        new.close()
    return lost


def _object_ok(catalog: Any, hash: str, verify: bool) -> str | None:
    """None when the object is there (and, verified, whole); else what is wrong."""
    store = catalog.objects
    loose = store.path_for(hash)
    if loose.is_file():
        if not verify:
            return None
        try:
            got = hash_file(loose).hash
        except (HashError, OSError) as err:
            return f"unreadable ({err})"
        return None if got == hash else "damaged"
    data = store.packs.read(hash.partition(":")[2])
    if data is None:
        return "missing"
    if verify and hash_bytes(data) != hash:
        return "damaged"
    return None


def _objects(catalog: Any, verify: bool, fix: bool, agent_pid: int | None,
             progress: Progress | None) -> dict[str, Any]:
    rows = catalog._execute(
        "SELECT v.hash, a.path FROM versions v JOIN assets a ON a.id = v.asset_id"
        " WHERE v.stored = 1 ORDER BY v.id").fetchall()
    wanted: dict[str, list[str]] = {}
    for h, path in rows:
        wanted.setdefault(h, []).append(path)
    diffs = {r[0] for r in catalog._execute(
        "SELECT DISTINCT git_diff FROM runs WHERE git_diff IS NOT NULL")}
    for h in diffs:
        wanted.setdefault(h, [])
    catalog.objects.packs.refresh()
    bad: dict[str, str] = {}
    for i, h in enumerate(wanted):
        what = _object_ok(catalog, h, verify)
        if what is not None:
            bad[h] = what
        if progress is not None:
            progress(i + 1, len(wanted))
    checked = "checked by hash" if verify else "present (not hashed: --quick)"
    if not bad:
        return _check("objects", "ok", f"{_plural(len(wanted), 'stored object')} {checked}",
                      checked=len(wanted))
    names = [f"{(wanted[h] or ['a git diff'])[0]} ({what})" for h, what in list(bad.items())]
    message = (f"{len(bad)} of {_plural(len(wanted), 'stored object')} missing or damaged: "
               + ", ".join(names[:_SHOW]) + (", ..." if len(names) > _SHOW else ""))
    fix_text = ("--fix puts back those the project still holds and marks the others as"
                " only referenced")
    out = _check("objects", "error", message, fix_text, checked=len(wanted),
                 bad=[{"hash": h, "paths": wanted[h], "problem": bad[h]} for h in bad])
    if not fix:
        return out
    if agent_pid is not None:
        out["fix"] = f"stop the agent (pid {agent_pid}) first: `onlooker stop`, then --fix"
        return out
    put_back, referenced, lost = 0, 0, 0
    for h in bad:
        if bad[h] != "missing":
            catalog.objects.remove(h)  # its bytes are wrong: never hand them out again
        if any(_put_back(catalog, h, p) for p in wanted[h]):
            put_back += 1
        elif wanted[h]:
            with catalog.transaction():
                catalog._execute("UPDATE versions SET stored = 0 WHERE hash = ?", (h,))
            referenced += 1
        else:  # a git diff's text: nothing else holds it
            lost += 1
    done = f"; {put_back} put back from the project, {referenced} now only referenced"
    if lost:
        done += f", {_plural(lost, 'git diff')} lost (`show --diff` says so)"
    out.update(status="warn" if lost else "ok", fixed=True, message=message + done)
    return out


def _put_back(catalog: Any, want: str, path: str) -> bool:
    """Copy the project's file at `path` into the store when it holds `want`."""
    source = path if os.path.isabs(path) else os.path.join(str(catalog.project), path)
    try:
        if hash_file(source).hash != want:
            return False
        got = hash_file(source, store=catalog.objects, copy=True,
                        copy_max_bytes=1 << 62)
    except (HashError, OSError, StoreError):
        return False
    return got.hash == want and catalog.objects.has(want)


def _runs(catalog: Any, agent_pid: int | None) -> dict[str, Any]:
    ids = [r[0] for r in catalog._execute("SELECT id FROM runs WHERE status = 'running'"
                                          " ORDER BY id")]
    if not ids or agent_pid is not None:
        return _check("runs", "ok", f"{_plural(len(ids), 'run')} running" if ids else
                      "no run is left marked running")
    shown = ", ".join(str(i) for i in ids[:_SHOW]) + (", ..." if len(ids) > _SHOW else "")
    return _check("runs", "warn", f"{_plural(len(ids), 'run')} marked running ({shown}) but"
                  " no agent runs", "`onlooker start` settles them: live ones are"
                  " re-attached, the others marked lost", ids=ids)


def _tmp(catalog: Any, fix: bool) -> dict[str, Any]:
    tmp = catalog.objects.tmp
    cutoff = time.time() - TMP_AGE
    old, size = 0, 0
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        entries = []
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_mtime < cutoff:
            old, size = old + 1, size + st.st_size
    if not old:
        return _check("temporary files", "ok", "no temporary file left behind")
    message = (f"{_plural(old, 'temporary file')} ({_plural(size, 'byte')}) left behind"
               " by a crash")
    out = _check("temporary files", "warn", message, "--fix removes them")
    if fix:
        removed = catalog.objects.clean_tmp(TMP_AGE)
        out.update(status="ok", fixed=True, message=message + f"; {removed} removed")
    return out


def _garbage(catalog: Any) -> dict[str, Any]:
    from onlooker.store.manage import GRACE_S, live_hashes

    # gc's own rule, read-only: what no kept run needs and is past gc's grace period
    young = time.time() - GRACE_S
    live = live_hashes(catalog, since=young)
    n = size = 0
    for h, nbytes, mtime, _ in catalog.objects.entries():
        if h not in live and mtime < young:
            n, size = n + 1, size + nbytes
    if not n:
        return _check("garbage", "ok", "every stored object is needed by a run")
    return _check("garbage", "ok", f"{_plural(n, 'object')} ({_plural(size, 'byte')}) no run"
                  " needs", "`onlooker gc` frees them", objects=n, bytes=size)


def doctor(project: str | os.PathLike[str], *, fix: bool = False, verify: bool = True,
           on_progress: Progress | None = None) -> dict[str, Any]:
    """Check the project's catalog and objects (see the module's doc); with `fix`,
    repair what can be. Returns {project, ok, agent_pid, checks: [{name, status,
    message, fix, fixed, ...}]}; `ok` is false while an error remains."""
    from onlooker.store.catalog import Catalog

    project = Path(os.path.abspath(project))
    store_dir = project / STORE_DIR
    path = store_dir / CATALOG_NAME
    if not path.is_file():
        raise DoctorError(f"no onlooker catalog at {path}: run `onlooker init` there first")
    agent_pid = lifecycle.running_pid(store_dir)
    checks: list[dict[str, Any]] = []
    problems = _integrity(path)
    if problems:
        message = f"the catalog is damaged: {problems[0]}" + (
            f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        entry = _check("catalog", "error", message,
                       "--fix rebuilds it from its tables, keeping the damaged file")
        if fix and agent_pid is not None:
            entry["fix"] = f"stop the agent (pid {agent_pid}) first: `onlooker stop`"
        elif fix:
            done, what = _rebuild(path)
            entry.update(fixed=done, status="ok" if done else "error",
                         message=f"{message}; {what}")
        checks.append(entry)
        if entry["status"] == "error":
            return {"project": str(project), "ok": False, "agent_pid": agent_pid,
                    "checks": checks}
    else:
        checks.append(_check("catalog", "ok", "integrity_check found nothing wrong"))
    try:
        catalog = Catalog(store_dir, project=project, readonly=not fix)
    except StoreError as err:
        checks.append(_check("catalog", "error", str(err)))
        return {"project": str(project), "ok": False, "agent_pid": agent_pid,
                "checks": checks}
    try:
        checks.append(_objects(catalog, verify, fix, agent_pid, on_progress))
        checks.append(_runs(catalog, agent_pid))
        checks.append(_tmp(catalog, fix))
        checks.append(_garbage(catalog))
    finally:
        catalog.close()
    return {"project": str(project), "ok": all(c["status"] != "error" for c in checks),
            "agent_pid": agent_pid, "checks": checks}
