"""Shaping catalog rows into the stable JSON dicts that `run()` and `runs()` return."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

# Columns of `runs` every read selects, in the order run_dict reads them.
RUN_COLUMNS = (
    "id, command, cwd, status, exit_code, signal, started_at, ended_at, tier, env_id, "
    "git_commit, git_branch, git_dirty, git_diff, note"
)
STEP_COLUMNS = (
    "id, pid, ppid, parent_step_id, argv, cwd, started_at, ended_at, status, exit_code, signal"
)
# input / output / code: the experiment's assets; meta: a file a tool read or wrote
# about the project (VCS, packaging, caches, tracking-store bookkeeping; agent/rules/roles.py),
# never lineage and never params.
ROLES = ("input", "output", "code", "meta")
ACCESSES = ("read", "write")
# How a file was attributed to the run, strongest first: the kernel named the process
# (fanotify), the file was open in its /proc/PID/fd, its argv named it, it changed while
# the run (alone) was alive, a rescan found it changed then, or it was a guess among runs.
BASES = ("fanotify", "fd", "argv", "window", "rescan", "ambiguous")
_BASIS_RANK = {b: i for i, b in enumerate(BASES)}
_ROLE_KEY = {"input": "inputs", "output": "outputs", "code": "code", "meta": "meta"}


def safe_text(value: str | None) -> str | None:
    """A str SQLite can store: undecodable bytes (surrogate escapes) become \\xNN."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return os.fsencode(value).decode("utf-8", "backslashreplace")


