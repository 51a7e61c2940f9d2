"""The one key-matching rule every command uses, the errors of finding runs, columns,
sorting, and the command line as text."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StoreError

# ---- errors ---------------------------------------------------------------------------


class QueryError(StoreError):
    """A filter or column spec that cannot be used; `position` is the 1-based column of
    the bad token in the filter text (None where no text was involved)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class AmbiguousKey(QueryError):
    """A key suffix that matches several keys of one run; `candidates` names them."""

    def __init__(self, message: str, candidates: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


# ---- the key-matching rule (every command) -------------------------------------------

GROUPS = ("params", "metrics", "telemetry")  # GROUP.KEY looks into these
# Fields of a metric series (store/metrics.py) that `metrics.KEY.FIELD` names.
SERIES_FIELDS = ("last", "last_step", "min", "min_step", "max", "max_step", "count", "final")
_SEPARATORS = (":", ".", "/")  # `lr` ends `config.yaml:lr`, `a.lr`, `tb:train/lr`


def match_key(keys: Iterable[str], wanted: str) -> str | None:
    """The key `wanted` names among `keys`: itself when present, else the one key ending
    in `:wanted`, `.wanted` or `/wanted` (`test.f1` finds `summary.json:test.f1`); None
    when none does. Raises AmbiguousKey when several end so."""
    keys = keys if isinstance(keys, (dict, set, frozenset)) else list(keys)
    if wanted in keys:
        return wanted
    ends = tuple(sep + wanted for sep in _SEPARATORS)
    hits = [k for k in keys if isinstance(k, str) and k.endswith(ends)]
    if len(hits) > 1:
        shown = ", ".join(sorted(hits)[:6]) + (", ..." if len(hits) > 6 else "")
        raise AmbiguousKey(f"'{wanted}' matches several keys ({shown}): write the key in full",
                           sorted(hits))
    return hits[0] if hits else None


def find(mapping: Any, rest: str) -> Any:
    """`rest` in a run's params / metrics / telemetry by `match_key`; else, when its last
    part is a series field (`val_loss.min`), that field of the series it names; else a
    nested path (`gpus.0.mem_peak`). None when the run has none."""
    if not isinstance(mapping, dict) or not rest:
        return None
    key = match_key(mapping, rest)
    if key is not None and mapping[key] is not None:
        return mapping[key]
    head, _, tail = rest.rpartition(".")
    if head and tail in SERIES_FIELDS:
        series = find(mapping, head)
        if isinstance(series, dict):
            return series.get(tail)
    first, _, more = rest.partition(".")
    if more and isinstance(mapping.get(first), dict):
        return find(mapping[first], more)
    return None


def lookup(mapping: Any, rest: str) -> Any:
    """`find`, with a series standing for its last value (`metrics.val_loss`)."""
    found = find(mapping, rest)
    if isinstance(found, dict) and "last" in found:
        return found["last"]
    return found


# ---- columns and sorting (runs --columns / --sort) -----------------------------------

# Top-level fields of a run (the JSON contract) that make sense as a column.
COLUMN_FIELDS = ("id", "status", "exit_code", "signal", "started_at", "ended_at", "duration",
                 "cwd", "tier", "command")


def check_column(spec: str) -> None:
    """Raise QueryError unless `spec` (maybe `-spec`) names a group key or a run field."""
    bare = spec[1:] if spec.startswith("-") else spec
    group, _, rest = bare.partition(".")
    if (group in GROUPS and rest) or bare in COLUMN_FIELDS:
        return
    raise QueryError(f"unknown column '{spec}': use metrics.KEY, params.KEY, telemetry.KEY or "
                     f"one of {', '.join(COLUMN_FIELDS)}")


def column_value(run: dict[str, Any], spec: str) -> Any:
    """The value of a column spec (`metrics.test.f1`, `params.lr`, `telemetry.rss_peak`,
    or a top-level field such as `duration`) for one run; None when it has none."""
    group, _, rest = spec.partition(".")
    if group in GROUPS and rest:
        return lookup(run.get(group), rest)
    return run.get(spec)


def _sort_rank(value: Any) -> tuple[int, Any]:
    if value is None:
        return (2, "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (1, str(value))
    return (0, value)


def order_by(items: Sequence[Any], values: Sequence[Any], descending: bool) -> list[Any]:
    """`items` ordered by their `values`: numbers, then text, then the ones without a
    value (always last); stable, so equal values keep the items' order."""
    ranked = [(_sort_rank(v), i) for i, v in enumerate(values)]
    groups: list[list[tuple[tuple[int, Any], int]]] = [[], [], []]
    for r in ranked:
        groups[r[0][0]].append(r)
    out: list[Any] = []
    for n, group in enumerate(groups):
        if n < 2:
            group.sort(key=lambda r: r[0][1], reverse=descending)
        out.extend(items[i] for _, i in group)
    return out


def sort_runs(runs: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """Runs ordered by a column spec, `-spec` descending; runs without a value last."""
    descending = spec.startswith("-")
    bare = spec[1:] if descending else spec
    return order_by(runs, [column_value(r, bare) for r in runs], descending)


# ---- the command line as text ---------------------------------------------------------

REDACTED = "***"


def _quote(arg: str) -> str:
    # A redacted value reads as what it is, not as a quoted glob ('--api-key=***').
    if arg == REDACTED:
        return arg
    if arg.endswith("=" + REDACTED):
        return _quote(arg[:-len(REDACTED)]) + REDACTED
    return shlex.quote(arg)


_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII).fullmatch  # what shlex.quote leaves bare


def command_line(argv: Any) -> str:
    """A run's argv as one shell-quoted line (the `command` field of a filter)."""
    if isinstance(argv, (list, tuple)):
        return " ".join(a if _SAFE(a) else _quote(a) for a in map(str, argv))
    return str(argv or "")
