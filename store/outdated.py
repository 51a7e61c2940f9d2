"""What is out of date: outputs whose inputs, code or params changed since the run that
made them (DVC's `dvc status`, with no dvc.yaml), and the runs to re-run, upstream first.

Each output path is judged by the run that last wrote it. That run is out of date when
the current content of one of its inputs or code files differs from what it read, when
one of the params it read from a config file (its own by the section convention of
store/pipeline.py) now has another value, when one of its outputs was changed or
removed since it wrote it (edited by hand), or when a run it read from is itself out
of date (re-running that one will change its input). "Current" is the catalog's last
version of each path (what the agent saw, `current="catalog"`) or the file on disk,
hashed (`current="disk"`; the catalog's stat cache spares unchanged files).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import pipeline as pl
from . import records
from .errors import StoreError

if TYPE_CHECKING:
    from .catalog import Catalog

# (rel, data) -> {"rel:a.b": value}: how a config file's bytes become params.
ReadParams = Callable[[str, bytes], dict[str, Any]]
CURRENT = ("catalog", "disk")
_CONFIG_MAX = 4 * 1024 * 1024


def _flat(obj: Any, key: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(v, f"{key}.{k}" if key else str(k), out)
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            _flat(v, f"{key}.{i}" if key else str(i), out)
    else:
        out[key] = obj


def read_config(rel: str, data: bytes) -> dict[str, Any]:
    """A config file's bytes -> `rel:a.b` params, as the agent flattens them (YAML,
    JSON, TOML); {} when it cannot be read. The CLI hands the agent's own reader in
    (which also knows INI and redacts secrets the same way)."""
    import yaml

    ext = os.path.splitext(rel)[1].lower()
    try:
        text = data.decode("utf-8-sig")
        if ext == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            obj: Any = tomllib.loads(text)
        elif ext == ".json":
            obj = json.loads(text)
        else:
            obj = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - a person's file must not break the command
        return {}
    flat: dict[str, Any] = {}
    if isinstance(obj, (dict, list)):
        _flat(obj, "", flat)
    return {f"{rel}:{k}": v for k, v in flat.items()}


class _Current:
    """The current hash of a path, from the catalog or from disk, each asked once."""

    def __init__(self, catalog: Catalog, mode: str,
                 on_hash: Callable[[str, int], None] | None = None) -> None:
        self.catalog, self.mode, self.on_hash = catalog, mode, on_hash
        self.latest: dict[str, tuple[str, int, int]] = {}
        for r in catalog._execute(
                "SELECT a.path, v.hash, v.size, v.mtime_ns FROM versions v JOIN assets a"
                " ON a.id = v.asset_id ORDER BY v.seen_at, v.id"):
            self.latest[r[0]] = (r[1], r[2], r[3])
        self._disk: dict[str, str | None] = {}

    def abspath(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.catalog.project, path)

    def hash(self, path: str) -> str | None:
        """The hash now, None when the file is gone (disk) or was never seen."""
        if self.mode == "catalog":
            got = self.latest.get(path)
            return got[0] if got else None
        if path not in self._disk:
            self._disk[path] = self._hash_disk(path)
        return self._disk[path]

    def _hash_disk(self, path: str) -> str | None:
        from .hashing import hash_file

        full = self.abspath(path)
        try:
            st = os.stat(full)
        except OSError:
            return None
        if not os.path.isfile(full):
            return None
        cached = self.catalog.stat_lookup(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if cached is not None:
            return cached
        known = self.latest.get(path)
        if known is not None and known[1] == st.st_size and known[2] == st.st_mtime_ns:
            return known[0]  # same size and mtime as the version last seen: DVC's rule too
        if self.on_hash is not None:
            self.on_hash(path, st.st_size)  # hashing a big file takes a while: say so
        try:
            return hash_file(full).hash
        except (StoreError, OSError):
            return None

    def data(self, path: str, hash: str | None) -> bytes | None:
        """The current bytes of a (small) file, for its params."""
        if self.mode == "catalog" and hash is not None:
            try:
                with self.catalog.objects.open(hash) as f:
                    return f.read(_CONFIG_MAX + 1)
            except (StoreError, OSError):
                pass  # not kept in the store: the file on disk is the next best
        try:
            with open(self.abspath(path), "rb") as f:
                data = f.read(_CONFIG_MAX + 1)
        except OSError:
            return None
        return data if len(data) <= _CONFIG_MAX else None


def _last_writers(catalog: Catalog) -> dict[str, tuple[int, int, str]]:
    """path -> (run id, version id, hash) of the last finished run that wrote it (a run
    still running has not finished its outputs), its last version of the path."""
    rows = catalog._execute(
        "SELECT a.path, io.run_id, max(v.id), r.started_at FROM io"
        " JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
        " JOIN runs r ON r.id = io.run_id WHERE io.role = 'output' AND r.status != 'running'"
        " GROUP BY a.path, io.run_id ORDER BY r.started_at, io.run_id").fetchall()
    hashes = {}
    last: dict[str, tuple[int, int]] = {}
    for path, run_id, vid, _ in rows:
        last[path] = (int(run_id), int(vid))
    ids = sorted({vid for _, vid in last.values()})
    for r in catalog._execute("SELECT id, hash FROM versions WHERE id IN"
                              " (SELECT value FROM json_each(?))", (json.dumps(ids),)):
        hashes[int(r[0])] = r[1]
    return {p: (run, vid, hashes[vid]) for p, (run, vid) in last.items()}


def outdated(catalog: Catalog, *, current: str = "disk",
             read_params: ReadParams | None = None,
             on_hash: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """What is out of date, as a JSON-ready dict.

    `current`: "catalog" (the last version the agent saw of each path: right while it
    watches) or "disk" (hash the files now). `read_params`: turns a config file's
    bytes into params (default `read_config`). `on_hash(path, size)` is called before
    a file on disk is hashed (one whose size and mtime say it changed): for progress.

    Returns ``{"current", "runs": [{"run", "stage", "command", "cmd", "outputs":
    [paths], "reasons": [...]}], "outputs": [{"path", "run", "stage", "state",
    "written", "now"}], "checked": {"runs", "outputs"}}``. `runs` is the re-run order,
    upstream first. A reason is ``{"kind": "input"|"code", "path", "was", "now"}``,
    ``{"kind": "param", "key", "path", "was", "now"}``, ``{"kind": "output", "path",
    "was", "now"}`` (changed or removed since the run wrote it) or ``{"kind":
    "upstream", "run", "stage", "paths"}``; "now" is null for a file that is gone. An
    output's state is `stale` (its run is out of date), `modified` or `missing`.
    """
    if current not in CURRENT:
        raise ValueError(f"current must be one of {', '.join(CURRENT)}, not {current!r}")
    reader = read_params or read_config
    with catalog._snapshot():
        writers = _last_writers(catalog)
        run_ids = sorted({w[0] for w in writers.values()})
        files = pl.run_files(catalog, run_ids)
        params = pl.run_param_rows(catalog, run_ids)
        groups = pl.group_runs(catalog)
        now = _Current(catalog, current, on_hash)
    stage_of: dict[int, dict[str, Any]] = {}
    for group in groups.values():
        for run in group["runs"]:
            stage_of[run["id"]] = {"name": group["name"], "base": group["base"],
                                   "command": run["command"]}
    names = {g["base"] for g in groups.values()}
    owned: dict[int, list[str]] = {}
    for path, (run_id, _, _) in sorted(writers.items()):
        owned.setdefault(run_id, []).append(path)

    direct: dict[int, list[dict[str, Any]]] = {}
    out_state: dict[str, tuple[str, str | None]] = {}
    empty = records.empty_files()
    for run_id in run_ids:
        got = files.get(run_id, empty)
        mine = set(owned.get(run_id, ()))
        written = {e["path"] for e in got["outputs"]}
        base = stage_of.get(run_id, {}).get("base", "")
        reasons: list[dict[str, Any]] = []
        run_params = params.get(run_id, {})
        from_files = {pl.split_key(k)[0] for k, (_, src) in run_params.items()
                      if src not in pl.NOT_FILES}
        for entry in got["inputs"]:
            path = entry["path"]
            if path in written:
                continue  # read, then rewritten by the run itself: its own doing
            was, cur = entry["hash"], now.hash(path)
            if cur == was:
                continue
            if path in from_files and cur is not None:
                changed = _param_changes(path, run_params, base, names, reader,
                                         now.data(path, cur))
                if changed is not None:
                    reasons.extend(changed)
                    continue
            reasons.append({"kind": "input", "path": path, "was": was, "now": cur})
        for entry in got["code"]:
            was, cur = entry["hash"], now.hash(entry["path"])
            if cur != was:
                reasons.append({"kind": "code", "path": entry["path"], "was": was, "now": cur})
        for entry in got["outputs"]:
            path = entry["path"]
            if path not in mine:
                continue
            was, cur = writers[path][2], now.hash(path)
            if cur != was:
                out_state[path] = ("missing" if cur is None else "modified", cur)
                reasons.append({"kind": "output", "path": path, "was": was, "now": cur})
        if reasons:
            direct[run_id] = reasons

    # A run that read what an out-of-date run last wrote is out of date too.
    feeds: dict[int, dict[int, list[str]]] = {}
    for run_id in run_ids:
        got = files.get(run_id, empty)
        written = {e["path"] for e in got["outputs"]}
        for entry in got["inputs"]:
            writer = writers.get(entry["path"])
            if writer and writer[0] != run_id and entry["path"] not in written:
                feeds.setdefault(run_id, {}).setdefault(writer[0], []).append(entry["path"])
    stale = _propagate(run_ids, direct, feeds)
    order = _rerun_order(stale, feeds, run_ids)

    out_runs = []
    for run_id in order:
        info = stage_of.get(run_id, {"name": "", "command": []})
        reasons = list(direct.get(run_id, []))
        for up, paths in sorted(feeds.get(run_id, {}).items()):
            if up in stale:
                reasons.append({"kind": "upstream", "run": up,
                                "stage": stage_of.get(up, {}).get("name", ""),
                                "paths": sorted(set(paths))})
        out_runs.append({"run": run_id, "stage": info["name"], "command": info["command"],
                         "cmd": pl.command_line(info["command"]),
                         "outputs": owned.get(run_id, []), "reasons": reasons})
    out_files = []
    for run_id in order:
        for path in owned.get(run_id, []):
            state, cur = out_state.get(path, ("stale", writers[path][2]))
            out_files.append({"path": path, "run": run_id,
                              "stage": stage_of.get(run_id, {}).get("name", ""),
                              "state": state, "written": writers[path][2], "now": cur})
    return {"current": current, "runs": out_runs, "outputs": out_files,
            "checked": {"runs": len(run_ids), "outputs": len(writers)}}


def _param_changes(path: str, run_params: dict[str, tuple], stage: str, names: set[str],
                   reader: ReadParams, data: bytes | None) -> list[dict[str, Any]] | None:
    """The stage's params of `path` that changed (empty: only other stages' did);
    None when the file's params cannot be read now (then it counts as an input)."""
    if data is None:
        return None
    fresh = reader(path, data)
    if not fresh:
        return None
    recorded = [k for k, (_, src) in run_params.items() if src == path]
    # The stage's keys then and now: a key that appeared in its section counts too.
    mine = set(pl.stage_params(recorded, stage, names))
    mine |= set(pl.stage_params([k for k in fresh if k.startswith(path + ":")], stage, names))
    out = []
    for key in sorted(mine):
        was = run_params.get(key, (None, None))[0]
        cur = fresh.get(key)
        if records.canonical(was) != records.canonical(cur):
            out.append({"kind": "param", "key": key, "path": path, "was": was, "now": cur})
    return out


