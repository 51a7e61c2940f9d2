"""What differs between two runs, section by section, and the upstream causes of it.

`diff_runs(catalog, a, b)` compares two runs (`Catalog.run` dicts) section by section,
then follows lineage: for every input whose version differs, the runs that produced the
two versions are compared in turn, up the chain, and what differs at the top of it
(a param, a code file, a package, a file no run made) is a cause. The JSON shape is a
contract documented in docs/user-guide.md ("onlooker diff").
"""

from __future__ import annotations

from typing import Any

from .causes import (
    _effect,
    _sentence,
    _Tracer,
)
from .sections import MAX_DEPTH, SECTIONS, sections

__all__ = ["SECTIONS", "diff_runs", "sections"]


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
    ra, rb = tracer.run(a_id), tracer.run(b_id)
    parts = sections(catalog, ra, rb)
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
    # what people wrote on the two runs: shown beside them, never a difference
    labels = {side: {"tags": list(run.get("tags") or ()), "note": run.get("note")}
              for side, run in (("a", ra), ("b", rb))}
    return {"a": a_id, "b": b_id, "same_run": a_id == b_id, "differs": differs,
            "labels": labels, "sections": parts, "causes": causes}
