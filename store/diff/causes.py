"""The causes of a diff: changed inputs followed up the lineage to what differs at the
top of the chain, and the sentences that say it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from ..lineage import producers
from .sections import (
    _SCRIPT_EXTS,
    sections,
)


# ---- causes ----------------------------------------------------------------------------
def _is_env_cause(key: str) -> bool:
    # what changes results; the host, user and GPU model are context
    return key.startswith("packages.") or key in ("python.version", "python.implementation")


class _Tracer:
    """Compares pairs of runs up the lineage, each pair once (memo), cycles cut."""

    def __init__(self, catalog: Any, max_depth: int) -> None:
        self.catalog = catalog
        self.max_depth = max_depth
        self.runs: dict[int, dict] = {}
        self.memo: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.active: set[tuple[int, int]] = set()

    def run(self, run_id: int) -> dict:
        if run_id not in self.runs:
            self.runs[run_id] = self.catalog.run(run_id)
        return self.runs[run_id]

    def producer(self, hash: str, path: str, consumer: int) -> int | None:
        """The run that made this version for `consumer`: of the runs that wrote it at
        this path (else at any path: a copy), the last one before the consumer."""
        ids = [i for i in producers(self.catalog, hash, path) if i != consumer]
        ids = ids or [i for i in producers(self.catalog, hash) if i != consumer]
        if not ids:
            return None
        before = [i for i in ids if i < consumer]
        return max(before) if before else min(ids)

    def trace(self, a: int, b: int, depth: int,
              found: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]] | None:
        """The causes of what differs between runs a and b, hops relative to them; None when
        the pair is already being traced (a cycle)."""
        pair = (a, b)
        if pair in self.memo:
            return self.memo[pair]
        if pair in self.active:
            return None
        self.active.add(pair)
        try:
            ra, rb = self.run(a), self.run(b)
            # runs met upstream only give causes: no need to read their code's texts
            parts = found if found is not None else sections(self.catalog, ra, rb,
                                                             texts=False)
            causes = [dict(c, rank=0, level=0) for c in self._own(parts)]
            causes += self._inputs(parts, a, b, depth)
        finally:
            self.active.discard(pair)
        self.memo[pair] = result = _dedup(causes)
        return result

    def _own(self, parts: dict[str, list[dict[str, Any]]]) -> Iterable[dict[str, Any]]:
        for kind, name in (("param", "params"), ("code", "code"), ("environment", "environment")):
            for e in parts[name]:
                if e["change"] == "same" or (kind == "code" and e["key"].startswith("git.")):
                    continue
                if kind == "environment" and not _is_env_cause(e["key"]):
                    continue
                yield _cause(kind, e["key"], e["change"], e["old"], e["new"])

    def _inputs(self, parts: dict[str, list[dict[str, Any]]], a: int, b: int,
                depth: int) -> Iterable[dict[str, Any]]:
        changed_params = {e["key"] for e in parts["params"] if e["change"] != "same"}
        groups: dict[tuple[int, int], list[str]] = {}
        for e in parts["inputs"]:
            path = e["key"]
            if e["change"] in ("added", "removed"):
                yield dict(_cause("input", path, e["change"], e["old"], e["new"]), rank=0, level=0)
                continue
            if e["change"] != "changed":
                continue
            pa = self.producer(e["old"], path, a)
            pb = self.producer(e["new"], path, b)
            if pa is not None and pb is not None and pa != pb:
                groups.setdefault((pa, pb), []).append(path)
                continue
            if pa is None and pb is None and any(k.startswith(f"{path}:") for k in changed_params):
                continue  # a config edited by hand: its changed params already say how
            yield dict(_cause("input", path, "changed", e["old"], e["new"],
                              producers={"old": pa, "new": pb}), rank=0, level=0)
        for (pa, pb), paths in groups.items():
            hop = {"paths": paths, "a": pa, "b": pb}
            if depth + 1 > self.max_depth:
                yield dict(_cause("input", _paths_label(paths), "changed", None, None,
                                  producers={"old": pa, "new": pb}, paths=paths,
                                  truncated=True), rank=0, level=0)
                continue
            sub = self.trace(pa, pb, depth + 1)
            if sub is None:
                continue  # a cycle back into a pair being traced: found there
            if not sub:  # the producers differ in nothing we know of
                yield dict(_cause("input", _paths_label(paths), "changed", None, None,
                                  producers={"old": pa, "new": pb}, paths=paths), rank=0,
                           level=0)
                continue
            for cause in sub:
                yield dict(cause, hops=[hop, *cause["hops"]], rank=1, level=cause["level"] + 1)


def _cause(kind: str, key: str, change: str, old: Any, new: Any, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "key": key, "change": change, "old": old, "new": new, "hops": [],
            **extra}


def _thing(cause: dict[str, Any]) -> str:
    return json.dumps([cause["kind"], cause["key"], cause["change"], cause["old"],
                       cause["new"]], default=str, sort_keys=True)


def _dedup(causes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One cause per changed thing: one found upstream beats the same change seen in this
    pair (a config every stage reads: the stage that uses it is the upstream one), and of
    those, the shortest path to it. `level`, the longest path to it, says how far
    upstream it lies, for the order."""
    best: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
    for cause in causes:
        key = _thing(cause)
        score = (cause.pop("rank"), -len(cause["hops"]))
        known = best.get(key)
        if known is None or score > known[0]:
            if known is not None:
                cause["level"] = max(cause["level"], known[1]["level"])
            best[key] = (score, cause)
        else:
            known[1]["level"] = max(known[1]["level"], cause["level"])
    return [cause for _, cause in best.values()]


