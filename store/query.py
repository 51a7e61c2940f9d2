"""Finding runs: the `--where` filter language, the one key-matching rule, sorting.

A filter is parsed once into a small tree (recursive descent, the column of each
token kept for errors). The tree is evaluated two ways that must agree, and a
property test (tests/store/test_query.py) holds them to it:

- `filter_runs`: in Python, over run dicts of the JSON contract (what `runs --json`
  prints), each field read with `row_value` (`column_value` for GROUP.KEY);
- `query` over a catalog: compiled into one SQL statement (`_Compiler`) whose
  correlated subqueries seek the (run_id, key) indexes for only the keys the filter
  and the sort name; comparisons SQLite cannot decide exactly as Python does are
  handed to the same Python `compare` through a registered function. Full run dicts
  are read only for the runs returned.

A parser library (lark, pyparsing) was not worth a core dependency: the grammar is
five rules, and a hand-written parser gives the exact error sentences wanted.

`match_key` is the rule every command uses for a key (`runs --where/--columns/--sort`,
`metrics RUN KEY`). A new field of the language is one entry in `FIELDS` (plus, when
it is not a column of `runs`, its SQL in `_Compiler.value`): `tag` goes there.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import re
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import records
from .errors import StoreError

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


# ---- literals: times and durations -----------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_duration(text: str) -> float | None:
    """`90`, `30s`, `10m`, `2h`, `1h30m`, `2d`, `1w` -> seconds; None if it is none."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if _DURATION.fullmatch(text):
        return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    return None


def parse_time(text: str | float | datetime, now: float | None = None) -> float | None:
    """A moment as people write it -> Unix seconds: an age (`2d`, `12h`, `30m`: that long
    before `now`), `now`, `today` (local midnight), an ISO date or date-time (local time
    unless it says `Z` or an offset), or a datetime / Unix seconds given from Python.
    None if the text is none of these."""
    now = time.time() if now is None else now
    if isinstance(text, datetime):
        return text.timestamp()
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    text = str(text).strip()
    if text == "now":
        return now
    if text == "today":
        return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0,
                                                   microsecond=0).timestamp()
    if _DURATION.fullmatch(text):
        return now - (parse_duration(text) or 0.0)
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


# ---- fields of the filter language -----------------------------------------------------

_ORDER_OPS = frozenset({"<", "<=", ">", ">="})
_ALL_OPS = frozenset({"=", "!=", "~", "in", *_ORDER_OPS})
_PATH_OPS = frozenset({"=", "!=", "~", "in"})


@dataclass(frozen=True)
class Field:
    """One name a filter may compare. `kind`: value (text or number, compared as numbers
    when both sides read as numbers), time (Unix seconds; literals are times), duration
    (seconds; literals take units), paths (a list: true when any path matches).
    `from_run` reads it from a run dict; `column` is its SQL over `runs` (None: read
    apart, as the files are); `cost` orders conjuncts, cheap ones first."""

    name: str
    kind: str
    from_run: Callable[[dict[str, Any]], Any]
    column: str | None
    doc: str
    ops: frozenset[str] = _ALL_OPS
    cost: int = 0


def _iso_seconds(value: Any) -> float | None:
    return parse_time(value) if isinstance(value, str) else None


def _paths(role: str) -> Callable[[dict[str, Any]], Any]:
    return lambda run: [e.get("path") for e in run.get(role) or () if isinstance(e, dict)]


