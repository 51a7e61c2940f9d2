"""onlooker doctor: a healthy project is ok; missing and damaged objects, a damaged
catalog, stale temporary files and runs left running are found, and --fix repairs what
it can (putting objects back from the project, rebuilding the catalog) and nothing else."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from onlooker.agent import doctor as doctor_mod
from onlooker.agent.doctor import DoctorError, doctor
from onlooker.store.catalog import Catalog
from onlooker.store.objects import hash_bytes

T0 = 1_795_000_000.0


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def project(tmp_path):
    """A catalog with one completed run that read data.csv and wrote model.pkl and
    notes.txt, all three stored as loose objects, the files still in the project."""
    cat = Catalog.init(tmp_path)
    run = cat.begin_run(command=["python", "train.py"], cwd=str(tmp_path), exe=None, pid=1,
                        pid_start=1, user="ana", hostname="box", started_at=T0,
                        tier="netlink")
    for path, data, role in (("data.csv", b"a,b\n1,2\n", "input"),
                             ("model.pkl", b"weights" * 100, "output"),
                             ("notes.txt", b"gone soon", "output")):
        (tmp_path / path).write_bytes(data)
        h = cat.objects.put_bytes(data)
        vid = cat.add_version(path, hash=h, size=len(data), mtime_ns=1, kind="other",
                              stored=True, created_at=T0)
        cat.link(run, vid, role)
    cat.update_run(run, status="completed", ended_at=T0 + 1, exit_code=0)
    cat.close()
    return tmp_path


def test_a_healthy_project_is_ok(project):
    report = doctor(project)
    assert report["ok"] and {c["status"] for c in report["checks"]} == {"ok"}
    assert by_name(report)["objects"]["message"] == "3 stored objects checked by hash"


def test_missing_and_damaged_objects_are_put_back_or_marked_referenced(project):
    cat = Catalog.init(project)
    model = hash_bytes(b"weights" * 100)
    notes = hash_bytes(b"gone soon")
    data = hash_bytes(b"a,b\n1,2\n")
    os.unlink(cat.objects.path_for(model))  # missing; the project still has the file
    loose = cat.objects.path_for(data)
    os.chmod(loose, 0o644)
    loose.write_bytes(b"bit rot")  # damaged; the project still has the file
    os.unlink(cat.objects.path_for(notes))  # missing, and the project file changed
    (project / "notes.txt").write_text("edited")
    cat.close()

    report = doctor(project)
    objects = by_name(report)["objects"]
    assert not report["ok"] and objects["status"] == "error"
    assert {b["paths"][0]: b["problem"] for b in objects["bad"]} == {
        "model.pkl": "missing", "data.csv": "damaged", "notes.txt": "missing"}
    assert "3 of 3 stored objects missing or damaged" in objects["message"]
    assert doctor(project, verify=False)["checks"][1]["message"].startswith("2 of 3")

    fixed = doctor(project, fix=True)
    objects = by_name(fixed)["objects"]
    assert fixed["ok"] and objects["fixed"]
    assert "2 put back from the project, 1 now only referenced" in objects["message"]
    assert doctor(project)["ok"]  # a second look finds nothing
    cat = Catalog.init(project)
    try:
        assert cat.objects.has(model) and cat.objects.has(data)
        stored = dict(cat._execute("SELECT hash, stored FROM versions").fetchall())
        assert stored == {model: 1, data: 1, notes: 0}
        report = cat.restore(1, roles=("outputs",), to=project / "back")
        status = {f["path"]: f["status"] for f in report["files"]}
        assert status == {"model.pkl": "restored", "notes.txt": "skipped"}
    finally:
        cat.close()


def _index_page(path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name ="
                            " 'versions_hash'").fetchone()[0]
    finally:
        conn.close()
    return page, root


def test_a_damaged_index_is_rebuilt_and_the_damaged_file_kept(project):
    db = project / ".onlooker" / "catalog.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    page, root = _index_page(db)
    with open(db, "r+b") as f:  # scribble over the index's root page, tables untouched
        f.seek(page * (root - 1) + 8)
        f.write(b"\x55" * (page - 8))
    report = doctor(project)
    assert not report["ok"]
    (catalog,) = report["checks"]
    assert catalog["status"] == "error" and catalog["message"].startswith(
        "the catalog is damaged:")
    fixed = doctor(project, fix=True)
    assert fixed["ok"], fixed
    assert "rebuilt from its tables" in by_name(fixed)["catalog"]["message"]
    assert list(project.joinpath(".onlooker").glob("catalog.db.damaged-*"))
    cat = Catalog.find(project)
    try:
        assert [r["id"] for r in cat.runs()] == [1]
        assert {e["path"] for e in cat.run(1)["outputs"]} == {"model.pkl", "notes.txt"}
    finally:
        cat.close()


def test_a_catalog_that_is_no_database_is_one_sentence_and_left_alone(project):
    db = project / ".onlooker" / "catalog.db"
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    db.write_bytes(b"this is not sqlite" * 100)
    report = doctor(project, fix=True)
    assert not report["ok"]
    (catalog,) = report["checks"]
    assert catalog["status"] == "error" and "not a database" in catalog["message"]
    assert db.read_bytes().startswith(b"this is not sqlite")  # nothing was changed


def test_old_temporary_files_are_removed_and_young_ones_kept(project):
    tmp = project / ".onlooker" / "objects" / "tmp"
    tmp.mkdir(exist_ok=True)
    old, young = tmp / "crashed.tmp", tmp / "importing.tmp"
    old.write_bytes(b"x" * 10)
    young.write_bytes(b"y")
    past = time.time() - 2 * doctor_mod.TMP_AGE
    os.utime(old, (past, past))
    check = by_name(doctor(project))["temporary files"]
    assert check["status"] == "warn" and check["message"].startswith("1 temporary file")
    assert by_name(doctor(project, fix=True))["temporary files"]["fixed"]
    assert not old.exists() and young.exists()


def test_runs_left_running_without_an_agent_are_a_warning(project):
    cat = Catalog.init(project)
    cat.begin_run(command=["python", "x.py"], cwd=str(project), exe=None, pid=2,
                  pid_start=2, user="ana", hostname="box", started_at=T0 + 5,
                  tier="netlink")
    cat.close()
    report = doctor(project)
    runs = by_name(report)["runs"]
    assert report["ok"] and runs["status"] == "warn" and runs["ids"] == [2]
    assert "onlooker start" in runs["fix"]


def test_repairs_wait_for_the_agent_to_stop(project, monkeypatch):
    cat = Catalog.init(project)
    os.unlink(cat.objects.path_for(hash_bytes(b"gone soon")))
    cat.close()
    monkeypatch.setattr(doctor_mod.lifecycle, "running_pid", lambda store_dir: 4242)
    report = doctor(project, fix=True)
    objects = by_name(report)["objects"]
    assert not objects["fixed"] and "stop the agent (pid 4242) first" in objects["fix"]


def test_not_a_project_is_one_sentence(tmp_path):
    with pytest.raises(DoctorError, match="no onlooker catalog"):
        doctor(tmp_path)


def invoke(*args: str):
    from click.testing import CliRunner

    from onlooker.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_command_exits_1_on_an_error_and_prints_json(project):
    ok = invoke("-C", str(project), "doctor", "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"]
    cat = Catalog.init(project)
    os.unlink(cat.objects.path_for(hash_bytes(b"gone soon")))
    cat.close()
    bad = invoke("-C", str(project), "doctor")
    assert bad.exit_code == 1
    assert "notes.txt (missing)" in bad.output and "--fix" in bad.output
