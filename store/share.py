"""Sharing runs between projects: one tar archive out (export), into a catalog (import).

An archive is an uncompressed tar holding, in this order:

- `manifest.json`: format and onlooker versions, the exporting host and project, the
  export time, every object's hash and size, and per run its catalog rows (run, env,
  steps, io with the versions and assets it names, params, metrics, telemetry, tags);
- `manifest.json.blake3`: the manifest's own hash, so a flipped byte in it is caught;
- `objects/<hex>`: the bytes of every stored object the runs need (stored versions,
  git diffs). Versions only referenced (larger than `store.object_max_bytes`) travel
  as catalog rows without bytes, as in the catalog they came from.

Import verifies everything before writing anything (store/archive.py): in one pass,
the members are read by name only to match them to the manifest, never extracted by
their name, each sized against the manifest and hashed while its bytes go to the object
store's tmp folder (small ones into one spool file, large ones each into a temp file,
copied by the kernel from a plain tar). Only once all are verified do they move into
place (the small ones as one pack, each large one fsynced and renamed), then the rows
go in in one catalog transaction; a bad archive leaves no temporaries and no rows. A
run is recognised as already imported by its uid (run_uid: a hash of the host, project,
id and start of the run where it was first recorded), kept in `run_origin`, so
importing twice changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from . import records, schema
from .archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_HASH,
    OBJECT_DIR,
    ArchiveError,
    TarWriter,
    damaged,
    read_manifest,
    stage,
)
from .errors import StoreError
from .objects import PACK_MAX, hash_bytes

__all__ = ["ArchiveError", "export_runs", "import_archive", "origins_for", "read_manifest",
           "run_uid"]

if TYPE_CHECKING:
    from .catalog import Catalog
    from .objects import ObjectStore

_IDS_CHUNK = 500
_HASH = re.compile(r"blake3:[0-9a-f]{64}")
_SMALL_LOOSE = 1 << 20  # a loose object up to this is read whole, not copied by the kernel
_SPAN = 4 << 20  # export reads a pack in spans of up to this...
_GAP = 64 << 10  # ...skipping at most this much between two objects it needs
# Columns the importer sets itself, never copied from the archive.
_OWN = {"id", "run_id", "env_id", "parent_step_id"}


def onlooker_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onlooker")
    except PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


def run_uid(host: str | None, project: str | None, run_id: int, started_at: float) -> str:
    """A run's identity across projects: where it was first recorded, its id there and
    its start. An imported run keeps the uid it arrived with, so it survives re-export."""
    text = records.canonical(["onlooker-run", host, project, int(run_id), float(started_at)])
    return hash_bytes(text.encode("utf-8"))


def origins_for(catalog: Catalog, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """run id -> its `origin` (the JSON contract) for imported runs; local ones are left out."""
    out: dict[int, dict[str, Any]] = {}
    if getattr(catalog, "schema_version", 0) < schema.ORIGIN_SINCE:
        return out  # a read-only open of a catalog not migrated yet: nothing imported
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    for start in range(0, len(ids), _IDS_CHUNK):
        chunk = ids[start:start + _IDS_CHUNK]
        marks = ",".join("?" * len(chunk))
        for r in catalog._execute(f"SELECT * FROM run_origin WHERE run_id IN ({marks})", chunk):
            out[r["run_id"]] = {"host": r["host"], "project": r["project"],
                                "run_id": r["source_id"], "uid": r["uid"],
                                "exported_at": records.iso(r["exported_at"]),
                                "imported_at": records.iso(r["imported_at"])}
    return out


# ---- export ----------------------------------------------------------------------------


def _rows(catalog: Catalog, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows as dicts, built from plain tuples (sqlite3.Row and dict(row) cost more than
    the row's values when there are 20,000 of them)."""
    cur = catalog._execute(sql, args)
    names = [d[0] for d in cur.description]
    cur.row_factory = None  # type: ignore[assignment]  # the rows not fetched yet: tuples
    return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _OWN}


_VERSION_COLUMNS = ("v.id, a.path, a.kind, v.hash, v.size, v.mtime_ns, v.stored,"
                    " v.run_id AS producer, v.created_at, v.seen_at")


