"""`onlooker sql`, `tag` and `note` over real catalogs: output forms, errors, old schemas."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlooker.cli.commands.tag import any_tagged, tag_rows, tags_text
from onlooker.cli.main import cli
from onlooker.store import schema
from onlooker.store.catalog import Catalog

T0 = 1_795_000_000.0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    with Catalog.init(tmp_path) as cat:
        for i, argv in enumerate((["python", "prep.py"], ["python", "train.py", "--lr", "0.1"])):
            run = cat.begin_run(command=argv, cwd=str(tmp_path), exe=None, pid=10 + i,
                                pid_start=1, user="me", hostname="box", started_at=T0 + 60 * i,
                                tier="netlink")
            cat.update_run(run, status="completed", exit_code=0, ended_at=T0 + 60 * i + 5)
        cat.set_params(2, {"lr": (0.1, "argv"), "name": ('a "quoted", name', "argv")})
    return tmp_path


def run_cli(project: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["-C", str(project), *args], input=input)


def one_sentence(result) -> str:
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert result.stdout == ""
    return err


def test_sql_prints_a_table_json_and_csv(project):
    query = "SELECT run_id, key, value FROM params ORDER BY key"
    shown = run_cli(project, "sql", query)
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["run_id", "key", "value"]
    assert lines[1].split() == ["2", "lr", "0.1"]
    assert "2 rows" in shown.stderr

    data = json.loads(run_cli(project, "sql", "--json", query).stdout)
    assert data == [{"run_id": 2, "key": "lr", "value": 0.1},
                    {"run_id": 2, "key": "name", "value": 'a "quoted", name'}]

    out = run_cli(project, "sql", "--csv", query).stdout
    assert out.splitlines()[2] == '2,name,"a ""quoted"", name"'  # RFC 4180 quoting
    assert list(csv.reader(io.StringIO(out))) == [
        ["run_id", "key", "value"], ["2", "lr", "0.1"], ["2", "name", 'a "quoted", name']]


def test_sql_over_plain_view_names_and_nulls(project):
    data = json.loads(run_cli(project, "sql", "--json",
                              "SELECT run_id, status, note FROM runs ORDER BY run_id").stdout)
    assert data == [{"run_id": 1, "status": "completed", "note": None},
                    {"run_id": 2, "status": "completed", "note": None}]
    out = run_cli(project, "sql", "--csv", "SELECT run_id, note FROM runs WHERE run_id = 1")
    assert out.stdout == "run_id,note\n1,\n"
    empty = run_cli(project, "sql", "SELECT * FROM tags")
    assert empty.exit_code == 0 and empty.stdout.split() == ["run_id", "name", "tagged_at"]
    assert "0 rows" in empty.stderr
    assert json.loads(run_cli(project, "sql", "--json", "SELECT * FROM tags").stdout) == []
    piped = run_cli(project, "sql", "--json", "-", input="SELECT count(*) AS n FROM runs")
    assert json.loads(piped.stdout) == [{"n": 2}]


def test_long_values_are_cut_in_the_table_only(project):
    query = "SELECT printf('%.200c', 'x') AS long, 'a' || char(10) || 'b' AS lines"
    shown = run_cli(project, "sql", query)
    assert "…" in shown.stdout and "a\\nb" in shown.stdout and "--json or --csv" in shown.stderr
    assert json.loads(run_cli(project, "sql", "--json", query).stdout)[0]["long"] == "x" * 200


@pytest.mark.parametrize("query, words", [
    ("DELETE FROM runs", "only reads"), ("UPDATE main.runs SET status = 'x'", "only reads"),
    ("ATTACH 'x.db' AS x", "only reads"), ("SELECT nope FROM runs", "no such column: nope"),
    ("SELEC 1", "syntax error"), ("", "empty"),
])
def test_sql_errors_are_one_sentence_exit_2(project, query, words):
    result = run_cli(project, "sql", query)
    assert result.exit_code == 2
    assert words in one_sentence(result)
    assert not (project / "x.db").exists()
    data = json.loads(run_cli(project, "sql", "--json", "SELECT count(*) AS n FROM runs").stdout)
    assert data == [{"n": 2}]  # nothing changed


def test_sql_json_and_csv_together_is_a_usage_error(project):
    result = run_cli(project, "sql", "--json", "--csv", "SELECT 1")
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_tag_and_note_show_up_everywhere(project):
    tagged = run_cli(project, "tag", "1", "baseline", "best")
    assert tagged.exit_code == 0, tagged.stderr
    assert "run 1: tags baseline, best" in tagged.stderr
    assert run_cli(project, "tag", "-1", "best").exit_code == 0  # -N works as RUN
    noted = run_cli(project, "note", "baseline", "first", "try,", "see", '"notes"')
    assert noted.exit_code == 0, noted.stderr

    shown = run_cli(project, "show", "baseline")  # a tag names its newest run
    assert shown.exit_code == 0, shown.stderr
    header = shown.stdout.split("\n\n")[0]
    assert "tags      baseline, best" in header
    assert 'note      first try, see "notes"' in header
    assert json.loads(run_cli(project, "show", "best", "--json").stdout)["id"] == 2
    listed = {r["id"]: r for r in json.loads(run_cli(project, "runs", "--json").stdout)}
    assert listed[1]["tags"] == ["baseline", "best"] and listed[2]["tags"] == ["best"]
    assert listed[1]["note"] == 'first try, see "notes"' and listed[2]["note"] is None

    out = run_cli(project, "sql", "--csv", "SELECT run_id, text FROM notes").stdout
    assert out == 'run_id,text\n1,"first try, see ""notes"""\n'
    assert run_cli(project, "tag", "1").stdout.split() == ["baseline", "best"]
    assert run_cli(project, "note", "1").stdout.strip() == 'first try, see "notes"'

    summary = json.loads(run_cli(project, "tag", "--json", "--rm", "1", "best").stdout)
    assert summary == {"id": 1, "tags": ["baseline"], "note": 'first try, see "notes"'}
    assert run_cli(project, "note", "1", "").exit_code == 0
    assert json.loads(run_cli(project, "show", "1", "--json").stdout)["note"] is None


