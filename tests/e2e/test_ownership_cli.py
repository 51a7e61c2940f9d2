"""End to end: the commands root runs on an ordinary user's project (`sudo onlooker
init`, `run`, `gc`, `rm`, `restore`, `import`) leave the store theirs and private, and
what restore writes into their tree theirs. Skipped unless the tests run as root with
useradd at hand (CI does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .test_ordinary_user import _as, user, user_project  # noqa: F401 (a fixture)
from .test_ownership import _owned_and_private
from .test_pipeline import ONLOOKER, cli

pytestmark = pytest.mark.e2e


def test_root_commands_leave_a_users_project_theirs(user):  # noqa: F811
    base = Path(tempfile.mkdtemp(prefix="onlooker-own-cli-"))
    try:
        home, project = user_project(user, base)
        drop, env = _as(user, home, base)
        ids = (user.pw_uid, user.pw_gid)

        def as_user(*argv: str, cwd: Path = project) -> subprocess.CompletedProcess:
            return subprocess.run(list(argv), cwd=cwd, env=env, preexec_fn=drop,
                                  capture_output=True, text=True, timeout=60)

        store = project / ".onlooker"
        cli(project, "init")
        assert _owned_and_private(store, *ids) == []
        res = as_user("sh", "-c", "printf '# mine\\n' >> .onlooker/config.toml")
        assert res.returncode == 0, res.stderr  # the owner edits their config

        # `sudo onlooker run`: starts a root agent, keeps the output, stops it.
        res = subprocess.run([*ONLOOKER, "run", "--", sys.executable, "train.py",
                              "data/rows.txt", "--lr", "0.1"], cwd=project,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert (store / "logs").is_dir() and list((store / "logs").iterdir())
        runs = json.loads(cli(project, "runs", "--json").stdout)
        (run,) = [r for r in runs if "train.py" in r["command"]]
        assert _owned_and_private(store, *ids) == []

        # restore as root: a file it makes in the owner's tree, or in a folder of theirs
        # given with --to, is theirs (model.txt was root's: root's run wrote it).
        model = project / "model.txt"
        want = model.read_bytes()
        model.unlink()
        cli(project, "restore", str(run["id"]), "model.txt")
        assert model.read_bytes() == want
        assert (model.stat().st_uid, model.stat().st_gid) == ids
        copy = home / "restored"
        cli(project, "restore", str(run["id"]), "--to", str(copy))
        for p in (copy, copy / "model.txt", copy / "data", copy / "data" / "rows.txt"):
            assert (p.stat().st_uid, p.stat().st_gid) == ids, p

        # export, then import into another project of theirs, as root
        archive = base / "runs.tar"
        cli(project, "export", "--all", "-o", str(archive))
        other = base / "other"
        other.mkdir()
        os.chown(other, *ids)
        cli(other, "init")
        got = json.loads(cli(other, "import", str(archive), "--json").stdout)
        assert got, got
        assert _owned_and_private(other / ".onlooker", *ids) == []

        cli(project, "rm", "--yes", str(run["id"]))
        res = cli(project, "gc", "--grace", "0s", "--json")
        assert json.loads(res.stdout)["logs"]["files"] == 1, res.stdout  # the removed run's
        assert (store / "gc.lock").exists()
        assert _owned_and_private(store, *ids) == []
        for folder in (project, other):  # and they may delete it all
            res = as_user("rm", "-rf", ".onlooker", cwd=folder)
            assert res.returncode == 0, res.stderr
            assert not (folder / ".onlooker").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
