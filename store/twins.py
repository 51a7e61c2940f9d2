"""Twins: runs that did the same computation (same command, code versions, input
versions and params; meta files ignored), and the outputs where twins disagree.

A run's signature is the tuple of those four things (argv as stored, sorted (role,
path, hash) reads, sorted (key, JSON value) params), computed from the catalog's
`runs`, `io` and `params` rows. Only runs with the same command can be twins, so a
lookup first narrows to the runs sharing the commands asked about (one scan of
`runs`) and reads io and params for those candidates only; a run still `running` has
no signature yet (its reads are not all in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import records

if TYPE_CHECKING:
    from .catalog import Catalog

Signature = tuple[str, tuple[tuple[str, str, str], ...], tuple[tuple[str, str], ...]]
_CHUNK = 500
_WHOLE = 2000
# Reads of a run that it did not write itself: the same rule group_files uses for
# inputs and code, so that a checkpoint it rewrote does not count as read.
_READS_SQL = (
    "SELECT io.run_id, io.role, a.path, v.hash FROM io"
    " JOIN versions v ON v.id = io.version_id JOIN assets a ON a.id = v.asset_id"
    " WHERE io.run_id IN ({marks}) AND io.role IN ('input', 'code')"
    " AND NOT EXISTS (SELECT 1 FROM io w WHERE w.run_id = io.run_id AND"
    " w.version_id = io.version_id AND w.access = 'write')"
)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i:i + _CHUNK])


def signatures(catalog: Catalog, run_ids: Iterable[int] | None = None) -> dict[int, Signature]:
    """run id -> signature (a hashable value, equal for twins) for these runs (None:
    every run), runs still running left out."""
    with catalog._snapshot():
        if run_ids is None:
            rows = catalog._execute(
                "SELECT id, command FROM runs WHERE status != 'running'").fetchall()
        else:
            wanted = sorted(set(run_ids))
            rows = []
            for chunk in _chunks(wanted):
                rows += catalog._execute(
                    f"SELECT id, command FROM runs WHERE status != 'running' AND id IN"
                    f" ({','.join('?' * len(chunk))})", chunk).fetchall()
        commands = {int(r[0]): r[1] for r in rows}
        ids = sorted(commands)
        reads: dict[int, set[tuple[str, str, str]]] = {i: set() for i in ids}
        params: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
        whole = run_ids is None
        if whole:
            # every run: two scans beat thousands of IN lists
            read_rows: Iterable[Any] = catalog._execute(
                _READS_SQL.replace("io.run_id IN ({marks}) AND ", ""))
            param_rows: Iterable[Any] = catalog._execute(
                "SELECT run_id, key, value FROM params")
            _fill(reads, params, read_rows, param_rows)
        else:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                _fill(reads, params,
                      catalog._execute(_READS_SQL.format(marks=marks), chunk),
                      catalog._execute(f"SELECT run_id, key, value FROM params WHERE run_id"
                                       f" IN ({marks})", chunk))
    # a tuple, not a digest of JSON: hashing it is what grouping needs, at a third
    # of the cost on 10,000 runs
    return {run_id: (commands[run_id], tuple(sorted(reads[run_id])),
                     tuple(sorted(params[run_id]))) for run_id in ids}


def _fill(reads: dict[int, set[tuple[str, str, str]]], params: dict[int, list[tuple[str, str]]],
          read_rows: Iterable[Any], param_rows: Iterable[Any]) -> None:
    for run_id, role, path, hash in read_rows:
        slot = reads.get(run_id)
        if slot is not None:
            slot.add((role, path, hash))
    for run_id, key, value in param_rows:
        slot_p = params.get(run_id)
        if slot_p is not None:
            slot_p.append((key, value))


def twins_of(catalog: Catalog, run_ids: Iterable[int]) -> dict[int, list[int]]:
    """run id -> the ids of its twins (itself excluded, oldest id first) for each run
    asked about; a run with none (or still running) maps to []."""
    asked = sorted({int(i) for i in run_ids})
    if not asked:
        return {}
    candidates: list[int] = []
    for chunk in _chunks(asked):
        candidates += [int(r[0]) for r in catalog._execute(
            "SELECT id FROM runs WHERE status != 'running' AND command IN (SELECT command"
            f" FROM runs WHERE id IN ({','.join('?' * len(chunk))}))", chunk)]
    # many candidates (one command run thousands of times): two whole scans are
    # cheaper than their IN lists
    sigs = signatures(catalog, None if len(candidates) > _WHOLE else candidates)
    groups: dict[Signature, list[int]] = {}
    for run_id, sig in sigs.items():
        groups.setdefault(sig, []).append(run_id)
    out = {}
    for run_id in asked:
        sig = sigs.get(run_id)
        out[run_id] = [] if sig is None else [i for i in groups[sig] if i != run_id]
    return out


def twin_groups(catalog: Catalog) -> list[list[int]]:
    """Every set of two or more twins in the catalog, each sorted, oldest group first."""
    groups: dict[Signature, list[int]] = {}
    for run_id, sig in signatures(catalog).items():
        groups.setdefault(sig, []).append(run_id)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def nondeterministic(catalog: Catalog, run_id: int, twins: Sequence[int]) -> list[str]:
    """The outputs this run wrote that a twin wrote with other content (both runs
    completed, so a crash halfway is not taken for nondeterminism), sorted."""
    if not twins:
        return []
    ids = [run_id, *twins]
    marks = ",".join("?" * len(ids))
    status = {int(r[0]): r[1] for r in catalog._execute(
        f"SELECT id, status FROM runs WHERE id IN ({marks})", ids)}
    if status.get(run_id) != "completed":
        return []
    done = [i for i in twins if status.get(i) == "completed"]
    if not done:
        return []
    from .catalog import _FILES_SQL

    files = records.group_files(catalog._execute(
        f"{_FILES_SQL} WHERE io.run_id IN ({','.join('?' * (len(done) + 1))})"
        " ORDER BY a.path, v.id", [run_id, *done]))
    mine = {e["path"]: e["hash"] for e in files.get(run_id, {}).get("outputs", ())}
    differ = set()
    for twin in done:
        for entry in files.get(twin, {}).get("outputs", ()):
            want = mine.get(entry["path"])
            if want is not None and want != entry["hash"]:
                differ.add(entry["path"])
    return sorted(differ)
