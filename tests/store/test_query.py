"""The --where language: parser, errors with positions, the key-matching rule, the
evaluator over a real catalog, and a property test holding the catalog's SQL path, the
run-dict path and a plain Python filter to the same answers."""

from __future__ import annotations

import fnmatch
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onlooker.agent.metrics import Metric
from onlooker.store.catalog import Catalog
from onlooker.store.errors import StoreError
from onlooker.store.query import (
    AmbiguousKey,
    And,
    Cmp,
    Not,
    Or,
    QueryError,
    column_value,
    filter_runs,
    find,
    lookup,
    match_key,
    parse,
    parse_duration,
    parse_time,
    query,
    sort_runs,
)

NOW = 1_800_000_000.0  # every relative time in these tests is relative to this
DAY = 86400.0
STATUSES = ("completed", "failed", "lost")
SCRIPTS = ("src/train.py", "src/prep.py", "eval.py")
OPTIMS = ("adam", "sgd", "rmsprop")


# ---- a catalog of runs, and the plain truth about each -----------------------------------

def make_spec(i: int, rng: random.Random) -> dict[str, Any]:
    """What run i is, in plain Python, for the reference filter."""
    started = round(NOW - rng.uniform(0, 10) * DAY, 3)  # ms, as the JSON holds times
    spec: dict[str, Any] = {
        "argv": ["python", SCRIPTS[i % 3], "--lr", str(i)],
        "status": STATUSES[i % 3],
        "exit_code": 0 if i % 3 == 0 else i % 4,
        "started": started,
        "duration": None if i % 7 == 6 else float(rng.randrange(1, 7200)),
        "params": {},
        "metrics": {},
        "series": {},
        "inputs": [],
        "outputs": [],
    }
    if i % 5 != 4:  # some runs have no lr at all
        key = "lr" if i % 2 else "config.yaml:lr"  # the rule finds both as params.lr
        spec["params"][key] = rng.choice([0.1, 0.01, 0.001, 0.5, 1])
    if i % 4 != 3:  # two files name it in different runs: both are params.optim.name
        where = "hydra.yaml" if i % 8 == 1 else "params.yaml"
        spec["params"][f"{where}:optim.name"] = rng.choice(OPTIMS)
    spec["params"]["epochs"] = rng.randrange(1, 30)
    if i % 3 != 2:  # NaN is kept as the text "nan" and compares as no number does
        spec["metrics"]["summary.json:test.f1"] = float("nan") if i % 9 == 0 else \
            round(rng.random(), 3)
    if i % 2 == 0:
        spec["series"]["training.log:val_loss"] = [round(rng.random(), 3)
                                                   for _ in range(rng.randrange(1, 5))]
    spec["inputs"] = [f"data/raw/{rng.choice('abc')}.csv"] + (["data/other.csv"] if i % 2 else [])
    spec["outputs"] = [f"models/m{i}.pkl"] if i % 3 != 2 else [f"out/{i}.txt"]
    return spec


def build(project: Path, specs: list[dict[str, Any]]) -> list[int]:
    ids = []
    with Catalog.init(project) as cat:
        for i, s in enumerate(specs):
            run = cat.begin_run(command=s["argv"], cwd=str(project), exe=None, pid=100 + i,
                                pid_start=1, user="ana", hostname="box", started_at=s["started"],
                                tier="netlink")
            ids.append(run)
            fields: dict[str, Any] = {"status": s["status"], "exit_code": s["exit_code"]}
            if s["duration"] is not None:
                fields["ended_at"] = s["started"] + s["duration"]
            cat.update_run(run, **fields)
            cat.set_params(run, {k: (v, "x") for k, v in s["params"].items()})
            metrics = [Metric(k, None, v) for k, v in s["metrics"].items()]
            metrics += [Metric(k, float(step), v) for k, pts in s["series"].items()
                        for step, v in enumerate(pts)]
            if metrics:
                cat.set_metrics(run, "summary.json", metrics)
            for n, path in enumerate(s["inputs"] + s["outputs"]):
                role = "input" if path in s["inputs"] else "output"
                vid = cat.add_version(path, hash="blake3:" + f"{i:04d}{n:02d}".ljust(64, "0"),
                                      size=1, mtime_ns=1, kind="dataset", stored=False,
                                      created_at=s["started"])
                cat.link(run, vid, role)
    return ids


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Catalog, dict[int, dict[str, Any]], list[dict]]:
    rng = random.Random(1234)
    specs = [make_spec(i, rng) for i in range(36)]
    project = tmp_path_factory.mktemp("query")
    ids = build(project, specs)
    cat = Catalog.find(project)
    yield cat, dict(zip(ids, specs, strict=True)), cat.runs()
    cat.close()