def _collect(catalog: Catalog, run_ids: Sequence[int]) -> dict[str, Any]:
    """The manifest's rows for these runs (one consistent snapshot), objects not sized."""
    host, project = socket.gethostname(), str(catalog.project)
    origins = origins_for(catalog, run_ids)
    runs: list[dict[str, Any]] = []
    versions: dict[int, dict[str, Any]] = {}
    diffs: set[str] = set()
    with catalog._snapshot():
        for run_id in run_ids:
            row = _rows(catalog, "SELECT * FROM runs WHERE id = ?", (run_id,))[0]
            env = None
            if row.get("env_id") is not None:
                got = catalog._execute("SELECT data FROM envs WHERE id = ?", (row["env_id"],))
                env = (got.fetchone() or [None])[0]
            if row.get("git_diff"):
                diffs.add(row["git_diff"])
            io_rows = _rows(catalog, "SELECT step_id, version_id, role, access, basis FROM io"
                                     " WHERE run_id = ?", (run_id,))
            origin = origins.get(run_id)
            uid = (origin["uid"] if origin else
                   run_uid(host, project, run_id, row["started_at"]))
            tags: list[dict[str, Any]] = []
            if catalog.schema_version >= 5:
                tags = _rows(catalog, "SELECT name, created_at FROM tags WHERE run_id = ?",
                             (run_id,))
            runs.append({
                "source_id": run_id, "uid": uid, "run": _strip(row), "env": env,
                "steps": _rows(catalog, "SELECT * FROM steps WHERE run_id = ? ORDER BY id",
                               (run_id,)),
                "io": io_rows,
                "params": _rows(catalog, "SELECT key, value, source FROM params WHERE"
                                         " run_id = ?", (run_id,)),
                "metrics": [_strip(m) for m in _rows(
                    catalog, "SELECT * FROM metrics WHERE run_id = ? ORDER BY rowid", (run_id,))],
                "telemetry": [_strip(t) for t in _rows(
                    catalog, "SELECT * FROM telemetry WHERE run_id = ? ORDER BY rowid",
                    (run_id,))],
                "tags": tags,
            })
        # every version the runs' io names, in one join per chunk of runs (not one
        # statement per chunk of 500 version ids)
        for start in range(0, len(run_ids), _IDS_CHUNK):
            chunk = list(run_ids[start:start + _IDS_CHUNK])
            for v in _rows(catalog, f"SELECT {_VERSION_COLUMNS} FROM versions v"
                                    " JOIN assets a ON a.id = v.asset_id WHERE v.id IN"
                                    " (SELECT version_id FROM io WHERE run_id IN"
                                    f" ({','.join('?' * len(chunk))}))", chunk):
                versions[v["id"]] = v
    return {"runs": runs, "versions": [versions[k] for k in sorted(versions)], "diffs": diffs}


def _object_size(catalog: Catalog, hash: str) -> int | None:
    try:
        with catalog.objects.open(hash) as f:
            if isinstance(f, io.BytesIO):
                return len(f.getbuffer())
            return os.fstat(f.fileno()).st_size
    except (StoreError, OSError):
        return None


def _damaged_object(catalog: Catalog, hash: str) -> StoreError:
    return StoreError(f"object {hash} in the store at {catalog.objects.root} does not"
                      " match its hash: it is damaged")