def test_a_multi_line_note_from_stdin(project):
    result = run_cli(project, "note", "2", "-", input="line one\nline two\n")
    assert result.exit_code == 0, result.stderr
    header = run_cli(project, "show", "2").stdout.split("\n\n")[0].splitlines()
    at = next(i for i, line in enumerate(header) if line.strip().startswith("note"))
    assert header[at].split(None, 1)[1] == "line one"
    assert header[at + 1].strip() == "line two"


@pytest.mark.parametrize("args, code, words", [
    (("tag", "1", "12"), 2, "all digits"), (("tag", "1", "a b"), 2, "whitespace"),
    (("tag", "1", "last"), 2, "'last'"), (("tag", "1", "-x"), 2, "starts with '-'"),
    (("tag", "99", "x"), 1, "no run 99"), (("tag", "nosuch", "x"), 2, "is not a run"),
    (("note", "99", "x"), 1, "no run 99"), (("tag", "--rm", "1"), 2, "--rm"),
])
def test_tag_errors_are_one_sentence(project, args, code, words):
    result = run_cli(project, *args)
    assert result.exit_code == code, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    with Catalog(project / ".onlooker", readonly=True) as cat:
        assert cat.all_tags() == {}


def _downgrade_to_v4(project: Path) -> None:
    """Make the catalog what schema 4 left: no tags table, no views."""
    conn = sqlite3.connect(project / ".onlooker" / "catalog.db")
    for name in schema.V5_VIEWS:
        conn.execute(f"DROP VIEW v_{name}")
    conn.execute("DROP TABLE tags")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()


def test_an_old_catalog_reads_and_a_tag_upgrades_it(project):
    _downgrade_to_v4(project)
    runs = run_cli(project, "runs", "--json")
    assert runs.exit_code == 0, runs.stderr
    assert [r["tags"] for r in json.loads(runs.stdout)] == [[], []]
    assert run_cli(project, "show", "last").exit_code == 0
    old = run_cli(project, "sql", "SELECT * FROM runs")
    assert old.exit_code == 1 and "onlooker start" in one_sentence(old)
    assert run_cli(project, "tag", "1", "kept").exit_code == 0  # a writer migrates
    conn = sqlite3.connect(project / ".onlooker" / "catalog.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    conn.close()
    data = json.loads(run_cli(project, "sql", "--json", "SELECT run_id, name FROM tags").stdout)
    assert data == [{"run_id": 1, "name": "kept"}]


def test_rendering_helpers_for_the_runs_table():
    runs = [{"id": 1, "tags": []}, {"id": 2, "tags": ["a", "b"]}, {"id": 3}]
    assert any_tagged(runs) and not any_tagged([runs[0], runs[2]])
    assert [tags_text(r) for r in runs] == ["", "a,b", ""]
    assert tag_rows({"tags": ["a"], "note": "x\ny"}) == [("tags", "a"), ("note", "x"), ("", "y")]
    assert tag_rows({"id": 1}) == []
