"""End to end: the store belongs to the project's owner, whoever runs the agent.

An agent started by root on a project of an ordinary user (made with useradd) must
leave a store that user can read, gc, rm and delete, that nobody else can read, and
in which nothing the user could not read (a root-only file in the project) is hashed
or copied. An agent run by the owner keeps the store private too. Skipped unless the
tests run as root with useradd at hand (CI does).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3
import pytest

from .test_ordinary_user import _as, _user_venv, user, user_project  # noqa: F401 (a fixture)
from .test_pipeline import cli
from .test_robustness import settle

pytestmark = pytest.mark.e2e

SECRET = b"root-only token 6f1e0c9a4b2d7e35\n"
SECRET_LATER = b"written by root while watched, 0600 from its creation 91c7\n"
# A run by root: its output is root's and 0600 from the open on.
ROOT_RUN = f'''
import os, time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
fd = os.open("secret-later.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, {SECRET_LATER!r})
os.close(fd)
'''


def _runner(who, home: Path, venv: Path, project: Path):
    drop, env = _as(who, home, venv)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=project, env=env, preexec_fn=drop,
                              capture_output=True, text=True, timeout=120)
    return run


def _owned_and_private(store: Path, uid: int, gid: int) -> list[str]:
    """What under the store is not the owner's, or not private to them."""
    bad = []
    for p in [store, *store.rglob("*")]:
        st = os.lstat(p)
        mode = stat.S_IMODE(st.st_mode)
        if (st.st_uid, st.st_gid) != (uid, gid):
            bad.append(f"{p}: owned by {st.st_uid}:{st.st_gid}")
        elif stat.S_ISDIR(st.st_mode):
            if mode != 0o700:
                bad.append(f"{p}: folder {mode:o}")
        elif mode not in (0o600, 0o400):
            bad.append(f"{p}: file {mode:o}")
    return bad


def test_a_root_agent_leaves_the_store_to_the_owner_and_skips_what_they_cannot_read(user):  # noqa: F811
    base = Path(tempfile.mkdtemp(prefix="onlooker-own-"))
    try:
        home, project = user_project(user, base)
        run = _runner(user, home, _user_venv(user, base), project)
        onlooker = ["python", "-m", "onlooker.cli.main"]
        # Root's, unreadable to the owner: one there at start, one in a 0700 folder of
        # root's (readable itself, but the owner cannot reach it), one made while watched.
        secret = project / "secret.txt"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        (project / "private").mkdir(mode=0o700)
        (project / "private" / "notes.txt").write_bytes(SECRET)
        (project / "private" / "notes.txt").chmod(0o644)
        (project / "root_run.py").write_text(ROOT_RUN)

        cli(project, "init")  # as root, as a new user would with sudo
        cli(project, "start")
        try:
            st = json.loads(cli(project, "status", "--json").stdout)
            assert st["tiers"]["files"]["name"] == "fanotify", st["tiers"]
            for lr in ("0.1", "0.2"):  # two versions of model.txt: one for gc to free
                res = run("python", "train.py", "data/rows.txt", "--lr", lr)
                assert res.returncode == 0, res.stderr
                settle(project)  # hashed before the next run rewrites it
            subprocess.run([sys.executable, "root_run.py"], cwd=project, check=True)
            settle(project)
        finally:
            cli(project, "stop")
        store = project / ".onlooker"
        assert _owned_and_private(store, user.pw_uid, user.pw_gid) == []

        # Nothing of the unreadable files: no version, no hash, no copy anywhere.
        conn = sqlite3.connect(f"file:{store / 'catalog.db'}?mode=ro", uri=True)
        try:
            versioned = {p for (p,) in conn.execute(
                "SELECT a.path FROM versions v JOIN assets a ON a.id = v.asset_id")}
        finally:
            conn.close()
        assert {"data/rows.txt", "model.txt", "metrics.json"} <= versioned, versioned
        assert not versioned & {"secret.txt", "secret-later.txt", "private/notes.txt"}
        hexes = [blake3.blake3(s).hexdigest().encode() for s in (SECRET, SECRET_LATER)]
        for p in store.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert SECRET not in data and SECRET_LATER not in data, p
                assert not any(h in data for h in hexes), p

        # The owner restores byte for byte, removes a run, collects and deletes it all.
        runs = json.loads(run(*onlooker, "runs", "--json").stdout)
        first, second = sorted((r for r in runs if "train.py" in r["command"]),
                               key=lambda r: r["id"])
        model = project / "model.txt"
        want = model.read_bytes()
        model.unlink()
        res = run(*onlooker, "restore", str(second["id"]), "model.txt")
        assert res.returncode == 0, res.stderr
        assert model.read_bytes() == want
        assert model.stat().st_uid == user.pw_uid and stat.S_IMODE(model.stat().st_mode) != 0o400
        assert run(*onlooker, "gc").returncode == 0
        assert run(*onlooker, "rm", "--yes", str(first["id"])).returncode == 0
        res = run(*onlooker, "gc", "--grace", "0s", "--json")
        assert res.returncode == 0, res.stderr
        # the first model.txt, now named by no run and no file, is gone
        assert json.loads(res.stdout)["freed"]["objects"] == 1, res.stdout
        res = run("python", "-c", "import shutil; shutil.rmtree('.onlooker')")
        assert res.returncode == 0, res.stderr
        assert not store.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_owners_agent_keeps_the_store_private(user):  # noqa: F811
    base = Path(tempfile.mkdtemp(prefix="onlooker-own-"))
    try:
        home, project = user_project(user, base)
        run = _runner(user, home, _user_venv(user, base), project)
        onlooker = ["python", "-m", "onlooker.cli.main"]
        assert run(*onlooker, "init").returncode == 0
        started = run(*onlooker, "start")
        assert started.returncode == 0, started.stderr
        try:
            res = run("python", "train.py", "data/rows.txt", "--lr", "0.1")
            assert res.returncode == 0, res.stderr
        finally:
            stopped = run(*onlooker, "stop")
        assert stopped.returncode == 0, stopped.stderr
        (r,) = json.loads(run(*onlooker, "runs", "--json").stdout)
        got = json.loads(run(*onlooker, "show", str(r["id"]), "--json").stdout)
        assert {f["path"] for f in got["outputs"]} == {"model.txt", "metrics.json"}
        store = project / ".onlooker"
        assert _owned_and_private(store, user.pw_uid, user.pw_gid) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
