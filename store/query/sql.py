"""A parsed filter over a catalog: compiled into one SQL statement (`_Compiler`) that
reads only the keys the filter and the sort name; full run dicts are read only for the
runs returned (`query`)."""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import records
from ..errors import StoreError, sqlite_error
from ..schema import NOTEBOOK_SINCE
from .evaluate import Filter, _time_bounds, _value_test, as_text, json_value
from .keys import (
    _SEPARATORS,
    COLUMN_FIELDS,
    GROUPS,
    SERIES_FIELDS,
    check_column,
    command_line,
    lookup,
    match_key,
)
from .language import And, Cmp, Field, Node, Not, Or, Ref, refs_of

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
        if role == "twin_of":
            return self._twins(node, texts)
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

    def _twins(self, node: Cmp, texts: list[str]) -> str:
        """Runs that are twins of a run named (twins.py decides, in Python: the ids are
        few, the signature no SQL); ids compared as text, as `filter_runs` does."""
        from ..twins import twins_of

        named = [int(t) for t in texts if t.isdigit() and str(int(t)) == t]
        found_ids = sorted({i for ids in twins_of(self.catalog, named).values() for i in ids})
        found = f"r.id IN ({', '.join(map(str, found_ids))})" if found_ids else "0"
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
            if isinstance(err, sqlite3.DatabaseError) and not isinstance(
                    err, sqlite3.OperationalError | sqlite3.ProgrammingError):
                raise sqlite_error(err, self.catalog.path) from err  # damaged: the remedy
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
          limit: int | None = None, offset: int = 0, now: float | None = None
          ) -> list[dict[str, Any]]:
    """The catalog's runs that pass every filter in `where` (AND), started in
    [since, until], with `status`; newest first, or in `sort` order (a column spec,
    `-spec` descending, runs without a value last); at most `limit`, after skipping the
    first `offset` (a page). Full run dicts (as Catalog.runs gives them) for the runs
    returned only."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("limit and offset are counts: 0 or more")
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
    # a page is cut in SQL: the runs before it are never loaded
    tail = " LIMIT ? OFFSET ?" if limit is not None else (" LIMIT -1 OFFSET ?" if offset
                                                         else "")
    page = [limit, offset] if limit is not None else ([offset] if offset else [])
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
    ids = comp.run(sql, [*args, *page])
    return load_runs(catalog, ids)


def _ms(ts: float | None) -> float | None:
    """Unix seconds cut to the millisecond, as a run dict's ISO times hold them."""
    return None if ts is None else math.floor(ts * 1000 + 1e-3) / 1000


def load_runs(catalog: Any, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Run dicts (the shape of Catalog.runs) for these ids, in this order."""
    from ..catalog import _FILES_SQL

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
    notebooks = records.notebooks_for(catalog._execute, getattr(catalog, "schema_version", 0),
                                      NOTEBOOK_SINCE, ids)  # kernel runs (schema 7)
    out = []
    empty = records.empty_files()
    for run_id in ids:
        r = rows.get(run_id)
        if r is None:
            continue
        extra: dict[str, Any] = {} if tags is None else {"tags": tags.get(run_id, ())}
        extra["notebook"] = notebooks.get(run_id)
        d = records.run_dict(r, params.get(run_id, {}), files.get(run_id, empty), **extra)
        d["metrics"] = metrics.get(run_id, {})
        d["telemetry"] = tele.get(run_id)
        out.append(d)
    return out
