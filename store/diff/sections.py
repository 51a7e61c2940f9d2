"""The sections of a diff: what differs between two run dicts, entry by entry."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import StoreError

SECTIONS = ("command", "params", "metrics", "code", "environment", "inputs", "outputs",
            "telemetry", "cells")  # cells: only where a side is a kernel's run
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
        # only where a side is a Jupyter kernel's run: the sources of its cells
        **({"cells": _cells(ra, rb)} if _cells_of(ra) or _cells_of(rb) else {}),
    }


def _cells_of(run: dict) -> list[str]:
    """The sources of a kernel run's cells, in execution order."""
    return [str(s.get("source") or "") for s in run.get("steps") or ()
            if s.get("cell") is not None]


def _first_line(source: str) -> str:
    line = next((x.strip() for x in source.splitlines() if x.strip()), "")
    return line if len(line) <= 60 else line[:59] + "…"


def _cells(ra: dict, rb: dict) -> list[dict[str, Any]]:
    """The n-th cell each kernel run executed, side by side: its first line as the value,
    its whole source and a unified diff where they differ."""
    a, b = _cells_of(ra), _cells_of(rb)
    out = []
    for i in range(max(len(a), len(b))):
        old = a[i] if i < len(a) else _MISSING
        new = b[i] if i < len(b) else _MISSING
        e = _entry(f"cell {i + 1}", old, new)
        e["old_source"], e["new_source"] = e["old"], e["new"]
        e["old"] = None if old is _MISSING else _first_line(str(old))
        e["new"] = None if new is _MISSING else _first_line(str(new))
        e["diff"] = None
        if e["change"] == "changed":
            lines = difflib.unified_diff(str(old).splitlines(keepends=True),
                                         str(new).splitlines(keepends=True),
                                         fromfile=f"a/cell {i + 1} (run {ra.get('id')})",
                                         tofile=f"b/cell {i + 1} (run {rb.get('id')})")
            e["diff"] = "".join(x if x.endswith("\n") else x + "\n" for x in lines)
        out.append(e)
    return out