# The language's fields, by name. A new field is one entry here; one that is not a
# column of `runs` also needs its SQL in `_Compiler.value` (or a condition of its own,
# as the files and tags have in `_Compiler._paths`).
FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("id", "value", lambda r: r.get("id"), "id", "the run id"),
    Field("status", "value", lambda r: r.get("status"), "status",
          "running, completed, failed, ended, lost"),
    Field("exit_code", "value", lambda r: r.get("exit_code"), "exit_code", "exit status"),
    Field("signal", "value", lambda r: r.get("signal"), "signal", "the signal that killed it"),
    Field("command", "value", lambda r: command_line(r.get("command")), "command",
          "the command line as text", cost=1),
    Field("cwd", "value", lambda r: r.get("cwd"), "cwd", "working folder"),
    Field("tier", "value", lambda r: r.get("tier"), "tier", "capture tier"),
    Field("started", "time", lambda r: _iso_seconds(r.get("started_at")), "started_at",
          "when it started"),
    Field("ended", "time", lambda r: _iso_seconds(r.get("ended_at")), "ended_at",
          "when it ended"),
    Field("duration", "duration", lambda r: r.get("duration"), "duration", "seconds it ran"),
    Field("input", "paths", _paths("inputs"), None, "a path it read", _PATH_OPS, cost=2),
    Field("output", "paths", _paths("outputs"), None, "a path it wrote", _PATH_OPS, cost=2),
    Field("code", "paths", _paths("code"), None, "a code file it ran", _PATH_OPS, cost=2),
    Field("tag", "paths", lambda r: list(r.get("tags") or ()), None, "a tag it carries",
          _PATH_OPS, cost=1),
    Field("note", "value", lambda r: r.get("note"), "note", "the note written on it", cost=1),
)}
ALIASES = {"started_at": "started", "ended_at": "ended"}
_GROUP_COST = {"params": 1, "metrics": 3, "telemetry": 5}


def _fields_hint() -> str:
    return ("use params.KEY, metrics.KEY, telemetry.KEY or one of "
            + ", ".join(FIELDS))


@dataclass(frozen=True)
class Ref:
    """A field as a filter names it: `spec` as written (the row key), and either a
    `group` with its `rest` (`params`, `lr`) or a plain `field`."""

    spec: str
    group: str | None = None
    rest: str = ""
    field: Field | None = None

    @property
    def kind(self) -> str:
        return "value" if self.field is None else self.field.kind

    @property
    def cost(self) -> int:
        return _GROUP_COST[self.group] if self.group else self.field.cost  # type: ignore


def field_ref(spec: str, position: int | None = None) -> Ref:
    """The Ref for a field name; QueryError naming it when it is none."""
    group, _, rest = spec.partition(".")
    if group in GROUPS:
        if rest:
            return Ref(spec, group, rest)
        raise QueryError(f"'{spec}' needs a key{_at(position)}: write {group}.KEY", position)
    name = ALIASES.get(spec, spec)
    if name in FIELDS:
        return Ref(spec, field=FIELDS[name])
    raise QueryError(f"unknown field '{spec}'{_at(position)}: {_fields_hint()}", position)


def row_value(run: dict[str, Any], ref: Ref) -> Any:
    """A run dict's value for a field (the row entry `query` reads from SQL)."""
    if ref.group is not None:
        return lookup(run.get(ref.group), ref.rest)
    assert ref.field is not None
    return ref.field.from_run(run)


# ---- the parser ----------------------------------------------------------------------


def _at(position: int | None) -> str:
    return "" if position is None else f" at column {position}"


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, op, lparen, rparen, comma, keyword, end
    text: str
    pos: int  # 1-based column


