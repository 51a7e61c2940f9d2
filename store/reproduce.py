"""Did a run reproduce another? Outputs compared by hash, metrics within a tolerance, and
the likely reason when they differ, from the diff of the two runs.

`compare_runs(catalog, original, reproduction, rtol=1e-6)` is what `onlooker reproduce`
reports once it has re-run a run (agent/reproduce.py); it works on any two runs of one
catalog, so a user can ask it of two runs made by hand too. The verdict is

- ``exactly``: the same ending (where the capture saw both: `ending.same` is null when
  it did not), every output of the original written again with the same hash, every
  metric equal;
- ``within tolerance``: the same, except metrics that differ by at most `rtol`
  (relative) — which ones, and by how much, are in the report;
- ``differs``: an output missing or with another hash, a metric past `rtol`, or another
  ending; with the reasons the diff finds (a changed package, param or input) or, when it
  finds none, nondeterminism.

What is not compared, and said so: outputs of kind ``log`` (their text carries times),
metrics files (their numbers are compared as metrics instead), and metrics that measure
time (`*runtime*`, `*duration*`, `*per_second*`, ...), which no re-run repeats. `ignore`
adds globs over output paths and metric keys to that list.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import StoreError

if TYPE_CHECKING:
    from .catalog import Catalog

VERDICTS = ("exactly", "within tolerance", "differs")
DEFAULT_RTOL = 1e-6
# Metrics that measure the machine, not the result: a re-run never repeats them.
TIMING_METRICS = ("*runtime*", "*duration*", "*elapsed*", "*per_second*", "*per_sec*",
                  "*_sec", "*_secs", "*seconds*", "*throughput*", "*time", "*_time_*",
                  "*timestamp*", "*it/s*", "*_ms")
# Output kinds whose bytes a re-run does not repeat by design, or that are compared
# through the metrics read from them.
UNCOMPARED_KINDS = {"log": "a log, whose text carries times",
                    "metrics": "a metrics file, whose numbers are compared as metrics"}
# onlooker's own files (the launcher's copy of the output) are not the run's results
_OWN = ".onlooker/"


class ReproduceError(StoreError):
    """A reproduction that cannot be made or compared; the message is one sentence."""


def _matches(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def rel_diff(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude (0 when equal, inf across a sign of NaN)."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "+inf", "-inf"):
        return float(value)
    return None


def _values(catalog: Catalog, run_id: int) -> dict[str, list[tuple[Any, Any]]]:
    """key -> [(step, value)]: the series in step order, or one (None, final) point."""
    out: dict[str, list[tuple[Any, Any]]] = {
        key: [(p["step"], p["value"]) for p in points]
        for key, points in catalog.metric_series(run_id).items()}
    for key, entry in catalog.metrics_of(run_id).items():
        if key not in out:
            out[key] = [(None, entry)]
    return out


def _compare_metric(key: str, a: list[tuple[Any, Any]] | None, b: list[tuple[Any, Any]] | None,
                    rtol: float) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key, "points": None if a is None else len(a),
                             "original": None if a is None else a[-1][1],
                             "reproduction": None if b is None else b[-1][1],
                             "max_rel_diff": None}
    if a is None or b is None:
        entry["change"] = "missing" if b is None else "new"
        return entry
    if len(a) != len(b) or [s for s, _ in a] != [s for s, _ in b]:
        entry["change"] = "differs"
        entry["detail"] = f"{len(a)} points in the original, {len(b)} in the reproduction"
        return entry
    worst = 0.0
    for (_, va), (_, vb) in zip(a, b, strict=True):
        na, nb = _number(va), _number(vb)
        if na is None or nb is None:
            if va != vb:
                worst = math.inf
            continue
        worst = max(worst, rel_diff(na, nb))
    entry["max_rel_diff"] = worst
    entry["change"] = ("same" if worst == 0 else "within tolerance" if worst <= rtol
                       else "differs")
    return entry


def _outputs(orig: dict[str, Any], repro: dict[str, Any], ignore: Sequence[str]
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(compared, not compared) output entries, by path."""
    a = {e["path"]: e for e in orig["outputs"]}
    b = {e["path"]: e for e in repro["outputs"]}
    compared, skipped = [], []
    for path in sorted(set(a) | set(b)):
        ea, eb = a.get(path), b.get(path)
        kind = (ea or eb)["kind"]
        entry = {"path": path, "kind": kind, "original": ea["hash"] if ea else None,
                 "reproduction": eb["hash"] if eb else None}
        if path.startswith(_OWN):
            continue
        if kind in UNCOMPARED_KINDS:
            skipped.append(dict(entry, why=UNCOMPARED_KINDS[kind]))
            continue
        if _matches(path, ignore):
            skipped.append(dict(entry, why="ignored (--ignore)"))
            continue
        if ea is None:
            # a file the original did not write is news, not a failure to reproduce
            entry["change"] = "new"
        elif eb is None:
            entry["change"] = "missing"
        else:
            entry["change"] = "same" if ea["hash"] == eb["hash"] else "differs"
        compared.append(entry)
    return compared, skipped


