"""End to end as an ordinary user (made with useradd): the tier most people get.

Root can force the unprivileged tiers by config, but only a real ordinary user shows
what the agent picks and can do without privileges (fanotify refused, netlink allowed
on recent kernels, files it may not read). Skipped unless the tests run as root with
useradd at hand (CI does).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

USER = "onlooker-e2e"

TRAIN = '''
import json, sys, time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
rows = open(sys.argv[1]).read().split()
lr = float(sys.argv[sys.argv.index("--lr") + 1])
with open("model.txt", "w") as f:
    f.write(f"{len(rows)} rows, lr {lr}\\n")
json.dump({"loss": 0.25}, open("metrics.json", "w"))
'''


@pytest.fixture(scope="module")
def user():
    # useradd lives in sbin, which a CI's PATH may leave out
    useradd = shutil.which("useradd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if os.geteuid() != 0 or useradd is None:
        pytest.skip("needs root and useradd to make an ordinary user")
    made = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run([useradd, "--no-create-home", "--shell", "/bin/sh", USER], check=True)
        made = True
    yield pwd.getpwnam(USER)
    if made:  # leave the machine's users as they were
        userdel = shutil.which("userdel", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if userdel:
            subprocess.run([userdel, USER], check=False)


def _as(user, home: Path, venv: Path):
    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    return drop, env


def _user_venv(user, base: Path) -> Path:
    """A virtualenv the user can run, seeing this test environment's packages (onlooker
    among them): the tests' own interpreter may live where the user cannot read (root's
    pyenv), so one of the same version elsewhere is taken."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site_dir = next(p for p in sys.path if p.endswith("site-packages") and sys.prefix in p)
    for cand in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(cand):
            continue
        try:
            probe = subprocess.run(
                [cand, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                preexec_fn=_as(user, base, base)[0], capture_output=True, text=True)
        except OSError:  # the user may not run it
            continue
        if probe.returncode == 0 and probe.stdout.strip() == want:
            venv = base / "venv"
            subprocess.run([cand, "-m", "venv", "--without-pip", str(venv)], check=True)
            (venv / "lib" / f"python{want}" / "site-packages" / "tests-env.pth").write_text(
                f"import site; site.addsitedir({site_dir!r})\n")
            return venv
    pytest.skip(f"no Python {want} that {USER} may run")


def user_project(who, base: Path) -> tuple[Path, Path]:
    """A home and a project (train.py, data/rows.txt) under `base`, all `who`'s."""
    base.chmod(0o755)
    home, project = base / "home", base / "proj"
    for d in (home, project, project / "data"):
        d.mkdir()
    (project / "train.py").write_text(TRAIN.lstrip())
    (project / "data" / "rows.txt").write_text("a\nb\nc\n")
    for p in (home, project, project / "data", project / "train.py",
              project / "data" / "rows.txt"):
        os.chown(p, who.pw_uid, who.pw_gid)
    return home, project


def test_an_ordinary_user_gets_an_unprivileged_tier_and_an_exact_run(user):
    base = Path(tempfile.mkdtemp(prefix="onlooker-user-"))
    try:
        home, project = user_project(user, base)
        drop, env = _as(user, home, _user_venv(user, base))

        def run(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(argv), cwd=project, env=env, preexec_fn=drop,
                                  capture_output=True, text=True, timeout=120)

        onlooker = ["python", "-m", "onlooker.cli.main"]
        assert run(*onlooker, "init").returncode == 0
        started = run(*onlooker, "start")
        assert started.returncode == 0, started.stderr
        try:
            st = json.loads(run(*onlooker, "status", "--json").stdout)
            assert st["tiers"]["files"]["name"] == "inotify", st["tiers"]  # fanotify: EPERM
            assert st["tiers"]["process"]["name"] in ("netlink", "poll"), st["tiers"]
            res = run("python", "train.py", "data/rows.txt", "--lr", "0.1")
            assert res.returncode == 0, res.stderr
        finally:
            stopped = run(*onlooker, "stop")
        assert stopped.returncode == 0, stopped.stderr
        (r,) = json.loads(run(*onlooker, "runs", "--json").stdout)
        got = json.loads(run(*onlooker, "show", str(r["id"]), "--json").stdout)
        assert got["status"] in ("completed", "ended"), got["status"]
        assert {f["path"] for f in got["inputs"]} == {"data/rows.txt"}
        assert {f["path"] for f in got["outputs"]} == {"model.txt", "metrics.json"}
        assert {f["path"] for f in got["code"]} == {"train.py"}
        assert got["params"] == {"argv[1]": "data/rows.txt", "lr": 0.1}
        assert got["metrics"] == {"metrics.json:loss": 0.25}
        assert got["meta"] == []
        # everything the agent made belongs to the user, not to root
        assert all(p.stat().st_uid == user.pw_uid for p in (project / ".onlooker").rglob("*"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