_KEYWORDS = ("and", "or", "not", "in")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<op><=|>=|!=|==|=|<|>|~)
  | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<word>[^\s()=!<>~,'"]+)
""", re.VERBOSE)


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            what = "an unclosed string" if ch in "'\"" else f"'{ch}'"
            raise QueryError(f"cannot read {what} at column {pos + 1}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "space":
            raw = m.group()
            if kind == "string":
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            elif kind == "op" and raw == "==":
                raw = "="
            elif kind == "word" and raw.lower() in _KEYWORDS:
                kind, raw = "keyword", raw.lower()
            out.append(Token(kind, raw, pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(text) + 1))
    return out


@dataclass(frozen=True)
class Literal:
    """A value as written (`text`, unquoted) with what it reads as: `number` (a float,
    from an unquoted or quoted number), `seconds` (a time or duration literal)."""

    text: str
    quoted: bool
    pos: int
    number: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Cmp:
    ref: Ref
    op: str  # = != < <= > >= ~ in
    values: tuple[Literal, ...]
    pos: int
    negate: bool = False  # `not in`


@dataclass(frozen=True)
class And:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


Node = Cmp | And | Or | Not


@dataclass
class _Parser:
    tokens: list[Token]
    now: float
    i: int = 0
    refs: list[Ref] = field(default_factory=list)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "keyword" and tok.text == word:
            self.i += 1
            return True
        return False

    def fail(self, tok: Token, wanted: str) -> QueryError:
        if tok.kind == "end":
            return QueryError(f"the filter ends where {wanted} was expected "
                              f"(column {tok.pos})", tok.pos)
        return QueryError(f"unexpected '{tok.text}' at column {tok.pos}: expected {wanted}",
                          tok.pos)

    def expr(self) -> Node:
        items = [self.conj()]
        while self.keyword("or"):
            items.append(self.conj())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conj(self) -> Node:
        items = [self.unary()]
        while self.keyword("and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        if self.keyword("not"):
            return Not(self.unary())
        tok = self.peek()
        if tok.kind == "lparen":
            self.take()
            inner = self.expr()
            close = self.take()
            if close.kind != "rparen":
                raise self.fail(close, f"')' to close the '(' at column {tok.pos}")
            return inner
        return self.comparison()

    def comparison(self) -> Cmp:
        tok = self.take()
        if tok.kind != "word":
            raise self.fail(tok, "a field such as params.KEY, metrics.KEY or status")
        ref = field_ref(tok.text, tok.pos)
        self.refs.append(ref)
        op_tok = self.take()
        negate = False
        if op_tok.kind == "keyword" and op_tok.text == "not" and self.peek().text == "in":
            negate, op_tok = True, self.take()
        if op_tok.kind == "op" or (op_tok.kind == "keyword" and op_tok.text == "in"):
            op = op_tok.text
        else:
            raise self.fail(op_tok, f"an operator (= != < <= > >= ~ in) after '{tok.text}'")
        allowed = ref.field.ops if ref.field is not None else _ALL_OPS
        if ref.kind in ("time", "duration"):
            allowed = allowed - {"~"}
        if op not in allowed:
            ops = " ".join(o for o in ("=", "!=", "<", "<=", ">", ">=", "~", "in")
                           if o in allowed)
            raise QueryError(f"'{tok.text}' cannot be compared with '{op}' (column "
                             f"{op_tok.pos}): use {ops}", op_tok.pos)
        if op == "in":
            values = self.value_list(ref)
        else:
            values = (self.value(ref, op_tok),)
        return Cmp(ref, op, values, tok.pos, negate)

    def value_list(self, ref: Ref) -> tuple[Literal, ...]:
        open_tok = self.take()
        if open_tok.kind != "lparen":
            raise self.fail(open_tok, "'(' after 'in'")
        values = [self.value(ref, open_tok)]
        while True:
            tok = self.take()
            if tok.kind == "rparen":
                return tuple(values)
            if tok.kind != "comma":
                raise self.fail(tok, f"',' or ')' to close the list at column {open_tok.pos}")
            if self.peek().kind == "rparen":  # a trailing comma
                continue
            values.append(self.value(ref, tok))

    def value(self, ref: Ref, after: Token) -> Literal:
        tok = self.take()
        if tok.kind not in ("word", "string"):
            raise self.fail(tok, f"a value after '{after.text}'")
        quoted = tok.kind == "string"
        number = float(tok.text) if _NUMBER.fullmatch(tok.text.strip()) else None
        seconds = None
        if ref.kind == "time":
            seconds = parse_time(tok.text, self.now)
            if seconds is None:
                raise QueryError(f"cannot read '{tok.text}' at column {tok.pos} as a time: "
                                 "write a date (2026-11-30), a date and time "
                                 "(2026-11-30T14:00) or an age (2d, 12h, 30m)", tok.pos)
        elif ref.kind == "duration":
            seconds = parse_duration(tok.text)
            if seconds is None:
                raise QueryError(f"cannot read '{tok.text}' at column {tok.pos} as a "
                                 "duration: write seconds (90) or with a unit (30s, 10m, "
                                 "2h, 1d)", tok.pos)
        elif ref.kind == "paths" and not quoted and tok.text.startswith("./"):
            tok = Token(tok.kind, tok.text[2:], tok.pos)
        return Literal(tok.text, quoted, tok.pos, number, seconds)


def parse(text: str, now: float | None = None) -> Node:
    """A filter's text -> its tree; QueryError (with the column) when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the filter is empty: write a condition such as params.lr > 0.01", 1)
    parser = _Parser(tokenize(text), time.time() if now is None else now)
    node = parser.expr()
    tok = parser.peek()
    if tok.kind != "end":
        raise parser.fail(tok, "'and', 'or' or the end of the filter")
    return node


def refs_of(node: Node) -> list[Ref]:
    """Every field a tree names, in order."""
    if isinstance(node, Cmp):
        return [node.ref]
    if isinstance(node, Not):
        return refs_of(node.item)
    return [r for item in node.items for r in refs_of(item)]


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


# ---- the catalog path ------------------------------------------------------------------

_CHUNK = 500


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i:i + _CHUNK])


