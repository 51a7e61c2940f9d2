"""End to end: a project's owner attacking the root that works for them (the service, or
`sudo onlooker ...` in their project), with two ordinary users made by useradd.

The owner can write everything in their store: agent.json, agent.pid, agent.log and
config.toml may be links to /dev/zero, FIFOs, huge, hard links to root's files; the
store itself may be swapped for a link; the pidfile may name another user's process.
Root must neither run out of memory, hang, read what the owner could not, make files
elsewhere, nor signal a process that is not the project's agent; one user must not take
the service from the others, and a folder's name must not write into root's log or
terminal. Skipped unless the tests run as root with useradd at hand (CI does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from onlooker.agent import config, lifecycle, service
from onlooker.agent.service import guard, keeper, supervisor, unit

from .test_service import World, users, wait_for  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base():
    b = Path(tempfile.mkdtemp(prefix="onlooker-attacks-"))
    b.chmod(0o755)
    yield b
    shutil.rmtree(b, ignore_errors=True)


def _give(path: Path, who) -> None:
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, who.pw_uid, who.pw_gid)
        for f in files:
            os.chown(os.path.join(folder, f), who.pw_uid, who.pw_gid)


def owned_project(base: Path, name: str, who) -> Path:
    """An instrumented project of `who`'s (made by root, given as `sudo onlooker init`
    would leave it)."""
    p = base / name
    p.mkdir()
    config.instrument(p)
    _give(p, who)
    return p


def _drop(uid: int, gid: int):
    def drop() -> None:
        os.setgid(gid)
        os.setgroups([])
        os.setuid(uid)
    return drop


def lookalike(who) -> subprocess.Popen:
    """A process of `who`'s whose command line names onlooker.agent, as an agent's does,
    working in no project here: a shell that stays (`; :`), the name its $0."""
    return subprocess.Popen(["/bin/sh", "-c", "sleep 120; :", "onlooker.agent.daemon", "/x"],
                            preexec_fn=_drop(who.pw_uid, who.pw_gid), cwd="/",
                            start_new_session=True)


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def bounded(code: str, *, memory: int = 1 << 30, timeout: float = 60.0
            ) -> subprocess.CompletedProcess:
    """`code` as root in a child with `memory` bytes of address space and a time limit:
    an unbounded read of /dev/zero fails there (MemoryError, a timeout), not the tests."""
    pre = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
    return subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True,
                          timeout=timeout)


def _pidfile(p: Path, pid: int, who) -> None:
    f = p / ".onlooker" / lifecycle.PID_NAME
    f.write_text(f"{pid}\n")
    os.chown(f, who.pw_uid, who.pw_gid)


# -- the keeper and the guard (the service's own checks) -------------------------------------


def test_a_pidfile_naming_another_users_agent_is_neither_signalled_nor_adopted(users, base):  # noqa: F811
    a, b = users
    p = owned_project(base, "keeper", a)
    victim = lookalike(b)
    own = None
    try:
        _pidfile(p, victim.pid, a)

        def start(_project):
            raise lifecycle.AlreadyRunning(victim.pid)
        k = keeper.Keeper(str(p), a.pw_uid, start=start, backoff=(0.01,)).begin()
        wait_for(lambda: k.state == "failed", timeout=20, what="the keeper gives up")
        assert "is not this project's agent" in k.reason
        assert k.end(timeout=5) is False
        assert keeper.stop_agent(p, uid=a.pw_uid, timeout=5) is False
        assert victim.poll() is None
        # the owner's own onlooker process is stopped, as before
        own = lookalike(a)
        assert keeper.stop_agent(p, uid=a.pw_uid, pid=own.pid, timeout=10) is True
        own.wait(10)  # stop_agent waited for it to exit (and reaped it)
    finally:
        _end(victim)
        if own is not None:
            _end(own)


def test_agent_log_on_dev_zero_a_fifo_or_huge_is_read_bounded_and_escaped(users, base):  # noqa: F811
    a, _b = users
    p = owned_project(base, "log", a)
    log = p / ".onlooker" / lifecycle.LOG_NAME
    log.unlink(missing_ok=True)
    log.symlink_to("/dev/zero")
    read = (f"from onlooker.agent.service import guard\n"
            f"print(repr(guard.log_reason({str(p)!r}, {a.pw_uid}, 0)))\n")
    res = bounded(read)
    assert (res.returncode, res.stdout.strip()) == (0, "None"), res.stderr[-2000:]
    log.unlink()
    os.mkfifo(log)
    os.chown(log, a.pw_uid, a.pw_gid)
    res = bounded(read, timeout=20)  # an ordinary open of a FIFO nobody writes: for ever
    assert (res.returncode, res.stdout.strip()) == (0, "None"), res.stderr[-2000:]
    log.unlink()
    with open(log, "wb") as f:
        f.truncate(3 << 30)  # sparse
        f.seek(0, os.SEEK_END)
        f.write(b"\n2026-01-01 10:00:01,000 ERROR onlooker.agent.daemon: bad \x1b[31mthing\n")
    os.chown(log, a.pw_uid, a.pw_gid)
    res = bounded(read)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == repr("bad \\x1b[31mthing")


def test_root_reads_no_hard_link_to_its_file_nor_another_store_through_a_link(users, base):  # noqa: F811
    a, b = users
    p = owned_project(base, "links", a)
    secret = base / "secret.json"
    secret.write_text(json.dumps({"tiers": {"files": {"name": "SECRET"}}, "pid": 1}))
    secret.chmod(0o600)
    state = p / ".onlooker" / lifecycle.STATE_NAME
    state.unlink(missing_ok=True)
    os.link(secret, state)
    assert guard.agent_tiers(str(p), a.pw_uid) == {}
    assert lifecycle.read_state(p / ".onlooker") == {}
    state.unlink()
    # A's store swapped for a link to B's: nothing of B's is read for A
    pb = owned_project(base, "links-b", b)
    (pb / ".onlooker" / lifecycle.STATE_NAME).write_text(secret.read_text())
    os.chown(pb / ".onlooker" / lifecycle.STATE_NAME, b.pw_uid, b.pw_gid)
    aside = base / "links-store"
    (p / ".onlooker").rename(aside)
    (p / ".onlooker").symlink_to(pb / ".onlooker")
    try:
        assert guard.agent_tiers(str(p), a.pw_uid) == {}
        assert lifecycle.read_state(p / ".onlooker") == {}
        with pytest.raises(lifecycle.LifecycleError, match="is a symbolic link"):
            lifecycle.status(p)
    finally:
        (p / ".onlooker").unlink()
        aside.rename(p / ".onlooker")


def test_a_socket_folder_others_can_write_is_refused(base):
    run = base / "open-run"
    run.mkdir()
    run.chmod(0o777)
    with pytest.raises(service.ServiceError, match="can be changed by users other than root"):
        supervisor.Service(run / "s.sock", base / "open-state").claim()


def test_a_control_character_never_reaches_the_unit():
    with pytest.raises(service.ServiceError, match="holds a control character"):
        unit.unit_text(unit.service_argv(Path("/srv/a\nExecStartPre=/bin/sh")))


# -- lifecycle as root in an owner's project -------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_root_starting_an_agent_with_store_files_on_dev_zero_or_fifos_neither_hangs_nor_fills_memory(  # noqa: E501
        users, base, kind):  # noqa: F811
    a, _b = users
    p = owned_project(base, f"start-{kind}", a)
    for name in (lifecycle.STATE_NAME, lifecycle.PID_NAME):
        f = p / ".onlooker" / name
        if kind == "fifo":  # nobody writes them: an ordinary open waits for ever
            os.mkfifo(f)
            os.chown(f, a.pw_uid, a.pw_gid)
        else:
            f.symlink_to("/dev/zero")
    # 4 GiB: the agent it starts lives under the same limit
    res = bounded(f"from onlooker.agent import lifecycle\n"
                  f"try:\n"
                  f"    lifecycle.start({str(p)!r}, timeout=60)\n"
                  f"except lifecycle.AgentFailed as err:\n"
                  f"    print('failed:', err)\n"
                  f"else:\n"
                  f"    print(lifecycle.status({str(p)!r})['state'])\n"
                  f"    print(lifecycle.stop({str(p)!r}, timeout=60))\n",
                  memory=4 << 30, timeout=150)
    assert res.returncode == 0, res.stderr[-3000:]
    if kind == "fifo":  # the agent puts plain files in their place
        assert res.stdout.split() == ["watching", "True"], res.stdout
    else:  # the agent itself follows no link in the store: one sentence, at once
        (line,) = res.stdout.splitlines()
        assert line.startswith("failed: ") and "is a symbolic link" in line, line


def test_a_store_swapped_for_a_link_stops_roots_agent_and_is_refused_at_start(users, base):  # noqa: F811
    a, _b = users
    p = owned_project(base, "swap", a)
    decoy = base / "decoy"  # root's: where root must not make A's files
    decoy.mkdir()
    pid = lifecycle.start(p)
    store, aside = p / ".onlooker", base / "swap-store"
    try:
        store.rename(aside)  # the agent keeps its open files; its path now leads elsewhere
        store.symlink_to(decoy)
        wait_for(lambda: guard.gone(pid), timeout=30, what="the agent notices the link")
        said = (aside / lifecycle.LOG_NAME).read_text()
        assert f"{store} is a symbolic link" in said, said[-2000:]
        assert "the agent stops" in said
        # What it may have written there in the 2 s before it looked (docs/user-guide.md,
        # "Privileged service"): nothing after it stopped.
        before = sorted(os.listdir(decoy))
        with pytest.raises(lifecycle.LifecycleError, match="is a symbolic link"):
            lifecycle.start(p, timeout=10)
        assert sorted(os.listdir(decoy)) == before
        assert not (decoy / lifecycle.LOG_NAME).exists()
    finally:
        if not guard.gone(pid):
            os.kill(pid, signal.SIGKILL)
        if store.is_symlink():
            store.unlink()
            aside.rename(store)


def test_sudo_stop_signals_only_the_projects_own_agent(users, base):  # noqa: F811
    a, b = users
    p = owned_project(base, "stop", a)
    victim = lookalike(b)
    try:
        _pidfile(p, victim.pid, a)
        env = {**os.environ, service.SOCKET_ENV: str(base / "no-service.sock")}
        res = subprocess.run([sys.executable, "-m", "onlooker.cli.main", "-C", str(p), "stop"],
                             capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 1, res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert f"pid {victim.pid}, which" in line and "is not this project's agent" in line
        time.sleep(0.3)  # a SIGTERM, had one been sent, has been delivered
        assert victim.poll() is None
    finally:
        _end(victim)


# -- the service, one user against the others ------------------------------------------------


@pytest.fixture(scope="module")
def world(users, base):  # noqa: F811
    (base / "svc").mkdir()
    (base / "svc").chmod(0o755)
    w = World(base / "svc", users)
    w.project.mkdir(parents=True)  # the users' commands run there (World.onlooker)
    w.project.chmod(0o755)
    w.project.parent.chmod(0o755)
    w.start_service()
    yield w
    w.stop_service()


def _hold(path: Path, n: int, wfd: int, rfd: int) -> None:  # pragma: no cover - a child
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        held.append(s)
    with socket.socket(socket.AF_UNIX) as extra:
        extra.settimeout(10)
        extra.connect(str(path))
        os.write(wfd, extra.makefile().readline().encode())
    os.read(rfd, 1)  # held until the parent has been answered


def test_one_user_holding_connections_leaves_the_service_to_the_others(world):
    w = world
    told_r, told_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child, as B
        code = 1
        try:
            _drop(w.b.pw_uid, w.b.pw_gid)()
            _hold(w.sock, service.MAX_CONNECTIONS_PER_USER, told_w, go_r)
            code = 0
        finally:
            os._exit(code)
    os.close(told_w)
    os.close(go_r)
    try:
        with os.fdopen(told_r) as f:
            refused = json.loads(f.readline())
        assert refused["ok"] is False and "the most one user may have at once" in \
            refused["error"], refused
        # B holds its share; A is answered all the same
        res = w.onlooker(w.a, "service", "status", "--json", cwd=w.base)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["running"] is True
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        assert os.waitpid(child, 0)[1] == 0


def test_a_folder_name_with_a_newline_is_escaped_in_roots_log_and_status(world):
    w = world
    p = w.base / "evil\nregistered etc for root\x1b[2J"
    p.mkdir()
    os.chown(p, w.a.pw_uid, w.a.pw_gid)
    init = w.onlooker(w.a, "init", cwd=p)
    assert init.returncode == 0, init.stderr
    shown = "evil\\nregistered etc for root\\x1b[2J"
    assert f"the onlooker service watches {w.base}/{shown}" in init.stderr, init.stderr
    try:
        res = subprocess.run([sys.executable, "-m", "onlooker.cli.main", "service", "status",
                              "--socket", str(w.sock)], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        assert shown in res.stdout and "\x1b" not in res.stdout
        assert not any(ln.startswith("registered etc") for ln in res.stdout.splitlines())
        logged = w.service_log.read_text(errors="replace")
        assert shown in logged and "\x1b" not in logged
        assert not any(ln.startswith("registered etc") for ln in logged.splitlines())
    finally:
        w.onlooker(w.a, "service", "unregister", str(p), cwd=w.base)


def test_a_folder_given_to_another_user_is_taken_over_by_its_new_owner(world):
    w = world
    p = w.base / "handed-over"
    p.mkdir()
    os.chown(p, w.a.pw_uid, w.a.pw_gid)
    assert w.onlooker(w.a, "init", cwd=p).returncode == 0

    def entry(user):
        rows = [r for r in w.entries(user) if r["project"] == str(p)]
        return rows[0] if rows and rows[0]["state"] == "watching" else None
    first = wait_for(lambda: entry(w.a), what="A's agent watches")
    _give(p, w.b)  # root hands the folder, store and all, to B
    taken = w.onlooker(w.b, "service", "register", str(p), cwd=w.base)
    assert taken.returncode == 0, taken.stderr
    second = wait_for(lambda: entry(w.b), what="B's agent watches")
    assert second["user"] == w.b.pw_name and second["pid"] != first["pid"]
    assert guard.gone(first["pid"])
    assert [r for r in w.entries(w.a) if r["project"] == str(p)] == []
    w.onlooker(w.b, "service", "unregister", str(p), cwd=w.base)
