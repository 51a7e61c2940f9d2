"""What differs between two runs, section by section, and the upstream causes of it.

`diff_runs(catalog, a, b)` compares two runs (`Catalog.run` dicts) section by section,
then follows lineage: for every input whose version differs, the runs that produced the
two versions are compared in turn, up the chain, and what differs at the top of it
(a param, a code file, a package, a file no run made) is a cause. The JSON shape is a
contract documented in docs/user-guide.md ("onlooker diff").
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import StoreError
from .lineage import producers

SECTIONS = ("command", "params", "metrics", "code", "environment", "inputs", "outputs",
            "telemetry")
MAX_DEPTH = 20
TEXT_MAX = 1 << 20  # a code version larger than this gets no unified diff
_MISSING = object()  # a key one side lacks, apart from a value that is null
# Telemetry jitters between identical runs: a figure counts as changed only when it moved
# by RELATIVE of the larger value and by at least its floor (seconds, %-points, bytes).
RELATIVE = 0.10
_TELEMETRY_FLOORS = (("duration", 0.5), ("cpu_seconds", 0.5), ("cpu_pct_mean", 5.0),
                     ("cpu_pct_peak", 5.0), ("rss_peak", 1 << 20), ("read_bytes", 1 << 20),
                     ("write_bytes", 1 << 20), ("gpu_hours", 0.001))
_GPU_FLOORS = (("mem_peak", 1 << 20), ("util_mean", 5.0), ("device_util_mean", 5.0))
_SCRIPT_EXTS = (".py", ".r", ".sh", ".jl", ".ipynb", ".pl", ".rb", ".js", ".m", ".lua")


# ---- entries ---------------------------------------------------------------------------
def _same(x: Any, y: Any) -> bool:
    # 1 == 1.0 is the same value, True == 1 is not
    return x == y and isinstance(x, bool) == isinstance(y, bool)


def _entry(key: str, old: Any, new: Any, **extra: Any) -> dict[str, Any]:
    """One line of a section; `_MISSING` on a side means the key is not there."""
    if old is _MISSING:
        change = "added"
    elif new is _MISSING:
        change = "removed"
    else:
        change = "same" if _same(old, new) else "changed"
    return {"key": key, "change": change, "old": None if old is _MISSING else old,
            "new": None if new is _MISSING else new, **extra}


def _mapping(a: Mapping[str, Any], b: Mapping[str, Any],
             extra: Callable[[Any, Any], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        old, new = a.get(key, _MISSING), b.get(key, _MISSING)
        out.append(_entry(str(key), old, new, **(extra(old, new) if extra else {})))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("last")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _delta(old: Any, new: Any) -> float | None:
    x, y = _number(old), _number(new)
    if x is None or y is None:
        return None
    d = y - x
    return d if isinstance(d, int) else float(f"{d:.12g}")  # 0.3 - 0.1, not 0.19999999999999998


# ---- sections --------------------------------------------------------------------------
def _command(ra: dict, rb: dict) -> list[dict[str, Any]]:
    return [_entry(name, ra.get(field), rb.get(field)) for name, field in
            (("argv", "command"), ("cwd", "cwd"), ("status", "status"),
             ("exit_code", "exit_code"))]


def _metric(value: Any) -> Any:
    """A series summarised to last/min/max/count (and its final value); a final as is."""
    if not isinstance(value, dict):
        return value
    out = {k: value.get(k) for k in ("last", "min", "max", "count")}
    if "final" in value:
        out["final"] = value["final"]
    return out


def _metrics(ra: dict, rb: dict) -> list[dict[str, Any]]:
    a = {k: _metric(v) for k, v in (ra.get("metrics") or {}).items()}
    b = {k: _metric(v) for k, v in (rb.get("metrics") or {}).items()}
    return _mapping(a, b, lambda old, new: {"delta": _delta(old, new)})


def _by_path(entries: Iterable[Any]) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in entries or () if isinstance(e, dict) and "path" in e}


def _files(a_files: Any, b_files: Any) -> list[dict[str, Any]]:
    a, b = _by_path(a_files), _by_path(b_files)
    out = []
    for path in sorted(set(a) | set(b)):
        ea, eb = a.get(path), b.get(path)
        out.append(_entry(path, ea["hash"] if ea else _MISSING, eb["hash"] if eb else _MISSING,
                          old_size=ea.get("size") if ea else None,
                          new_size=eb.get("size") if eb else None,
                          kind=(eb or ea or {}).get("kind")))
    return out


def _read_text(catalog: Any, hash: str | None) -> tuple[str | None, str | None]:
    """(text, None) of a stored version, or (None, why there is none)."""
    if not hash:
        return None, "no content"
    try:
        if not catalog.objects.has(hash):
            return None, "content not stored"
        with catalog.objects.open(hash) as f:
            data = f.read(TEXT_MAX + 1)
    except (StoreError, OSError, ValueError):
        return None, "content not stored"
    if len(data) > TEXT_MAX:
        return None, "too large"
    if b"\0" in data:
        return None, "binary"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "binary"


def unified(catalog: Any, path: str, old: str | None, new: str | None,
            a: int, b: int) -> tuple[str | None, str | None]:
    """The unified diff of two stored versions of `path`: (text, None) or (None, why not)."""
    old_text, why = _read_text(catalog, old)
    if old_text is None:
        return None, why
    new_text, why = _read_text(catalog, new)
    if new_text is None:
        return None, why
    lines = difflib.unified_diff(old_text.splitlines(keepends=True),
                                 new_text.splitlines(keepends=True),
                                 fromfile=f"a/{path} (run {a})", tofile=f"b/{path} (run {b})")
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)
    return text, None


def _code(catalog: Any, ra: dict, rb: dict, texts: bool) -> list[dict[str, Any]]:
    out = []
    for e in _files(ra.get("code"), rb.get("code")):
        e["diff"], e["diff_note"] = None, None
        if e["change"] == "changed" and texts:
            e["diff"], e["diff_note"] = unified(catalog, e["key"], e["old"], e["new"],
                                                ra["id"], rb["id"])
        out.append(e)
    ga, gb = ra.get("git"), rb.get("git")
    if ga or gb:
        for field in ("commit", "branch", "dirty", "diff"):
            old = ga.get(field) if ga else _MISSING
            new = gb.get(field) if gb else _MISSING
            entry = _entry(f"git.{field}", old, new)
            if field == "diff" and texts:  # the uncommitted changes each run started from
                entry["old_lines"] = _lines(catalog, ga.get("diff") if ga else None)
                entry["new_lines"] = _lines(catalog, gb.get("diff") if gb else None)
            out.append(entry)
    return out


def _lines(catalog: Any, hash: str | None) -> int | None:
    text, _ = _read_text(catalog, hash)
    return None if text is None else len(text.splitlines())


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts (and lists of dicts, such as gpus) as dotted keys; empty ones vanish."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(sub, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        for i, sub in enumerate(value):
            _flatten(sub, f"{prefix}.{i}", out)
    elif value not in ([], {}):
        out[prefix] = value
    return out


def _environment(ra: dict, rb: dict) -> list[dict[str, Any]]:
    ea, eb = ra.get("env"), rb.get("env")
    if (ea is None) != (eb is None):  # one side has no env: not every package is news
        return [_entry("env", "recorded" if ea is not None else _MISSING,
                       "recorded" if eb is not None else _MISSING)]
    return _mapping(_flatten(ea or {}, "", {}), _flatten(eb or {}, "", {}))


def _significant(old: Any, new: Any, floor: float) -> bool:
    x, y = _number(old), _number(new)
    if x is None or y is None:
        return not _same(old, new)
    return abs(y - x) >= max(floor, RELATIVE * max(abs(x), abs(y)))


def _telemetry(ra: dict, rb: dict) -> list[dict[str, Any]]:
    ta, tb = ra.get("telemetry") or {}, rb.get("telemetry") or {}
    pairs: list[tuple[str, Any, Any, float]] = [
        ("duration", ra.get("duration"), rb.get("duration"), _TELEMETRY_FLOORS[0][1])]
    pairs += [(key, ta.get(key), tb.get(key), floor) for key, floor in _TELEMETRY_FLOORS[1:]]
    ga, gb = ta.get("gpus") or {}, tb.get("gpus") or {}
    for dev in sorted(set(ga) | set(gb), key=str):
        for key, floor in _GPU_FLOORS:
            pairs.append((f"gpus.{dev}.{key}", (ga.get(dev) or {}).get(key),
                          (gb.get(dev) or {}).get(key), floor))
    out = []
    for key, old, new, floor in pairs:
        if old is None and new is None:
            continue
        entry = _entry(key, _MISSING if old is None else old, _MISSING if new is None else new,
                       delta=_delta(old, new))
        if entry["change"] == "changed" and not _significant(old, new, floor):
            entry["change"] = "same"
        out.append(entry)
    return out


def sections(catalog: Any, ra: dict, rb: dict, *,
             texts: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Every section with every key, each entry marked same / changed / added / removed;
    `texts`: read the stored code versions for their unified diffs."""
    return {
        "command": _command(ra, rb),
        "params": _mapping(ra.get("params") or {}, rb.get("params") or {}),
        "metrics": _metrics(ra, rb),
        "code": _code(catalog, ra, rb, texts),
        "environment": _environment(ra, rb),
        "inputs": _files(ra.get("inputs"), rb.get("inputs")),
        "outputs": _files(ra.get("outputs"), rb.get("outputs")),
        "telemetry": _telemetry(ra, rb),
    }


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