def _add_object(catalog: Catalog, tar: TarWriter, hash: str, size: int, now: float) -> None:
    """One object into the archive, hashed first: a damaged store object is caught at
    export, not passed on. A large loose file is hashed in place (mmap, all cores)
    while the kernel copies it; a small one, or a packed one, comes whole."""
    name = OBJECT_DIR + hash.partition(":")[2]
    damaged_store = _damaged_object(catalog, hash)
    with catalog.objects.open(hash) as f:
        if isinstance(f, io.BytesIO):
            data = f.getvalue()
            if len(data) != size or hash_bytes(data) != hash:
                raise damaged_store
            tar.add_object(name.encode(), data, int(now))
            return
        if os.fstat(f.fileno()).st_size != size:
            raise damaged_store
        if size <= _SMALL_LOOSE:
            data = os.pread(f.fileno(), size, 0)
            if len(data) != size or hash_bytes(data) != hash:
                raise damaged_store
            tar.add_object(name.encode(), data, int(now))
            return
        # The store's loose files are read-only and never rewritten (content-addressed),
        # so the bytes hashed are the bytes copied. Hashing runs beside the kernel's copy
        # (both release the GIL); a mismatch raises before the archive is renamed into
        # place, so no damaged archive is ever left.
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                hasher.update_mmap(catalog.objects.path_for(hash))
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                failed.append(err)

        worker = threading.Thread(target=run, name="onlooker-export-hash", daemon=True)
        worker.start()
        try:
            tar.add_file(name, f.fileno(), size, now)
        finally:
            worker.join()
        if failed:
            err = failed[0]
            raise StoreError(f"cannot read object {hash} in the store at"
                             f" {catalog.objects.root}: {err}") from err
        if "blake3:" + hasher.hexdigest() != hash:
            raise damaged_store


def _pack_spans(catalog: Catalog, pack: str, items: list[tuple[int, int, str]]
                ) -> Iterator[tuple[memoryview, list[tuple[int, int, str]]]] | None:
    """The pack's objects (offset, size, hash), the pack opened once and read in its own
    order in spans of up to _SPAN bytes (one open or one read per small object would
    cost more than its bytes): each span's bytes with its objects (offset in the span,
    size, hash); None when the pack is gone."""
    try:
        f = open(catalog.objects.packs.dir / f"{pack}.pack", "rb", buffering=0)
    except FileNotFoundError:  # repacked since (gc)
        return None

    def spans() -> Iterator[tuple[memoryview, list[tuple[int, int, str]]]]:
        with f:
            fd = f.fileno()
            ordered = sorted(items)
            i = 0
            while i < len(ordered):
                start = ordered[i][0]
                stop = start + ordered[i][1]
                j = i + 1
                while (j < len(ordered) and ordered[j][0] - stop <= _GAP
                       and ordered[j][0] + ordered[j][1] - start <= _SPAN):
                    stop = max(stop, ordered[j][0] + ordered[j][1])
                    j += 1
                data = os.pread(fd, stop - start, start)
                if len(data) != stop - start:
                    raise StoreError(f"pack {pack} in the store at {catalog.objects.root}"
                                     " is shorter than its index says: it is damaged")
                yield memoryview(data), [(offset - start, size, hash)
                                         for offset, size, hash in ordered[i:j]]
                i = j

    return spans()


def _add_packed(catalog: Catalog, tar: TarWriter, pack: str,
                items: list[tuple[int, int, str]], objects: dict[str, int], now: float
                ) -> None:
    """The objects of one pack (offset, size, hash) into the archive, each hashed."""
    spans = _pack_spans(catalog, pack, items)
    if spans is None:  # one by one, through the index
        for _, _, hash in items:
            _add_object(catalog, tar, hash, objects[hash], now)
        return
    mtime, new_hasher = int(now), blake3.blake3
    for view, members in spans:
        checked = []
        for offset, size, hash in members:
            body = view[offset:offset + size]
            hexdigest = hash[7:]
            if size != objects[hash] or new_hasher(body).hexdigest() != hexdigest:
                raise _damaged_object(catalog, hash)
            checked.append((b"objects/" + hexdigest.encode(), body))
        tar.add_objects(checked, mtime)


# Kinds whose stored copies may carry a credential in their text (a config's api_key, a
# log line with a token, a script with a key pasted in); datasets, models and state are
# data, and looking through gigabytes of them for text is not worth it.
_SCANNED_KINDS = frozenset({"config", "log", "metrics", "code", "notebook", "other"})


