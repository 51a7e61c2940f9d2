"""Compiled Python files map back to their sources."""

from __future__ import annotations

import os
import py_compile
from pathlib import Path

import pytest

from onlooker.agent.rules.codemap import source_for_pyc


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "legacy.py").write_text("y = 2\n")
    return tmp_path


@pytest.mark.parametrize("pyc,source", [
    ("pkg/__pycache__/mod.cpython-311.pyc", "pkg/mod.py"),
    ("pkg/__pycache__/mod.cpython-311.opt-1.pyc", "pkg/mod.py"),
    ("pkg/__pycache__/mod.cpython-39.opt-2.pyc", "pkg/mod.py"),
    ("pkg/__pycache__/mod.pypy39.pyc", "pkg/mod.py"),
    ("pkg/legacy.pyc", "pkg/legacy.py"),
    ("pkg/__pycache__/gone.cpython-311.pyc", None),
    ("pkg/__pycache__/mod.pyc", None),
    ("pkg/mod.py", None),
    ("pkg/__pycache__/mod.cpython-311.pyo", None),
    ("pkg/other/__pycache__/mod.cpython-311.pyc", None),
    ("", None),
])
def test_source_for_pyc(tree: Path, pyc: str, source: str | None) -> None:
    got = source_for_pyc(str(tree / pyc) if pyc else "")
    assert got == (str(tree / source) if source else None)


def test_real_compiled_file_and_relative_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfile = py_compile.compile(str(tree / "pkg" / "mod.py"), doraise=True)
    assert source_for_pyc(cfile) == str(tree / "pkg" / "mod.py")
    monkeypatch.chdir(tree)
    rel = os.path.relpath(cfile, tree)
    assert source_for_pyc(rel) == os.path.join("pkg", "mod.py")


def test_weird_paths_do_not_raise() -> None:
    assert source_for_pyc("a\0b/__pycache__/m.cpython-311.pyc") is None
    assert source_for_pyc("/proc/999999999/__pycache__/m.cpython-311.pyc") is None