def ids_of(runs: list[dict]) -> list[int]:
    return [r["id"] for r in runs]


def newest_first(world, keep) -> list[int]:
    cat, specs, runs = world
    return [r["id"] for r in runs if keep(specs[r["id"]])]


# ---- the parser -----------------------------------------------------------------------

def test_precedence_and_parentheses() -> None:
    tree = parse("status = a or status = b and not status = c")
    assert isinstance(tree, Or) and isinstance(tree.items[1], And)
    assert isinstance(tree.items[1].items[1], Not)
    grouped = parse("(status = a or status = b) and status = c")
    assert isinstance(grouped, And) and isinstance(grouped.items[0], Or)
    cmp = parse("metrics.test.f1>=0.8")
    assert isinstance(cmp, Cmp) and cmp.op == ">=" and cmp.values[0].number == 0.8
    assert cmp.ref.group == "metrics" and cmp.ref.rest == "test.f1"
    listed = parse("params.optim not in ('adam', \"sgd\", rmsprop,)")
    assert listed.negate and [v.text for v in listed.values] == ["adam", "sgd", "rmsprop"]
    assert isinstance(parse("status = x AND NOT status == y"), And)  # keywords in any case
    escaped = parse(r"command ~ 'it\'s *'")
    assert escaped.values[0].text == "it's *"


