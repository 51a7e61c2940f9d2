"""The `--where` language: literals (times, durations), the fields it may name, and
its recursive-descent parser (the column of each token kept for errors)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .keys import GROUPS, QueryError, command_line, lookup

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


def _twins(run: dict[str, Any]) -> list[str] | None:
    # ids as text, compared as the paths are; a dict without "twins" (runs() gives
    # none: `show --json` does) has no value, so the comparison fails
    twins = run.get("twins")
    return None if twins is None else [str(i) for i in twins]


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
    Field("twin_of", "paths", _twins, None, "a run it is a twin of (same command, code, "
          "inputs and params)", frozenset({"=", "!=", "in"}), cost=4),
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
