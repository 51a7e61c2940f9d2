"""The agent's pidfile, start/stop/status from outside, with fake agents (no real daemon)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onlooker.agent import lifecycle
from onlooker.agent.lifecycle import AgentFailed, AlreadyRunning, NotInstrumented


def wait_for(cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".onlooker").mkdir()
    return tmp_path


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []

    def spawn(*argv: str) -> subprocess.Popen:
        proc = subprocess.Popen(list(argv))
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.kill()
        proc.wait()


def fake_agent(procs, *marks: str) -> subprocess.Popen:
    # Its cmdline mentions onlooker.agent, as the real daemon's does.
    marks = marks or ("onlooker.agent.daemon",)
    proc = procs(sys.executable, "-c", "import time; time.sleep(60)", *marks)
    wait_for(lambda: marks[-1].encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes())
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_pidfile_is_exclusive_and_removed_on_exit(project: Path) -> None:
    store = project / ".onlooker"
    with lifecycle.acquire_pidfile(store) as pid:
        assert pid == os.getpid()
        assert (store / "agent.pid").read_text().strip() == str(pid)
        assert lifecycle.running_pid(store) == pid
        with pytest.raises(AlreadyRunning) as err:
            with lifecycle.acquire_pidfile(store):
                pass
        assert err.value.pid == pid
        assert "already running (pid" in str(err.value)
    assert not (store / "agent.pid").exists()
    assert lifecycle.running_pid(store) is None
    assert [p.name for p in store.iterdir()] == []  # no temp file left behind


def test_stale_pidfile_of_dead_process_is_replaced(project: Path, caplog) -> None:
    store = project / ".onlooker"
    (store / "agent.pid").write_text(f"{dead_pid()}\n")
    assert lifecycle.running_pid(store) is None
    with lifecycle.acquire_pidfile(store) as pid:
        assert (store / "agent.pid").read_text().strip() == str(pid)
    assert "stale pidfile" in caplog.text


@pytest.mark.parametrize("content", ["", "garbage\n", "0\n", "-5\n"])
def test_unreadable_pidfile_is_replaced(project: Path, content: str) -> None:
    store = project / ".onlooker"
    (store / "agent.pid").write_text(content)
    with lifecycle.acquire_pidfile(store):
        assert (store / "agent.pid").read_text().strip() == str(os.getpid())


def test_pid_reused_by_another_program_is_stale(project: Path, procs) -> None:
    store = project / ".onlooker"
    stranger = procs("sleep", "60")
    (store / "agent.pid").write_text(f"{stranger.pid}\n")
    assert lifecycle.running_pid(store) is None
    with lifecycle.acquire_pidfile(store) as pid:
        assert (store / "agent.pid").read_text().strip() == str(pid)
    assert stranger.poll() is None  # never signalled


@pytest.mark.parametrize("marks", [
    ("onlooker.agent.daemon", "/proj"),
    ("/usr/local/bin/onlooker", "-C", "/proj", "watch"),
    ("-m", "onlooker.cli.main", "watch"),
])
def test_live_agent_keeps_its_pidfile(project: Path, procs, marks) -> None:
    store = project / ".onlooker"
    agent = fake_agent(procs, *marks)
    (store / "agent.pid").write_text(f"{agent.pid}\n")
    assert lifecycle.running_pid(store) == agent.pid
    with pytest.raises(AlreadyRunning) as err:
        with lifecycle.acquire_pidfile(store):
            pass
    assert err.value.pid == agent.pid
    assert (store / "agent.pid").read_text().strip() == str(agent.pid)


def test_pidfile_of_another_agent_is_not_removed_by_us(project: Path) -> None:
    store = project / ".onlooker"
    with lifecycle.acquire_pidfile(store):
        (store / "agent.pid").write_text("999999999\n")  # someone replaced it meanwhile
    assert (store / "agent.pid").read_text().strip() == "999999999"


def test_status_without_agent(project: Path) -> None:
    st = lifecycle.status(project)
    assert st["running"] is False
    assert st["pid"] is None
    assert st["state"] == "not running"
    assert st["last_seen"] is None
    json.dumps(st)


def test_status_of_crashed_agent_reports_last_seen(project: Path) -> None:
    now = time.time()
    (project / ".onlooker" / "agent.json").write_text(json.dumps({
        "pid": dead_pid(), "state": "watching", "started_at": now - 3600,
        "updated_at": now - 120, "tiers": {"process": {"name": "netlink", "why": "x"}},
        "counts": {"runs": 3}, "backlog": {"hash": 2},
    }))
    st = lifecycle.status(project)
    assert st["running"] is False
    assert st["state"] == "not running"
    assert 119 <= st["last_seen"] <= 130
    assert st["uptime"] is None and st["backlog"] == {}
    assert st["last_state"] == "watching"  # it never wrote "stopped": it crashed


def test_status_of_live_agent(project: Path, procs) -> None:
    agent = fake_agent(procs)
    now = time.time()
    store = project / ".onlooker"
    (store / "agent.pid").write_text(f"{agent.pid}\n")
    (store / "agent.json").write_text(json.dumps({
        "pid": agent.pid, "state": "watching", "started_at": now - 60, "updated_at": now,
        "tiers": {"process": {"name": "poll", "why": "no netlink"}}, "backlog": {"hash": 4},
    }))
    st = lifecycle.status(project)
    assert st["running"] and st["pid"] == agent.pid and st["state"] == "watching"
    assert 59 <= st["uptime"] <= 70
    assert st["responsive"] is True
    assert st["tiers"]["process"]["name"] == "poll"


def test_not_instrumented(tmp_path: Path) -> None:
    for call in (lifecycle.status, lifecycle.start, lifecycle.stop):
        with pytest.raises(NotInstrumented, match="not instrumented"):
            call(tmp_path)


def test_stop_without_agent_returns_false(project: Path) -> None:
    assert lifecycle.stop(project) is False


# A stand-in for the interpreter: `FAKE -m onlooker.agent.daemon PROJECT` behaves like the
# daemon (pidfile, agent.json, SIGTERM -> drain with a backlog -> exit) or fails.
FAKE_PYTHON = textwrap.dedent("""\
    #!{python}
    import json, os, signal, sys, time
    from pathlib import Path
    from onlooker.agent.lifecycle import acquire_pidfile
    project = Path(sys.argv[-1]); store = project / ".onlooker"
    if os.environ.get("FAKE_AGENT") == "fail":
        print("fake agent: cannot watch: no inotify watches left", flush=True)
        sys.exit(3)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    def write(state, backlog):
        tmp = store / "agent.json.tmp"
        tmp.write_text(json.dumps({{"pid": os.getpid(), "state": state, "started_at": 1.0,
            "updated_at": time.time(), "backlog": backlog,
            "tiers": {{"process": {{"name": "poll", "why": "fake"}},
                      "files": {{"name": "inotify", "why": "fake"}}}}}}))
        os.replace(tmp, store / "agent.json")
    with acquire_pidfile(store):
        write("watching", {{}})
        while not stopping:
            time.sleep(0.01)
        for left in (3, 2, 1):
            write("stopping", {{"hash": left}})
            time.sleep(0.3)
""")


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "fakepython"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setattr(lifecycle.sys, "executable", str(path))
    return path


def test_start_then_stop_with_progress(project: Path, fake_python: Path) -> None:
    pid = lifecycle.start(project)
    store = project / ".onlooker"
    assert lifecycle.running_pid(store) == pid
    with pytest.raises(AlreadyRunning, match=f"pid {pid}"):
        lifecycle.start(project)
    seen: list[dict] = []
    assert lifecycle.stop(project, timeout=20, progress=seen.append) is True
    assert lifecycle.running_pid(store) is None
    assert not (store / "agent.pid").exists()
    assert any(s.get("backlog", {}).get("hash") for s in seen)
    assert "onlooker agent starting" in (store / "agent.log").read_text()


def test_start_failure_reports_the_agents_last_words(
    project: Path, fake_python: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_AGENT", "fail")
    with pytest.raises(AgentFailed) as err:
        lifecycle.start(project)
    assert "exited with status 3" in str(err.value)
    assert "no inotify watches left" in str(err.value)