def _propagate(run_ids: list[int], direct: dict[int, list], feeds: dict[int, dict[int, list]]
               ) -> set[int]:
    """The runs out of date directly or through what they read: a walk down from the
    direct ones (each run once, so a cycle of runs cannot loop)."""
    readers: dict[int, list[int]] = {}
    for run_id, ups in feeds.items():
        for up in ups:
            readers.setdefault(up, []).append(run_id)
    stale = set(direct)
    todo = list(stale)
    while todo:
        for reader in readers.get(todo.pop(), ()):
            if reader not in stale:
                stale.add(reader)
                todo.append(reader)
    return stale


def _rerun_order(stale: set[int], feeds: dict[int, dict[int, list]], run_ids: list[int]
                 ) -> list[int]:
    """The stale runs, each after the stale runs it reads from (Kahn's order); ties, and
    a cycle's way in, by run order."""
    position = {r: i for i, r in enumerate(run_ids)}
    waits = {r: {u for u in feeds.get(r, {}) if u in stale and u != r} for r in stale}
    readers: dict[int, list[int]] = {}
    for run_id, ups in waits.items():
        for up in ups:
            readers.setdefault(up, []).append(run_id)
    ready = [(position[r], r) for r, ups in waits.items() if not ups]
    heapq.heapify(ready)
    done: list[int] = []
    placed: set[int] = set()
    while len(done) < len(stale):
        if not ready:  # a cycle: the earliest run left goes first
            left = min((r for r in stale if r not in placed), key=position.__getitem__)
            ready.append((position[left], left))
        _, run_id = heapq.heappop(ready)
        if run_id in placed:
            continue
        placed.add(run_id)
        done.append(run_id)
        for reader in readers.get(run_id, ()):
            waits[reader].discard(run_id)
            if not waits[reader] and reader not in placed:
                heapq.heappush(ready, (position[reader], reader))
    return done