def dumps(value: Any) -> str:
    """JSON for one stored value; tuples become lists, unknown types their str().

    Undecodable bytes of Linux names (surrogate escapes) are written as \\uXXXX, which
    SQLite can store and json.loads turns back into the same str."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
    return text


def canonical(value: Any) -> str:
    """The one JSON text of a value that hashing and dedup rely on."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def iso(ts: float | None) -> str | None:
    """Unix seconds -> `2026-11-26T20:31:04.123Z` (UTC, milliseconds)."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def access_for(role: str, access: str | None) -> str:
    """The stored access of an io row: given for meta, implied by the other roles."""
    if role == "meta":
        if access not in ACCESSES:
            raise ValueError(f"a meta link needs access 'read' or 'write', not {access!r}")
        return access
    implied = "write" if role == "output" else "read"
    if access is not None and access != implied:
        raise ValueError(f"an {role} link is a {implied}, not a {access}")
    return implied


def file_entry(row: sqlite3.Row) -> dict[str, Any]:
    entry = {"path": row["path"], "hash": row["hash"], "size": row["size"], "kind": row["kind"],
             "basis": row["basis"]}
    if row["role"] == "meta":
        entry["access"] = row["access"]
    return entry


def empty_files() -> dict[str, list[dict[str, Any]]]:
    return {"inputs": [], "outputs": [], "code": [], "meta": []}


def _stronger(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if _BASIS_RANK.get(a, len(BASES)) <= _BASIS_RANK.get(b, len(BASES)) else b


def group_files(rows: Iterable[sqlite3.Row]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """run_id -> {"inputs": [...], "outputs": [...], "code": [...], "meta": [...]} (rows
    come sorted by path, then version).

    The run as a whole: a version one step wrote is no input even where another step
    read it; a version the run read and did not write stays an input even where it
    then wrote that path (a checkpoint resumed from); a path written several times
    shows its last version. Meta files follow the same rules among themselves (a
    bookkeeping file rewritten shows its last version, read back it is no read). A file
    linked by several steps is listed once, with the strongest basis any gave.
    """
    out: dict[int, dict[str, list[dict[str, Any]]]] = {}
    newest: dict[tuple[int, str, bool], int] = {}
    written: set[tuple[int, int]] = set()
    rows = list(rows)
    for row in rows:
        if row["access"] == "write":
            key = (row["run_id"], row["path"], row["role"] == "meta")
            newest[key] = max(newest.get(key, 0), row["vid"])
            written.add((row["run_id"], row["vid"]))
    seen: dict[tuple[int, str, int, str], dict[str, Any]] = {}
    for row in rows:
        run_id, path, role = row["run_id"], row["path"], row["role"]
        files = out.get(run_id)
        if files is None:
            files = out[run_id] = empty_files()
        if row["access"] == "write":
            if row["vid"] != newest.get((run_id, path, role == "meta")):
                continue
        elif (run_id, row["vid"]) in written:
            continue
        key = (run_id, role, row["vid"], row["access"])
        entry = seen.get(key)
        if entry is not None:  # another step's link of the same file
            entry["basis"] = _stronger(entry["basis"], row["basis"])
            continue
        entry = seen[key] = file_entry(row)
        files[_ROLE_KEY[role]].append(entry)
    return out


def group_params(rows: Iterable[sqlite3.Row]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["run_id"], {})[row["key"]] = json.loads(row["value"])
    return out


def run_dict(
    row: sqlite3.Row,
    params: Mapping[str, Any],
    files: Mapping[str, list[dict[str, Any]]],
    *,
    tags: Iterable[str] = (),
    origin: Mapping[str, Any] | None = None,
    notebook: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """The contract shared by run() and runs(); run() adds `env` and `steps`. `tags`:
    the run's tag names (sorted); its note comes with the row (runs.note). `origin`:
    where an imported run came from (store/share.py origins_for), None for a local one.
    `notebook`: (path, found_by) of the notebook a kernel run executes (notebooks_for)."""
    started, ended = row["started_at"], row["ended_at"]
    git = None
    if row["git_commit"] is not None or row["git_branch"] is not None:
        dirty = row["git_dirty"]
        git = {"commit": row["git_commit"], "branch": row["git_branch"],
               "dirty": None if dirty is None else bool(dirty), "diff": row["git_diff"]}
    return {
        "id": row["id"],
        "command": loads(row["command"]),
        "cwd": row["cwd"],
        "status": row["status"],
        "exit_code": row["exit_code"],
        "signal": row["signal"],
        "started_at": iso(started),
        "ended_at": iso(ended),
        "duration": None if ended is None else round(ended - started, 6),
        "params": dict(params),
        "inputs": list(files.get("inputs", [])),
        "outputs": list(files.get("outputs", [])),
        "code": list(files.get("code", [])),
        "meta": list(files.get("meta", [])),
        "git": git,
        "tier": row["tier"],
        "tags": list(tags),
        "note": row["note"] if "note" in row.keys() else None,
        "origin": None if origin is None else dict(origin),
        "notebook": None if notebook is None else {"path": notebook[0],
                                                   "found_by": notebook[1]},
        # what `runs` calls it: a kernel's run by its notebook, others by their command
        "name": None if notebook is None else f"{notebook[0]} (kernel)",
    }


def step_dict(row: sqlite3.Row, inputs: list[str], outputs: list[str],
              cell: tuple[int | None, str | None] | None = None) -> dict[str, Any]:
    """One step; `cell`: (execution count, source) when the step is a notebook cell a
    kernel executed (cells_of), else None (a process)."""
    return {
        "id": row["id"],
        "pid": row["pid"],
        "ppid": row["ppid"],
        "parent": row["parent_step_id"],
        "argv": loads(row["argv"]),
        "cwd": row["cwd"],
        "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]),
        "status": row["status"],
        "exit_code": row["exit_code"],
        "signal": row["signal"],
        "inputs": inputs,
        "outputs": outputs,
        "cell": None if cell is None else cell[0],
        "source": None if cell is None else cell[1],
    }


def notebooks_for(execute: Callable[..., Any], version: int, since: int,
                  ids: list[int]) -> dict[int, tuple[str, str | None]]:
    """run id -> (notebook, found_by) for the kernel runs among `ids`; {} on a catalog
    older than schema `since` (read-only opens accept those)."""
    if version < since or not ids:
        return {}
    out: dict[int, tuple[str, str | None]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for r in execute(f"SELECT id, notebook, notebook_via FROM runs WHERE id IN ({marks})"
                         " AND notebook IS NOT NULL", chunk):
            out[r["id"]] = (r["notebook"], r["notebook_via"])
    return out


def cells_of(execute: Callable[..., Any], version: int, since: int,
             run_id: int) -> dict[int, tuple[int | None, str | None]]:
    """step id -> (execution count, source) for the cell steps of one run."""
    if version < since:
        return {}
    return {r["id"]: (r["cell"], r["source"]) for r in execute(
        "SELECT id, cell, source FROM steps WHERE run_id = ? AND (cell IS NOT NULL"
        " OR source IS NOT NULL)", (run_id,))}


def exit_unseen(status: str | None, tier: str | None) -> str | None:
    """Why a run that ended has no exit status (status `ended`), in one phrase from its
    capture tier; None for any other status."""
    if status != "ended":
        return None
    if (tier or "").startswith("poll"):
        return ("the poll tier sees a process end, and its exit status only when it catches"
                " the process as a zombie before its parent reaps it")
    return "the process source lost its exit event (an overflow) and found the process gone"
