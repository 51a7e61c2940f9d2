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
it is not a column of `runs`, its SQL in `sql._Compiler.value`).

The package's parts: `keys` (the key rule, columns, sorting), `language` (literals,
fields, the parser), `evaluate` (in Python) and `sql` (over a catalog).
"""

from __future__ import annotations

from .evaluate import (
    Filter,
    as_text,
    compare,
    compile_filter,
    filter_runs,
    json_value,
    row_from_run,
)
from .keys import (
    COLUMN_FIELDS,
    GROUPS,
    REDACTED,
    SERIES_FIELDS,
    AmbiguousKey,
    QueryError,
    check_column,
    column_value,
    command_line,
    find,
    lookup,
    match_key,
    order_by,
    sort_runs,
)
from .language import (
    ALIASES,
    FIELDS,
    And,
    Cmp,
    Field,
    Literal,
    Node,
    Not,
    Or,
    Ref,
    Token,
    field_ref,
    parse,
    parse_duration,
    parse_time,
    refs_of,
    row_value,
    tokenize,
)
from .sql import query

__all__ = [
    "ALIASES", "COLUMN_FIELDS", "FIELDS", "GROUPS", "REDACTED", "SERIES_FIELDS",
    "AmbiguousKey", "And", "Cmp", "Field", "Filter", "Literal", "Node", "Not", "Or",
    "QueryError", "Ref", "Token", "as_text", "check_column", "column_value", "command_line",
    "compare", "compile_filter", "field_ref", "filter_runs", "find", "json_value", "lookup",
    "match_key", "order_by", "parse", "parse_duration", "parse_time", "query", "refs_of",
    "row_from_run", "row_value", "sort_runs", "tokenize",
]