# ---- sentences -------------------------------------------------------------------------
def value_text(value: Any) -> str:
    """A value as a sentence shows it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict) and "last" in value:
        return value_text(value["last"])
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def stage_name(run: dict[str, Any]) -> str:
    """What a person calls the run: its script's stem (`featurize`), `-m` module, program."""
    argv = [str(x) for x in run.get("command") or []]
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m" and i + 1 < len(argv):
            return argv[i + 1].rpartition(".")[2]
        if not arg.startswith("-") and os.path.splitext(arg)[1].lower() in _SCRIPT_EXTS:
            return os.path.splitext(os.path.basename(arg))[0]
    return os.path.basename(argv[0]) if argv else "run"


def _paths_label(paths: list[str]) -> str:
    if len(paths) == 1:
        return paths[0]
    parents = {os.path.dirname(p) for p in paths}
    if len(parents) == 1 and "" not in parents:
        return f"{parents.pop()}/ ({len(paths)} files)"
    head = ", ".join(paths[:3])
    return head if len(paths) <= 3 else f"{head} and {len(paths) - 3} more"


def _pair_label(tracer: _Tracer, a: int, b: int) -> str:
    la, lb = stage_name(tracer.run(a)), stage_name(tracer.run(b))
    return f"{la} runs {a} and {b}" if la == lb else f"runs {a} ({la}) and {b} ({lb})"


def _end_text(cause: dict[str, Any], tracer: _Tracer) -> str:
    kind, key, change = cause["kind"], cause["key"], cause["change"]
    old, new = value_text(cause["old"]), value_text(cause["new"])
    if kind == "environment" and change != "changed":
        return f"{key} {new} was added" if change == "added" else f"{key} {old} was removed"
    if kind in ("param", "environment"):
        if change == "added":
            return f"{key} was set to {new} (unset before)"
        if change == "removed":
            return f"{key} ({old}) was no longer set"
        return f"{key} went {old} -> {new}"
    if kind == "code":
        return {"added": f"code {key} was new", "removed": f"code {key} was no longer used"
                }.get(change, f"code {key} changed")
    if change == "added":
        return f"input {key} was new"
    if change == "removed":
        return f"input {key} was no longer read"
    made = cause.get("producers") or {}
    pa, pb = made.get("old"), made.get("new")
    if cause.get("truncated"):
        return f"{key} changed (lineage not followed past {tracer.max_depth} hops)"
    if pa is None and pb is None:
        return f"{key} changed (no run produced it)"
    if pa is not None and pa == pb:
        return f"{key} changed (run {pa} wrote both versions)"
    if pa is None or pb is None:
        made_by = (f"run {pa} produced the old version, no run the new one" if pb is None
                   else f"no run produced the old version, run {pb} the new one")
        return f"{key} changed ({made_by})"
    return (f"{key} changed, produced by {_pair_label(tracer, pa, pb)}, which differ in no "
            "param, code or input")


def _effect(parts: dict[str, list[dict[str, Any]]]) -> str | None:
    """What changed in the result, to open each sentence with."""
    metrics = [e for e in parts["metrics"] if e["change"] != "same"]
    if metrics:
        e, more = metrics[0], len(metrics) - 1
        text = f"{e['key']} {value_text(e['old'])} -> {value_text(e['new'])}"
        return text + (f" (and {more} more metric{'s' * (more > 1)})" if more else "")
    outputs = [e["key"] for e in parts["outputs"] if e["change"] != "same"]
    if outputs:
        return f"{_paths_label(outputs)} changed"
    return None


def _sentence(cause: dict[str, Any], effect: str | None, tracer: _Tracer) -> str:
    parts = []
    for i, hop in enumerate(cause["hops"]):
        lead = "whose input " if i else ""
        parts.append(f"{lead}{_paths_label(hop['paths'])} changed, produced by "
                     f"{_pair_label(tracer, hop['a'], hop['b'])}")
    end = _end_text(cause, tracer)
    if cause["hops"]:
        end = ("whose input " if (cause["kind"], cause["change"]) == ("input", "changed")
               else "whose ") + end
    parts.append(end)
    body = ", ".join(parts)
    return f"{effect} because {body}" if effect else body