@pytest.mark.parametrize("text, column, words", [
    ("parms.lr > 1", 1, "unknown field 'parms.lr' at column 1: use params.KEY, metrics.KEY"),
    ("status = x and bogus = 1", 16, "unknown field 'bogus' at column 16"),
    ("params.lr >", 12, "ends where a value after '>' was expected"),
    ("params.lr 0.1", 11, "unexpected '0.1' at column 11: expected an operator"),
    ("(status = x", 12, "')' to close the '(' at column 1"),
    ("status = x)", 11, "unexpected ')' at column 11"),
    ("status = 'x", 10, "an unclosed string at column 10"),
    ("status = x y", 12, "unexpected 'y' at column 12"),
    ("duration > soon", 12, "cannot read 'soon' at column 12 as a duration"),
    ("started < someday", 11, "cannot read 'someday' at column 11 as a time"),
    ("input > 3", 7, "'input' cannot be compared with '>' (column 7): use = != ~ in"),
    ("started ~ '2026*'", 9, "cannot be compared with '~'"),
    ("status in (a b)", 14, "expected ',' or ')'"),
    ("status in a", 11, "'(' after 'in'"),
    ("params > 1", 1, "'params' needs a key at column 1"),
    ("status ! x", 8, "cannot read '!' at column 8"),
    ("   ", 1, "the filter is empty"),
    ("and status = x", 1, "unexpected 'and' at column 1: expected a field"),
])
def test_errors_point_at_the_bad_token(text: str, column: int, words: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(text, now=NOW)
    assert info.value.position == column
    assert words in str(info.value)
    assert isinstance(info.value, StoreError)
    assert "\n" not in str(info.value)


def test_time_and_duration_literals() -> None:
    assert parse_duration("90") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 2 * DAY and parse_duration("1.5s") == 1.5
    assert parse_duration("10 m") is None and parse_duration("x") is None
    assert parse_time("2d", now=NOW) == NOW - 2 * DAY
    assert parse_time("30m", now=NOW) == NOW - 1800
    ten_utc = datetime(2026, 11, 30, 10, tzinfo=timezone.utc).timestamp()
    assert parse_time("2026-11-30T10:00:00Z") == ten_utc
    assert parse_time("2026-11-30T11:00:00+01:00") == ten_utc
    assert parse_time("2026-11-30") == datetime(2026, 11, 30).timestamp()  # local time
    assert parse_time("now", now=NOW) == NOW
    assert parse_time("tomorrowish") is None
    cmp = parse("duration > 10m")
    assert cmp.values[0].seconds == 600
    assert parse("started > 2d", now=NOW).values[0].seconds == NOW - 2 * DAY


# ---- the one key-matching rule ---------------------------------------------------------

def test_match_key_rule() -> None:
    keys = ["config.yaml:lr", "summary.json:test.f1", "tb:train/loss", "lr_decay"]
    assert match_key(keys, "lr") == "config.yaml:lr"
    assert match_key(keys, "test.f1") == "summary.json:test.f1"
    assert match_key(keys, "f1") == "summary.json:test.f1"
    assert match_key(keys, "loss") == "tb:train/loss"
    assert match_key(keys, "decay") is None  # `_decay` is no separator
    assert match_key(["lr", "a.yaml:lr"], "lr") == "lr"  # as written wins
    with pytest.raises(AmbiguousKey) as info:
        match_key(["a.yaml:lr", "b.yaml:lr"], "lr")
    assert info.value.candidates == ["a.yaml:lr", "b.yaml:lr"]
    assert "a.yaml:lr, b.yaml:lr" in str(info.value)


def test_find_series_fields_and_nested_paths() -> None:
    metrics = {"log:val_loss": {"last": 0.2, "min": 0.1, "max": 0.9, "count": 3},
               "summary.json:test.f1": 0.8}
    assert lookup(metrics, "val_loss") == 0.2  # a series stands for its last value
    assert lookup(metrics, "val_loss.min") == 0.1
    assert lookup(metrics, "test.f1") == 0.8
    assert lookup(metrics, "test.f1.max") is None  # a final value has no fields
    assert find({"gpus": {"0": {"mem_peak": 5}}}, "gpus.0.mem_peak") == 5
    run = {"params": {"a.yaml:lr": 0.1}, "status": "failed"}
    assert column_value(run, "params.lr") == 0.1 and column_value(run, "status") == "failed"


# ---- the evaluator on a real catalog ----------------------------------------------------

def lr(s):
    return s["params"].get("lr", s["params"].get("config.yaml:lr"))


def optim(s):
    return s["params"].get("params.yaml:optim.name", s["params"].get("hydra.yaml:optim.name"))


CASES = [
    ("params.lr > 0.01", lambda s: lr(s) is not None and lr(s) > 0.01),
    ("params.lr = 1", lambda s: lr(s) == 1),
    ("not params.lr > 0.01", lambda s: not (lr(s) is not None and lr(s) > 0.01)),
    ("params.lr != 0.1", lambda s: lr(s) is not None and lr(s) != 0.1),
    ("params.lr in (0.1, 0.5)", lambda s: lr(s) in (0.1, 0.5)),
    ("params.optim.name = adam", lambda s: optim(s) == "adam"),
    ("params.name ~ '*d*'", lambda s: "d" in (optim(s) or "")),
    ("params.optim.name < 'b'", lambda s: (optim(s) or "z") < "b"),
    ("metrics.test.f1 >= 0.5 or status = 'failed'",
     lambda s: s["metrics"].get("summary.json:test.f1", -1) >= 0.5 or s["status"] == "failed"),
    ("metrics.test.f1 != 0.5", lambda s: "summary.json:test.f1" in s["metrics"]),
    ("metrics.test.f1 = nan", lambda s: s["metrics"].get("summary.json:test.f1", 0) !=
     s["metrics"].get("summary.json:test.f1", 0)),
    ("metrics.val_loss.max > 0.5",
     lambda s: max(s["series"].get("training.log:val_loss", [0])) > 0.5),
    ("metrics.val_loss.count >= 3",
     lambda s: len(s["series"].get("training.log:val_loss", [])) >= 3),
    ("metrics.val_loss < 0.5",
     lambda s: bool(s["series"].get("training.log:val_loss"))
     and s["series"]["training.log:val_loss"][-1] < 0.5),
    ("status in (failed, lost) and exit_code > 1",
     lambda s: s["status"] in ("failed", "lost") and s["exit_code"] > 1),
    ("command ~ '*train.py*'", lambda s: s["argv"][1] == "src/train.py"),
    ("duration > 1h", lambda s: s["duration"] is not None and s["duration"] > 3600),
    ("duration <= 30m", lambda s: s["duration"] is not None and s["duration"] <= 1800),
    ("not duration > 0", lambda s: s["duration"] is None),
    ("started > 2d", lambda s: s["started"] > NOW - 2 * DAY),
    ("input ~ 'data/raw/*'", lambda s: True),
    ("input = data/raw/a.csv", lambda s: "data/raw/a.csv" in s["inputs"]),
    ("input != data/raw/a.csv", lambda s: "data/raw/a.csv" not in s["inputs"]),
    ("input in ('data/raw/b.csv', 'data/other.csv')",
     lambda s: bool({"data/raw/b.csv", "data/other.csv"} & set(s["inputs"]))),
    ("output ~ 'models/*.pkl'", lambda s: s["outputs"][0].startswith("models/")),
    ("code ~ '*'", lambda s: False),  # no run here ran a code file it kept
    ("params.missing = 1", lambda s: False),
    ("not params.missing = 1", lambda s: True),
    ("not (params.lr > 0.01 and metrics.test.f1 < 0.5)",
     lambda s: not (lr(s) is not None and lr(s) > 0.01
                    and s["metrics"].get("summary.json:test.f1", 2) < 0.5)),
]


@pytest.mark.parametrize("text, keep", CASES, ids=[c[0] for c in CASES])
def test_query_on_a_catalog(world, text: str, keep) -> None:
    cat, specs, runs = world
    want = newest_first(world, keep)
    assert want or "missing" in text or "code" in text  # the world exercises the case
    assert ids_of(query(cat, text, now=NOW)) == want
    assert ids_of(filter_runs(runs, text, now=NOW)) == want


def test_several_filters_and_time_bounds(world) -> None:
    cat, specs, runs = world
    want = newest_first(world, lambda s: s["status"] == "completed"
                        and s["params"]["epochs"] > 10 and s["started"] >= NOW - 5 * DAY)
    got = query(cat, ["status = completed", "params.epochs > 10"], since="5d", now=NOW)
    assert ids_of(got) == want
    until = query(cat, None, until="5d", now=NOW)
    assert ids_of(until) == newest_first(world, lambda s: s["started"] <= NOW - 5 * DAY)
    failed = query(cat, "params.epochs > 0", status="failed", now=NOW)
    assert ids_of(failed) == newest_first(world, lambda s: s["status"] == "failed")
    with pytest.raises(QueryError, match="cannot read --since 'soon' as a time"):
        query(cat, since="soon")


def test_sort_and_limit_match_sort_runs(world) -> None:
    cat, specs, runs = world
    for spec in ("-metrics.test.f1", "params.lr", "-duration", "status", "started_at",
                 "-params.optim.name", "metrics.val_loss.min", "command", "-exit_code"):
        want = ids_of(sort_runs(list(runs), spec))
        assert ids_of(cat.query(sort=spec)) == want, spec
        assert ids_of(cat.query(sort=spec, limit=4)) == want[:4], spec
        assert ids_of(cat.query(sort=spec, limit=4, offset=3)) == want[3:7], spec
        assert ids_of(cat.query(sort=spec, offset=5)) == want[5:], spec
        assert ids_of(filter_runs(runs, sort=spec)) == want, spec
    with pytest.raises(QueryError, match="unknown column 'bogus'"):
        cat.query(sort="bogus")


def test_results_are_full_run_dicts(world) -> None:
    cat, specs, runs = world
    by_id = {r["id"]: r for r in runs}
    got = cat.query("params.lr > 0", limit=3)
    assert len(got) == 3
    for run in got:
        assert run == by_id[run["id"]]  # the same dicts Catalog.runs gives
    assert cat.query(limit=2) == runs[:2]
    assert cat.query(limit=2, offset=2) == runs[2:4]
    filtered = ids_of(cat.query("params.lr > 0"))
    assert ids_of(cat.query("params.lr > 0", limit=2, offset=1)) == filtered[1:3]


def test_an_ambiguous_suffix_names_the_candidates(tmp_path: Path) -> None:
    with Catalog.init(tmp_path) as cat:
        run = cat.begin_run(command=["python", "sweep.py"], cwd=str(tmp_path), exe=None, pid=1,
                            pid_start=1, user="a", hostname="h", started_at=NOW, tier="poll")
        cat.set_params(run, {"src/train.py#1:lr": (0.1, "x"), "src/train.py#2:lr": (0.2, "x")})
        cat.set_metrics(run, "m.json", [Metric("a.json:loss", None, 1.0),
                                        Metric("b.json:loss", None, 2.0)])
        for text in ("params.lr > 0", "metrics.loss > 0"):
            with pytest.raises(AmbiguousKey) as info:
                cat.query(text)
            assert len(info.value.candidates) == 2, text
        with pytest.raises(AmbiguousKey):
            cat.query(sort="params.lr")
        with pytest.raises(AmbiguousKey):
            filter_runs(cat.runs(), "params.lr > 0")
        assert ids_of(cat.query("params.src/train.py#2:lr = 0.2")) == [run]


def test_telemetry_fields(tmp_path: Path) -> None:
    with Catalog.init(tmp_path) as cat:
        ids = []
        for i, rss in enumerate((100, 300, None)):
            run = cat.begin_run(command=["python", "t.py"], cwd=str(tmp_path), exe=None,
                                pid=1 + i, pid_start=1, user="a", hostname="h",
                                started_at=NOW + i, tier="poll")
            ids.append(run)
            if rss is not None:
                cat.add_telemetry([(run, NOW + i, {"rss": rss, "cpu_pct": 50.0})])
        assert ids_of(cat.query("telemetry.rss_peak > 200")) == [ids[1]]
        assert ids_of(cat.query("not telemetry.rss_peak > 200")) == [ids[2], ids[0]]
        assert ids_of(cat.query(sort="-telemetry.rss_peak")) == [ids[1], ids[0], ids[2]]
        assert ids_of(cat.query(["telemetry.samples = 1", "id > 1"])) == [ids[1]]


# ---- the property: three ways of filtering agree ----------------------------------------

FIELD_VALUES = {
    "params.lr": st.sampled_from(["0.1", "0.01", "0.001", "0.5", "1", "'0.1'", "'x'"]),
    "params.epochs": st.integers(0, 30).map(str),
    "params.optim.name": st.sampled_from([*OPTIMS, "'b'", "'ad*'"]),
    "metrics.test.f1": st.floats(0, 1).map(lambda f: f"{f:.3f}"),
    "metrics.val_loss": st.floats(0, 1).map(lambda f: f"{f:.2f}"),
    "metrics.val_loss.max": st.floats(0, 1).map(lambda f: f"{f:.2f}"),
    "status": st.sampled_from([*STATUSES, "'running'"]),
    "exit_code": st.integers(0, 4).map(str),
    "duration": st.sampled_from(["30", "10m", "1h", "90m", "2h"]),
    "started": st.sampled_from(["1d", "3d", "5d", "8d", "12h"]),
}
ORDER = ["=", "!=", "<", "<=", ">", ">="]


def _truth(spec: dict[str, Any], field: str) -> Any:
    """The plain value of a field for a run, straight from what it is."""
    if field == "params.lr":
        return lr(spec)
    if field == "params.epochs":
        return spec["params"]["epochs"]
    if field == "params.optim.name":
        return optim(spec)
    if field == "metrics.test.f1":
        return spec["metrics"].get("summary.json:test.f1")
    series = spec["series"].get("training.log:val_loss")
    if field == "metrics.val_loss":
        return series[-1] if series else None
    if field == "metrics.val_loss.max":
        return max(series) if series else None
    if field == "started":
        return spec["started"]
    return spec[field]


def _literal(field: str, text: str) -> Any:
    if field == "duration":
        return parse_duration(text)
    if field == "started":
        return parse_time(text, now=NOW)
    return text[1:-1] if text.startswith("'") else text


def _plain_compare(value: Any, op: str, lit: Any, quoted: bool) -> bool:
    """The rule as the user guide says it: numbers when both read as numbers, else
    text; `~` a glob over the text."""
    if value is None:
        return False
    if op == "~":
        return fnmatch.fnmatchcase(str(value), str(lit))
    try:
        number = float(lit)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, (int, float)) and number is not None:
        a, b = float(value), number
    else:
        a, b = str(value), str(lit)
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


