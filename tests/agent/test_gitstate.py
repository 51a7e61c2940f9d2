"""Git state snapshots against real repositories in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from onlooker.agent.probes import gitstate
from onlooker.agent.probes.gitstate import snapshot

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env, timeout=30).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "train.py").write_text("lr = 0.1\n")
    (r / "exp").mkdir()
    (r / "exp" / "run.py").write_text("print(1)\n")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "first")
    return r


def test_not_a_repo(tmp_path: Path) -> None:
    assert snapshot(tmp_path) is None


def test_git_missing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitstate, "GIT", str(repo / "no-such-git"))
    assert snapshot(repo) is None


def test_clean(repo: Path) -> None:
    s = snapshot(repo)
    assert s is not None
    assert s["commit"] == git(repo, "rev-parse", "HEAD") and len(s["commit"]) == 40
    assert s["branch"] == "main" and s["dirty"] is False and s["diff"] == ""
    assert s["changed"] == [] and s["diff_truncated"] is False


def test_dirty_tracked_file_and_untracked_ignored(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.2\n")
    (repo / "new.py").write_text("untracked\n")
    s = snapshot(repo)
    assert s["dirty"] is True and s["changed"] == ["train.py"]
    assert "-lr = 0.1" in s["diff"] and "+lr = 0.2" in s["diff"]
    assert "untracked" not in s["diff"] and "\x1b[" not in s["diff"]


def test_untracked_only_is_clean(repo: Path) -> None:
    (repo / "new.py").write_text("x\n")
    s = snapshot(repo)
    assert s["dirty"] is False and s["diff"] == ""


def test_staged_deleted_and_renamed(repo: Path) -> None:
    git(repo, "mv", "exp/run.py", "exp/main.py")
    (repo / "train.py").unlink()
    s = snapshot(repo)
    assert sorted(s["changed"]) == ["exp/main.py", "exp/run.py", "train.py"]
    assert "deleted file mode" in s["diff"]


def test_detached_head(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    s = snapshot(repo)
    assert s["branch"] is None and s["commit"] == git(repo, "rev-parse", "HEAD")


def test_no_commits_yet(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    s = snapshot(tmp_path)
    assert s["commit"] is None and s["dirty"] is False
    git(tmp_path, "add", "a.py")
    s = snapshot(tmp_path)
    assert s["commit"] is None and s["dirty"] is True and s["changed"] == ["a.py"]
    assert "+x = 1" in s["diff"]


def test_project_in_a_subfolder(repo: Path) -> None:
    (repo / "train.py").write_text("changed\n")
    (repo / "exp" / "run.py").write_text("changed\n")
    s = snapshot(repo / "exp")
    assert sorted(s["changed"]) == ["../train.py", "run.py"]
    assert "a/train.py" in s["diff"] and "a/exp/run.py" in s["diff"]  # the whole repo


def test_user_config_cannot_change_output_or_run_code(repo: Path) -> None:
    marker = repo.parent / "ran"
    (repo / ".gitattributes").write_text("*.py diff=conv\n")
    git(repo, "add", ".gitattributes")
    (repo / "train.py").write_text("lr = 0.3\n")
    git(repo, "config", "diff.external", f"touch {marker}")
    git(repo, "config", "color.ui", "always")
    git(repo, "config", "diff.noprefix", "true")
    git(repo, "config", "diff.conv.textconv", f"touch {marker}; cat")
    git(repo, "config", "core.fsmonitor", f"touch {marker}; echo")
    marker.unlink(missing_ok=True)
    s = snapshot(repo)
    assert not marker.exists()
    assert "a/train.py" in s["diff"] and "\x1b[" not in s["diff"]


def test_index_is_not_rewritten(repo: Path) -> None:
    index = repo / ".git" / "index"
    before = index.stat().st_mtime_ns
    os.utime(repo / "train.py", ns=(0, 10**18))  # stat-dirty: git would refresh the index
    snapshot(repo)
    assert index.stat().st_mtime_ns == before
    assert not (repo / ".git" / "index.lock").exists()


def test_large_diff_is_truncated(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitstate, "MAX_DIFF_BYTES", 200)
    (repo / "train.py").write_text("".join(f"line {i}\n" for i in range(1000)))
    s = snapshot(repo)
    assert s["diff_truncated"] is True and len(s["diff"]) <= 200 and s["dirty"]
