"""End to end: the privileged service with two ordinary users (made with useradd).

`onlooker service run` is started as root on a socket of its own (no systemd needed).
User A inits a project and so registers it; A's run is recorded by the fanotify +
netlink tier although A is not root. User B can neither register, list nor stop it, nor
read what the service's agent wrote. The service restarts a killed agent, stops it on
unregister, and a second service on the same socket refuses. Skipped unless the tests
run as root with useradd at hand (CI does).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .test_ordinary_user import TRAIN, _as, _user_venv
from .test_robustness import gone

pytestmark = pytest.mark.e2e

USERS = ("onlooker-svc-a", "onlooker-svc-b")
ONLOOKER = ["python", "-m", "onlooker.cli.main"]


def wait_for(cond, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout:.0f} s")
        time.sleep(0.1)


def _tool(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def users():
    useradd = _tool("useradd")
    if os.geteuid() != 0 or useradd is None:
        pytest.skip("needs root and useradd to make two ordinary users")
    made = []
    try:
        for name in USERS:
            try:
                pwd.getpwnam(name)
            except KeyError:
                subprocess.run([useradd, "--no-create-home", "--shell", "/bin/sh", name],
                               check=True)
                made.append(name)
        yield [pwd.getpwnam(n) for n in USERS]
    finally:
        userdel = _tool("userdel")
        for name in made:  # leave the machine's users as they were
            if userdel:
                subprocess.run([userdel, name], check=False)


class World:
    """The service, the two users' environments and A's project."""

    def __init__(self, base: Path, users) -> None:
        self.base = base
        self.a, self.b = users
        self.sock = base / "run" / "service.sock"
        self.state = base / "state"
        self.project = base / "a" / "proj"
        self.venv = _user_venv(self.a, base)
        self.envs = {}
        for u in (self.a, self.b):
            home = base / u.pw_name
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, u.pw_uid, u.pw_gid)
            drop, env = _as(u, home, self.venv)
            env["ONLOOKER_SERVICE_SOCKET"] = str(self.sock)
            self.envs[u.pw_uid] = (drop, env)
        self.service: subprocess.Popen | None = None
        self.service_log = base / "service.log"

    def as_user(self, user, *argv: str, cwd: Path | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
        drop, env = self.envs[user.pw_uid]
        return subprocess.run(list(argv), cwd=cwd or self.project, env=env, preexec_fn=drop,
                              capture_output=True, text=True, timeout=timeout)

    def onlooker(self, user, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.as_user(user, *ONLOOKER, *args, **kw)

    def start_service(self) -> None:
        with open(self.service_log, "ab") as out:
            self.service = subprocess.Popen(
                [sys.executable, "-m", "onlooker.cli", "service", "run",
                 "--socket", str(self.sock), "--state", str(self.state)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._listening, timeout=30, what="the service listens")

    def _listening(self) -> bool:
        assert self.service is not None
        if self.service.poll() is not None:
            raise AssertionError(f"the service exited: {self.service_log.read_text()}")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.sock))
            except OSError:
                return False
        return True

    def stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            self.service.wait(timeout=120)

    def entries(self, user) -> list[dict]:
        res = self.onlooker(user, "service", "status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["projects"]

    def watching(self, user=None) -> dict:
        def entry():
            rows = [r for r in self.entries(user or self.a)
                    if r["project"] == str(self.project)]
            return rows[0] if rows and rows[0]["state"] == "watching" else None
        return wait_for(entry, what="the service's agent watches A's project")


@pytest.fixture(scope="module")
def world(users):
    base = Path(tempfile.mkdtemp(prefix="onlooker-service-"))
    w = None
    try:
        base.chmod(0o755)
        w = World(base, users)
        w.start_service()
        # A's project, world-readable as most are: the store must not be
        p = w.project
        for d in (p.parent, p, p / "data"):
            d.mkdir(exist_ok=True)
        (p / "train.py").write_text(TRAIN.lstrip())
        (p / "data" / "rows.txt").write_text("a\nb\nc\n")
        for path in (p.parent, p, p / "data", p / "train.py", p / "data" / "rows.txt"):
            os.chown(path, w.a.pw_uid, w.a.pw_gid)
            path.chmod(0o755 if path.is_dir() else 0o644)
        init = w.onlooker(w.a, "init")
        assert init.returncode == 0, init.stderr
        assert "the onlooker service watches" in init.stderr, init.stderr
        yield w
    finally:
        if w is not None:
            w.stop_service()
        shutil.rmtree(base, ignore_errors=True)


def test_an_ordinary_users_run_gets_the_privileged_tier(world):
    w = world
    entry = w.watching()
    assert entry["tiers"] == {"process": "netlink", "files": "fanotify", "gpu": entry["tiers"]
                              .get("gpu")}, entry
    st = json.loads(w.onlooker(w.a, "status", "--json").stdout)
    assert st["tiers"]["files"]["name"] == "fanotify", st["tiers"]
    assert st["tiers"]["process"]["name"] == "netlink", st["tiers"]
    assert st["service"]["state"] == "watching"
    # `start` says the service watches it instead of starting a second agent
    started = w.onlooker(w.a, "start")
    assert started.returncode == 0, started.stderr
    assert "the onlooker service watches" in started.stdout, started.stdout
    assert w.watching()["pid"] == entry["pid"]

    res = w.as_user(w.a, "python", "train.py", "data/rows.txt", "--lr", "0.1")
    assert res.returncode == 0, res.stderr

    def recorded():
        out = w.onlooker(w.a, "runs", "--json")
        rows = json.loads(out.stdout) if out.returncode == 0 else []
        return rows if rows and rows[0]["status"] == "completed" else None
    (run,) = wait_for(recorded, what="A's run is recorded")
    got = json.loads(w.onlooker(w.a, "show", str(run["id"]), "--json").stdout)
    assert got["tier"] == "netlink+fanotify", got["tier"]
    assert got["exit_code"] == 0
    assert {(f["path"], f["basis"]) for f in got["inputs"]} == {("data/rows.txt", "fanotify")}
    assert {f["path"] for f in got["outputs"]} == {"model.txt", "metrics.json"}
    assert got["params"] == {"argv[1]": "data/rows.txt", "lr": 0.1}


def test_a_root_only_file_in_the_project_is_neither_copied_nor_hashed(world):
    w = world
    w.watching()
    secret = w.project / "private.key"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # root's, 0600
    os.write(fd, b"guessable\n")
    os.close(fd)
    later = w.project / "later.txt"
    later.write_text("public\n")
    os.chown(later, w.a.pw_uid, w.a.pw_gid)

    def settled():
        st = json.loads(w.onlooker(w.a, "status", "--json").stdout)
        backlog = st.get("backlog") or {}
        with sqlite3.connect(f"file:{w.project}/.onlooker/catalog.db?mode=ro", uri=True) as db:
            seen = db.execute("SELECT count(*) FROM versions JOIN assets a ON a.id = asset_id"
                              " WHERE a.path = 'later.txt'").fetchone()[0]
        return seen and not backlog.get("hashing") and not backlog.get("queue")
    wait_for(settled, what="the agent took in later.txt")
    with sqlite3.connect(f"file:{w.project}/.onlooker/catalog.db?mode=ro", uri=True) as db:
        rows = db.execute("SELECT v.hash FROM versions v JOIN assets a ON a.id = v.asset_id"
                          " WHERE a.path = 'private.key'").fetchall()
    assert rows == []
    stored = [p for p in (w.project / ".onlooker" / "objects").rglob("*")
              if p.is_file() and p.read_bytes() == b"guessable\n"]
    assert stored == []


def test_another_user_can_neither_take_nor_see_nor_read_it(world):
    w = world
    w.watching()
    taken = w.onlooker(w.b, "service", "register", str(w.project), cwd=w.base)
    assert taken.returncode == 1
    assert taken.stderr.strip().splitlines() == [
        f"onlooker: {w.project} belongs to another user: only its owner can register it"]
    assert w.entries(w.b) == []
    dropped = w.onlooker(w.b, "service", "unregister", str(w.project), cwd=w.base)
    assert dropped.returncode == 1
    assert "is not one of your registered projects" in dropped.stderr
    assert w.watching()["state"] == "watching"  # still A's, still running

    # what the service's agent wrote is A's and nobody else's (0700 / 0600)
    store = w.project / ".onlooker"
    made = [store, *store.rglob("*")]
    assert all(p.lstat().st_uid == w.a.pw_uid for p in made), \
        [str(p) for p in made if p.lstat().st_uid != w.a.pw_uid]
    assert all(p.stat().st_mode & 0o077 == 0 for p in made if not p.is_symlink()), \
        [(str(p), oct(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077]
    objects = [p for p in (store / "objects").rglob("*") if p.is_file()]
    assert objects, "the run's files were copied into the store"
    for target in (store / "catalog.db", store / "agent.log", objects[0]):
        res = w.as_user(w.b, "python", "-c", f"open({str(target)!r}, 'rb').read()",
                        cwd=w.base)
        assert res.returncode != 0 and "PermissionError" in res.stderr, (target, res.stderr)


def test_the_service_restarts_a_killed_agent(world):
    w = world
    before = w.watching()
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (e := w.watching()) and e["pid"] != before["pid"] and e,
                     what="a new agent")
    assert after["restarts"] == before["restarts"] + 1
    assert after["tiers"]["files"] == "fanotify"


def test_a_restarted_service_takes_its_projects_back(world):
    w = world
    before = w.watching()
    # killed outright: its agent lives on, and the next service adopts it
    w.service.kill()
    w.service.wait(timeout=30)
    w.start_service()
    adopted = w.watching()
    assert adopted["pid"] == before["pid"]
    # an adopted agent is no child of the service: its death is seen all the same
    os.kill(adopted["pid"], signal.SIGKILL)
    before = wait_for(lambda: (e := w.watching()) and e["pid"] != adopted["pid"] and e,
                      what="a new agent after the adopted one died")
    # stopped cleanly: its agents stop too, and the next service starts them again
    w.stop_service()
    assert gone(before["pid"])  # a zombie of a parent that is gone counts
    assert not w.sock.exists()
    w.start_service()
    again = w.watching()
    assert again["pid"] != before["pid"] and again["tiers"]["files"] == "fanotify"


def test_a_second_service_on_the_same_socket_refuses(world):
    w = world
    res = subprocess.run([sys.executable, "-m", "onlooker.cli", "service", "run",
                          "--socket", str(w.sock), "--state", str(w.base / "state2")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("onlooker: another onlooker service (pid ")
    assert line.endswith(f"already listens on {w.sock}")
    assert w.watching()["state"] == "watching"


def test_stop_unregisters_and_the_agent_ends(world):
    w = world
    pid = w.watching()["pid"]
    stopped = w.onlooker(w.a, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "no longer watches" in stopped.stderr
    assert gone(pid)
    assert w.entries(w.a) == []
    registry = json.loads((w.state / "projects.json").read_text())
    assert registry["projects"] == {}
    assert (w.state / "projects.json").stat().st_mode & 0o777 == 0o600