def _lit(text: str) -> str:
    """A SQL string literal (the compiled statement holds only its own constants)."""
    return "'" + text.replace("'", "''") + "'"


class _Compiler:
    """A filter and a sort -> one SQL statement over `runs r` (store/schema.py).

    Keys are resolved once against the catalog's distinct keys (one scan per table),
    then each run's value is read by seeking the (run_id, key) indexes, so only the
    keys a filter names are read. A comparison with a number is decided by SQLite
    when the stored value is a number; anything else (text, NaN, lists, globs) goes
    to the same Python `compare` as `filter_runs`, through one registered function, so
    the two paths cannot disagree on what a comparison means. Telemetry summaries are
    not tables: they are read for the runs that pass everything else, then looked up."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self.tests: list[Callable[[Any], bool]] = []
        self.values: list[Callable[[Any], Any]] = []
        self.error: list[BaseException] = []
        self.telemetry: dict[int, Any] = {}
        self._keys: dict[str, set[str]] = {}

    # -- functions the statement calls ------------------------------------------------
    def register(self) -> None:
        conn = self.catalog._conn
        conn.create_function("onlooker_test", 2, self._test, deterministic=True)
        conn.create_function("onlooker_value", 2, self._value, deterministic=True)
        conn.create_function("onlooker_ambiguous", 2, self._ambiguous)

    def _test(self, i: int, raw: Any) -> int:
        try:
            return 1 if self.tests[i](raw) else 0
        except Exception as err:  # kept, re-raised once SQLite gives up the statement
            self.error.append(err)
            raise

    def _value(self, i: int, raw: Any) -> Any:
        try:
            value = self.values[i](raw)
        except Exception as err:
            self.error.append(err)
            raise
        if isinstance(value, bool):
            return int(value)
        return value if value is None or isinstance(value, (int, float, str)) else \
            as_text(value)

    def _ambiguous(self, wanted: str, keys: str) -> None:
        try:
            match_key(keys.split("\n"), wanted)  # raises AmbiguousKey naming them
        except Exception as err:
            self.error.append(err)
            raise
        raise AssertionError(f"'{wanted}' is not ambiguous")  # pragma: no cover

    def test_index(self, test: Callable[[Any], bool]) -> int:
        self.tests.append(test)
        return len(self.tests) - 1

    # -- keys -----------------------------------------------------------------------
    def key(self, table: str, rest: str) -> str | None:
        """SQL for the key `rest` names in run r (`match_key` per run), or None when no
        run can have one. Two plans, both exact: when the newest run has the key as
        written, most runs will too, so each run seeks it and looks at its own keys only
        when it lacks it; otherwise the catalog's distinct keys (one scan) give the
        candidates, and each run seeks those."""
        probe = self.catalog._execute(
            f"SELECT 1 FROM {table} WHERE run_id = (SELECT max(id) FROM runs) AND key = ?"
            " LIMIT 1", (rest,)).fetchone()
        if probe is not None:
            n = len(rest) + 1
            ends = ", ".join(_lit(sep + rest) for sep in _SEPARATORS)
            return (f"coalesce((SELECT key FROM {table} WHERE run_id = r.id AND key ="
                    f" {_lit(rest)} LIMIT 1), (SELECT CASE WHEN count(*) > 1 THEN"
                    f" onlooker_ambiguous({_lit(rest)}, group_concat(key, char(10))) ELSE"
                    f" max(key) END FROM (SELECT DISTINCT key FROM {table} WHERE run_id = r.id"
                    f" AND substr(key, -{n}) IN ({ends}))))")
        if table not in self._keys:
            self._keys[table] = {row[0] for row in self.catalog._execute(
                f"SELECT DISTINCT key FROM {table}")}
        keys = self._keys[table]
        ends_with = tuple(sep + rest for sep in _SEPARATORS)
        hits = sorted(k for k in keys if k.endswith(ends_with))
        exact = rest in keys
        if not hits:
            return _lit(rest) if exact else None
        if len(hits) == 1:
            suffix = _lit(hits[0])
            if not exact:
                return suffix
            suffix = (f"(SELECT key FROM {table} WHERE run_id = r.id AND key = {suffix}"
                      " LIMIT 1)")
        else:
            suffix = (f"(SELECT CASE WHEN count(*) > 1 THEN onlooker_ambiguous({_lit(rest)},"
                      f" group_concat(key, char(10))) ELSE max(key) END FROM (SELECT DISTINCT"
                      f" key FROM {table} WHERE run_id = r.id AND key IN"
                      f" ({', '.join(map(_lit, hits))})))")
        if not exact:
            return suffix
        return (f"coalesce((SELECT key FROM {table} WHERE run_id = r.id AND key = {_lit(rest)}"
                f" LIMIT 1), {suffix})")

    # -- values ---------------------------------------------------------------------
    @staticmethod
    def _metric_rows(key: str, what: str, series: bool) -> str:
        if series:
            return (f"SELECT {what} FROM metrics WHERE run_id = r.id AND key = {key} AND step"
                    " IS NOT NULL ORDER BY step DESC, rowid DESC LIMIT 1")
        return (f"SELECT {what} FROM metrics WHERE run_id = r.id AND key = {key} AND step"
                " IS NULL ORDER BY rowid DESC LIMIT 1")

    def _metric_whole(self, key: str, what: str) -> str:
        """lookup() of a key: its series' last point, else its (last) final value."""
        return (f"coalesce(({self._metric_rows(key, what, True)}),"
                f" ({self._metric_rows(key, what, False)}))")

    def _metric(self, rest: str) -> str:
        """The value of metrics.`rest`; for `KEY.FIELD`, when no key is `rest` itself,
        that field of KEY's series."""
        key = self.key("metrics", rest)
        whole = "NULL" if key is None else self._metric_whole(key, "coalesce(value, text)")
        head, _, tail = rest.rpartition(".")
        if not head or tail not in SERIES_FIELDS:
            return whole
        hkey = self.key("metrics", head)
        if hkey is None:
            return whole
        where = f"run_id = r.id AND key = {hkey} AND step IS NOT NULL"
        series = {
            "last": self._metric_rows(hkey, "coalesce(value, text)", True),
            "last_step": self._metric_rows(hkey, "step", True),
            "min": f"SELECT min(value) FROM metrics WHERE {where}",
            "max": f"SELECT max(value) FROM metrics WHERE {where}",
            # SQLite takes the bare `step` from the row holding the min (metrics_for too)
            "min_step": f"SELECT s FROM (SELECT min(value), step AS s FROM metrics WHERE"
                        f" {where} AND value IS NOT NULL)",
            "max_step": f"SELECT s FROM (SELECT max(value), step AS s FROM metrics WHERE"
                        f" {where} AND value IS NOT NULL)",
            "count": f"SELECT nullif(count(*), 0) FROM metrics WHERE {where}",
            "final": f"SELECT CASE WHEN EXISTS (SELECT 1 FROM metrics WHERE {where}) THEN"
                     f" ({self._metric_rows(hkey, 'coalesce(value, text)', False)}) END",
        }[tail]
        return f"({series})" if key is None else f"coalesce({whole}, ({series}))"

    def value(self, ref: Ref) -> tuple[str, Callable[[Any], Any]]:
        """(SQL giving the raw value, Python turning it into the row value)."""
        if ref.group == "params":
            key = self.key("params", ref.rest)
            if key is None:
                return "NULL", json_value
            return (f"(SELECT value FROM params WHERE run_id = r.id AND key = {key})",
                    json_value)
        if ref.group == "metrics":
            return self._metric(ref.rest), _identity
        if ref.group == "telemetry":
            rest, tele = ref.rest, self.telemetry
            return "r.id", lambda run_id: lookup(tele.get(run_id), rest)
        assert ref.field is not None
        col = ref.field.column
        if col == "duration":
            return ("r.ended_at - r.started_at",
                    lambda raw: None if raw is None else round(raw, 6))
        if col in ("started_at", "ended_at"):
            return (f"r.{col}", _ms) if ref.kind == "time" else (f"r.{col}", lambda raw: raw)
        if col == "command":
            if ref.kind == "column":  # sorting: the argv list, as sort_runs sees it
                return "r.command", lambda raw: str(json.loads(raw))
            return "r.command", _command_of_json
        return f"r.{col}", _identity

    def _numeric(self, cmp: Cmp, number_sql: str, raw_sql: str, guard: str,
                 post: Callable[[Any], Any], invalid: str | None = None) -> str:
        """SQL deciding `cmp` on a stored row: SQLite compares when `guard` says the value
        is a number and the literal is one; otherwise (or when `invalid`) Python's
        `compare` on `post(raw_sql)`."""
        test = _value_test(cmp)
        i = self.test_index(test if post is _identity else
                            lambda raw, post=post, test=test: test(post(raw)))
        python = f"onlooker_test({i}, {raw_sql})"
        lits = cmp.values
        if cmp.op in _NUM_SQL and lits[0].number is not None:
            sql = f"{number_sql} {_NUM_SQL[cmp.op]} {lits[0].number!r}"
        elif cmp.op == "in" and all(lit.number is not None for lit in lits):
            sql = f"{number_sql} IN ({', '.join(repr(lit.number) for lit in lits)})"
        else:
            return python
        first = f"WHEN {invalid} THEN {python} " if invalid else ""
        return f"CASE {first}WHEN {guard} THEN {sql} ELSE {python} END"

    def _stored(self, cmp: Cmp) -> str | None:
        """A comparison on params / metrics, decided inside the subquery that seeks the
        row, so that the value is read once."""
        ref = cmp.ref
        if ref.group == "params":
            key = self.key("params", ref.rest)
            if key is None:
                return "0"
            # a stored NaN is no JSON to SQLite: json_valid first, CASE keeps the order
            inner = self._numeric(cmp, "json_extract(value, '$')", "value",
                                  "json_type(value) IN ('integer', 'real')", json_value,
                                  invalid="NOT json_valid(value)")
            return (f"coalesce((SELECT {inner} FROM params WHERE run_id = r.id AND"
                    f" key = {key}), 0)")
        if ref.group == "metrics":
            head, _, tail = ref.rest.rpartition(".")
            if head and tail in SERIES_FIELDS:
                return None  # a field of a series: through its value
            key = self.key("metrics", ref.rest)
            if key is None:
                return "0"
            inner = self._numeric(cmp, "value", "coalesce(value, text)", "value IS NOT NULL",
                                  _identity)
            return f"coalesce({self._metric_whole(key, inner)}, 0)"
        return None

    # -- conditions -------------------------------------------------------------------
    def condition(self, node: Node) -> str:
        if isinstance(node, Not):
            return f"NOT ({self.condition(node.item)})"
        if isinstance(node, (And, Or)):
            glue = " AND " if isinstance(node, And) else " OR "
            return "(" + glue.join(self.condition(item) for item in node.items) + ")"
        native = _native(node)
        stored = None if native is not None else self._stored(node)
        if native is not None:
            cond = native
        elif stored is not None:
            cond = stored
        elif node.ref.kind == "paths":
            cond = self._paths(node)
        else:
            sql, post = self.value(node.ref)
            test = _value_test(node)
            i = self.test_index(test if post is _identity else
                                lambda raw, post=post, test=test: test(post(raw)))
            cond = f"onlooker_test({i}, {sql})"
        return f"NOT ({cond})" if node.negate else cond

    def _paths(self, node: Cmp) -> str:
        """Runs having a path of the role the comparison matches, as group_files lists
        them: an output is any version written; an input or code file one the run read
        and did not write itself."""
        assert node.ref.field is not None
        role = node.ref.field.name
        texts = [lit.text for lit in node.values]
        column = "name" if role == "tag" else "path"
        if node.op == "~":
            rx = re.compile(fnmatch.translate(texts[0]))
            self.tests.append(lambda path: rx.match(path) is not None)
            match = f"onlooker_test({len(self.tests) - 1}, {column})"
        else:
            match = f"{column} IN ({', '.join(map(_lit, texts))})"
        if role == "tag":
            has_tags = getattr(self.catalog, "_has_tags", lambda: True)()
            # a catalog from before tags (schema 4, opened to read) has none
            found = (f"r.id IN (SELECT run_id FROM tags WHERE {match})" if has_tags
                     else "0")
            return f"NOT ({found})" if node.op == "!=" else found
        assets = f"SELECT id FROM assets WHERE {match}"
        unwritten = "" if role == "output" else (
            " AND NOT EXISTS (SELECT 1 FROM io w WHERE w.run_id = io.run_id AND"
            " w.version_id = io.version_id AND w.access = 'write')")
        found = (f"r.id IN (SELECT io.run_id FROM io JOIN versions v ON v.id = io.version_id"
                 f" WHERE io.role = {_lit(role)} AND v.asset_id IN ({assets}){unwritten})")
        return f"NOT ({found})" if node.op == "!=" else found

    def sort_value(self, ref: Ref) -> str:
        sql, post = self.value(ref)
        self.values.append(post)
        return f"onlooker_value({len(self.values) - 1}, {sql})"

    def run(self, sql: str, args: list[Any]) -> list[int]:
        self.register()
        try:
            return [row[0] for row in self.catalog._conn.execute(sql, args)]
        except sqlite3.Error as err:
            if self.error:
                raise self.error[0] from None
            raise StoreError(f"cannot query the catalog at {self.catalog.path}: {err}") from err


