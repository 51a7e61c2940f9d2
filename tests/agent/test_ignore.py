"""The watch rules: folders and files skipped inside the project, reads kept outside."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pathspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.agent.config import DEFAULTS
from onlooker.agent.rules.ignore import Ignore, OutsideProject


def make(tmp_path: Path, **kw) -> tuple[Path, Ignore]:
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    kw.setdefault("exclude", DEFAULTS["watch"]["exclude"])
    kw.setdefault("outside_ignore", ["/usr", "/etc", "~/.cache/pip"])
    return project, Ignore(project, **kw)


def test_store_git_and_bytecode_are_never_watched(tmp_path: Path) -> None:
    project, ig = make(tmp_path, exclude=[])
    for name in (".onlooker", ".git", "__pycache__"):
        assert ig.skip_dir(project / name)
        assert ig.skip_dir(project / "src" / name / "deeper")
        assert ig.skip_file(project / "src" / name / "x.pyc")
    assert not ig.skip_dir(project)
    assert not ig.skip_dir(project / "src")
    assert not ig.skip_file(project / "src" / "train.py")


def test_exclude_names_match_at_any_depth(tmp_path: Path) -> None:
    project, ig = make(tmp_path, exclude=["node_modules", "scratch/tmp"])
    assert ig.skip_dir(project / "node_modules")
    assert ig.skip_dir(project / "web" / "app" / "node_modules" / "pkg")
    assert not ig.skip_dir(project / "node_modules_notes")
    # A name with a slash is a folder relative to the project, not a name anywhere.
    assert ig.skip_dir(project / "scratch" / "tmp")
    assert not ig.skip_dir(project / "other" / "scratch" / "tmp")


def test_a_virtualenv_of_any_name_is_skipped_by_its_pyvenv_cfg(tmp_path: Path) -> None:
    project, ig = make(tmp_path)
    env = project / "my-odd-env"
    (env / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert ig.skip_dir(env)
    assert ig.skip_file(env / "lib" / "python3.11" / "site-packages" / "x.py")
    conda = project / "envs" / "c"
    (conda / "conda-meta").mkdir(parents=True)
    assert ig.skip_dir(conda / "lib")


def test_a_virtualenv_made_later_is_seen_after_invalidate(tmp_path: Path) -> None:
    project, ig = make(tmp_path)
    env = project / "later"
    env.mkdir()
    assert not ig.skip_dir(env)
    (env / "pyvenv.cfg").write_text("")
    ig.invalidate()
    assert ig.skip_dir(env)


def test_onlookerignore_patterns_with_negation_and_reload(tmp_path: Path) -> None:
    project, ig = make(tmp_path)
    (project / ".onlookerignore").write_text(
        "# scratch output\n*.log\n!keep.log\ndata/raw/\n/build\n\n"
    )
    ig.reload()
    assert ig.skip_file(project / "run.log")
    assert ig.skip_file(project / "a" / "b" / "run.log")
    assert not ig.skip_file(project / "keep.log")
    assert ig.skip_dir(project / "data" / "raw")
    assert ig.skip_file(project / "data" / "raw" / "x.csv")
    assert not ig.skip_dir(project / "data" / "clean")
    assert ig.skip_dir(project / "build")
    assert not ig.skip_dir(project / "src" / "build")  # anchored to the project root
    assert not ig.skip_file(project / ".onlookerignore")
    # .gitignore is not ours to obey.
    (project / ".gitignore").write_text("*.csv\n")
    assert not ig.skip_file(project / "data" / "clean" / "x.csv")
    (project / ".onlookerignore").write_text("*.csv\n")
    assert not ig.skip_file(project / "data" / "clean" / "x.csv")  # not reloaded yet
    ig.reload()
    assert ig.skip_file(project / "data" / "clean" / "x.csv")
    assert not ig.skip_file(project / "run.log")
    (project / ".onlookerignore").unlink()
    ig.reload()
    assert not ig.has_patterns
    assert not ig.skip_file(project / "data" / "clean" / "x.csv")


def test_inside_and_rel(tmp_path: Path) -> None:
    project, ig = make(tmp_path)
    assert ig.inside(project)
    assert ig.inside(str(project / "a" / "b.txt"))
    assert not ig.inside(str(project) + "-sibling/x")
    assert ig.rel(project / "a" / "b.txt") == "a/b.txt"
    assert ig.rel(project) == "."
    with pytest.raises(OutsideProject):
        ig.rel(tmp_path / "elsewhere.txt")


def test_outside_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".cache" / "pip").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    _, ig = make(tmp_path)
    data = tmp_path / "datasets" / "train.csv"
    data.parent.mkdir()
    data.write_text("a,b\n")
    assert ig.outside_ok(str(data))
    assert not ig.outside_ok("/usr/lib/libc.so.6")
    assert not ig.outside_ok("/etc/hosts")
    cached = home / ".cache" / "pip" / "wheel.whl"
    cached.write_text("")
    assert not ig.outside_ok(str(cached))  # ~ was expanded

    for pkgs in ("site-packages", "dist-packages"):
        mod = tmp_path / "anywhere" / pkgs / "numpy" / "core.py"
        mod.parent.mkdir(parents=True)
        mod.write_text("")
        assert not ig.outside_ok(str(mod))
    venv_file = tmp_path / "some-venv" / "share" / "thing.json"
    venv_file.parent.mkdir(parents=True)
    venv_file.write_text("{}")
    (tmp_path / "some-venv" / "pyvenv.cfg").write_text("")
    assert not ig.outside_ok(str(venv_file))
    prefix_file = tmp_path / "pyenv" / "versions" / "3.9.1" / "share" / "x.txt"
    prefix_file.parent.mkdir(parents=True)
    prefix_file.write_text("")
    (tmp_path / "pyenv" / "versions" / "3.9.1" / "lib" / "python3.9").mkdir(parents=True)
    assert not ig.outside_ok(str(prefix_file))

    # Not regular files, or not paths at all.
    assert not ig.outside_ok(str(data.parent))
    assert not ig.outside_ok("/dev/null")
    assert not ig.outside_ok("pipe:[12345]")
    assert not ig.outside_ok("socket:[99]")
    assert not ig.outside_ok(str(tmp_path / "missing.csv"))
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert not ig.outside_ok(str(sock_path))


_seg = st.sampled_from(["a", "b", "data", "raw", "x.log", "keep.log", "m.pt", "ckpt", "tmp_1"])
_pattern = st.sampled_from([
    "*.log", "!keep.log", "data/raw/", "ckpt/*.pt", "**/tmp_*", "/a", "b/", "!b/m.pt", "raw",
    "a/**/x.log", "*.pt", "!*.pt",
])


@settings(max_examples=200, deadline=None)
@given(patterns=st.lists(_pattern, min_size=1, max_size=5),
       parts=st.lists(_seg, min_size=1, max_size=4))
def test_pattern_verdicts_agree_with_pathspec(tmp_path_factory, patterns, parts) -> None:
    """The fast prefilter never changes pathspec's gitignore answer."""
    project = tmp_path_factory.mktemp("p")
    (project / ".onlookerignore").write_text("\n".join(patterns) + "\n")
    ig = Ignore(project)
    rel = "/".join(parts)
    expected = pathspec.GitIgnoreSpec.from_lines(patterns).match_file(rel)
    assert ig.matches_pattern(os.path.join(str(project.resolve()), rel)) == expected


