"""Lineage: the graph runs -> versions -> runs, walked up (what led to a file) or down.

Edges are the experiment's data flow only: a version a run read as an `input` points to
the run, a run points to each version it wrote as an `output`. Code files are a run's
attribute, not an edge (a code file has no producer and would tie every run of a
script together), and `meta` files (tools' bookkeeping) are never lineage. A version
can be produced by several runs (a deterministic stage run twice writes the same
content) and read by many.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import records
from .errors import NoSuchRun, StoreError

if TYPE_CHECKING:
    from .catalog import Catalog

_HEX = re.compile(r"(?:blake3:)?[0-9a-fA-F]{1,64}")


class NotInCatalog(StoreError):
    """A path, version or run the lineage was asked about is not in the catalog."""


def producers(catalog: Catalog, version_hash: str, path: str | None = None) -> list[int]:
    """The ids of the runs that wrote this content (`"blake3:<hex>"`), oldest run first.

    `path` (project-relative or absolute) limits it to that file; without it, the
    content at any path counts (a copy made by a run is made by that run). Empty when
    no run wrote it: a file a person put there, or one that was there before the agent.
    Meta writes (a tool's file) never make a run a producer.
    """
    args: list[Any] = [version_hash]
    where = "v.hash = ?"
    if path is not None:
        where += " AND a.path = ?"
        args.append(catalog.relpath(path))
    # Its `output` links, plus `versions.run_id` where the agent named a producer
    # without an io row (a run that wrote a file and removed it still made the content).
    rows = catalog._execute(
        "SELECT DISTINCT r.id FROM runs r WHERE r.id IN ("
        " SELECT io.run_id FROM io JOIN versions v ON v.id = io.version_id"
        f" JOIN assets a ON a.id = v.asset_id WHERE {where} AND io.role = 'output'"
        " UNION SELECT v.run_id FROM versions v JOIN assets a ON a.id = v.asset_id"
        f" WHERE {where} AND v.run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM io m"
        " WHERE m.version_id = v.id AND m.run_id = v.run_id AND m.role = 'meta'))"
        " ORDER BY r.started_at, r.id",
        args + args,
    ).fetchall()
    return [int(r[0]) for r in rows]


@dataclass
class _Start:
    """Where a walk begins: version ids and run ids, and the words the person gave."""

    versions: list[int] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)


def _version_rows(catalog: Catalog, where: str, args: list[Any]) -> list[Any]:
    return catalog._execute(
        "SELECT v.id, a.path, v.hash FROM versions v JOIN assets a ON a.id = v.asset_id"
        f" WHERE {where} ORDER BY v.seen_at DESC, v.id DESC", args).fetchall()


def _current_of(catalog: Catalog, paths_where: str, args: list[Any]) -> list[int]:
    """The current (last seen) version of each asset matching the condition on `a`."""
    rows = catalog._execute(
        "SELECT (SELECT v.id FROM versions v WHERE v.asset_id = a.id"
        " ORDER BY v.seen_at DESC, v.id DESC LIMIT 1) FROM assets a"
        f" WHERE {paths_where} ORDER BY a.path", args).fetchall()
    return [int(r[0]) for r in rows if r[0] is not None]


def _looks_like_run(text: str) -> bool:
    return text == "last" or text.isdigit() or (text.startswith("-") and text[1:].isdigit())


def resolve_target(catalog: Catalog, target: str, *, cwd: str | None = None) -> _Start:
    """PATH (its current version; a folder: the current version of each file under it),
    PATH@HASH (a version of PATH whose hex starts with HASH) or a run (`12`, `last`,
    `-N`) -> where a walk starts. A relative PATH is taken from `cwd` (default: the
    project). Raises NotInCatalog with a sentence saying what was not found."""
    text = str(target).strip()
    if not text:
        raise NotInCatalog("give a file (PATH or PATH@HASH) or a run to follow")

    def rel(path: str) -> str:
        if cwd is not None and not os.path.isabs(path):
            path = os.path.join(cwd, path)
        return catalog.relpath(path)

    key = rel(text)
    found = _current_of(catalog, "a.path = ?", [key])
    if found:
        return _Start(versions=found)
    head, at, tail = text.rpartition("@")
    if at and head and _HEX.fullmatch(tail):
        path = rel(head)
        hexpart = tail.lower().removeprefix("blake3:")
        rows = _version_rows(catalog, "a.path = ? AND substr(v.hash, 1, ?) = ?",
                             [path, 7 + len(hexpart), "blake3:" + hexpart])
        if len(rows) == 1:
            return _Start(versions=[int(rows[0]["id"])])
        if not rows:
            known = catalog._execute("SELECT count(*) FROM versions v JOIN assets a"
                                     " ON a.id = v.asset_id WHERE a.path = ?",
                                     (path,)).fetchone()[0]
            if not known:
                raise NotInCatalog(f"{path} is not in the catalog: no run read or wrote it "
                                   "while the agent watched")
            raise NotInCatalog(f"{path} has no version whose hash starts with {hexpart} "
                               f"(it has {known}; `onlooker lineage {path}` follows the "
                               "current one)")
        raise NotInCatalog(f"{hexpart} names {len(rows)} versions of {path}: give more "
                           "digits of the hash")
    if key != ".":
        prefix = key.rstrip("/") + "/"
        found = _current_of(catalog, "substr(a.path, 1, ?) = ?", [len(prefix), prefix])
    else:
        found = _current_of(catalog, "1", [])
    if found:
        return _Start(versions=found)
    try:
        return _Start(runs=[catalog.resolve_run(text)])
    except NoSuchRun as err:
        if _looks_like_run(text):
            raise
        raise NotInCatalog(f"{key} is not in the catalog (no run read or wrote it while "
                           "the agent watched), nor a run") from err


# The walk, as one recursive query. A row is (kind, id, d): 'v' a version, 'r' a run;
# d counts the runs passed since the start (for --depth). Up: a version leads to the
# runs that produced it, a run to the versions it read (not those it wrote itself: a
# file read and rewritten is the run's output). Down: a version leads to the runs
# that read it, a run to what it wrote. UNION keeps each (kind, id, d) once, so the
# walk ends on any graph; without a depth, d stays 0 and each node is seen once.
_STEP_UP = (
    "SELECT 'r', io.run_id, w.d + {inc} FROM walk w JOIN io ON io.version_id = w.id"
    " WHERE w.k = 'v' AND io.role = 'output' AND w.d < {limit}",
    "SELECT 'r', v.run_id, w.d + {inc} FROM walk w JOIN versions v ON v.id = w.id"
    " WHERE w.k = 'v' AND v.run_id IS NOT NULL AND w.d < {limit} AND NOT EXISTS"
    " (SELECT 1 FROM io m WHERE m.version_id = v.id AND m.run_id = v.run_id"
    " AND m.role = 'meta')",
    "SELECT 'v', io.version_id, w.d FROM walk w JOIN io ON io.run_id = w.id"
    " WHERE w.k = 'r' AND io.role = 'input' AND NOT EXISTS (SELECT 1 FROM io o"
    " WHERE o.run_id = io.run_id AND o.version_id = io.version_id AND o.role = 'output')",
)
_STEP_DOWN = (
    "SELECT 'r', io.run_id, w.d + {inc} FROM walk w JOIN io ON io.version_id = w.id"
    " WHERE w.k = 'v' AND io.role = 'input' AND w.d < {limit} AND NOT EXISTS"
    " (SELECT 1 FROM io o WHERE o.run_id = io.run_id AND o.version_id = io.version_id"
    " AND o.role = 'output')",
    "SELECT 'v', io.version_id, w.d FROM walk w JOIN io ON io.run_id = w.id"
    " WHERE w.k = 'r' AND io.role = 'output'",
    "SELECT 'v', v.id, w.d FROM walk w JOIN versions v ON v.run_id = w.id"
    " WHERE w.k = 'r' AND NOT EXISTS (SELECT 1 FROM io m WHERE m.version_id = v.id"
    " AND m.run_id = v.run_id AND m.role = 'meta')",
)


def _walk(catalog: Catalog, start: _Start, *, up: bool, depth: int | None
          ) -> tuple[set[int], set[int]]:
    """(version ids, run ids) reached from `start`, itself included."""
    if sqlite3.sqlite_version_info < (3, 34):
        raise StoreError(f"lineage needs SQLite 3.34 or newer (a recursive query with "
                         f"several steps); this Python has {sqlite3.sqlite_version}")
    steps = _STEP_UP if up else _STEP_DOWN
    inc, limit = ("0", "1") if depth is None else ("1", str(int(depth)))
    recursive = " UNION ".join(s.format(inc=inc, limit=limit) for s in steps)
    seeds = [["v", v] for v in start.versions] + [["r", r] for r in start.runs]
    rows = catalog._execute(
        "WITH RECURSIVE walk(k, id, d) AS ("
        " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 0"
        " FROM json_each(?) UNION " + recursive + ") SELECT DISTINCT k, id FROM walk",
        (json.dumps(seeds),)).fetchall()
    versions = {int(r[1]) for r in rows if r[0] == "v"}
    runs = {int(r[1]) for r in rows if r[0] == "r"}
    return versions, runs


def _ids(values: set[int] | list[int]) -> str:
    return json.dumps(sorted(values))


def version_id(path: str, hash: str) -> str:
    """A version's node id in a lineage graph: `PATH@blake3:<hex>`."""
    return f"{path}@{hash}"


def run_node_id(run_id: int) -> str:
    return f"run:{run_id}"


def _edges(catalog: Catalog, versions: set[int], runs: set[int]) -> list[tuple[int, int, str]]:
    """(run id, version id, role) for every lineage edge between the reached nodes.

    Read run by run from the index on io.run_id (CROSS JOIN keeps SQLite from scanning
    io for each id), then kept where the version was reached too."""
    if not versions or not runs:
        return []
    ids = _ids(runs)
    links: dict[tuple[int, int], set[str]] = {}
    for run_id, vid, role in catalog._execute(
            "SELECT io.run_id, io.version_id, io.role FROM json_each(?) AS j"
            " CROSS JOIN io ON io.run_id = j.value", (ids,)):
        if vid in versions:
            links.setdefault((run_id, vid), set()).add(role)
    for vid, run_id in catalog._execute(
            "SELECT v.id, v.run_id FROM json_each(?) AS j CROSS JOIN versions v"
            " ON v.run_id = j.value", (ids,)):
        if vid in versions:
            links.setdefault((run_id, vid), set()).add("producer")
    out = []
    for (run_id, vid), roles in links.items():
        if "output" in roles or ("producer" in roles and "meta" not in roles):
            out.append((run_id, vid, "output"))  # read and written: the run's output
        elif "input" in roles:
            out.append((run_id, vid, "input"))
    return sorted(out)


def _version_nodes(catalog: Catalog, versions: set[int]) -> dict[int, dict[str, Any]]:
    rows = catalog._execute(
        "SELECT v.id, v.asset_id, a.path, v.hash, v.size, a.kind, v.created_at"
        " FROM json_each(?) AS j CROSS JOIN versions v ON v.id = j.value"
        " JOIN assets a ON a.id = v.asset_id", (_ids(versions),)).fetchall()
    assets = sorted({int(r["asset_id"]) for r in rows})
    # the current version of each asset met: the last seen (the index on seen_at)
    current = {int(r[0]) for r in catalog._execute(
        "SELECT (SELECT l.id FROM versions l WHERE l.asset_id = j.value"
        " ORDER BY l.seen_at DESC, l.id DESC LIMIT 1) FROM json_each(?) AS j",
        (json.dumps(assets),)) if r[0] is not None}
    return {int(r["id"]): {
        "id": version_id(r["path"], r["hash"]), "type": "version", "path": r["path"],
        "hash": r["hash"], "size": r["size"], "kind": r["kind"],
        "current": int(r["id"]) in current, "created_at": records.iso(r["created_at"]),
    } for r in rows}


def _run_nodes(catalog: Catalog, runs: set[int]) -> dict[int, dict[str, Any]]:
    from .pipeline import relpath_memo, stage_key

    ids = _ids(runs)
    rows = catalog._execute(
        "SELECT r.id, r.command, r.cwd, r.status, r.exit_code, r.started_at, r.ended_at"
        " FROM json_each(?) AS j CROSS JOIN runs r ON r.id = j.value", (ids,)).fetchall()
    code: dict[int, list[dict[str, Any]]] = {}
    for r in catalog._execute(
            "SELECT DISTINCT io.run_id, a.path, v.hash FROM json_each(?) AS j"
            " CROSS JOIN io ON io.run_id = j.value JOIN versions v ON v.id = io.version_id"
            " JOIN assets a ON a.id = v.asset_id WHERE io.role = 'code'"
            " ORDER BY a.path, v.id", (ids,)):
        code.setdefault(int(r[0]), []).append({"path": r[1], "hash": r[2]})
    relpath = relpath_memo(catalog)
    out = {}
    for r in rows:
        run_id = int(r["id"])
        command = records.loads(r["command"])
        mine = code.get(run_id, [])
        out[run_id] = {
            "id": run_node_id(run_id), "type": "run", "run": run_id, "command": command,
            "stage": stage_key(command, r["cwd"], [c["path"] for c in mine], relpath)[1],
            "status": r["status"], "exit_code": r["exit_code"],
            "started_at": records.iso(r["started_at"]), "ended_at": records.iso(r["ended_at"]),
            "code": mine,
        }
    return out


def lineage(catalog: Catalog, target: str, *, up: bool = True, depth: int | None = None,
            cwd: str | None = None) -> dict[str, Any]:
    """The lineage graph of a file or a run, as a JSON-ready dict.

    `target`: a PATH (its current version; a folder: each file's current version),
    `PATH@HASH` (the version of PATH whose hash starts with HASH) or a run (`12`,
    `last`, `-N`). `up`: what led to it (the runs that wrote it, what they read, the
    runs that wrote that, ...); `up=False`: what came from it (the runs that read it,
    what they wrote, ...). `depth`: follow at most that many runs from the target
    (None: all the way).

    Returns ``{"targets": [node ids], "direction": "up"|"down", "depth", "nodes":
    [...], "edges": [{"from", "to", "role"}]}``; a version node is ``{"id":
    "PATH@blake3:<hex>", "type": "version", "path", "hash", "size", "kind", "current",
    "created_at"}``, a run node ``{"id": "run:ID", "type": "run", "run", "command",
    "stage", "status", "exit_code", "started_at", "ended_at", "code": [{path, hash}]}``.
    Edges run with the data: version -> run (`input`), run -> version (`output`).
    """
    if depth is not None and depth < 0:
        raise ValueError("depth must be 0 or more")
    with catalog._snapshot():
        start = resolve_target(catalog, target, cwd=cwd)
        versions, runs = _walk(catalog, start, up=up, depth=depth)
        edges = _edges(catalog, versions, runs)
        vnodes = _version_nodes(catalog, versions)
        rnodes = _run_nodes(catalog, runs)
    nodes = sorted(rnodes.values(), key=lambda n: (n["started_at"] or "", n["run"]))
    nodes += sorted(vnodes.values(), key=lambda n: (n["path"], n["created_at"] or ""))
    out_edges = []
    for run_id, vid, role in edges:
        run, ver = rnodes[run_id]["id"], vnodes[vid]["id"]
        out_edges.append({"from": run, "to": ver, "role": role} if role == "output"
                         else {"from": ver, "to": run, "role": role})
    targets = [vnodes[v]["id"] for v in start.versions] + [rnodes[r]["id"] for r in start.runs]
    return {"targets": targets, "direction": "up" if up else "down", "depth": depth,
            "nodes": nodes, "edges": out_edges}
