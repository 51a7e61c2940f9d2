"""The reconciliation walk over a real tree."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from onlooker.agent.config import DEFAULTS
from onlooker.agent.rules.ignore import Ignore
from onlooker.agent.workers import scan


def build(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    build(root, [
        "train.py", "data/a.csv", "data/raw/b.csv", "models/m.pt", "notes.log",
        ".git/HEAD", ".onlooker/catalog.db", "src/__pycache__/x.cpython-311.pyc",
        "node_modules/pkg/index.js", "env/lib/python3.11/site-packages/mod.py",
    ])
    (root / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return root.resolve()


def ignore_for(root: Path) -> Ignore:
    return Ignore(root, exclude=DEFAULTS["watch"]["exclude"], outside_ignore=[])


def rels(root: Path, found: list[tuple[str, os.stat_result]]) -> set[str]:
    return {os.path.relpath(p, root) for p, _ in found}


def test_walk_yields_kept_regular_files_with_lstat(project: Path) -> None:
    found = list(scan.walk(project, ignore_for(project)))
    assert rels(project, found) == {"train.py", "data/a.csv", "data/raw/b.csv", "models/m.pt",
                                   "notes.log"}
    for path, st in found:
        assert os.path.isabs(path)
        assert stat.S_ISREG(st.st_mode)
        assert st.st_size == len(os.path.relpath(path, project))


def test_walk_obeys_onlookerignore(project: Path) -> None:
    (project / ".onlookerignore").write_text("*.log\ndata/raw/\n")
    found = rels(project, list(scan.walk(project, ignore_for(project))))
    assert found == {"train.py", "data/a.csv", "models/m.pt", ".onlookerignore"}


def test_walk_never_follows_symlinks(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    build(outside, ["big/secret.bin"])
    (project / "linked_dir").symlink_to(outside / "big", target_is_directory=True)
    (project / "linked_file.csv").symlink_to(project / "data" / "a.csv")
    (project / "loop").symlink_to(project, target_is_directory=True)
    os.mkfifo(project / "fifo")
    found = rels(project, list(scan.walk(project, ignore_for(project))))
    assert not {"linked_dir/secret.bin", "linked_file.csv", "fifo"} & found
    assert not any(p.startswith("loop/") for p in found)


def test_walk_keeps_non_utf8_names(project: Path) -> None:
    raw = os.fsencode(str(project / "data")) + b"/caf\xe9.csv"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    found = [p for p, _ in scan.walk(project, ignore_for(project))]
    odd = [p for p in found if "caf" in p]
    assert len(odd) == 1
    assert os.fsencode(odd[0]) == raw  # surrogateescape round-trips to the real name


def test_walk_logs_and_skips_an_unreadable_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    locked = project / "locked"
    build(locked, ["hidden.csv"])
    if os.geteuid() == 0:  # root reads anything: make the kernel's refusal by hand
        real = os.scandir

        def scandir(path):
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(scan.os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        with caplog.at_level(logging.WARNING, logger="onlooker.agent.workers.scan"):
            found = rels(project, list(scan.walk(project, ignore_for(project))))
    finally:
        locked.chmod(0o755)
    assert "locked/hidden.csv" not in found
    assert "train.py" in found
    assert any("cannot list" in r.getMessage() and "locked" in r.getMessage()
               for r in caplog.records)


def test_walk_from_a_subfolder_and_a_vanished_top(project: Path) -> None:
    ig = ignore_for(project)
    assert rels(project, list(scan.walk(project, ig, top=project / "data"))) == {
        "data/a.csv", "data/raw/b.csv"}
    assert list(scan.walk(project, ig, top=project / "nope")) == []
    assert list(scan.walk(project, ig, top=project / ".git")) == []