_NUM_SQL = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_NATIVE_NUMBERS = {"id", "exit_code", "signal"}  # INTEGER columns, NULL when unknown


def _native(cmp: Cmp) -> str | None:
    """Plain SQL for a comparison SQLite decides exactly as `compare` does (a status, a
    number column against a number, a time or a duration), else None. A NULL (no
    value) is false either way, and stays false under NOT."""
    field, op, lits = cmp.ref.field, cmp.op, cmp.values
    if field is None or op == "~":
        return None
    name = field.name
    sql_op = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}.get(op)
    if name == "status" and op in ("=", "!=", "in"):
        if op == "in":
            return f"coalesce(r.status IN ({', '.join(_lit(lit.text) for lit in lits)}), 0)"
        return f"coalesce(r.status {sql_op} {_lit(lits[0].text)}, 0)"
    if name in _NATIVE_NUMBERS and all(lit.number is not None for lit in lits):
        if op == "in":
            return f"coalesce(r.{name} IN ({', '.join(repr(lit.number) for lit in lits)}), 0)"
        return f"coalesce(r.{name} {sql_op} {lits[0].number!r}, 0)"
    if field.kind in ("time", "duration") and op != "in":
        value = ("round(r.ended_at - r.started_at, 6)" if field.kind == "duration" else
                 f"CAST(r.{field.column} * 1000 + 0.001 AS INTEGER) / 1000.0")
        return f"coalesce({value} {sql_op} {lits[0].seconds!r}, 0)"
    return None