def _read_objects(catalog: Catalog, packed: dict[str, list[tuple[int, int, str]]],
                  loose: list[str], wanted: set[str], limit: int
                  ) -> Iterator[tuple[str, bytes]]:
    """(hash, bytes) of the `wanted` objects no larger than `limit`: packed ones through
    the spans export writes them from, then loose ones."""
    for pack, items in packed.items():
        mine = [it for it in items if it[2] in wanted]
        spans = _pack_spans(catalog, pack, mine) if mine else None
        if spans is None:
            loose = [*loose, *(it[2] for it in mine)]
            continue
        for view, members in spans:
            for offset, size, hash in members:
                yield hash, bytes(view[offset:offset + size])
    for hash in loose:
        if hash not in wanted:
            continue
        try:
            with catalog.objects.open(hash) as f:
                if os.fstat(f.fileno()).st_size > limit:
                    continue
                yield hash, f.read()
        except (OSError, StoreError, ValueError, AttributeError):
            continue  # gone since, or packed after all: the export's own check says so


def withheld_objects(catalog: Catalog, versions: list[dict[str, Any]], diffs: set[str],
                     packed: dict[str, list[tuple[int, int, str]]], loose: list[str]
                     ) -> dict[str, str]:
    """{hash: why} for the objects about to be exported whose text holds a credential
    (store/secret_scan.py): stored copies of text kinds, and git diffs."""
    from .secret_scan import SCAN_MAX, secrets_among

    present = {it[2] for items in packed.values() for it in items} | set(loose)
    wanted = {v["hash"] for v in versions
              if v["stored"] and v["kind"] in _SCANNED_KINDS and v["hash"] in present}
    wanted |= diffs & present
    if not wanted:
        return {}
    return secrets_among(_read_objects(catalog, packed, loose, wanted, SCAN_MAX))


def export_runs(catalog: Catalog, run_ids: Iterable[int], out_path: str | os.PathLike[str],
                *, include_secrets: bool = False) -> dict[str, Any]:
    """Write the runs and the objects they need to the tar at `out_path` (a temp file
    renamed into place); returns counts: runs, objects, bytes, referenced, missing, and
    `withheld`: [{path, hash, why}], the stored copies left out because their text holds
    a credential (they go as references, as a file too large to copy would), unless
    `include_secrets`."""
    ids = sorted(dict.fromkeys(int(i) for i in run_ids))
    if not ids:
        raise StoreError("there are no runs to export")
    for run_id in ids:
        catalog.resolve_run(run_id)  # NoSuchRun with its sentence
    running = [r[0] for start in range(0, len(ids), _IDS_CHUNK)
               for chunk in [ids[start:start + _IDS_CHUNK]]
               for r in catalog._execute("SELECT id FROM runs WHERE status = 'running' AND id"
                                         f" IN ({','.join('?' * len(chunk))})", chunk)]
    if running:
        # its rows are not final, and an agent on the other side would take it for one
        # of its own runs to re-attach
        raise StoreError(f"run {running[0]} is still running: export it once it has ended")
    got = _collect(catalog, ids)
    store = catalog.objects
    # objects go in before the rows naming them, so one look at the packs now sees every
    # object these rows name; then one index lookup per object (no stat for a packed one)
    store.packs.refresh()
    stored = [v for v in got["versions"] if v["stored"]]
    referenced = len(got["versions"]) - len(stored)
    # a stored version's size is its object's (content-addressed); export checks each
    # object's size and hash as it writes it
    want = {v["hash"]: int(v["size"]) for v in stored}
    for hash in sorted(got["diffs"] - want.keys()):
        size = _object_size(catalog, hash)
        if size is not None:
            want[hash] = size
    packed: dict[str, list[tuple[int, int, str]]] = {}  # pack -> (offset, size, hash)
    loose: list[str] = []
    gone: set[str] = set()
    hashes = list(want)
    for hash, where in zip(hashes, store.packs.lookup_many([h[7:] for h in hashes]),
                           strict=True):
        if where is not None:
            packed.setdefault(where[0], []).append((where[1], where[2], hash))
        elif store.has(hash, fresh=False):
            loose.append(hash)
        else:
            gone.add(hash)
    objects = {h: size for h, size in want.items() if h not in gone}  # the manifest's
    missing = 0
    for v in stored:
        if v["hash"] in gone:  # stored once, gone since (gc, a damaged store): a reference
            v["stored"] = 0
            missing += 1
    secret: dict[str, str] = {} if include_secrets else withheld_objects(
        catalog, got["versions"], got["diffs"], packed, loose)
    withheld: list[dict[str, Any]] = []
    if secret:
        for v in stored:
            if v["hash"] in secret:
                v["stored"] = 0  # the other side gets the hash, as for a large file
                withheld.append({"path": v["path"], "hash": v["hash"],
                                 "why": secret[v["hash"]]})
        for hash in sorted(got["diffs"] & secret.keys()):
            withheld.append({"path": None, "hash": hash, "why": "a git diff: "
                             + secret[hash]})
        for hash in secret:
            objects.pop(hash, None)
        loose = [h for h in loose if h not in secret]
        packed = {pack: [it for it in items if it[2] not in secret]
                  for pack, items in packed.items()}
    now = time.time()
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "onlooker_version": onlooker_version(), "schema_version": catalog.schema_version,
        "host": socket.gethostname(), "project": str(catalog.project), "exported_at": now,
        "objects": objects, "versions": got["versions"], "runs": got["runs"],
    }
    out = Path(os.path.abspath(out_path))
    if not out.parent.is_dir():
        raise StoreError(f"cannot write {out}: {out.parent} is not a folder")
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _give_to_folders_owner(fd, out.parent)
            tar = TarWriter(fd)
            text = json.dumps(manifest, ensure_ascii=True, separators=(",", ":")).encode()
            tar.add_bytes(MANIFEST, text, now)
            tar.add_bytes(MANIFEST_HASH, hash_bytes(text).encode(), now)
            for pack, items in packed.items():
                _add_packed(catalog, tar, pack, items, objects, now)
            for hash in loose:
                _add_object(catalog, tar, hash, objects[hash], now)
            tar.close()
            os.fsync(fd)  # its writeback was started as it went: this waits for the tail
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except OSError as err:
        raise StoreError(f"cannot write {out}: {err.strerror or err}") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(out), "runs": len(ids), "objects": len(objects),
            "bytes": sum(objects.values()), "referenced": referenced, "missing": missing,
            "withheld": withheld, "size": out.stat().st_size}