def _ending(run: dict[str, Any]) -> str:
    if run.get("signal"):
        return f"killed by signal {run['signal']}"
    if run.get("exit_code") is None:
        return "no exit code seen"
    return f"exit code {run['exit_code']}"


def _known(run: dict[str, Any]) -> bool:
    return bool(run.get("signal")) or run.get("exit_code") is not None


def compare_runs(catalog: Catalog, original: int | str, reproduction: int | str, *,
                 rtol: float = DEFAULT_RTOL, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """How far run `reproduction` repeated run `original`: the verdict (VERDICTS), the
    outputs and metrics compared, what was not compared and why, and `reasons`, sentences
    from `onlooker diff`'s causes (or nondeterminism when it finds none)."""
    if not (isinstance(rtol, (int, float)) and rtol >= 0 and math.isfinite(rtol)):
        raise ReproduceError(f"the tolerance must be a number of 0 or more, not {rtol!r}")
    from .diff import diff_runs

    a_id, b_id = catalog.resolve_run(original), catalog.resolve_run(reproduction)
    ra, rb = catalog.run(a_id), catalog.run(b_id)
    ignore = tuple(ignore)
    outputs, not_compared = _outputs(ra, rb, ignore)
    va, vb = _values(catalog, a_id), _values(catalog, b_id)
    metrics, timing = [], []
    for key in sorted(set(va) | set(vb)):
        entry = _compare_metric(key, va.get(key), vb.get(key), rtol)
        if _matches(key, TIMING_METRICS) or _matches(key, ignore):
            entry["why"] = ("ignored (--ignore)" if _matches(key, ignore)
                            else "a measure of time, which no re-run repeats")
            timing.append(entry)
        else:
            metrics.append(entry)
    # an ending the capture did not see (the poll tier can miss an exit code) is no
    # difference: None, and said so, rather than a failure to reproduce
    same_ending: bool | None = None
    if _known(ra) and _known(rb):
        same_ending = (ra.get("exit_code"), ra.get("signal")) == (rb.get("exit_code"),
                                                                   rb.get("signal"))
    bad_outputs = [o for o in outputs if o["change"] in ("differs", "missing")]
    bad_metrics = [m for m in metrics if m["change"] in ("differs", "missing")]
    loose = [m for m in metrics if m["change"] == "within tolerance"]
    if same_ending is False or bad_outputs or bad_metrics:
        verdict = "differs"
    elif loose:
        verdict = "within tolerance"
    else:
        verdict = "exactly"
    reasons: list[str] = []
    causes: list[dict[str, Any]] = []
    if verdict == "differs":
        if same_ending is False:
            reasons.append(f"the original ended with {_ending(ra)}, the reproduction with"
                           f" {_ending(rb)}")
        diff = diff_runs(catalog, a_id, b_id)
        causes = diff["causes"]
        reasons += [c["sentence"] for c in causes]
        if not causes and same_ending is not False:
            reasons.append("nondeterminism: the code, inputs, params and environment are the"
                           " same, so the run itself gives different results each time"
                           " (unseeded randomness, threads, the clock)")
    return {
        "original": a_id, "reproduction": b_id, "verdict": verdict, "rtol": rtol,
        "ending": {"original": _ending(ra), "reproduction": _ending(rb), "same": same_ending},
        "outputs": outputs, "metrics": metrics,
        "not_compared": {"outputs": not_compared, "metrics": timing},
        "reasons": reasons, "causes": causes,
    }
