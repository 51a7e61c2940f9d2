"""`onlooker export` and `onlooker import` over real catalogs: output, mapping, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlooker.cli.main import cli
from onlooker.store.catalog import Catalog
from tests.store.test_share import T0, record_run


@pytest.fixture
def projects(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with Catalog.init(src) as cat:
        for n in range(3):
            record_run(cat, n, started_at=T0 + 100 * n)
    with Catalog.init(dst) as cat:  # run 1 is taken here
        record_run(cat, 9, started_at=T0 + 50_000)
    return src, dst


def run_cli(project: Path, *args: str):
    return CliRunner().invoke(cli, ["-C", str(project), *args])


def one_sentence(result, code: int) -> str:
    err = result.stderr.strip()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_export_then_import_prints_counts_and_mapping(projects, tmp_path):
    src, dst = projects
    archive = tmp_path / "out.tar"
    res = run_cli(src, "export", "1", "last", "-o", str(archive))
    assert res.exit_code == 0, res.output
    assert "exported 2 runs" in res.stderr and "1 large file only referenced" in res.stderr
    res = run_cli(dst, "import", str(archive))
    assert res.exit_code == 0, res.output
    assert "imported 2 runs" in res.stderr and str(src) in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("run 1 -> ") and "renumbered" in lines[0]
    assert lines[1] == "run 3 -> 3"
    new_id = int(lines[0].split()[3])
    shown = run_cli(dst, "show", str(new_id))
    assert "imported from " in shown.stdout and f":{src} run 1, exported" in shown.stdout
    origin = json.loads(run_cli(dst, "show", str(new_id), "--json").stdout)["origin"]
    assert origin["run_id"] == 1 and origin["project"] == str(src)
    assert json.loads(run_cli(dst, "show", "1", "--json").stdout)["origin"] is None
    again = run_cli(dst, "import", str(archive), "--json")
    got = json.loads(again.stdout)
    assert got["runs"] == 0 and got["present"] == 2
    assert [m["imported"] for m in got["mapping"]] == [False, False]
    assert "already here" in run_cli(dst, "import", str(archive)).stdout


def test_export_selects_by_where_since_and_all(projects, tmp_path):
    src, _ = projects
    for args, want in ((["--all"], [1, 2, 3]), (["--where", "params.lr > 0.05"], [2, 3]),
                       (["--since", "2020-01-01"], [1, 2, 3])):
        res = run_cli(src, "export", *args, "-o", str(tmp_path / "x.tar"), "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["ids"] == want


@pytest.mark.parametrize("args, code, says", [
    ((), 2, "give RUN"),
    (("1", "--all"), 2, "give RUN"),
    (("99",), 1, "no run 99"),
    (("nope-tag",), 2, "is not a run"),
    (("--where", "params.lr >"), 2, ""),
    (("--where", "params.lr > 5"), 1, "no runs match"),
])
def test_export_errors(projects, tmp_path, args, code, says):
    src, _ = projects
    res = run_cli(src, "export", *args, "-o", str(tmp_path / "x.tar"))
    assert says in one_sentence(res, code)
    assert not (tmp_path / "x.tar").exists()


def test_import_errors_exit_1_and_import_nothing(projects, tmp_path):
    src, dst = projects
    good = tmp_path / "good.tar"
    assert run_cli(src, "export", "--all", "-o", str(good)).exit_code == 0
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:3000])
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not an archive\n" * 50)
    before = run_cli(dst, "runs", "--json").stdout
    for path, says in ((cut, "damaged or truncated"), (foreign, "not an onlooker export"),
                       (tmp_path / "missing.tar", "does not exist"),
                       (tmp_path, "folder")):
        assert says in one_sentence(run_cli(dst, "import", str(path)), 1)
    assert run_cli(dst, "runs", "--json").stdout == before
    assert "onlooker init" in one_sentence(run_cli(tmp_path, "import", str(good)), 1)


def test_a_filter_leaves_out_runs_still_running(projects, tmp_path):
    src, _ = projects
    with Catalog(src / ".onlooker") as cat:
        live = cat.begin_run(command=["python", "serve.py"], cwd=str(src), exe=None, pid=1,
                             pid_start=1, user=None, hostname="box", started_at=T0 + 999,
                             tier="netlink")
    res = run_cli(src, "export", "--all", "-o", str(tmp_path / "x.tar"), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ids"] == [1, 2, 3]
    assert f"still running ({live})" in res.stderr
    named = run_cli(src, "export", str(live), "-o", str(tmp_path / "y.tar"))
    assert "still running" in one_sentence(named, 1)