def test_project_bytecode_is_recognised_but_not_an_environments(tmp_path: Path) -> None:
    project, ig = make(tmp_path)
    (project / "venv").mkdir()
    assert ig.kept_pyc(str(project / "src" / "__pycache__" / "m.cpython-311.pyc"))
    assert not ig.kept_pyc(str(project / "venv" / "lib" / "__pycache__" / "m.cpython-311.pyc"))
    assert not ig.kept_pyc(str(project / "src" / "__pycache__" / "notes.txt"))
    assert not ig.kept_pyc(str(project / "src" / "m.pyc"))


def test_a_file_argv_names_is_data_in_scratch_space_but_never_software(tmp_path: Path) -> None:
    project, ig = make(tmp_path, outside_ignore=["/usr", "/tmp", "~/.pyenv"],
                       data_roots=[str(tmp_path / "staged")])
    staged = tmp_path / "staged" / "train.csv"  # tmp_path lies under /tmp
    staged.parent.mkdir()
    staged.write_text("a\n")
    assert not ig.outside_ok(str(tmp_path / "x.csv"))  # a read under /tmp on its own
    assert ig.outside_ok(str(staged))  # a configured data root
    (tmp_path / "x.csv").write_text("a\n")
    assert ig.named_ok(str(tmp_path / "x.csv"))  # named on the command line
    assert not ig.named_ok("/usr/bin/env")  # a tool, not data
    assert not ig.named_ok("/proc/self/status")
    shim = Path(os.path.expanduser("~/.pyenv/shims/python3"))
    if shim.exists():
        assert not ig.named_ok(str(shim))
