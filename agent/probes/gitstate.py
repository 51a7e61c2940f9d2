"""Snapshot the git state of a project at a run: commit, branch, dirty flag and diff.

Git runs read-only and without running user code: ``GIT_OPTIONAL_LOCKS=0`` (never
take ``index.lock`` while the person works), ``--no-pager``, no colour,
``--no-ext-diff --no-textconv``, ``core.fsmonitor=false``, a 10 s timeout and no
terminal prompt. When the agent runs as root on a project owned by someone else,
git runs as the project's owner: git refuses ("dubious ownership") a tree owned
by another user, and a root git reading a user's ``.git/config`` is the hole that
refusal guards. Clean/smudge filters (git-lfs) may still run inside ``git
status`` on files whose stat changed; that is git's normal behaviour for the user.

The diff is against HEAD (against the empty tree before the first commit), covers
tracked files only, and is cut at `MAX_DIFF_BYTES` (``diff_truncated`` says so).
``changed`` lists tracked paths git reports as changed (both sides of a rename),
relative to the project (``../x`` for files of the repository outside it).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import pwd
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

GIT = "git"
TIMEOUT_S = 10.0
MAX_DIFF_BYTES = 4 * 1024 * 1024
_CONFIG = ("-c", "core.fsmonitor=false", "-c", "core.quotePath=false", "-c", "color.ui=false",
           "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
           "-c", "diff.relative=false", "-c", "core.untrackedCache=false")
_DROP_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_EXTERNAL_DIFF", "GIT_PAGER",
             "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT")


class _GitFailed(Exception):
    """git is missing, timed out or said no."""


def _env_and_user(project: Path) -> tuple[dict[str, str], int | None]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_PAGER="cat")
    user = None
    try:
        owner = project.stat().st_uid
    except OSError:
        return env, None
    if os.geteuid() == 0 and owner != 0:
        user = owner
        try:
            entry = pwd.getpwuid(owner)
            env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
        except KeyError:
            env.pop("HOME", None)
    return env, user


def _git(project: Path, args: list[str], env: dict[str, str], user: int | None,
         limit: int | None = None) -> tuple[bytes, bool]:
    """stdout of git (cut at `limit` bytes, with a flag saying it was cut)."""
    cmd = [GIT, "--no-pager", *_CONFIG, "-C", str(project), *args]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, user=user)
    except (OSError, subprocess.SubprocessError) as err:
        raise _GitFailed(f"cannot run git: {err}") from err
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise _GitFailed(f"git {args[0]} took more than {TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise _GitFailed(lines[-1] if lines else f"git exited with {proc.returncode}")
    if limit is not None and len(out) > limit:
        return out[:limit], True
    return out, False


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Cache:
    """HEAD's tree per commit, and the git blob id of worktree files per stat."""

    def __init__(self) -> None:
        self.trees: dict[str, list[tuple[str, str, str]]] = {}
        self.shas: dict[tuple[int, int, int, int], str] = {}


_CACHE = _Cache()


def _tree(project: Path, commit: str, env: dict[str, str], user: int | None
          ) -> list[tuple[str, str, str]]:
    """(mode, blob sha, repo-relative path) of every file at `commit` (cached)."""
    hit = _CACHE.trees.get(commit)
    if hit is not None:
        return hit
    raw, _ = _git(project, ["ls-tree", "-r", "-z", "--full-tree", commit], env, user)
    out = []
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, sha = meta.decode().split(" ")
        if kind == "blob":
            out.append((mode, sha, name.decode("utf-8", "surrogateescape")))
    if len(_CACHE.trees) > 16:
        _CACHE.trees.clear()
    _CACHE.trees[commit] = out
    return out


def _blobs(project: Path, shas: list[str], env: dict[str, str], user: int | None
           ) -> dict[str, bytes]:
    """The contents of git blobs, through one `git cat-file --batch`."""
    if not shas:
        return {}
    cmd = [GIT, "--no-pager", *_CONFIG, "-C", str(project), "cat-file", "--batch"]
    try:
        proc = subprocess.run(cmd, input="\n".join(shas).encode() + b"\n", capture_output=True,
                              env=env, user=user, timeout=TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        raise _GitFailed(f"git cat-file failed: {err}") from err
    out, pos, data = {}, 0, proc.stdout
    for sha in shas:
        nl = data.index(b"\n", pos)
        header = data[pos:nl].split(b" ")
        pos = nl + 1
        if len(header) != 3:
            continue
        size = int(header[2])
        out[sha] = data[pos:pos + size]
        pos += size + 1
    return out


def _unified(path: str, mode: str, old: bytes | None, new: bytes | None) -> str:
    a = f"a/{path}" if old is not None else "/dev/null"
    b = f"b/{path}" if new is not None else "/dev/null"
    head = f"diff --git a/{path} b/{path}\n"
    if old is None:
        head += f"new file mode {mode}\n"
    elif new is None:
        head += f"deleted file mode {mode}\n"
    if (old and b"\0" in old[:8000]) or (new and b"\0" in new[:8000]):
        return head + f"Binary files {a} and {b} differ\n"
    old_lines = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new_lines = (new or b"").decode("utf-8", "replace").splitlines(keepends=True)
    body = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
        for line in difflib.unified_diff(old_lines, new_lines, a, b))
    return head + body


