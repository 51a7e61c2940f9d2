"""`onlooker diff A B`: rendering, --json, --all and errors, over real catalogs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from onlooker.cli.main import cli
from onlooker.store.catalog import Catalog
from tests.store.test_diff import ENV, Project, pipeline


@pytest.fixture
def project(tmp_path):
    cat = Catalog.init(tmp_path)
    proj = Project(cat)
    yield proj
    cat.close()


def run_cli(proj: Project, *args: str, color: bool = False):
    return CliRunner().invoke(cli, ["-C", str(proj.cat.project), "diff", *args], color=color)


def two_train_runs(proj: Project) -> tuple[int, int]:
    a = proj.run(["python", "train.py", "--lr", "0.1"], params={"lr": 0.1},
                 code={"train.py": b"lr = 0.1\nprint(lr)\n"}, env=ENV, duration=10.0)
    b = proj.run(["python", "train.py", "--lr", "0.2"], params={"lr": 0.2},
                 code={"train.py": b"lr = 0.2\nprint(lr)\n"},
                 env={**ENV, "packages": {**ENV["packages"], "numpy": "2.0.0"}}, duration=40.0)
    proj.cat.set_metrics(a, "m.json", [("m.json:acc", None, 0.91, None)])
    proj.cat.set_metrics(b, "m.json", [("m.json:acc", None, 0.87, None)])
    return a, b


def test_sections_old_new_code_diff_and_causes(project):
    a, b = two_train_runs(project)
    res = run_cli(project, str(a), str(b))
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert "\x1b[" not in out  # not a terminal: no colours
    lines = out.splitlines()
    assert lines[0] == f"run {a} -> run {b}"
    for title in ("command", "params", "metrics", "code", "environment", "telemetry",
                  "causes (most upstream first)"):
        assert title in lines, title
    assert "inputs" not in lines and "outputs" not in lines  # nothing differs there
    assert "  ~ lr  0.1 -> 0.2" in lines
    assert "  ~ m.json:acc  0.91 -> 0.87  (-0.04)" in lines
    assert "  ~ packages.numpy  1.26.0 -> 2.0.0" in lines
    assert "  ~ duration  10.0s -> 40.0s  (+30.0s)" in lines
    assert any(line.startswith("  ~ argv  python train.py --lr 0.1 -> python train.py --lr 0.2")
               for line in lines)
    # the unified diff of the stored code, indented under its file
    at = lines.index(f"      --- a/train.py (run {a})")
    assert lines[at + 1:at + 6] == [f"      +++ b/train.py (run {b})", "      @@ -1,2 +1,2 @@",
                                    "      -lr = 0.1", "      +lr = 0.2", "       print(lr)"]
    causes = out[out.index("causes (most upstream first)"):]
    assert "  1. m.json:acc 0.91 -> 0.87 because lr went 0.1 -> 0.2" in causes
    assert "because code train.py changed" in causes
    assert "because packages.numpy went 1.26.0 -> 2.0.0" in causes


def test_colours_only_when_asked_for_a_terminal(project):
    a, b = two_train_runs(project)
    res = run_cli(project, str(a), str(b), color=True)
    assert res.exit_code == 0
    assert "\x1b[32m+lr = 0.2" in res.stdout and "\x1b[31m-lr = 0.1" in res.stdout
    assert "\x1b[33m~" in res.stdout


def test_json_is_the_store_structure(project):
    a, b = two_train_runs(project)
    res = run_cli(project, "-2", "last", "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data == json.loads(json.dumps(project.cat.diff(a, b), default=str))
    assert {"a", "b", "same_run", "differs", "sections", "causes"} <= set(data)
    assert {c["kind"] for c in data["causes"]} == {"param", "code", "environment"}
    for cause in data["causes"]:
        assert {"kind", "key", "change", "old", "new", "hops", "runs", "sentence"} <= set(cause)


def test_all_lists_what_is_the_same_too(project):
    a, b = two_train_runs(project)
    res = run_cli(project, str(a), str(b), "--all")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert ["=", "packages.pyyaml", "6.0.1"] in [line.split() for line in lines]
    assert ["~", "packages.numpy", "1.26.0", "->", "2.0.0"] in [line.split() for line in lines]
    assert "inputs" in lines and "outputs" in lines  # every section, empty ones say so
    assert lines[lines.index("inputs") + 1] == "  (none)"


def test_the_same_run_and_runs_that_do_not_differ(project):
    a = project.run(["python", "t.py"], params={"lr": 1}, env=ENV)
    b = project.run(["python", "t.py"], params={"lr": 1}, env=ENV)
    same = run_cli(project, str(a), str(a))
    assert same.exit_code == 0 and same.stdout == ""
    assert same.stderr.strip() == f"runs {a} and {a} are the same run: nothing differs"
    alike = run_cli(project, str(a), str(b))
    assert alike.exit_code == 0 and alike.stdout == ""
    assert f"runs {a} and {b} do not differ" in alike.stderr
    assert json.loads(run_cli(project, str(a), str(b), "--json").stdout)["differs"] is False


def test_causes_up_the_lineage_are_listed_most_upstream_first(project):
    one = pipeline(project, max_features=200, raw=b"raw v1")
    two = pipeline(project, max_features=300, raw=b"raw v2")
    res = run_cli(project, str(one["evaluate"]), str(two["evaluate"]))
    assert res.exit_code == 0, res.stderr
    causes = res.stdout[res.stdout.index("causes (most upstream first)"):]
    flat = " ".join(causes.split())
    first = flat.index("1. ")
    second = flat.index("2. ")
    assert "data/raw.csv changed (no run produced it)" in flat[first:second]
    assert "params.yaml:featurize.max_features went 200 -> 300" in flat[second:]


@pytest.mark.parametrize("args, code, words", [
    (("1", "99"), 1, "there is no run 99"),
    (("1", "nonsense"), 2, "'nonsense' is not a run"),
    (("-5", "1"), 1, "only 1 runs"),
])
def test_bad_runs_are_one_sentence(project, args, code, words):
    project.run(["python", "t.py"])
    res = run_cli(project, *args)
    assert res.exit_code == code, res.output
    assert words in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_usage_errors_and_no_project(project, tmp_path_factory):
    res = run_cli(project, "1")
    assert res.exit_code == 2 and "Missing argument" in res.stderr
    outside = tmp_path_factory.mktemp("elsewhere")
    res = CliRunner().invoke(cli, ["-C", str(outside), "diff", "1", "2"])
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_header_names_the_runs_by_their_tags_and_shows_their_notes(project):
    a, b = two_train_runs(project)
    project.cat.tag(a, "baseline")
    project.cat.set_note(b, "lr doubled\nsecond line")
    res = run_cli(project, "baseline", str(b))
    assert res.exit_code == 0, res.stderr
    head = res.stdout.splitlines()[:2]
    assert head == [f"run {a} (baseline) -> run {b}", f"  note on run {b}: lr doubled …"]
