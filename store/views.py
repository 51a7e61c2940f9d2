"""Read-only SQL over the catalog's documented views (`runs`, `params`, `metrics`, ...)."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import schema
from .errors import StoreError

# The views' plain names, as `onlooker sql` offers them; in the file each is
# `v_<name>` (schema.V5_VIEWS), since the tables `runs`, `steps`, ... hold the plain ones.
VIEWS: tuple[str, ...] = tuple(schema.V5_VIEWS)
VIEWS_SINCE = 5  # the schema version that made them

# What a query may do: read tables and views, call functions, recurse in a CTE. Anything
# else (ATTACH, which creates files; PRAGMA writes; temp tables; transactions) is refused
# before it runs: a file opened read-only still lets ATTACH make a new database.
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
            33}  # SQLITE_RECURSIVE (WITH RECURSIVE), not exported by Python's sqlite3
# PRAGMAs that only read: these take a table or index name as their argument...
_READ_PRAGMAS_NAMED = {"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                       "index_xinfo", "foreign_key_list"}
# ...and these take none (with one, several would set something).
_READ_PRAGMAS = {"collation_list", "function_list", "database_list", "user_version",
                 "schema_version", "compile_options", "table_list"}
_ACTIONS = {
    sqlite3.SQLITE_INSERT: "INSERT", sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE", sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH", sqlite3.SQLITE_TRANSACTION: "a transaction",
    sqlite3.SQLITE_PRAGMA: "this PRAGMA",
}


class QueryError(StoreError):
    """A query SQLite refused (syntax, unknown column, ...): its message, one sentence."""


class ReadOnlyQuery(QueryError):
    """A query that would change something: SQL over the catalog only reads."""


def _authorizer(denied: list[str]):
    def check(action: int, arg1: str | None, arg2: str | None, _db: str | None,
              _source: str | None) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_UPDATE and arg1 in ("sqlite_master", "sqlite_temp_master"):
            # SQLite asks this when a query uses a table-valued function (json_each,
            # pragma_table_info); the file is open read-only, so nothing can change.
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _READ_PRAGMAS_NAMED or (arg2 is None and name in _READ_PRAGMAS):
                return sqlite3.SQLITE_OK
        denied.append(_ACTIONS.get(action, "a statement that changes something"))
        return sqlite3.SQLITE_DENY
    return check


_LEADING = re.compile(r"\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/|\s+)*", re.S)


def _verb(sql: str) -> str | None:
    """The statement's first word where it names what was refused (INSERT, CREATE...)."""
    rest = sql[_LEADING.match(sql).end():]  # type: ignore[union-attr]
    word = re.match(r"[A-Za-z]+", rest)
    verb = word.group(0).upper() if word else ""
    return None if verb in ("", "SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA") else verb


def _value(value: Any) -> Any:
    """A SQLite value as JSON and CSV can carry it: blobs as hex, inf as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    return value


def connect(path: Path, found: int) -> sqlite3.Connection:
    """A connection to the catalog file that can only read, with the views under their
    plain names too (temp views are looked up before the tables of the same name)."""
    schema.require(found, VIEWS_SINCE, str(path), "SQL over its views")
    try:
        conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise StoreError(f"cannot open the catalog at {path}: {err}") from err
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        for name in VIEWS:
            conn.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM main."
                         f"{schema.V5_VIEW_PREFIX}{name}")
        conn.execute("PRAGMA query_only = 1")
    except sqlite3.Error as err:
        conn.close()
        raise StoreError(f"cannot read the views of the catalog at {path}: {err}") from err
    return conn


def query(path: Path, sql: str, params: Sequence[Any] | dict[str, Any] = (), *,
          found: int = schema.LATEST) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement over the catalog at `path` (schema version `found`);
    returns (column names, rows). Raises QueryError with SQLite's message, ReadOnlyQuery
    for anything that would write."""
    if not sql.strip():
        raise QueryError("the query is empty: give one SELECT statement")
    conn = connect(path, found)
    denied: list[str] = []
    try:
        conn.set_authorizer(_authorizer(denied))
        try:
            cur = conn.execute(sql, params)
            rows = [tuple(_value(v) for v in row) for row in cur.fetchall()]
        except (sqlite3.Error, sqlite3.Warning) as err:
            text = str(err)
            if denied or "readonly" in text or "read-only" in text or "query_only" in text \
                    or "cannot modify" in text or "may not be modified" in text:
                what = _verb(sql) or (denied[0] if denied else "a write")
                raise ReadOnlyQuery(f"SQL over the catalog only reads: {what} is not allowed"
                                    " (use SELECT)") from err
            if "one statement at a time" in text:
                raise QueryError("give one statement at a time") from err
            raise QueryError(f"SQLite refused the query: {text}") from err
        except OverflowError as err:  # an integer SQLite cannot hold, as a parameter
            raise QueryError(f"SQLite refused the query: {err}") from err
        columns = [d[0] for d in cur.description or ()]
        return columns, rows
    finally:
        conn.close()


def unique_names(columns: Sequence[str]) -> list[str]:
    """Column names made unique (`run_id`, `run_id_2`) so each row can be an object."""
    used: set[str] = set()
    out = []
    for name in columns:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as objects keyed by (unique) column name: `onlooker sql --json`."""
    names = unique_names(columns)
    return [dict(zip(names, row, strict=True)) for row in rows]
