"""The CLI against a stand-in catalog: init, runs, show, status, stop, and error handling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import make_run

CONTRACT = {"id", "command", "cwd", "status", "exit_code", "signal", "started_at", "ended_at",
            "duration", "params", "inputs", "outputs", "code", "git", "tier"}


def one_error_line(result) -> str:
    assert result.exit_code == 1, (result.output, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onlooker: ")
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def project(tmp_path: Path, fake_catalog, invoke) -> Path:
    assert invoke("init", str(tmp_path)).exit_code == 0
    return tmp_path


def test_init_creates_store_and_is_idempotent(tmp_path: Path, fake_catalog, invoke) -> None:
    first = invoke("init", str(tmp_path))
    assert first.exit_code == 0, first.stderr
    assert "instrumented" in first.stdout
    store = tmp_path / ".onlooker"
    assert (store / "catalog.db").exists()
    assert (store / ".gitignore").read_text().splitlines()[-1] == "*"
    assert "[capture]" in (store / "config.toml").read_text()
    (store / "config.toml").write_text("[capture]\npoll_hz = 10\n")  # a person edited it
    second = invoke("init", str(tmp_path))
    assert second.exit_code == 0
    assert "already instrumented" in second.stdout
    assert (store / "config.toml").read_text() == "[capture]\npoll_hz = 10\n"


def test_init_defaults_to_cwd_and_creates_missing_dir(
    tmp_path: Path, fake_catalog, invoke, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("init").exit_code == 0
    assert (tmp_path / ".onlooker").is_dir()
    assert invoke("init", "new/sub").exit_code == 0
    assert (tmp_path / "new" / "sub" / ".onlooker").is_dir()


@pytest.mark.parametrize("args", [["runs"], ["show", "last"], ["status"], ["stop"], ["start"],
                                  ["watch"], ["runs", "--json"]])
def test_not_instrumented_is_one_line_and_exit_1(
    tmp_path: Path, fake_catalog, invoke, args
) -> None:
    line = one_error_line(invoke("-C", str(tmp_path), *args))
    assert "not in an instrumented project" in line and "onlooker init" in line


def test_project_found_upward_from_cwd(project: Path, invoke, monkeypatch, fake_catalog) -> None:
    fake_catalog.stored.append(make_run(1))
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    result = invoke("runs", "--json")
    assert result.exit_code == 0
    assert [r["id"] for r in json.loads(result.stdout)] == [1]


def test_runs_empty_prints_hint(project: Path, invoke) -> None:
    result = invoke("-C", str(project), "runs")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no runs yet" in result.stderr
    assert json.loads(invoke("-C", str(project), "runs", "--json").stdout) == []


def test_runs_table_and_json(project: Path, invoke, fake_catalog, monkeypatch) -> None:
    fake_catalog.stored += [
        make_run(1),
        make_run(2, status="failed", exit_code=3,
                 command=["python", "train.py", "--comment", "x" * 300]),
        make_run(3, status="running", exit_code=None, ended_at=None, duration=None),
    ]
    monkeypatch.setenv("COLUMNS", "100")
    result = invoke("-C", str(project), "runs")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STARTED", "DURATION", "COMMAND", "IN", "OUT"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]  # newest first
    assert "failed (3)" in lines[2]
    assert "1m05s" in lines[3]
    assert all(len(line) <= 100 for line in lines)
    assert "…" in lines[2]  # the long command was cut to the width
    assert lines[3].split()[-2:] == ["1", "2"]  # IN / OUT counts

    data = json.loads(invoke("-C", str(project), "runs", "--json").stdout)
    assert [r["id"] for r in data] == [3, 2, 1]
    assert all(CONTRACT <= set(r) for r in data)
    assert data[1]["command"][-1] == "x" * 300  # JSON is exact, never cut

    failed = json.loads(invoke("-C", str(project), "runs", "--json", "--status", "failed").stdout)
    assert [r["id"] for r in failed] == [2]
    limited = invoke("-C", str(project), "runs", "-n", "2")
    assert len(limited.stdout.splitlines()) == 3
    assert "--all" in limited.stderr
    assert len(invoke("-C", str(project), "runs", "--all").stdout.splitlines()) == 4


def test_runs_rejects_bad_options(project: Path, invoke) -> None:
    for args in (["--status", "nope"], ["--limit", "0"], ["--bogus"]):
        result = invoke("-C", str(project), "runs", *args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.stderr


def test_show_table(project: Path, invoke, fake_catalog) -> None:
    fake_catalog.stored.append(make_run(1))
    result = invoke("-C", str(project), "show", "1")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for title in ("run 1", "params", "inputs", "outputs", "code", "git", "env", "steps"):
        assert f"\n{title}\n" in f"\n{out}\n" or out.startswith(title), title
    assert "python src/train.py data/features model.pkl --n-est 50" in out
    assert "params.yaml:train.seed  7" in out
    assert "model.pkl     model    2.0 KiB  " + "cd" * 6 in out
    assert "cd" * 7 not in out  # hashes shown short
    assert "120.6 KiB" in out
    assert "3.11.4 (/usr/bin/python3)" in out and "packages  2" in out
    assert "dirty   yes" in out
    assert "diff    5 lines: onlooker show 1 --diff" in out
    make_line = next(line for line in out.splitlines() if "make train" in line)
    child_line = next(line for line in out.splitlines() if "└ python src/train.py" in line)
    assert make_line.index("make") < child_line.index("python")  # the tree is indented


def test_show_marks_the_files_the_tier_guessed(project: Path, invoke, fake_catalog) -> None:
    run = make_run(1)
    run["inputs"] = [{"path": "data/shared.csv", "hash": "blake3:" + "ab" * 32, "size": 10,
                      "kind": "dataset", "basis": "ambiguous"},
                     {"path": "cfg.yaml", "hash": "blake3:" + "ba" * 32, "size": 10,
                      "kind": "config", "basis": "fd"}]
    fake_catalog.stored.append(run)
    out = invoke("-C", str(project), "show", "1").stdout
    shared = next(line for line in out.splitlines() if "data/shared.csv" in line)
    assert "ambiguous* (shared)" in shared
    assert "fd (seen open)" in next(line for line in out.splitlines() if "cfg.yaml" in line)
    assert out.count("* a guess:") == 1  # under the inputs, where the guess is
    # where every file was seen by its process, nothing is added
    model = next(line for line in out.splitlines() if line.lstrip().startswith("model.pkl"))
    assert model.rstrip().endswith("cd" * 6)


def test_show_says_why_an_ended_runs_exit_status_is_missing(project: Path, invoke,
                                                             fake_catalog) -> None:
    fake_catalog.stored.append(make_run(1, status="ended", exit_code=None,
                                        tier="poll+inotify"))
    out = invoke("-C", str(project), "show", "1").stdout
    exit_line = next(line for line in out.splitlines() if line.lstrip().startswith("exit"))
    assert "not seen: the poll tier sees a process end" in exit_line


def test_show_diff_prints_the_kept_changes(project: Path, invoke, fake_catalog) -> None:
    from tests.cli.conftest import DIFF_TEXT

    fake_catalog.stored.append(make_run(1))
    clean = make_run(2)
    clean["git"] = {"commit": "3a7cb96" + "0" * 33, "branch": "main", "dirty": False,
                    "diff": None}
    fake_catalog.stored.append(clean)
    lost = make_run(3)
    lost["git"] = dict(lost["git"], diff="blake3:" + "00" * 32)
    fake_catalog.stored.append(lost)
    result = invoke("-C", str(project), "show", "1", "--diff")
    assert result.exit_code == 0 and result.stdout == DIFF_TEXT
    for ref, words in (("2", "clean tree"), ("3", "missing from the store")):
        result = invoke("-C", str(project), "show", ref, "--diff")
        assert result.exit_code == 1 and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    both = invoke("-C", str(project), "show", "1", "--diff", "--json")
    assert both.exit_code == 2 and "without --json" in both.stderr


def test_show_json_has_the_contract(project: Path, invoke, fake_catalog) -> None:
    fake_catalog.stored.append(make_run(1))
    data = json.loads(invoke("-C", str(project), "show", "1", "--json").stdout)
    assert CONTRACT | {"env", "steps"} <= set(data)
    assert data["inputs"][0] == {"path": "data/features/train.pkl", "hash": "blake3:" + "ab" * 32,
                                 "size": 123456, "kind": "dataset"}


def test_show_last_and_nth_newest(project: Path, invoke, fake_catalog) -> None:
    fake_catalog.stored += [make_run(1), make_run(2), make_run(3)]
    for ref, expected in (("last", 3), ("-1", 3), ("-2", 2), ("-3", 1)):
        result = invoke("-C", str(project), "show", ref, "--json")
        assert result.exit_code == 0, (ref, result.stderr)
        assert json.loads(result.stdout)["id"] == expected
    line = one_error_line(invoke("-C", str(project), "show", "-4"))
    assert "only 3 runs" in line


def test_show_minimal_run_renders(project: Path, invoke, fake_catalog) -> None:
    fake_catalog.stored.append(make_run(1, params={}, inputs=[], outputs=[], code=[], git=None,
                                        env={}, steps=[], duration=None, ended_at=None,
                                        status="lost", exit_code=None))
    result = invoke("-C", str(project), "show", "1")
    assert result.exit_code == 0, result.stderr
    assert "(none)" in result.stdout and "not a git repository" in result.stdout


def test_show_unknown_run(project: Path, invoke, fake_catalog) -> None:
    line = one_error_line(invoke("-C", str(project), "show", "42"))
    assert "no run 42" in line
    line = one_error_line(invoke("-C", str(project), "show", "last"))
    assert "no runs yet" in line
    result = invoke("-C", str(project), "show", "--bogus")
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_status_without_agent(project: Path, invoke) -> None:
    result = invoke("-C", str(project), "status")
    assert result.exit_code == 0, result.stderr
    assert "not running" in result.stdout
    assert "runs 0" in result.stdout
    data = json.loads(invoke("-C", str(project), "status", "--json").stdout)
    assert data["running"] is False and data["pid"] is None
    assert data["catalog"] == {"runs": 0, "versions": 3}
    assert data["project"] == str(project.resolve())


def test_stop_without_agent_exits_0(project: Path, invoke) -> None:
    result = invoke("-C", str(project), "stop")
    assert result.exit_code == 0
    assert "the agent is not running" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("text, words", [
    ("[capture\n", "not valid TOML"),
    ("[capture]\nprocess = \"magic\"\n", "capture.process"),
    ("[nope]\nx = 1\n", "unknown setting 'nope'"),
])
def test_bad_config_file(project: Path, invoke, text: str, words: str) -> None:
    (project / ".onlooker" / "config.toml").write_text(text)
    for command in ("start", "watch"):
        line = one_error_line(invoke("-C", str(project), command))
        assert words in line
    assert not (project / ".onlooker" / "agent.pid").exists()


def test_store_error_is_one_line(project: Path, invoke, fake_catalog, monkeypatch) -> None:
    from onlooker.store.errors import CatalogCorrupt

    def broken(self, **kw):
        raise CatalogCorrupt("the catalog /x/catalog.db is damaged:\nfile is not a database")

    monkeypatch.setattr(fake_catalog, "runs", broken)
    line = one_error_line(invoke("-C", str(project), "runs"))
    assert "damaged: file is not a database" in line


def test_oserror_is_one_line(tmp_path: Path, invoke, fake_catalog, monkeypatch) -> None:
    def denied(project):
        raise PermissionError(13, "Permission denied", str(project / ".onlooker"))

    monkeypatch.setattr(fake_catalog, "init", denied)
    line = one_error_line(invoke("init", str(tmp_path)))
    assert "Permission denied" in line and ".onlooker" in line


def test_every_command_has_help(invoke) -> None:
    from onlooker.cli.main import cli

    for name, command in cli.commands.items():
        assert command.help, name
        assert invoke(name, "--help").exit_code == 0


def test_status_of_crashed_agent(project: Path, invoke) -> None:
    import subprocess
    import time

    dead = subprocess.Popen(["true"])
    dead.wait()
    (project / ".onlooker" / "agent.json").write_text(json.dumps(
        {"pid": dead.pid, "state": "watching", "started_at": time.time() - 99,
         "updated_at": time.time() - 300}))
    (project / ".onlooker" / "agent.pid").write_text(f"{dead.pid}\n")
    result = invoke("-C", str(project), "status")
    assert result.exit_code == 0
    assert re.search(r"not running \(last seen 5m0\ds ago; it did not stop cleanly",
                     result.stdout), result.stdout


META = [{"path": ".gitignore", "hash": "blake3:" + "aa" * 32, "size": 12, "kind": "other",
         "basis": "fanotify", "access": "read"},
        {"path": "mlruns/0/4f2a/meta.yaml", "hash": "blake3:" + "bb" * 32, "size": 300,
         "kind": "config", "basis": "fd", "access": "write"}]


def test_show_hides_meta_files_unless_all(project: Path, invoke, fake_catalog) -> None:
    fake_catalog.stored.append(make_run(1, meta=META))
    plain = invoke("-C", str(project), "show", "1")
    assert plain.exit_code == 0, plain.stderr
    assert ".gitignore" not in plain.stdout and "meta (tool files)" not in plain.stdout
    assert "2 tool files (meta) not shown: onlooker show 1 --all" in plain.stderr
    full = invoke("-C", str(project), "show", "1", "--all")
    assert full.exit_code == 0, full.stderr
    out = full.stdout
    assert "\nmeta (tool files)\n" in out
    assert out.index("\ncode\n") < out.index("meta (tool files)") < out.index("\ngit\n")
    assert "mlruns/0/4f2a/meta.yaml  write  config  300 B  " + "bb" * 6 in out
    assert ".gitignore               read   other   12 B   " + "aa" * 6 in out
    assert "not shown" not in full.stderr
    for args in (["show", "1", "--json"], ["show", "1", "--json", "--all"]):
        data = json.loads(invoke("-C", str(project), *args).stdout)
        assert data["meta"] == META  # JSON always has them, under their own key
        assert all(f["path"] != ".gitignore" for f in data["inputs"] + data["outputs"])


def test_show_all_without_meta_files(project: Path, invoke, fake_catalog) -> None:
    fake_catalog.stored += [make_run(1, meta=[]), make_run(2)]  # an older dict has no key
    for ref in ("1", "2"):
        result = invoke("-C", str(project), "show", ref, "--all")
        assert result.exit_code == 0, result.stderr
        assert "meta (tool files)\n  (none)" in result.stdout
        plain = invoke("-C", str(project), "show", ref)
        assert plain.stderr == "" and "meta (tool files)" not in plain.stdout


def test_show_meta_on_a_real_catalog(tmp_path: Path, invoke) -> None:
    from onlooker.store.catalog import Catalog

    assert invoke("init", str(tmp_path)).exit_code == 0
    with Catalog.init(tmp_path) as cat:
        run = cat.begin_run(command=["python", "train.py"], cwd=str(tmp_path), exe=None,
                            pid=100, pid_start=1, user="me", hostname="box",
                            started_at=1_700_000_000.0, tier="netlink+fanotify")
        model = cat.add_version("model.pkl", hash="blake3:" + "ab" * 32, size=2048, mtime_ns=1,
                                kind="model", stored=True, created_at=1_700_000_001.0)
        tag = cat.add_version("mlruns/0/r/tags/mlflow.user", hash="blake3:" + "cd" * 32,
                              size=3, mtime_ns=1, kind="other", stored=True,
                              created_at=1_700_000_001.0)
        cat.link(run, model, "output", basis="fanotify")
        cat.link(run, tag, "meta", access="write", basis="fanotify")
    data = json.loads(invoke("-C", str(tmp_path), "show", str(run), "--json").stdout)
    assert [f["path"] for f in data["outputs"]] == ["model.pkl"]
    assert data["outputs"][0]["basis"] == "fanotify"
    assert data["meta"] == [{"path": "mlruns/0/r/tags/mlflow.user", "hash": "blake3:" + "cd" * 32,
                             "size": 3, "kind": "other", "basis": "fanotify", "access": "write"}]
    plain = invoke("-C", str(tmp_path), "show", str(run))
    assert "mlflow.user" not in plain.stdout and "1 tool file (meta) not shown" in plain.stderr
    full = invoke("-C", str(tmp_path), "show", str(run), "--all")
    assert "meta (tool files)" in full.stdout and "mlruns/0/r/tags/mlflow.user" in full.stdout
    listed = json.loads(invoke("-C", str(tmp_path), "runs", "--json").stdout)
    assert listed[0]["meta"] == data["meta"]
