"""A parsed filter evaluated in Python, over run dicts of the JSON contract (what
`runs --json` prints): `filter_runs`. The catalog path (`sql.py`) must agree with it."""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .keys import QueryError, check_column, sort_runs
from .language import (
    _NUMBER,
    And,
    Cmp,
    Literal,
    Node,
    Not,
    Ref,
    _iso_seconds,
    parse,
    parse_time,
    refs_of,
    row_value,
)

# ---- evaluation ------------------------------------------------------------------------


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return None


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


_NUM_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def compare(value: Any, op: str, lit: Literal) -> bool:
    """One comparison of a present value (documented in the user guide): as numbers when
    both read as numbers, else as text; `~` is a glob over the value's text."""
    return _comparer(op, lit)(value)


def _comparer(op: str, lit: Literal) -> Callable[[Any], bool]:
    """`compare` for one operator and literal, made once per comparison: the test runs
    once per run, so the common cases (a number, a plain text) take the short path."""
    if op == "~":
        rx = re.compile(fnmatch.translate(lit.text))
        return lambda v: rx.match(as_text(v)) is not None
    fn, n, t = _NUM_OPS[op], lit.number, lit.text

    def test(v: Any) -> bool:
        kind = type(v)
        if kind is float or kind is int:
            return fn(v, n) if n is not None else fn(str(v), t)
        if n is not None and kind is str:
            number = _as_number(v)
            if number is not None:
                return fn(number, n)
        return fn(as_text(v), t)

    return test


def _value_test(cmp: Cmp) -> Callable[[Any], bool]:
    lits, op = cmp.values, cmp.op
    if cmp.ref.kind in ("time", "duration"):
        if op == "in":
            secs = [lit.seconds for lit in lits]
            return lambda v: v is not None and any(v == s for s in secs)
        fn, s = _NUM_OPS[op], lits[0].seconds
        return lambda v: v is not None and fn(v, s)
    if cmp.ref.kind == "paths":
        texts = [lit.text for lit in lits]
        if op == "~":
            rx = re.compile(fnmatch.translate(texts[0]))
            return lambda v: any(isinstance(p, str) and rx.match(p) for p in v or ())
        wanted = set(texts)
        if op == "!=":
            return lambda v: not any(p in wanted for p in v or ())
        return lambda v: any(p in wanted for p in v or ())
    if op == "in":
        tests = [_comparer("=", lit) for lit in lits]
        return lambda v: v is not None and any(t(v) for t in tests)
    one = _comparer(op, lits[0])
    return lambda v: v is not None and one(v)


def json_value(raw: str | None) -> Any:
    """A stored JSON value (params.value); the usual scalars without the json module."""
    if raw is None:
        return None
    head = raw[:1]
    if head == '"' and "\\" not in raw:
        return raw[1:-1]
    if head in "-0123456789" and head:
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)
            except ValueError:
                pass
    return json.loads(raw)


def compile_filter(node: Node) -> Callable[[dict[str, Any]], bool]:
    """A tree -> a predicate over rows ({field spec: value}). A run without a value for
    a field fails every comparison on it (so `not` of one is true)."""
    if isinstance(node, Cmp):
        test, spec = _value_test(node), node.ref.spec
        if node.negate:
            return lambda row: not test(row.get(spec))
        return lambda row: test(row.get(spec))
    if isinstance(node, Not):
        inner = compile_filter(node.item)
        return lambda row: not inner(row)
    parts = [compile_filter(item) for item in node.items]
    if isinstance(node, And):
        return lambda row: all(p(row) for p in parts)
    return lambda row: any(p(row) for p in parts)


def _conjuncts(node: Node) -> list[Node]:
    return [c for item in node.items for c in _conjuncts(item)] if isinstance(node, And) \
        else [node]


@dataclass
class Filter:
    """Parsed `where` texts, AND-ed: what `query` and `filter_runs` run."""

    parts: list[Node]

    @classmethod
    def parse(cls, where: str | Iterable[str] | None, now: float | None = None) -> Filter:
        texts = [where] if isinstance(where, str) else list(where or ())
        now = time.time() if now is None else now
        return cls([c for text in texts for c in _conjuncts(parse(text, now))])

    def staged(self) -> list[tuple[Callable[[dict[str, Any]], bool], list[Ref]]]:
        """(predicate, fields it reads) per conjunct, cheapest first."""
        out = [(compile_filter(c), refs_of(c)) for c in self.parts]
        return sorted(out, key=lambda pr: max((r.cost for r in pr[1]), default=0))


def row_from_run(run: dict[str, Any], refs: Iterable[Ref]) -> dict[str, Any]:
    return {ref.spec: row_value(run, ref) for ref in refs}


def _time_bounds(since: Any, until: Any, now: float | None) -> tuple[float | None, ...]:
    out = []
    for name, given in (("since", since), ("until", until)):
        if given is None:
            out.append(None)
            continue
        moment = parse_time(given, now)
        if moment is None:
            raise QueryError(f"cannot read --{name} '{given}' as a time: write a date "
                             "(2026-11-30), a date and time (2026-11-30T14:00) or an age "
                             "(2d, 12h, 30m)")
        out.append(moment)
    return tuple(out)


def filter_runs(runs: Iterable[dict[str, Any]], where: str | Iterable[str] | None = None, *,
                since: Any = None, until: Any = None, status: str | None = None,
                sort: str | None = None, limit: int | None = None,
                now: float | None = None) -> list[dict[str, Any]]:
    """`query` over run dicts already in hand (the JSON contract), in their order."""
    flt = Filter.parse(where, now)
    lo, hi = _time_bounds(since, until, now)
    if sort:
        check_column(sort)
    tests = flt.staged()
    refs = [r for _, rs in tests for r in rs]
    out = []
    for run in runs:
        if status is not None and run.get("status") != status:
            continue
        started = _iso_seconds(run.get("started_at"))
        if (lo is not None and (started is None or started < lo)) or \
                (hi is not None and (started is None or started > hi)):
            continue
        row = row_from_run(run, refs)
        if all(test(row) for test, _ in tests):
            out.append(run)
    if sort:
        out = sort_runs(out, sort)
    return out if limit is None else out[:limit]
