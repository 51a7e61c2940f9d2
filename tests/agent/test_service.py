"""The privileged service without root: its unit, its protocol's refusals, its registry
and the crash-loop policy of its keepers (agent/service/). tests/e2e/test_service.py
runs it as root with two real users."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlooker.agent import config, lifecycle, service
from onlooker.agent.service import Peer, Service
from onlooker.cli.main import cli

ME = os.getuid()
OTHER = ME + 4242


def project(tmp_path: Path, name: str = "proj") -> Path:
    p = tmp_path / name
    p.mkdir()
    config.instrument(p)
    return p


class FakeKeeper:
    """Stands in for the agent's keeper: the protocol is tested, not the agent."""

    made: list[FakeKeeper] = []

    def __init__(self, project: str, uid: int) -> None:
        self.project, self.uid = project, uid
        self.state, self.ended = "watching", False
        self.first = threading.Event()
        self.first.set()
        FakeKeeper.made.append(self)

    def begin(self) -> FakeKeeper:
        return self

    def end(self, timeout: float = 600.0) -> bool:
        self.ended = True
        return True

    def view(self) -> dict:
        return {"project": self.project, "uid": self.uid, "state": self.state}


@pytest.fixture
def svc(tmp_path):
    return Service(tmp_path / "run" / "s.sock", tmp_path / "state", keeper=FakeKeeper)


def folder_fd(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY)


def register(svc: Service, peer: Peer, path: Path) -> dict:
    fd = folder_fd(path)
    try:
        return svc.handle(peer, {"op": "register", "project": str(path)}, [fd])
    finally:
        os.close(fd)


# -- the unit --------------------------------------------------------------------------------


