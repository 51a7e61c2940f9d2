"""`onlooker runs --where/--since/--until/--csv`, the program as typed, and `show`'s
folded values, over a real catalog built with Catalog in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlooker.agent.metrics import Metric
from onlooker.cli.main import cli
from onlooker.store.catalog import Catalog

HOUR = 3600.0
PROMPT = "You are a careful assistant.\n" + "Answer briefly.\n" * 10 + "Thanks."


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Four runs, oldest first: ids 1..4, started 4 days, 3 days, 2 hours and 10 min ago."""
    now = time.time()
    rows = [  # (age, argv, status, lr, f1, inputs)
        (4 * 24 * HOUR, ["python", "src/prep.py"], "completed", None, None, ["data/raw/a.csv"]),
        (3 * 24 * HOUR, ["python", "src/train.py", "--lr", "0.1"], "completed", 0.1, 0.9,
         ["data/features.pkl"]),
        (2 * HOUR, ["python", "src/train.py", "--lr", "0.001"], "failed", 0.001, None,
         ["data/features.pkl"]),
        (600.0, ["python", "src/train.py", "--lr", "0.05"], "completed", 0.05, 0.7,
         ["data/raw/b.csv"]),
    ]
    with Catalog.init(tmp_path) as cat:
        for i, (age, argv, status, lr, f1, inputs) in enumerate(rows):
            run = cat.begin_run(command=argv, cwd=str(tmp_path), exe=None, pid=10 + i,
                                pid_start=1, user="ana", hostname="box", started_at=now - age,
                                tier="netlink")
            cat.update_run(run, status=status, exit_code=0 if status == "completed" else 2,
                           ended_at=now - age + 30 * (i + 1))
            params = {"epochs": (10 * (i + 1), "argv")}
            if lr is not None:
                params["config.yaml:lr"] = (lr, "config.yaml")
            if i == 1:
                params["prompt"] = (PROMPT, "argv")
            cat.set_params(run, params)
            if f1 is not None:
                cat.set_metrics(run, "summary.json", [Metric("summary.json:test.f1", None, f1)])
            for path in inputs:
                vid = cat.add_version(path, hash="blake3:" + f"{i:02d}" * 32, size=10,
                                      mtime_ns=1, kind="dataset", stored=False, created_at=now)
                cat.link(run, vid, "input")
    return tmp_path


def cli_run(project: Path, *args: str):
    return CliRunner().invoke(cli, ["-C", str(project), *args])


def ids(project: Path, *args: str) -> list[int]:
    got = cli_run(project, "runs", "--json", *args)
    assert got.exit_code == 0, got.stderr
    return [r["id"] for r in json.loads(got.stdout)]


