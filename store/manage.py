"""Cleaning up: remove runs from the catalog (rm), collect the objects no run needs (gc),
and say what each run holds in the object store (du).

What is live. An object is kept while any of these names its hash: a version some run
in the catalog read or wrote (every role: inputs, outputs, code, meta; `onlooker run`'s
output copy is an output), a run's git diff (`runs.git_diff`), the latest version of
each path (the tree as it is now: the agent dedups new writes against it), or a version
created or seen within the grace period. Everything else in the store is garbage.

Versions and assets stay in the catalog when their runs go: they are the history of the
files (`versions(path)`, lineage of what no run made), the agent holds their ids while it
runs, and a version another run shares must not lose its row. gc marks a version whose
bytes it removed `stored = 0`, so it reads as "only referenced" from then on, as a file
over the copy limit does. Envs stay too (small, shared, and the agent may be about to
point a new run at one).

Safety against a running agent (it writes objects before it commits the rows naming
them, and dedups against objects already there):
- an object younger than the grace period (default 1 h, by its file's or pack's mtime)
  is never removed, so nothing being written or not yet committed goes;
- liveness is computed again inside a write transaction (the agent cannot commit while
  it is held) before the versions are marked unstored;
- objects are first moved into a trash folder; after the move gc looks once more for any
  version or run that names a trashed hash as stored (the agent found the content again
  and deduped against it in that instant) and puts those objects back; only then is the
  trash deleted;
- one gc runs at a time (a lock file, `.onlooker/gc.lock`); a crashed gc's trash is
  removed by the next;
- packs are rewritten, never edited: the kept objects go into a new pack published
  before the old index is removed, and a reader holding the old index retries.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import NoSuchRun, StoreError
from .private import Owner, make_dir, open_private, secure_store

log = logging.getLogger(__name__)

GRACE_S = 3600.0  # objects younger than this are never collected
GC_LOCK = "gc.lock"  # under .onlooker/: held by the one gc running
_TABLES = ("io", "params", "metrics", "telemetry", "tags", "steps")  # rm's order


class RunIsRunning(StoreError):
    """rm of a run the agent still records: it would write rows for a run that is gone."""


class BadDuration(StoreError, ValueError):
    """An --older-than or --grace that is no duration."""


def duration_seconds(value: str | float | int | timedelta) -> float:
    """`30d`, `12h`, `90` (seconds), a timedelta or a number -> seconds (the query
    language's durations, store/query/language.py)."""
    from .query.language import parse_duration

    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds: float | None = float(value)
    else:
        seconds = parse_duration(str(value))
    if seconds is None or seconds < 0:
        raise BadDuration(f"{value!r} is not a duration: write e.g. 30d, 12h, 90m or 3600")
    return seconds


def _ids_json(ids: Iterable[int]) -> str:
    return json.dumps(sorted({int(i) for i in ids}))


# ---- rm ----------------------------------------------------------------------------------


def remove_runs(catalog: Any, run_ids: Iterable[int]) -> dict:
    """Remove runs and every row that is theirs (steps, io links, params, metrics,
    telemetry, tags, and any table a later migration ties to runs) in one transaction.
    Versions stay (see the module docstring); one a removed run produced names the
    earliest remaining run that wrote it, or none. Objects stay until gc. Raises
    NoSuchRun, or RunIsRunning for a run still recorded."""
    ids = sorted({int(r) for r in run_ids})
    counts = {table: 0 for table, _ in _run_tables(catalog)}
    if not ids:
        return {"removed": [], "rows": counts}
    ids_json = _ids_json(ids)
    with catalog.transaction():
        rows = catalog._execute("SELECT id, status FROM runs WHERE id IN"
                                " (SELECT value FROM json_each(?))", (ids_json,)).fetchall()
        found = {int(r["id"]): r["status"] for r in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NoSuchRun(f"there is no run {missing[0]} in {catalog.path}")
        running = [i for i in ids if found[i] == "running"]
        if running:
            raise RunIsRunning(
                f"run {running[0]} is still running and the agent is recording it: wait "
                "until it ends (a run left open by a stopped agent is closed by `onlooker "
                "start`)")
        for table, column in _run_tables(catalog):
            cur = catalog._execute(f"DELETE FROM {table} WHERE {column} IN"
                                   " (SELECT value FROM json_each(?))", (ids_json,))
            counts[table] = cur.rowcount
        # The producer of a shared version becomes the next run that wrote it (its io
        # rows are already gone for the removed runs); the FK would only null it.
        catalog._execute(
            "UPDATE versions SET run_id = (SELECT min(io.run_id) FROM io WHERE"
            " io.version_id = versions.id AND io.role = 'output')"
            " WHERE run_id IN (SELECT value FROM json_each(?))", (ids_json,))
        catalog._execute("DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                         (ids_json,))
    log.info("removed runs %s", ids)
    return {"removed": ids, "rows": counts}


def _run_tables(catalog: Any) -> list[tuple[str, str]]:
    """(table, column) of every table whose rows belong to a run (a foreign key to runs
    that cascades): io, params, steps, ... and whatever a later migration adds
    (run_origin). io first, so removing steps has no links left to update."""
    found = []
    names = [r[0] for r in catalog._execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for name in names:
        for fk in catalog._execute(f"PRAGMA foreign_key_list({name})").fetchall():
            if fk["table"] == "runs" and str(fk["on_delete"]).upper() == "CASCADE":
                found.append((name, fk["from"]))
    order = {t: i for i, t in enumerate(_TABLES)}
    return sorted(found, key=lambda tc: (order.get(tc[0], len(order)), tc[0]))


# ---- what is live ------------------------------------------------------------------------


def live_hashes(catalog: Any, *, without: Iterable[int] = (), since: float | None = None,
                ) -> set[str]:
    """Every object hash gc must keep (module docstring), as if the runs in `without`
    were gone; `since`: versions created or seen at or after it (Unix s) are live too."""
    ids_json = _ids_json(without)
    sql = (
        "SELECT v.hash FROM io JOIN versions v ON v.id = io.version_id"
        " WHERE io.run_id NOT IN (SELECT value FROM json_each(?1))"
        " UNION SELECT git_diff FROM runs WHERE git_diff IS NOT NULL"
        " AND id NOT IN (SELECT value FROM json_each(?1))"
        " UNION SELECT hash FROM (SELECT hash, row_number() OVER (PARTITION BY asset_id"
        " ORDER BY seen_at DESC, id DESC) AS rn FROM versions) WHERE rn = 1"
    )
    args: list[Any] = [ids_json]
    if since is not None:
        sql += " UNION SELECT hash FROM versions WHERE created_at >= ?2 OR seen_at >= ?2"
        args.append(since)
    return {r[0] for r in catalog._execute(sql, args).fetchall()}


def _named_as_stored(catalog: Any, hashes: Iterable[str]) -> set[str]:
    """Which of these hashes a version says is stored, or a run names as its diff."""
    hashes_json = json.dumps(sorted(hashes))
    rows = catalog._execute(
        "SELECT hash FROM versions WHERE stored = 1 AND hash IN"
        " (SELECT value FROM json_each(?1)) UNION SELECT git_diff FROM runs WHERE"
        " git_diff IN (SELECT value FROM json_each(?1))", (hashes_json,)).fetchall()
    return {r[0] for r in rows}


# ---- gc ----------------------------------------------------------------------------------


def gc(catalog: Any, *, dry_run: bool = False, keep_tagged: bool = False,
       older_than: str | float | timedelta | None = None, grace: str | float | timedelta = GRACE_S,
       now: float | None = None) -> dict:
    """Remove the objects no run needs, and with `older_than` first the runs that
    started longer ago than that (ended ones only; with `keep_tagged`, untagged ones
    only). `grace`: objects younger than this are kept (default 1 h: see the module
    docstring before lowering it while an agent runs). `dry_run`: change nothing, say
    what would go. Returns {"dry_run", "removed_runs", "freed": {"objects", "bytes"},
    "kept": {"objects", "bytes"}, "young": {"objects", "bytes"}, "temp_files",
    "logs": {"files", "bytes"}}."""
    if catalog.readonly:
        raise StoreError(f"the catalog at {catalog.path} was opened read-only")
    if catalog.owner.chown_needed:
        # root for another user: gc makes its lock and trash in their store, so a link
        # of theirs there (objects/tmp -> /etc) must stop it first (store/private.py)
        secure_store(catalog.store_dir, catalog.owner)
    with _gc_lock(catalog.store_dir, catalog.owner):
        return _gc(catalog, dry_run=dry_run, keep_tagged=keep_tagged, older_than=older_than,
                   grace=grace, now=now)


@contextmanager
def _gc_lock(store_dir: Path, owner: Owner) -> Iterator[None]:
    """One gc at a time per store (two would trash and repack the same objects); a
    second waits. Any trash folder found while holding it is a crashed gc's: removed.
    The lock file is the project owner's, 0600, whoever runs gc (store/private.py)."""
    fd = open_private(Path(store_dir) / GC_LOCK, os.O_RDWR, owner)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in Path(store_dir, "objects", "tmp").glob("gc-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        os.close(fd)


def _gc(catalog: Any, *, dry_run: bool, keep_tagged: bool, older_than: Any, grace: Any,
        now: float | None) -> dict:
    started = time.time() if now is None else float(now)
    young_from = started - duration_seconds(grace)
    old_runs: list[int] = []
    if older_than is not None:
        cutoff = started - duration_seconds(older_than)
        sql = "SELECT id FROM runs WHERE started_at < ? AND status != 'running'"
        if keep_tagged and catalog._has_tags():
            sql += " AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.run_id = runs.id)"
        old_runs = [int(r[0]) for r in catalog._execute(sql + " ORDER BY id", (cutoff,))]
        if old_runs and not dry_run:
            remove_runs(catalog, old_runs)
    store = catalog.objects
    with catalog._snapshot():
        live = live_hashes(catalog, without=old_runs if dry_run else (), since=young_from)
    candidates: dict[str, list[tuple[int, str | None]]] = {}
    kept = [0, 0]
    young = [0, 0]
    for h, size, mtime, pack in store.entries():
        if h in live:
            kept[0] += 1
            kept[1] += size
        elif mtime >= young_from:
            young[0] += 1
            young[1] += size
        else:
            candidates.setdefault(h, []).append((size, pack))
    logs = _stale_logs(catalog, young_from, without=old_runs if dry_run else ())
    report = {"dry_run": dry_run, "removed_runs": old_runs,
              "freed": {"objects": len(candidates),
                        "bytes": sum(s for locs in candidates.values() for s, _ in locs)},
              "kept": {"objects": kept[0], "bytes": kept[1]},
              "young": {"objects": young[0], "bytes": young[1]}, "temp_files": 0,
              "logs": {"files": len(logs), "bytes": sum(size for _, size in logs)}}
    if dry_run:
        return report
    for path, _ in logs:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    if not candidates:
        report["temp_files"] = store.clean_tmp()  # its own hour: a writer may be busy
        return report
    with catalog.transaction():
        # the agent may have linked a candidate since the snapshot; it cannot now
        live = live_hashes(catalog, since=young_from)
        garbage = {h: locs for h, locs in candidates.items() if h not in live}
        catalog._execute("UPDATE versions SET stored = 0 WHERE stored = 1 AND hash IN"
                         " (SELECT value FROM json_each(?))", (json.dumps(sorted(garbage)),))
    freed_objects, freed_bytes = _collect(catalog, garbage)
    report["freed"] = {"objects": freed_objects, "bytes": freed_bytes}
    report["temp_files"] = store.clean_tmp()  # its own hour: a writer may be busy
    log.info("gc freed %d objects (%d bytes)", freed_objects, freed_bytes)
    return report


def _stale_logs(catalog: Any, young_from: float, *,
                without: Iterable[int] = ()) -> list[tuple[Path, int]]:
    """`onlooker run`'s output copies under .onlooker/logs/ that the agent recorded
    but no run in the catalog links any more (their runs were removed), older than the
    grace period and named by no launcher record: (path, size) each. Their bytes, if
    stored, are objects like any other; this is the working copy beside them."""
    logs = catalog.store_dir / "logs"
    try:
        files = [e for e in os.scandir(logs) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    if not files:
        return []
    named: set[str] = set()
    try:
        records = list(os.scandir(catalog.store_dir / "launcher"))
    except OSError:
        records = []
    for entry in records:
        try:
            with open(entry.path, encoding="utf-8") as f:
                named.add(str(json.load(f).get("log")))
        except (OSError, ValueError, AttributeError):
            continue
    rows = catalog._execute(
        "SELECT a.path, EXISTS (SELECT 1 FROM versions v JOIN io ON io.version_id = v.id"
        " WHERE v.asset_id = a.id AND io.run_id NOT IN (SELECT value FROM json_each(?)))"
        " FROM assets a WHERE a.path LIKE '%logs/%'", (_ids_json(without),)).fetchall()
    linked = {r[0]: bool(r[1]) for r in rows}
    out = []
    for entry in files:
        rel = catalog.relpath(entry.path)
        if linked.get(rel, True) or rel in named:
            continue  # never recorded (the agent may not have seen it yet), or in use
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_mtime < young_from:
            out.append((Path(entry.path), st.st_size))
    return out


def _collect(catalog: Any, garbage: dict[str, list[tuple[int, str | None]]]) -> tuple[int, int]:
    """Move the garbage into a trash folder, put back what turned out named, empty it."""
    store = catalog.objects
    trash = make_dir(store.tmp / f"gc-{uuid.uuid4().hex}", store.owner)
    loose: dict[str, Path] = {}
    packed: dict[str, tuple[Path, int, int]] = {}
    by_pack: dict[str, set[str]] = {}
    freed: dict[str, int] = {}
    try:
        for h, locs in garbage.items():
            for size, pack in locs:
                if pack is not None:
                    by_pack.setdefault(pack, set()).add(h[len("blake3:"):])
                    continue
                target = trash / h[len("blake3:"):]
                try:
                    os.rename(store.path_for(h), target)
                except FileNotFoundError:
                    continue
                loose[h] = target
                freed[h] = freed.get(h, 0) + size
        for name, drop in by_pack.items():
            _, where = store.packs.repack(name, drop, store._tmpdir(), trash)
            for hexdigest, spot in where.items():
                h = "blake3:" + hexdigest
                packed.setdefault(h, spot)
                freed[h] = freed.get(h, 0) + spot[2]
        # The agent may have found one of these contents again and deduped against the
        # object in the instant before it moved: put those back.
        with catalog._snapshot():
            back = _named_as_stored(catalog, freed)
        for h in back:
            _put_back(store, h, loose.get(h), packed.get(h))
            freed.pop(h, None)
        if back:
            log.info("gc put back %d objects named again while it ran", len(back))
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return len(freed), sum(freed.values())


def _put_back(store: Any, h: str, loose: Path | None,
              packed: tuple[Path, int, int] | None) -> None:
    if store.has(h):
        return
    if loose is not None:
        final = store.path_for(h)
        make_dir(final.parent, store.owner)
        os.rename(loose, final)
        return
    if packed is not None:
        path, offset, size = packed
        with open(path, "rb") as f:
            store.put_bytes(os.pread(f.fileno(), size, offset), h)


# ---- du ----------------------------------------------------------------------------------


def du(catalog: Any, run_ids: Iterable[int] | None = None) -> dict:
    """Bytes in the object store, per run and in total.

    Per run: `objects`/`bytes` it references that are stored (shared ones included),
    `frees` what removing it alone would free (objects no other run, diff or current
    file needs), and `referenced_only` the versions it used whose bytes are not stored
    (`files`, `bytes` as recorded). Total: the store's `objects`/`bytes` on disk,
    `unreferenced` (what gc would free now, grace period aside) and `referenced_only`
    over the whole catalog."""
    sizes: dict[str, int] = {}
    for h, size, _, _ in catalog.objects.entries():
        sizes[h] = sizes.get(h, 0) + size
    with catalog._snapshot():
        all_ids = [int(r[0]) for r in catalog._execute("SELECT id FROM runs ORDER BY id")]
        refs: dict[str, set[int]] = {}
        for r in catalog._execute(
                "SELECT DISTINCT io.run_id, v.hash FROM io JOIN versions v"
                " ON v.id = io.version_id UNION SELECT id, git_diff FROM runs"
                " WHERE git_diff IS NOT NULL"):
            refs.setdefault(r[1], set()).add(int(r[0]))
        current = {r[0] for r in catalog._execute(
            "SELECT hash FROM (SELECT hash, row_number() OVER (PARTITION BY asset_id"
            " ORDER BY seen_at DESC, id DESC) AS rn FROM versions) WHERE rn = 1")}
        unstored = catalog._execute(
            "SELECT DISTINCT io.run_id, v.hash, v.size FROM io JOIN versions v"
            " ON v.id = io.version_id WHERE v.stored = 0").fetchall()
        only_ref = catalog._execute(
            "SELECT hash, max(size) FROM versions WHERE stored = 0 GROUP BY hash").fetchall()
    if run_ids is None:
        wanted = all_ids
    else:
        wanted = sorted({int(r) for r in run_ids})
        missing = [i for i in wanted if i not in set(all_ids)]
        if missing:
            raise NoSuchRun(f"there is no run {missing[0]} in {catalog.path}")
    per: dict[int, dict[str, Any]] = {
        i: {"id": i, "objects": 0, "bytes": 0, "frees": {"objects": 0, "bytes": 0},
            "referenced_only": {"files": 0, "bytes": 0}} for i in wanted}
    for h, owners in refs.items():
        size = sizes.get(h)
        if size is None:
            continue
        for run_id in owners & per.keys():
            row = per[run_id]
            row["objects"] += 1
            row["bytes"] += size
            if len(owners) == 1 and h not in current:
                row["frees"]["objects"] += 1
                row["frees"]["bytes"] += size
    for r in unstored:
        row = per.get(int(r[0]))
        if row is not None and r[1] not in sizes:
            row["referenced_only"]["files"] += 1
            row["referenced_only"]["bytes"] += int(r[2])
    garbage = [h for h in sizes if h not in refs and h not in current]
    total = {"objects": len(sizes), "bytes": sum(sizes.values()),
             "unreferenced": {"objects": len(garbage), "bytes": sum(sizes[h] for h in garbage)},
             "referenced_only": {"versions": sum(1 for h, _ in only_ref if h not in sizes),
                                 "bytes": sum(int(s) for h, s in only_ref if h not in sizes)}}
    return {"runs": [per[i] for i in wanted], "total": total}