def _give_to_folders_owner(fd: int, folder: Path) -> None:
    """`sudo onlooker export ... -o /home/ana/runs.tar`: the archive is ana's, as a file
    a restore makes in her folder is (store/restore.py), not one of root's she can
    delete but not rewrite. A folder of root's (/tmp) keeps what root makes as made."""
    if os.geteuid() != 0:
        return
    st = os.stat(folder)
    if st.st_uid == 0:
        return
    gid = st.st_gid
    if not st.st_mode & 0o2000:  # setgid: the folder's group, as the kernel would give
        import pwd

        try:
            gid = pwd.getpwuid(st.st_uid).pw_gid
        except KeyError:
            pass
    os.fchown(fd, st.st_uid, gid)


# ---- import ----------------------------------------------------------------------------


def import_archive(catalog: Catalog, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Add the archive's runs to the catalog; runs already here (by uid) are left as
    they are. Returns counts and `mapping`: [{source_id, id, imported}] per run."""
    path = Path(os.path.abspath(path))
    store = catalog.objects
    try:
        store._tmpdir()  # the owner's, private (store/private.py)
    except OSError as err:
        raise StoreError(f"cannot write to the object store at {store.root}:"
                         f" {err.strerror or err}") from err
    # One pass: every member verified while its bytes go to the store's tmp folder;
    # on any failure the temporaries are gone and nothing was written.
    store.packs.refresh()  # then one look per member, not one listing of packs/ each
    manifest, staged = stage(path, store.tmp, PACK_MAX,
                             present=lambda hashes: _present(store, hashes))
    objects: dict[str, int] = manifest["objects"]
    written, written_bytes = len(staged.small) + len(staged.large), staged.bytes
    try:
        with store.batch():  # the small ones: one pack, fsynced with its index
            for hash, data in staged.iter_small():
                store.put_bytes(data, hash)
        for hash, tmp in staged.large.items():
            # each fsynced (its writeback began as it was copied), renamed, its folder
            # synced: only these files wait for the disk, not the whole filesystem's
            # dirty pages, as one syncfs would on a machine others write to
            store.adopt(tmp, hash)
    except OSError as err:
        raise StoreError(f"cannot write to the object store at {store.root}:"
                         f" {err.strerror or err}; nothing was imported") from err
    finally:
        staged.discard()
    try:
        with catalog.transaction():
            mapping = _insert(catalog, manifest, set(objects))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError,
            sqlite3.Error) as err:
        raise damaged(path, f"its manifest is malformed: {type(err).__name__} {err}") from err
    except StoreError as err:
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"cannot import {path}: {err}; nothing was imported") from err
    return {"path": str(path), "host": manifest.get("host"), "project": manifest.get("project"),
            "exported_at": records.iso(manifest.get("exported_at")),
            "runs": sum(1 for m in mapping if m["imported"]),
            "present": sum(1 for m in mapping if not m["imported"]),
            "objects": written, "bytes": written_bytes, "mapping": mapping}


def _present(store: ObjectStore, hashes: list[str]) -> set[str]:
    """Which of these objects the store has: one index lookup each, and a stat only for
    one whose loose folder exists (a fresh store has none: no stat at all)."""
    valid = [h for h in hashes if _HASH.fullmatch(h)]  # the others are refused later
    try:
        folders = {n for n in os.listdir(store.root) if len(n) == 2}
    except OSError:
        folders = set()
    return {h for h, where in zip(valid, store.packs.lookup_many([h[7:] for h in valid]),
                                  strict=True)
            if where is not None or (h[7:9] in folders and store.has(h, fresh=False))}


def _columns(catalog: Catalog, table: str) -> set[str]:
    return {r[1] for r in catalog._execute(f"PRAGMA table_info({table})")}


def _insert_row(catalog: Catalog, table: str, cols: set[str], row: dict[str, Any],
                **own: Any) -> int:
    data = {k: v for k, v in row.items() if k in cols and k not in _OWN}
    data.update(own)
    names = ", ".join(data)
    marks = ", ".join("?" * len(data))
    cur = catalog._execute(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                           list(data.values()))
    return int(cur.lastrowid or 0)


def _already(catalog: Catalog, entry: dict[str, Any], host: str, project: str) -> int | None:
    """The local id of this run if the catalog has it: imported before (its uid), or
    recorded here in the first place (an export of this project coming back)."""
    uid = entry["uid"]
    row = catalog._execute("SELECT run_id FROM run_origin WHERE uid = ?", (uid,)).fetchone()
    if row is not None:
        return int(row[0])
    started = entry["run"]["started_at"]
    for r in catalog._execute("SELECT id FROM runs WHERE started_at = ? AND id NOT IN"
                              " (SELECT run_id FROM run_origin)", (started,)).fetchall():
        if run_uid(host, project, r[0], started) == uid:
            return int(r[0])
    return None


def _insert(catalog: Catalog, manifest: dict[str, Any], present: set[str]
            ) -> list[dict[str, Any]]:
    """Every row of the manifest, in the caller's transaction; the run id mapping."""
    host, project = socket.gethostname(), str(catalog.project)
    cols = {t: _columns(catalog, t) for t in ("runs", "steps", "metrics", "telemetry")}
    used = {r[0] for r in catalog._execute("SELECT id FROM runs")}
    taken = used | {int(e["source_id"]) for e in manifest["runs"]}
    next_id = max(taken, default=0) + 1
    mapping: list[dict[str, Any]] = []
    ids: dict[int, int] = {}
    todo: list[tuple[int, dict[str, Any]]] = []
    for entry in manifest["runs"]:
        source = int(entry["source_id"])
        local = _already(catalog, entry, host, project)
        imported = local is None
        if local is None:
            if source in used:
                local, next_id = next_id, next_id + 1
            else:
                local = source
            used.add(local)
            todo.append((local, entry))
        ids[source] = local
        mapping.append({"source_id": source, "id": local, "imported": imported})
    now = time.time()
    for local, entry in todo:  # the runs first: versions name their producers
        env_id = None
        if entry.get("env") is not None:
            env_id = catalog.put_env(json.loads(entry["env"]))
        _insert_row(catalog, "runs", cols["runs"], entry["run"], id=local, env_id=env_id)
    versions = _versions(catalog, manifest, present, ids)
    for local, entry in todo:
        steps: dict[int, int] = {}
        for step in entry["steps"]:
            steps[int(step["id"])] = _insert_row(catalog, "steps", cols["steps"], step,
                                                 run_id=local)
        for step in entry["steps"]:
            if step.get("parent_step_id") in steps:
                catalog._execute("UPDATE steps SET parent_step_id = ? WHERE id = ?",
                                 (steps[step["parent_step_id"]], steps[int(step["id"])]))
        catalog._conn.executemany(
            "INSERT OR IGNORE INTO io (run_id, step_id, version_id, role, access, basis)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(local, steps.get(link["step_id"]), versions[int(link["version_id"])],
              link["role"], link["access"], link["basis"]) for link in entry["io"]])
        catalog._conn.executemany(
            "INSERT INTO params (run_id, key, value, source) VALUES (?, ?, ?, ?)",
            [(local, p["key"], p["value"], p["source"]) for p in entry["params"]])
        for m in entry["metrics"]:
            _insert_row(catalog, "metrics", cols["metrics"], m, run_id=local)
        for t in entry["telemetry"]:
            _insert_row(catalog, "telemetry", cols["telemetry"], t, run_id=local)
        catalog._conn.executemany(
            "INSERT OR IGNORE INTO tags (run_id, name, created_at) VALUES (?, ?, ?)",
            [(local, t["name"], t["created_at"]) for t in entry["tags"]])
        catalog._execute(
            "INSERT INTO run_origin (run_id, uid, host, project, source_id, exported_at,"
            " imported_at, onlooker_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (local, entry["uid"], manifest.get("host"), manifest.get("project"),
             int(entry["source_id"]), manifest.get("exported_at"), now,
             manifest.get("onlooker_version")))
    return mapping