@st.composite
def comparisons(draw):
    field = draw(st.sampled_from(sorted(FIELD_VALUES)))
    text = draw(FIELD_VALUES[field])
    ops = ORDER + (["~"] if field.startswith("params.optim") or field == "status" else [])
    op = draw(st.sampled_from(ops))
    lit = _literal(field, text)

    def check(spec):
        return _plain_compare(_truth(spec, field), op, lit, text.startswith("'"))
    return f"{field} {op} {text}", check


def expressions():
    def extend(children):
        both = st.tuples(children, children)
        return st.one_of(
            both.map(lambda ab: (f"({ab[0][0]}) and ({ab[1][0]})",
                                 lambda s, a=ab[0][1], b=ab[1][1]: a(s) and b(s))),
            both.map(lambda ab: (f"({ab[0][0]}) or ({ab[1][0]})",
                                 lambda s, a=ab[0][1], b=ab[1][1]: a(s) or b(s))),
            children.map(lambda a: (f"not ({a[0]})", lambda s, f=a[1]: not f(s))),
        )
    return st.recursive(comparisons(), extend, max_leaves=6)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=expressions(), sort=st.sampled_from([None, "-metrics.test.f1", "params.lr",
                                                 "duration", "-started_at"]))
def test_query_agrees_with_a_plain_python_filter(world, expr, sort) -> None:
    cat, specs, runs = world
    text, keep = expr
    plain = [r for r in runs if keep(specs[r["id"]])]
    if sort:
        plain = sort_runs(plain, sort)
    assert ids_of(filter_runs(runs, text, sort=sort, now=NOW)) == ids_of(plain), text
    assert ids_of(query(cat, text, sort=sort, now=NOW)) == ids_of(plain), text