def usage_error(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_where_filters_like_the_examples(project: Path) -> None:
    assert ids(project, "--where", "params.lr > 0.01") == [4, 2]  # config.yaml:lr
    assert ids(project, "--where",
               "params.lr > 0.01 and (metrics.test.f1 >= 0.8 or status = 'failed')") == [2]
    assert ids(project, "--where", "params.lr < 0.01 or metrics.test.f1 >= 0.8") == [3, 2]
    assert ids(project, "--where", "input ~ 'data/raw/*'") == [4, 1]
    assert ids(project, "--where", "input = data/features.pkl") == [3, 2]
    assert ids(project, "--where", "command ~ '*train.py*'", "--where", "status = completed") \
        == [4, 2]
    assert ids(project, "--where", "not params.lr > 0") == [1]  # no lr: the comparison fails
    assert ids(project, "--where", "params.lr > 0", "--sort", "params.lr") == [3, 4, 2]
    assert ids(project, "--where", "params.epochs >= 20", "-n", "2") == [4, 3]
    assert ids(project, "--where", "params.lr > 0", "--status", "completed") == [4, 2]


def test_since_and_until(project: Path) -> None:
    assert ids(project, "--since", "2d") == [4, 3]
    assert ids(project, "--since", "1h") == [4]
    assert ids(project, "--until", "1d") == [2, 1]
    assert ids(project, "--since", "5d", "--until", "1h", "--where", "status = completed") \
        == [2, 1]
    assert ids(project, "--where", "started > 2d and duration >= 2m") == [4]
    day = time.strftime("%Y-%m-%d", time.localtime(time.time() + 86400))
    assert ids(project, "--until", day) == [4, 3, 2, 1]
    assert ids(project, "--since", day) == []


def test_csv_has_the_shown_columns_quoted(project: Path) -> None:
    got = cli_run(project, "runs", "--csv", "--columns", "params.lr,params.prompt",
                  "--where", "params.epochs <= 20")
    assert got.exit_code == 0, got.stderr
    rows = list(csv.reader(io.StringIO(got.stdout)))
    assert rows[0] == ["id", "status", "started_at", "duration", "command", "inputs", "outputs",
                       "tags", "params.lr", "params.prompt"]
    assert [r[0] for r in rows[1:]] == ["2", "1"]
    two = rows[1]
    assert two[4] == "python src/train.py --lr 0.1" and two[8] == "0.1"
    assert two[9] == PROMPT  # exact, newlines and all, through the csv module's quoting
    assert two[3] == "60.0" and two[2].endswith("Z")
    data = json.loads(cli_run(project, "runs", "--json", "--columns", "params.lr").stdout)
    assert [r["columns"]["params.lr"] for r in data] == [0.05, 0.001, 0.1, None]
    empty = cli_run(project, "runs", "--csv", "--where", "status = lost")
    assert empty.exit_code == 0 and empty.stdout.strip() == ",".join(
        ["id", "status", "started_at", "duration", "command", "inputs", "outputs", "tags"])


@pytest.mark.parametrize("args, words", [
    (["--where", "parms.lr > 1"], "unknown field 'parms.lr' at column 1: use params.KEY"),
    (["--where", "params.lr >"], "a value after '>'"),
    (["--where", "status = 'failed"], "unclosed string at column 10"),
    (["--where", "status = x", "--where", "bogus = 1"], "in --where 2: unknown field 'bogus'"),
    (["--since", "soon"], "cannot read --since 'soon' as a time"),
    (["--json", "--csv"], "give --json or --csv, not both"),
    (["--sort", "-nothing"], "unknown column '-nothing'"),
])
def test_bad_input_is_one_sentence_and_exit_2(project: Path, args, words) -> None:
    line = usage_error(cli_run(project, "runs", *args))
    assert words in line, line


def test_an_ambiguous_key_names_the_candidates(project: Path) -> None:
    with Catalog.find(project, readonly=False) as cat:
        cat.set_params(4, {"other.yaml:lr": (1, "other.yaml")})
    line = usage_error(cli_run(project, "runs", "--where", "params.lr > 0"))
    assert "config.yaml:lr, other.yaml:lr" in line
    assert ids(project, "--where", "params.other.yaml:lr = 1") == [4]


def test_no_match_says_so(project: Path) -> None:
    got = cli_run(project, "runs", "--where", "status = lost")
    assert got.exit_code == 0 and got.stdout == "" and "no runs match" in got.stderr


def test_the_table_shows_the_program_as_typed(tmp_path: Path, monkeypatch) -> None:
    first, second = tmp_path / "bin1", tmp_path / "bin2"
    for folder in (first, second):
        folder.mkdir()
        tool = folder / "mytool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("PATH", f"{first}{os.pathsep}{second}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "proj"
    project.mkdir()
    programs = [str(first / "mytool"), str(second / "mytool"), "/nowhere/bin/tool"]
    with Catalog.init(project) as cat:
        for i, program in enumerate(programs):
            cat.begin_run(command=[program, "job.sh", "--n", "1"], cwd=str(project), exe=None,
                          pid=1 + i, pid_start=1, user="a", hostname="h",
                          started_at=time.time() - i, tier="poll")
    got = cli_run(project, "runs")
    assert got.exit_code == 0, got.stderr
    lines = got.stdout.splitlines()
    assert "  mytool job.sh --n 1" in lines[1]  # what PATH finds under that name
    assert f"{second / 'mytool'} job.sh --n 1" in lines[2]  # PATH finds another mytool
    assert "/nowhere/bin/tool job.sh --n 1" in lines[3]  # not on PATH: kept
    data = json.loads(cli_run(project, "runs", "--json").stdout)
    assert [r["command"][0] for r in data] == programs  # the JSON keeps the exact argv


def test_show_folds_a_multi_line_param(project: Path) -> None:
    shown = cli_run(project, "show", "2")
    assert shown.exit_code == 0, shown.stderr
    line = next(ln for ln in shown.stdout.splitlines() if ln.strip().startswith("prompt"))
    assert line.split(None, 1)[1] == \
        f"You are a careful assistant. … (12 lines, {len(PROMPT)} chars)"
    assert "Answer briefly." not in shown.stdout
    data = json.loads(cli_run(project, "show", "2", "--json").stdout)
    assert data["params"]["prompt"] == PROMPT


PLAIN_FIELDS = {  # field -> (literals, its value in a `runs --json` run dict)
    "params.lr": (["0.001", "0.05", "0.1", "1"],
                  lambda r: r["params"].get("config.yaml:lr")),
    "params.epochs": (["10", "25", "40"], lambda r: r["params"]["epochs"]),
    "metrics.test.f1": (["0.7", "0.8", "0.9"],
                        lambda r: r["metrics"].get("summary.json:test.f1")),
    "duration": (["30", "60", "100"], lambda r: r["duration"]),
}
PLAIN_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
             "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _leaf():
    from hypothesis import strategies as st

    @st.composite
    def leaf(draw):
        field = draw(st.sampled_from(sorted(PLAIN_FIELDS)))
        literals, value_of = PLAIN_FIELDS[field]
        text, op = draw(st.sampled_from(literals)), draw(st.sampled_from(sorted(PLAIN_OPS)))

        def keep(run, value_of=value_of, op=op, number=float(text)):
            value = value_of(run)
            return value is not None and PLAIN_OPS[op](value, number)
        return f"{field} {op} {text}", keep
    return leaf()


def test_where_agrees_with_a_plain_filter_over_runs_json(project: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    every = json.loads(cli_run(project, "runs", "--json", "--all").stdout)

    def extend(inner):
        pair = st.tuples(inner, inner)
        return st.one_of(
            pair.map(lambda p: (f"({p[0][0]}) and ({p[1][0]})",
                                lambda r, a=p[0][1], b=p[1][1]: a(r) and b(r))),
            pair.map(lambda p: (f"({p[0][0]}) or ({p[1][0]})",
                                lambda r, a=p[0][1], b=p[1][1]: a(r) or b(r))),
            inner.map(lambda p: (f"not ({p[0]})", lambda r, a=p[1]: not a(r))))

    @settings(max_examples=60, deadline=None)
    @given(st.recursive(_leaf(), extend, max_leaves=4))
    def agree(expr) -> None:
        text, keep = expr
        assert ids(project, "--all", "--where", text) == [r["id"] for r in every if keep(r)], \
            text

    agree()


def test_metrics_and_columns_share_the_key_rule(project: Path, monkeypatch) -> None:
    got = cli_run(project, "metrics", "2", "f1", "--json")
    assert got.exit_code == 0, got.stderr
    assert json.loads(got.stdout)["finals"] == {"summary.json:test.f1": 0.9}
    with Catalog.find(project, readonly=False) as cat:
        cat.set_metrics(2, "eval.json", [Metric("eval.json:val.f1", None, 0.5)])
    line = usage_error(cli_run(project, "metrics", "2", "f1"))
    assert "eval.json:val.f1, summary.json:test.f1" in line
    assert usage_error(cli_run(project, "runs", "--columns", "metrics.f1")).count(":") >= 2
    monkeypatch.setenv("COLUMNS", "200")
    table = cli_run(project, "runs", "--columns", "params.prompt,metrics.test.f1").stdout
    row = next(ln for ln in table.splitlines() if ln.startswith("2 "))
    assert f"You are a careful assistant. … (12 lines, {len(PROMPT)} chars)" in row
    assert row.split()[-1] == "0.9"