def _identity(raw: Any) -> Any:
    return raw


@functools.lru_cache(maxsize=4096)
def _command_of_json(raw: str) -> str:
    # many runs repeat a command line: each distinct one is quoted once
    return command_line(json.loads(raw))


def _uses_telemetry(node: Node) -> bool:
    return any(r.group == "telemetry" for r in refs_of(node))


def _sort_ref(spec: str) -> tuple[Ref, bool]:
    check_column(spec)
    descending = spec.startswith("-")
    bare = spec[1:] if descending else spec
    group, _, rest = bare.partition(".")
    if group in GROUPS:
        return Ref(bare, group, rest), descending
    return Ref("sort:" + bare, field=_SORT_FIELDS[bare]), descending


# Sort columns by their JSON name: the values `sort_runs` sees in a run dict, in the same
# order (times as seconds order as their ISO text does).
_SORT_FIELDS: dict[str, Field] = {
    name: Field(name, "column", lambda r, n=name: r.get(n), name, name)
    for name in COLUMN_FIELDS}


def query(catalog: Any, where: str | Iterable[str] | None = None, *, since: Any = None,
          until: Any = None, status: str | None = None, sort: str | None = None,
          limit: int | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """The catalog's runs that pass every filter in `where` (AND), started in
    [since, until], with `status`; newest first, or in `sort` order (a column spec,
    `-spec` descending, runs without a value last); at most `limit`. Full run dicts (as
    Catalog.runs gives them) for the runs returned only."""
    now = time.time() if now is None else now
    flt = Filter.parse(where, now)
    lo, hi = _time_bounds(since, until, now)
    sort_ref = _sort_ref(sort) if sort else None
    conds, args = [], []
    if status is not None:
        conds.append("r.status = ?")
        args.append(status)
    if lo is not None:
        conds.append("r.started_at >= ?")
        args.append(lo)
    if hi is not None:
        conds.append("r.started_at <= ?")
        args.append(hi)
    order = "r.started_at DESC, r.id DESC"
    parts = sorted(flt.parts, key=lambda p: max(r.cost for r in refs_of(p)))
    plain = [p for p in parts if not _uses_telemetry(p)]
    tele = [p for p in parts if _uses_telemetry(p)]
    sorted_by_tele = sort_ref is not None and sort_ref[0].group == "telemetry"
    comp = _Compiler(catalog)
    where_sql = " AND ".join([*conds, *(comp.condition(p) for p in plain)]) or "1"
    if tele or sorted_by_tele:
        # telemetry is no table: summarise it for the runs that pass everything else
        ids = comp.run(f"SELECT r.id FROM runs r WHERE {where_sql}", args)
        comp.telemetry.update(catalog.telemetry_summaries(ids))
        if tele:
            where_sql += " AND " + " AND ".join(comp.condition(p) for p in tele)
    tail = " LIMIT ?" if limit is not None else ""
    if sort_ref is None:
        sql = f"SELECT r.id FROM runs r WHERE {where_sql} ORDER BY {order}{tail}"
    else:
        ref, descending = sort_ref
        way = "DESC" if descending else "ASC"
        # materialized, so each run's sort value is read once, not once per use
        sql = (f"WITH m AS MATERIALIZED (SELECT r.id AS id, r.started_at AS started_at,"
               f" {comp.sort_value(ref)} AS v FROM runs r WHERE {where_sql})"
               " SELECT id FROM m ORDER BY CASE WHEN v IS NULL THEN 2 WHEN typeof(v) IN"
               f" ('integer', 'real') THEN 0 ELSE 1 END, v {way}, started_at DESC, id DESC"
               f"{tail}")
    ids = comp.run(sql, [*args, *([limit] if limit is not None else [])])
    return load_runs(catalog, ids)


def _ms(ts: float | None) -> float | None:
    """Unix seconds cut to the millisecond, as a run dict's ISO times hold them."""
    return None if ts is None else math.floor(ts * 1000 + 1e-3) / 1000


def load_runs(catalog: Any, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Run dicts (the shape of Catalog.runs) for these ids, in this order."""
    from .catalog import _FILES_SQL

    ids = list(ids)
    if not ids:
        return []
    rows: dict[int, Any] = {}
    params: dict[int, dict[str, Any]] = {}
    files: dict[int, dict[str, list[dict[str, Any]]]] = {}
    with catalog._snapshot():
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for r in catalog._execute(f"SELECT {records.RUN_COLUMNS} FROM runs WHERE id IN"
                                      f" ({marks})", chunk):
                rows[r["id"]] = r
            params.update(records.group_params(catalog._execute(
                f"SELECT run_id, key, value FROM params WHERE run_id IN ({marks})", chunk)))
            files.update(records.group_files(catalog._execute(
                f"{_FILES_SQL} WHERE io.run_id IN ({marks}) ORDER BY a.path, v.id", chunk)))
    metrics = catalog.metrics_for(ids)  # each reads in a snapshot of its own
    tele = catalog.telemetry_summaries(ids)
    tags_for = getattr(catalog, "tags_for", None)  # as Catalog.runs, once tags exist
    tags = tags_for(ids) if tags_for is not None else None
    out = []
    empty = records.empty_files()
    for run_id in ids:
        r = rows.get(run_id)
        if r is None:
            continue
        extra = {} if tags is None else {"tags": tags.get(run_id, ())}
        d = records.run_dict(r, params.get(run_id, {}), files.get(run_id, empty), **extra)
        d["metrics"] = metrics.get(run_id, {})
        d["telemetry"] = tele.get(run_id)
        out.append(d)
    return out