def _versions(catalog: Catalog, manifest: dict[str, Any], present: set[str],
              ids: dict[int, int]) -> dict[int, int]:
    """Archive version id -> local version id, creating assets and versions not here.
    A version stored there is stored here once its object came in; its producer is the
    local id of the run that wrote it, where that run is here."""
    # in bulk (executemany, then ids by chunks): 20,000 versions cost one statement
    # each, not three
    versions = manifest["versions"]
    catalog._conn.executemany("INSERT INTO assets (path, kind) VALUES (?, ?)"
                              " ON CONFLICT(path) DO NOTHING",
                              [(v["path"], v["kind"]) for v in versions])
    paths = list(dict.fromkeys(v["path"] for v in versions))
    assets: dict[str, int] = {}
    for start in range(0, len(paths), _IDS_CHUNK):
        chunk = paths[start:start + _IDS_CHUNK]
        assets.update((r[1], r[0]) for r in catalog._execute(
            f"SELECT id, path FROM assets WHERE path IN ({','.join('?' * len(chunk))})",
            chunk))
    rows = []
    for v in versions:
        stored = int(bool(v["stored"]) and v["hash"] in present)
        producer = ids.get(v["producer"]) if v["producer"] is not None else None
        rows.append((assets[v["path"]], v["hash"], int(v["size"]), int(v["mtime_ns"]), stored,
                     producer, v["created_at"], v["seen_at"]))
    catalog._conn.executemany(
        "INSERT INTO versions (asset_id, hash, size, mtime_ns, stored, run_id,"
        " created_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(asset_id, hash) DO UPDATE SET stored = max(stored, excluded.stored),"
        " run_id = coalesce(run_id, excluded.run_id)", rows)
    asset_ids = list(dict.fromkeys(assets.values()))
    local: dict[tuple[int, str], int] = {}
    for start in range(0, len(asset_ids), _IDS_CHUNK):
        chunk = asset_ids[start:start + _IDS_CHUNK]
        local.update(((r[1], r[2]), r[0]) for r in catalog._execute(
            "SELECT id, asset_id, hash FROM versions WHERE asset_id IN"
            f" ({','.join('?' * len(chunk))})", chunk))
    return {int(v["id"]): local[(assets[v["path"]], v["hash"])] for v in versions}