def test_the_unit_runs_this_interpreters_service_as_root_with_only_the_tiers_capabilities():
    text = service.unit_text(service.service_argv())
    (exec_line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    assert exec_line == (f"ExecStart={os.path.abspath(sys.executable)} -m onlooker.cli "
                         "service run")
    assert "Restart=on-failure" in text.splitlines()
    caps = next(ln for ln in text.splitlines() if ln.startswith("CapabilityBoundingSet="))
    assert set(caps.split("=", 1)[1].split()) == {
        "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE",
        "CAP_SYS_PTRACE", "CAP_CHOWN", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
    assert "RestrictAddressFamilies=AF_UNIX AF_NETLINK" in text  # netlink stays allowed
    assert "WantedBy=multi-user.target" in text


def test_systemd_finds_nothing_to_say_about_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "onlooker.service"
    unit.write_text(service.unit_text(service.service_argv(Path("/srv/my socks/s.sock"))))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    said = [ln for ln in (res.stderr + res.stdout).splitlines() if str(unit) in ln]
    assert said == [] and res.returncode == 0, res.stderr


def test_an_odd_socket_path_is_quoted_for_systemd():
    argv = service.service_argv(Path("/srv/my socks/100%.sock"))
    line = next(ln for ln in service.unit_text(argv).splitlines() if ln.startswith("ExecStart"))
    assert line.endswith(' --socket "/srv/my socks/100%%.sock"')


def test_install_without_systemd_writes_the_unit_and_says_it_did_not_start(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    calls = []
    unit = tmp_path / "systemd" / "onlooker.service"
    done = service.install(unit_path=unit, systemd=tmp_path / "no-systemd",
                           run=lambda *a, **k: calls.append(a))
    assert done == {"unit": str(unit), "started": False} and calls == []
    assert unit.stat().st_mode & 0o777 == 0o644
    assert "ExecStart=" in unit.read_text()


def test_install_with_systemd_reloads_and_enables_then_uninstall_undoes_it(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (tmp_path / "systemd-running").mkdir()
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")
    unit = tmp_path / "onlooker.service"
    kw = {"unit_path": unit, "systemd": tmp_path / "systemd-running", "run": run}
    assert service.install(**kw)["started"] is True
    assert calls == [["systemctl", "daemon-reload"],
                     ["systemctl", "enable", "--now", "onlooker.service"]]
    calls.clear()
    assert service.uninstall(**kw) is True and not unit.exists()
    assert calls == [["systemctl", "disable", "--now", "onlooker.service"],
                     ["systemctl", "daemon-reload"]]
    assert service.uninstall(**kw) is False


def test_a_failing_systemctl_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (tmp_path / "sd").mkdir()

    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus\n")
    with pytest.raises(service.ServiceError,
                       match="^systemctl daemon-reload failed: Failed to connect to bus$"):
        service.install(unit_path=tmp_path / "u", systemd=tmp_path / "sd", run=run)


@pytest.mark.parametrize("args", [["service", "install"], ["service", "uninstall"],
                                  ["service", "run", "--socket", "/nonexistent/s.sock"]])
def test_the_root_commands_refuse_others_in_one_sentence(args, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    assert res.output.strip().endswith("needs root: run it with sudo"), res.output
    assert len(res.output.strip().splitlines()) == 1


def test_the_install_command_without_systemd_exits_1_and_says_how_to_run_it(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(service.unit, "UNIT_PATH", tmp_path / "onlooker.service")
    monkeypatch.setattr(service.unit, "SYSTEMD_RUNNING", tmp_path / "absent")
    res = CliRunner().invoke(cli, ["service", "install"])
    assert res.exit_code == 1
    assert "systemd is not running here" in res.output
    assert "-m onlooker.cli service run' as root under your own supervisor" in res.output
    assert (tmp_path / "onlooker.service").exists()


# -- the protocol's refusals ---------------------------------------------------------------


@pytest.mark.parametrize(("request_", "says"), [
    (["list"], "a request is one JSON object"),
    ({"op": "explode", "project": "/x"}, "unknown request 'explode'"),
    ({"op": "register", "project": "relative/proj"}, "by an absolute path"),
    ({"op": "register"}, "by an absolute path"),
    ({"op": "register", "project": "/x"}, "carries the project folder's open file descriptor"),
    ({"op": "unregister", "project": "/nowhere"}, "is not one of your registered projects"),
])
def test_malformed_requests_are_refused_in_one_sentence(svc, request_, says):
    reply = svc.handle(Peer(1, ME, ME), request_, [])
    assert reply["ok"] is False and says in reply["error"]
    assert "\n" not in reply["error"]


def test_only_the_folders_owner_may_register_it(svc, tmp_path):
    p = project(tmp_path)
    reply = register(svc, Peer(1, OTHER, OTHER), p)
    assert reply == {"ok": False,
                     "error": f"{p} belongs to another user: only its owner can register it"}
    assert svc.keepers == {}


def test_a_folder_not_instrumented_or_with_a_link_in_its_store_is_refused(svc, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert "is not instrumented: run 'onlooker init'" in register(svc, Peer(1, ME, ME),
                                                                  bare)["error"]
    p = project(tmp_path)
    (p / ".onlooker" / "agent.log").symlink_to("/etc/passwd")  # root would append to it
    reply = register(svc, Peer(1, ME, ME), p)
    assert "agent.log is not a plain file" in reply["error"]


def test_a_file_descriptor_that_is_not_a_folder_is_refused(svc, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    fd = os.open(f, os.O_RDONLY)
    try:
        reply = svc.handle(Peer(1, ME, ME), {"op": "register", "project": str(f)}, [fd])
    finally:
        os.close(fd)
    assert reply["error"] == f"{f} is not a folder"


def test_users_see_and_unregister_only_their_own_projects(svc, tmp_path):
    p = project(tmp_path)
    mine = register(svc, Peer(1, ME, ME), p)
    assert mine["ok"] and mine["already"] is False and mine["project"] == str(p)
    assert register(svc, Peer(1, ME, ME), p)["already"] is True  # idempotent
    assert len(FakeKeeper.made) >= 1 and str(p) in svc.keepers
    assert svc.handle(Peer(1, OTHER, OTHER), {"op": "list"}, [])["projects"] == []
    assert [r["project"] for r in svc.handle(Peer(1, ME, ME), {"op": "list"}, [])
            ["projects"]] == [str(p)]
    assert [r["project"] for r in svc.handle(Peer(1, 0, 0), {"op": "list"}, [])
            ["projects"]] == [str(p)]  # root sees all
    other = svc.handle(Peer(1, OTHER, OTHER), {"op": "unregister", "project": str(p)}, [])
    assert other == {"ok": False, "error": f"{p} is not one of your registered projects"}
    keeper = svc.keepers[str(p)]
    done = svc.handle(Peer(1, ME, ME), {"op": "unregister", "project": str(p)}, [])
    assert done["ok"] and keeper.ended and svc.keepers == {}


def test_the_registry_is_root_only_and_survives_a_restart(svc, tmp_path):
    p = project(tmp_path)
    register(svc, Peer(1, ME, ME), p)
    reg = svc.state_dir / service.REGISTRY_NAME
    assert reg.stat().st_mode & 0o777 == 0o600
    again = Service(svc.socket_path, svc.state_dir, keeper=FakeKeeper)
    again.relaunch()
    assert list(again.keepers) == [str(p)] and again.keepers[str(p)].uid == ME


def test_a_corrupt_registry_is_kept_aside_and_the_service_starts_empty(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / service.REGISTRY_NAME).write_text("{not json")
    svc = Service(tmp_path / "s.sock", state, keeper=FakeKeeper)
    svc.relaunch()
    assert svc.keepers == {}
    assert (state / "projects.json.bad").read_text() == "{not json"


# -- through the socket ----------------------------------------------------------------------


@pytest.fixture
def serving(tmp_path, monkeypatch):
    svc = Service(tmp_path / "run" / "s.sock", tmp_path / "state", keeper=FakeKeeper)
    svc.claim()
    stop = threading.Event()
    thread = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    thread.start()
    monkeypatch.setenv(service.SOCKET_ENV, str(svc.socket_path))
    yield svc
    stop.set()
    thread.join(timeout=5)
    svc.shutdown()


def test_a_client_registers_through_the_socket_with_its_credentials(serving, tmp_path):
    assert serving.socket_path.stat().st_mode & 0o777 == 0o666
    assert serving.socket_path.parent.stat().st_mode & 0o777 == 0o755
    p = project(tmp_path)
    entry = service.register(p)
    assert entry["project"] == str(p) and entry["uid"] == ME
    assert service.registration(p)["state"] == "watching"
    assert service.stop_for(p) is True
    assert service.registration(p) is None


def test_a_request_that_is_not_json_is_answered_in_one_sentence(serving):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(serving.socket_path))
        s.sendall(b"register /etc\n")
        assert s.recv(4096) == b'{"ok": false, "error": "a request is one line of JSON"}\n'


def test_a_second_service_on_the_same_socket_refuses(serving, tmp_path):
    second = Service(serving.socket_path, tmp_path / "other-state", keeper=FakeKeeper)
    with pytest.raises(service.ServiceError,
                       match=rf"^another onlooker service \(pid {os.getpid()}\) already "
                             rf"listens on {serving.socket_path}$"):
        second.claim()
    second.shutdown()
    assert serving.socket_path.exists()  # the refused one took nothing away


def test_init_says_one_line_when_the_socket_is_there_but_nobody_listens(tmp_path,
                                                                        monkeypatch):
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()  # the file stays, nothing listens: a service that died
    monkeypatch.setenv(service.SOCKET_ENV, str(dead))
    res = CliRunner().invoke(cli, ["init", str(tmp_path / "p")])
    assert res.exit_code == 0
    notes = [ln for ln in res.output.splitlines() if "service" in ln]
    assert notes == ["note: the onlooker service did not take this project (the onlooker "
                     f"service is not running (nothing listens on {dead})); 'onlooker start' "
                     "runs the agent as you"]


def test_init_without_a_service_is_as_before(tmp_path, monkeypatch):
    monkeypatch.setenv(service.SOCKET_ENV, str(tmp_path / "absent.sock"))
    res = CliRunner().invoke(cli, ["init", str(tmp_path / "p")])
    assert res.exit_code == 0
    assert res.output.splitlines() == [
        f"instrumented {tmp_path / 'p'}",
        "next: 'onlooker start' to watch it, then run your scripts as usual"]


# -- the keeper's restarts -------------------------------------------------------------------


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _keeper(p: Path, start, **kw) -> service.Keeper:
    return service.Keeper(str(p), ME, start=start, stop=lambda *a, **k: False,
                          backoff=(0.01,), **kw).begin()


def test_a_killed_agent_is_restarted(tmp_path):
    p = project(tmp_path)
    procs: list[subprocess.Popen] = []

    def start(_project):
        procs.append(subprocess.Popen(["sleep", "60"]))
        return procs[-1].pid
    k = _keeper(p, start)
    try:
        _wait(lambda: k.state == "watching" and k.pid == procs[0].pid)
        procs[0].kill()
        _wait(lambda: len(procs) == 2 and k.state == "watching")
        assert k.pid == procs[1].pid and k.restarts == 1
    finally:
        k.end()
        for proc in procs:
            proc.kill()
            proc.wait()


def test_an_agent_that_keeps_dying_is_marked_failed_with_what_it_logged(tmp_path):
    p = project(tmp_path)
    log_path = p / ".onlooker" / lifecycle.LOG_NAME
    said = "the catalog is damaged; the agent stops"
    starts = []

    def start(_project):
        starts.append(1)
        with open(log_path, "a") as f:
            f.write("2026-01-01 10:00:00,000 INFO onlooker.agent.probes.gpu: gpu: NVML "
                    "cannot start: no library\n"
                    f"2026-01-01 10:00:01,000 ERROR onlooker.agent.daemon: {said}\n")
        return subprocess.Popen(["true"]).pid
    k = _keeper(p, start)
    _wait(lambda: k.state == "failed")
    assert len(starts) == service.FAIL_AFTER and k.reason == said


def test_a_start_that_cannot_succeed_is_failed_at_once(tmp_path):
    p = project(tmp_path)

    def start(_project):
        raise config.ConfigError("setting 'capture.poll_hz' in config.toml must be positive")
    k = _keeper(p, start)
    _wait(lambda: k.state == "failed")
    assert k.restarts == 0 and "poll_hz" in k.reason


def test_a_project_gone_is_missing_and_not_restarted(tmp_path):
    p = project(tmp_path)
    gone = tmp_path / "moved"
    p.rename(gone)
    k = _keeper(p, lambda _p: pytest.fail("started an agent on a missing project"))
    _wait(lambda: k.state == "missing")
    assert k.reason == f"the project folder {p} is gone"


def test_start_status_and_stop_in_a_served_project_go_through_the_service(serving, tmp_path):
    p = project(tmp_path)
    runner = CliRunner()
    started = runner.invoke(cli, ["-C", str(p), "start"])
    assert started.exit_code == 0, started.output
    assert started.output.startswith(f"the onlooker service watches {p} (")
    assert lifecycle.running_pid(p / ".onlooker") is None  # no second agent of its own
    listed = json.loads(runner.invoke(cli, ["service", "status", "--json"]).output)
    assert listed["running"] is True and listed["pid"] == os.getpid()
    assert [e["project"] for e in listed["projects"]] == [str(p)]
    st = json.loads(runner.invoke(cli, ["-C", str(p), "status", "--json"]).output)
    assert st["service"]["state"] == "watching"
    stopped = runner.invoke(cli, ["-C", str(p), "stop"])
    assert stopped.exit_code == 0 and "no longer watches this project" in stopped.output
    assert service.registration(p) is None
    st = json.loads(runner.invoke(cli, ["-C", str(p), "status", "--json"]).output)
    assert st["service"] is None


# -- what one user can do to the others --------------------------------------------------


def _overflow(path: Path) -> tuple[dict, dict]:
    """As one user: hold as many connections open as one user may, then ask once more
    (the answer), then free one and ask again (the answer once one is free)."""
    held = []
    for _ in range(service.MAX_CONNECTIONS_PER_USER):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        held.append(s)
    with socket.socket(socket.AF_UNIX) as extra:
        extra.settimeout(5)
        extra.connect(str(path))
        refused = json.loads(extra.makefile().readline())
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the freed slot is given back once its thread has seen the close
        try:
            again = service.call({"op": "list"}, path=path)
            break
        except service.ServiceRefused:
            assert time.monotonic() < deadline, "the freed connection never counted"
            time.sleep(0.05)
    for s in held:
        s.close()
    return refused, again


@pytest.fixture
def reachable(tmp_path, monkeypatch):
    """A service on a socket any user can reach (pytest's tmp_path is root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="onlooker-svc-"))
    base.chmod(0o755)
    svc = Service(base / "run" / "s.sock", tmp_path / "state", keeper=FakeKeeper)
    svc.claim()
    stop = threading.Event()
    thread = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    thread.start()
    yield svc
    stop.set()
    thread.join(timeout=5)
    svc.shutdown()
    shutil.rmtree(base, ignore_errors=True)


def test_one_user_cannot_hold_every_connection_of_the_service(reachable):
    serving = reachable
    if os.geteuid() != 0:
        refused, again = _overflow(serving.socket_path)
    else:  # root is not counted: the connections are made by another uid, in a child
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(r)
                os.setgid(OTHER)
                os.setgroups([])
                os.setuid(OTHER)
                os.write(w, json.dumps(_overflow(serving.socket_path)).encode())
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r) as f:
            got = f.read()
        assert os.waitpid(child, 0)[1] == 0, "the child could not connect"
        refused, again = json.loads(got)
    assert refused["ok"] is False
    assert refused["error"].endswith(
        f"already has {service.MAX_CONNECTIONS_PER_USER} requests open at the onlooker "
        "service, the most one user may have at once: try again when they have been answered")
    assert again["ok"] is True


def test_a_folder_name_with_a_newline_or_an_escape_is_shown_escaped(serving, tmp_path, caplog):
    p = tmp_path / "evil\nregistered etc for root\x1b[2J"
    p.mkdir()
    config.instrument(p)
    with caplog.at_level("INFO", logger="onlooker.agent.service.supervisor"):
        service.register(p)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registered")]
    assert said and all("\n" not in m and "\x1b" not in m for m in said)
    assert "evil\\nregistered etc for root\\x1b[2J" in said[0]
    out = CliRunner().invoke(cli, ["service", "status"]).output
    assert "\x1b" not in out and "evil\\nregistered etc for root\\x1b[2J" in out
    assert not any(ln.startswith("registered etc") for ln in out.splitlines())
    assert "\x1b" not in service.watching_line({"state": "watching", "project": str(p)})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder away")
def test_a_folder_that_changed_owner_is_registered_anew_for_its_new_owner(svc, tmp_path):
    p = project(tmp_path)
    first = register(svc, Peer(1, ME, ME), p)
    old = svc.keepers[str(p)]
    assert first["uid"] == ME
    os.chown(p, OTHER, OTHER)
    again = register(svc, Peer(1, OTHER, OTHER), p)
    assert again["ok"] and again["already"] is False and again["uid"] == OTHER
    assert old.ended and svc.keepers[str(p)] is not old
    assert svc.registry.projects[str(p)]["uid"] == OTHER
