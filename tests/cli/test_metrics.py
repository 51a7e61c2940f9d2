"""`onlooker metrics`, the metrics in `show`, and `runs --columns/--sort` on a real catalog."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from onlooker.agent.metrics import Metric
from onlooker.cli.main import cli
from onlooker.cli.metrics_view import metrics_sections
from onlooker.store.catalog import Catalog


@pytest.fixture
def project(tmp_path):
    with Catalog.init(tmp_path) as cat:
        for i, (f1, lr) in enumerate([(0.8, 0.1), (0.9, 0.01), (None, 0.5)]):
            run = cat.begin_run(command=["python", "train.py"], cwd=str(tmp_path), exe=None,
                                pid=100 + i, pid_start=1, user="ana", hostname="box",
                                started_at=time.time() + i, tier="netlink")
            cat.set_params(run, {"train.yaml:lr": (lr, "train.yaml")})
            if f1 is not None:
                cat.set_metrics(run, "summary.json", [Metric("summary.json:test.f1", None, f1)])
            cat.set_metrics(run, "training.log", [
                Metric("training.log:val_loss", 0.0, 0.5 - i / 10, None, 1700000000.0),
                Metric("training.log:val_loss", 1.0, 0.3 - i / 10),
                Metric("training.log:val_loss", 2.0, None, "nan"),
            ])
    return tmp_path


def cli_run(project, *args):
    return CliRunner().invoke(cli, ["-C", str(project), *args])


def test_show_lists_finals_and_series(project):
    got = cli_run(project, "show", "1")
    assert got.exit_code == 0, got.output
    text = got.stdout
    assert "metrics" in text and "summary.json:test.f1  0.8" in text
    line = next(ln for ln in text.splitlines() if "training.log:val_loss" in ln)
    assert line.split() == ["training.log:val_loss", "nan", "2", "0.3", "1", "0.5", "0", "3"]
    data = json.loads(cli_run(project, "show", "1", "--json").stdout)
    assert data["metrics"]["training.log:val_loss"] == {
        "last": "nan", "last_step": 2.0, "min": 0.3, "min_step": 1.0, "max": 0.5,
        "max_step": 0.0, "count": 3}
    assert metrics_sections({"metrics": {}}) == []


def test_metrics_command_exports(project):
    got = cli_run(project, "metrics", "1", "val_loss", "--csv")
    assert got.exit_code == 0, got.output
    assert got.stdout.splitlines() == [
        "key,step,value,wall", "training.log:val_loss,0.0,0.5,1700000000.0",
        "training.log:val_loss,1.0,0.3,", "training.log:val_loss,2.0,nan,"]
    data = json.loads(cli_run(project, "metrics", "1", "--json").stdout)
    assert data["finals"] == {"summary.json:test.f1": 0.8}
    assert [p["value"] for p in data["series"]["training.log:val_loss"]] == [0.5, 0.3, "nan"]
    table = cli_run(project, "metrics", "1", "val_loss", "--no-plot").stdout
    assert "0.3" in table and "nan" in table
    plotted = cli_run(project, "metrics", "1", "val_loss", "--plot")
    assert plotted.exit_code == 0 and "step" in plotted.stdout
    missing = cli_run(project, "metrics", "1", "nope")
    assert missing.exit_code == 1 and "has no metric 'nope'" in missing.stderr


def test_runs_columns_and_sort(project):
    got = cli_run(project, "runs", "--columns", "metrics.test.f1,params.lr,metrics.val_loss.min",
                  "--sort", "-metrics.test.f1")
    assert got.exit_code == 0, got.output
    lines = got.stdout.splitlines()
    assert "METRICS.TEST.F1" in lines[0] and "PARAMS.LR" in lines[0]
    assert [ln.split()[0] for ln in lines[1:]] == ["2", "1", "3"]  # no f1: last
    assert lines[1].split()[-3:] == ["0.9", "0.01", "0.2"]
    data = json.loads(cli_run(project, "runs", "--json", "--sort", "params.lr",
                              "--columns", "params.lr").stdout)
    assert [r["id"] for r in data] == [2, 1, 3]
    assert data[0]["columns"] == {"params.lr": 0.01}
    assert "metrics" in data[0] and "params" in data[0]


def test_runs_columns_of_fields_are_formatted_and_unknown_ones_refused(project):
    with Catalog.find(project, readonly=False) as cat:
        cat.update_run(1, status="completed", exit_code=0, ended_at=time.time() + 95.5)
    got = cli_run(project, "runs", "--columns", "duration,status")
    assert got.exit_code == 0, got.output
    header, *rows = got.stdout.splitlines()
    assert header.split()[-2:] == ["DURATION", "STATUS"]
    # the field is shown as the DURATION column is (after STARTED's date and time)
    assert [row.split()[4] for row in rows] == [row.split()[-2] for row in rows]
    assert [row.split()[1] for row in rows] == [row.split()[-1] for row in rows]
    assert rows[-1].split()[-2] in ("1m35s", "1m36s")  # run 1, oldest: last
    for bad in (["--columns", "bogus"], ["--sort", "-nothing"], ["--columns", "metrics."]):
        got = cli_run(project, "runs", *bad)
        assert got.exit_code == 2 and "unknown column" in got.output, got.output
        assert "Traceback" not in got.output


def test_redacted_arguments_are_not_quoted():
    from onlooker.cli.commands.runs import command_text

    assert command_text(["python", "t.py", "--api-key", "***", "--token=***", "a b"]) == \
        "python t.py --api-key *** --token=*** 'a b'"
    assert command_text(["x", "--a b=***"]) == "x '--a b='***"