# ---- the whole -------------------------------------------------------------------------
def diff_runs(catalog: Any, a: int | str, b: int | str, *, all: bool = False,
              max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """What differs between runs a and b (ids, or refs as `Catalog.resolve_run` takes
    them) and why: {"a", "b", "same_run", "differs", "sections", "causes"}.

    Sections hold only what differs unless `all`; causes, most upstream first, follow
    each changed input to the runs that produced its two versions, up to `max_depth` hops.
    """
    a_id, b_id = catalog.resolve_run(a), catalog.resolve_run(b)
    tracer = _Tracer(catalog, max_depth)
    parts = sections(catalog, tracer.run(a_id), tracer.run(b_id))
    differs = any(e["change"] != "same" for entries in parts.values() for e in entries)
    causes: list[dict[str, Any]] = []
    if a_id != b_id:
        causes = list(tracer.trace(a_id, b_id, 0, parts) or [])
        causes.sort(key=lambda c: -c["level"])  # most upstream first; stable otherwise
        effect = _effect(parts)
        for cause in causes:
            del cause["level"]
            end = cause["hops"][-1] if cause["hops"] else {"a": a_id, "b": b_id}
            cause["runs"] = [end["a"], end["b"]]
            cause["sentence"] = _sentence(cause, effect, tracer)
    if not all:
        parts = {name: [e for e in entries if e["change"] != "same"]
                 for name, entries in parts.items()}
    return {"a": a_id, "b": b_id, "same_run": a_id == b_id, "differs": differs,
            "sections": parts, "causes": causes}