def snapshot(project: Path, *, read: Callable[[str], bytes] | None = None) -> dict | None:
    """The project's git state, or None when it is not in a git work tree (or no git).

    Git itself never reads the work tree here: `git status` re-reads every racily
    clean file, and in the unprivileged tier those reads would look like the run's.
    Instead git reads only `.git` (rev-parse, ls-tree, cat-file) and the agent
    reads changed files through `read` (which it marks as its own reads), with
    their git blob ids cached by stat so an unchanged file is never read twice.
    The diff covers files committed at HEAD (like `git diff HEAD` minus new files
    only staged in the index).
    """
    project = Path(project)
    read = read or _read_file
    env, user = _env_and_user(project)
    try:
        top = _git(project, ["rev-parse", "--show-toplevel"], env, user)[0]
        toplevel = top.decode("utf-8", "surrogateescape").strip()
    except _GitFailed as err:
        log.debug("no git state for %s: %s", project, err)
        return None
    try:
        commit = _git(project, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], env,
                      user)[0].decode().strip() or None
    except _GitFailed:
        commit = None  # no commits yet
    try:
        branch = _git(project, ["symbolic-ref", "-q", "--short", "HEAD"], env,
                      user)[0].decode("utf-8", "surrogateescape").strip() or None
    except _GitFailed:
        branch = None  # detached
    changed: list[str] = []
    pieces: list[tuple[str, str, str, bytes | None]] = []  # path, mode, old sha, new
    truncated = False
    try:
        tree = list(_tree(project, commit, env, user)) if commit else []
        staged = _git(project, ["ls-files", "-s", "-z"], env, user)[0]
    except _GitFailed as err:
        log.info("git ls-tree/ls-files failed in %s: %s", project, err)
        tree, staged, truncated = [], b"", True
    # Files new in the index count too (git diff HEAD shows them); git reads only
    # .git/index for `ls-files -s`.
    known = {rel for _, _, rel in tree}
    for entry in staged.split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        rel = name.decode("utf-8", "surrogateescape")
        if rel and rel not in known:
            known.add(rel)
            tree.append((meta.split(b" ")[0].decode(), "", rel))
    for mode, sha, rel in tree:
        if mode == "160000":
            continue  # a submodule
        full = os.path.join(toplevel, rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            if sha:  # a staged new file deleted again is no change against HEAD
                changed.append(rel)
                pieces.append((rel, mode, sha, None))
            continue
        except OSError:
            continue
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        now_sha = _CACHE.shas.get(key)
        data = None
        if now_sha is None:
            try:
                if stat.S_ISLNK(st.st_mode):
                    data = os.fsencode(os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    data = read(full)
                else:
                    continue
            except OSError:
                continue
            now_sha = _blob_sha(data)
            if len(_CACHE.shas) > 200_000:
                _CACHE.shas.clear()
            _CACHE.shas[key] = now_sha
        if now_sha != sha:
            changed.append(rel)
            if data is None:
                try:
                    data = read(full)
                except OSError:
                    continue
            pieces.append((rel, mode, sha, data))
    diff = ""
    if pieces:
        try:
            old = _blobs(project, [sha for _, _, sha, _ in pieces if sha], env, user)
        except _GitFailed as err:
            log.info("git cat-file failed in %s: %s", project, err)
            old, truncated = {}, True
        parts, size = [], 0
        for rel, mode, sha, new in pieces:
            text = _unified(rel, mode, old.get(sha) if sha else None, new)
            size += len(text)
            if size > MAX_DIFF_BYTES:
                truncated = True
                break
            parts.append(text)
        diff = "".join(parts)
    proj = os.path.realpath(project)
    rel = [os.path.relpath(os.path.join(toplevel, p), proj) for p in changed]
    return {"commit": commit, "branch": branch, "dirty": bool(changed), "diff": diff,
            "diff_truncated": truncated, "changed": rel, "root": toplevel}
