"""End to end: the agent keeps its word when things go wrong.

One agent per project, a SIGKILL mid-run, an inotify queue overflow, weird files in the
project, bad configs and uninstrumented folders, and `onlooker watch` stopped by Ctrl-C.
Each test starts the real agent through the CLI on a temp project and runs real scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from onlooker.store.catalog import Catalog

from .test_pipeline import (
    ONLOOKER,
    TIERS,
    cli,
    need_root,
    paths,
    runs_json,
    show_json,
    started,
    wait_for,
)

pytestmark = pytest.mark.e2e

BOTH = pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")

# Reads its input, waits until the gate file (outside the project) exists, writes its output.
HOLD = '''
import os, sys, time
src, dst, gate = sys.argv[1:4]
with open(src) as f:
    data = f.read()
deadline = time.monotonic() + 60
while not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.02)
os.makedirs(os.path.dirname(dst), exist_ok=True)
with open(dst, "w") as f:
    f.write(data.upper())
'''


def new_project(tmp_path: Path, **files: str) -> Path:
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "data").mkdir()
    for name, text in files.items():
        (project / "src" / f"{name}.py").write_text(text.lstrip())
    return project


def status_json(project: Path) -> dict:
    return json.loads(cli(project, "status", "--json").stdout)


def agent_log(project: Path) -> str:
    return (project / ".onlooker" / "agent.log").read_text(errors="replace")


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3] in (b"Z", b"X")


def integrity(store: Path, scratch: Path) -> str:
    """PRAGMA integrity_check on a copy of the catalog (with its WAL, as a crash left it)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        src = store / f"catalog.db{suffix}"
        if src.exists():
            shutil.copyfile(src, scratch / f"catalog.db{suffix}")
    conn = sqlite3.connect(scratch / "catalog.db")
    try:
        return ";".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def hash_of(path: Path) -> str:
    return "blake3:" + blake3.blake3(path.read_bytes()).hexdigest()


def versions(project: Path, rel: str | bytes) -> list[dict]:
    rel = os.fsdecode(rel)
    with Catalog(project / ".onlooker", project=project, readonly=True) as cat:
        return cat.versions(rel)


def all_asset_paths(project: Path) -> set[str]:
    conn = sqlite3.connect((project / ".onlooker" / "catalog.db").as_uri() + "?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    try:
        return {r[0] for r in conn.execute("SELECT path FROM assets")}
    finally:
        conn.close()


def no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


def one_sentence(res: subprocess.CompletedProcess, *words: str) -> None:
    """A non-zero exit with one `onlooker: ...` sentence, last on stderr (after any
    progress note such as "starting the agent ...")."""
    no_traceback(res)
    assert res.returncode == 1, (res.returncode, res.stderr, res.stdout)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("onlooker: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])


# -- one agent per project --------------------------------------------------------------------


def test_one_agent_per_project_and_stale_pidfiles_are_replaced(tmp_path):
    project = new_project(tmp_path)
    pidfile = project / ".onlooker" / "agent.pid"
    cli(project, "init")
    (project / ".onlooker" / "config.toml").write_text(TIERS["unprivileged"])
    # A stale pidfile naming a dead process...
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    cli(project, "start")
    try:
        pid = status_json(project)["pid"]
        assert pid not in (None, dead.pid) and pidfile.read_text().strip() == str(pid)
        # ...and a second start refuses, naming the agent that runs.
        second = cli(project, "start", check=False)
        one_sentence(second, "already running", f"pid {pid}")
        assert status_json(project)["pid"] == pid and not gone(pid)
    finally:
        cli(project, "stop")
    assert not pidfile.exists()
    # A pidfile naming a live process that is not an agent is stale too.
    with subprocess.Popen(["sleep", "60"]) as stranger:
        try:
            pidfile.write_text(f"{stranger.pid}\n")
            cli(project, "start")
            try:
                pid = status_json(project)["pid"]
                assert pid != stranger.pid and pidfile.read_text().strip() == str(pid)
            finally:
                cli(project, "stop")
            assert stranger.poll() is None, "stop must never signal a stranger"
        finally:
            stranger.kill()
    assert agent_log(project).count("replacing stale pidfile") == 2


def test_two_starts_at_once_make_one_agent(tmp_path):
    project = new_project(tmp_path)
    cli(project, "init")
    (project / ".onlooker" / "config.toml").write_text(TIERS["unprivileged"])
    procs = [subprocess.Popen([*ONLOOKER, "-C", str(project), "start"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [(p.wait(timeout=90), *p.communicate()) for p in procs]
        codes = sorted(code for code, _, _ in outs)
        assert codes == [0, 1], outs
        pid = status_json(project)["pid"]
        loser = next(err for code, _, err in outs if code == 1)
        assert f"already running (pid {pid})" in loser and "Traceback" not in loser, loser
        agents = [p for p in os.listdir("/proc") if p.isdigit() and _is_daemon_of(int(p), project)]
        assert agents == [str(pid)], agents
    finally:
        cli(project, "stop")


def _is_daemon_of(pid: int, project: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"onlooker.agent.daemon" in argv and os.fsencode(project.resolve()) in argv \
        and not gone(pid)


# -- SIGKILL mid-run --------------------------------------------------------------------------


@BOTH
def test_sigkill_mid_run_reattaches_the_live_run_and_loses_the_dead_one(tmp_path, tier):
    need_root(tier)
    project = new_project(tmp_path, hold=HOLD)
    (project / "data" / "a.csv").write_text("a,1\n")
    (project / "data" / "b.csv").write_text("b,2\n")
    gates = tmp_path / "gates"
    gates.mkdir()
    started(project, tier)
    procs = {}
    try:
        for name in ("a", "b"):
            procs[name] = subprocess.Popen(
                [sys.executable, "src/hold.py", f"data/{name}.csv", f"out/{name}.txt",
                 str(gates / name)], cwd=project)

        def both_running_with_inputs() -> bool:
            runs = [r for r in runs_json(project) if r["status"] == "running"]
            if len(runs) != 2:
                return False
            return all(paths(show_json(project, r["id"])["inputs"]) == {r["command"][2]}
                       for r in runs)

        wait_for(both_running_with_inputs)
        ids = {Path(r["command"][2]).stem: r["id"] for r in runs_json(project)}
        agent = status_json(project)["pid"]
        os.kill(agent, signal.SIGKILL)
        wait_for(lambda: gone(agent))
        assert integrity(project / ".onlooker", tmp_path / "after-kill") == "ok"
        st = status_json(project)
        assert st["running"] is False and st["last_state"] not in (None, "stopped"), st

        # b ends while the agent is down; a is still alive when the agent comes back.
        (gates / "b").touch()
        assert procs["b"].wait(timeout=30) == 0
        cli(project, "start")
        wait_for(lambda: show_json(project, ids["b"])["status"] != "running")
        assert show_json(project, ids["a"])["status"] == "running"
        (gates / "a").touch()
        assert procs["a"].wait(timeout=30) == 0
        wait_for(lambda: show_json(project, ids["a"])["status"] != "running"
                 and paths(show_json(project, ids["a"])["outputs"]) != set())
    finally:
        for name in ("a", "b"):
            (gates / name).touch()
        for p in procs.values():
            p.wait(timeout=30)
        cli(project, "stop")
    log = agent_log(project)
    assert f"re-attached to run {ids['a']}" in log, log
    assert f"run {ids['b']} ended while the agent was down: lost" in log, log
    assert "Traceback" not in log, log

    a = show_json(project, ids["a"])
    want = ("completed",) if tier == "privileged" else ("completed", "ended")
    assert a["status"] in want, a
    assert paths(a["inputs"]) == {"data/a.csv"}, a["inputs"]
    # out/b.txt was written by b (now lost) while the agent was down: never a's output.
    assert paths(a["outputs"]) == {"out/a.txt"}, a["outputs"]
    (out,) = a["outputs"]
    assert out["hash"] == hash_of(project / "out" / "a.txt")
    # Re-attaching adds no second root step, and no step stays `running` in an ended run.
    assert [s["pid"] for s in a["steps"]].count(procs["a"].pid) == 1, a["steps"]
    assert all(s["status"] != "running" for s in a["steps"]), a["steps"]

    b = show_json(project, ids["b"])
    assert b["status"] == "lost", b
    assert paths(b["inputs"]) == {"data/b.csv"}, b["inputs"]
    # What b wrote while nobody watched is still versioned (by the restart's scan).
    assert [v["hash"] for v in versions(project, "out/b.txt")] == [
        hash_of(project / "out" / "b.txt")]
    assert integrity(project / ".onlooker", tmp_path / "after-stop") == "ok"


# -- inotify overflow -------------------------------------------------------------------------

MANY = '''
import os, sys, time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
folder, n = sys.argv[1], int(sys.argv[2])
os.makedirs(folder, exist_ok=True)
for i in range(n):
    with open(os.path.join(folder, f"f{i:04d}.txt"), "w") as f:
        f.write(f"{folder} {i}\\n")
'''


@BOTH
def test_inotify_overflow_rescans_and_loses_nothing(tmp_path, tier):
    need_root(tier)
    try:
        original = QUEUE_LIMIT.read_text()
        QUEUE_LIMIT.write_text(original)
    except OSError:
        pytest.skip("cannot set fs.inotify.max_queued_events (needs root)")
    project = new_project(tmp_path, many=MANY)
    cli(project, "init")
    if TIERS[tier]:
        (project / ".onlooker" / "config.toml").write_text(TIERS[tier])
    # The limit is read when the agent makes its inotify instance: lower it for the start only.
    QUEUE_LIMIT.write_text("16")
    try:
        cli(project, "start")
    finally:
        QUEUE_LIMIT.write_text(original)
    assert QUEUE_LIMIT.read_text() == original
    written: list[Path] = []
    try:
        assert "inotify: kernel queue holds 16 events" in agent_log(project)
        # Whether a round overflows a 16-event queue depends on how the reader and the
        # writer share the CPUs: bigger rounds, until one does.
        for round_ in range(6):
            folder = f"out{round_}"
            subprocess.run([sys.executable, "src/many.py", folder, str(400 * 2 ** round_)],
                           cwd=project, check=True)
            written += sorted((project / folder).iterdir())
            # Let it settle: the run closed and nothing left to hash or scan.
            settle(project)
            if status_json(project)["counts"]["overflows"] > 0:
                break
        counts = status_json(project)["counts"]
        assert counts["overflows"] > 0, f"no overflow in 6 rounds: {counts}"
    finally:
        cli(project, "stop")
    log = agent_log(project)
    assert "lost events: rescanning the project" in log
    assert "Traceback" not in log, log
    missing = [p for p in written
               if [v["hash"] for v in versions(project, str(p.relative_to(project)))][-1:]
               != [hash_of(p)]]
    assert missing == [], f"{len(missing)} of {len(written)} files without a right version"
    # Each round's files are the outputs of its run (one run alive when each was written).
    runs = runs_json(project)
    for r in runs:
        folder = r["command"][2]
        outs = paths(show_json(project, r["id"])["outputs"])
        # (what to look at when it fails: a rare flake under a full suite's load)
        said = [ln for ln in log.splitlines() if not ln.startswith(" ")
                and any(w in ln for w in ("run ", "lost events", "overflow", "no run"))]
        assert outs == {str(p.relative_to(project)) for p in written
                        if p.parent.name == folder}, (
            folder, len(outs), [(x["id"], x["command"], x["status"], x["started_at"],
                                 x["ended_at"]) for x in runs], said[-40:])


def _settled(project: Path, since: float) -> bool:
    """The agent said, after `since` (a wall time), that it has nothing left to do."""
    st = status_json(project)
    b = st["backlog"]
    # A status written before `since` can be from before the command being waited for.
    return ((st["updated_at"] or 0) > since and st["counts"]["runs_open"] == 0
            and b["queue"] == 0 and b["hashing"] == 0 and b["pending_events"] == 0
            and not b["scanning"])


def settle(project: Path, timeout: float = 60) -> None:
    since = time.time()
    wait_for(lambda: _settled(project, since), timeout=timeout)


# -- weird files ------------------------------------------------------------------------------

WEIRD = '''
import os, socket, sys, threading, time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
outside = os.environ["OUTSIDE"]  # not argv: a file argv names is an input wherever it is
with open("data/in.csv") as f:
    rows = f.read()
os.makedirs("out", exist_ok=True)
os.mkfifo("out/pipe")


def drain():
    with open("out/pipe", "rb") as r:
        r.read()


reader = threading.Thread(target=drain)
reader.start()
with open("out/pipe", "wb") as w:  # a close after write on a FIFO: never to be hashed
    w.write(b"through a pipe\\n")
reader.join()
s = socket.socket(socket.AF_UNIX)
s.bind("out/sock")
os.symlink(outside, "out/outside-link")
os.symlink(os.path.dirname(outside), "out/outside-dir")
os.symlink("nowhere", "out/broken")
with open("out/locked.txt", "w") as f:
    f.write("mode 000\\n")
os.chmod("out/locked.txt", 0)
with open("out/result.txt", "w") as f:
    f.write(rows.upper())
s.close()
'''


@BOTH
def test_weird_files_do_not_stop_the_agent_and_links_are_not_followed(tmp_path, tier):
    need_root(tier)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("never in the catalog\n")
    (outside / "deep").mkdir()
    (outside / "deep" / "more.txt").write_text("nor this\n")
    project = new_project(tmp_path, weird=WEIRD)
    (project / "data" / "in.csv").write_text("x,1\n")
    # Present at start-up, for the scan to meet.
    os.mkfifo(project / "data" / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(project / "data" / "sock"))
    (project / "data" / "to-secret").symlink_to(secret)
    (project / "data" / "to-outside").symlink_to(outside)
    (project / "data" / "broken").symlink_to(project / "missing")
    locked = project / "data" / "locked.csv"
    locked.write_text("l,4\n")
    locked.chmod(0)
    churn = project / "data" / "churn.bin"
    started(project, tier)
    try:
        # Rewritten again and again by a person while the agent wants to hash it.
        for i in range(25):
            churn.write_bytes(bytes([i]) * (2 << 20))
            time.sleep(0.02)
        # Written, then deleted about when it would be hashed.
        doomed = project / "data" / "doomed.bin"
        doomed.write_bytes(b"d" * (8 << 20))
        time.sleep(0.25)
        doomed.unlink()
        subprocess.run([sys.executable, "src/weird.py"], cwd=project, check=True,
                       env={**os.environ, "OUTSIDE": str(secret)})
        settle(project)
        st = status_json(project)
        assert st["running"] and st["responsive"] and st["state"] == "watching", st
        runs = runs_json(project)
        assert len(runs) == 1, runs
        run_id = runs[0]["id"]
    finally:
        listener.close()
        cli(project, "stop")
    log = agent_log(project)
    assert "Traceback" not in log, log
    run = show_json(project, run_id)
    assert run["status"] in ("completed", "ended"), run
    assert paths(run["inputs"]) == {"data/in.csv"}, run["inputs"]
    want = {"out/result.txt"}
    if os.geteuid() == 0:  # root reads a mode-000 file: its content is recorded
        want.add("out/locked.txt")
    assert paths(run["outputs"]) == want, run["outputs"]
    for e in run["outputs"]:
        assert e["hash"] == hash_of(project / e["path"]), e
    known = all_asset_paths(project)
    for special in ("data/fifo", "data/sock", "out/pipe", "out/sock", "data/broken",
                    "out/broken"):
        assert special not in known, special
    # Links are never followed out of the project, whether as files or as folders.
    followed = {p for p in known if "to-secret" in p or "to-outside" in p or "outside-" in p
                or "secret" in p or "more.txt" in p}
    assert followed == set(), followed
    if os.geteuid() == 0:
        assert [v["hash"] for v in versions(project, "data/locked.csv")] == [hash_of(locked)]
    else:
        assert "data/locked.csv" in log  # skipped, with a reason
    # The file rewritten under the hasher: its last version is its last content, never torn.
    churn_versions = versions(project, "data/churn.bin")
    assert churn_versions and churn_versions[-1]["hash"] == hash_of(churn), churn_versions
    good = {"blake3:" + blake3.blake3(bytes([i]) * (2 << 20)).hexdigest() for i in range(25)}
    assert {v["hash"] for v in churn_versions} <= good, "a torn hash was recorded"
    doomed_versions = versions(project, "data/doomed.bin")
    assert {v["hash"] for v in doomed_versions} <= {
        "blake3:" + blake3.blake3(b"d" * (8 << 20)).hexdigest()}


NON_UTF8 = '''
import time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
with open("data/in.csv") as f:
    rows = f.read()
with open(b"out/r\\xe9sultat.txt", "w") as f:
    f.write(rows)
'''


def test_non_utf8_file_names_are_recorded(tmp_path):
    project = new_project(tmp_path, latin=NON_UTF8)
    (project / "data" / "in.csv").write_text("x,1\n")
    (project / "out").mkdir()
    before = project / os.fsdecode(b"data/caf\xe9.csv")  # met by the start-up scan
    before.write_text("c,3\n")
    started(project, "unprivileged")
    try:
        settle(project, timeout=30)
        subprocess.run([sys.executable, "src/latin.py"], cwd=project, check=True)
        since = time.time()
        wait_for(lambda: not status_json(project)["running"] or _settled(project, since),
                 timeout=30)
        assert status_json(project)["running"], agent_log(project)[-3000:]
        (run,) = runs_json(project)
        table = cli(project, "show", str(run["id"]), check=False)
        no_traceback(table)
        assert table.returncode == 0, table.stderr
    finally:
        cli(project, "stop")
    assert "Traceback" not in agent_log(project)
    name = os.fsdecode(b"out/r\xe9sultat.txt")
    run = show_json(project, run["id"])
    # The catalog keeps bytes that are not UTF-8 as \xNN escapes (as `ls -b` shows them).
    assert paths(run["outputs"]) == {"out/r\\xe9sultat.txt"}, run["outputs"]
    assert run["outputs"][0]["hash"] == hash_of(project / name)
    assert [v["hash"] for v in versions(project, os.fsdecode(b"data/caf\xe9.csv"))] == [
        hash_of(before)]


# -- bad configs and uninstrumented folders ---------------------------------------------------


@pytest.mark.parametrize("config, words", [
    ("[capture\nprocess = 'poll'\n", ("config.toml",)),
    ("[capture]\nproces = 'poll'\n", ("capture.proces",)),
    ("[capture]\npoll_hz = 'fast'\n", ("capture.poll_hz",)),
], ids=["invalid-toml", "unknown-key", "wrong-type"])
def test_a_bad_config_is_one_sentence(tmp_path, config, words):
    project = new_project(tmp_path)
    cli(project, "init")
    (project / ".onlooker" / "config.toml").write_text(config)
    one_sentence(cli(project, "start", check=False), *words)
    assert not (project / ".onlooker" / "agent.pid").exists()
    watch = subprocess.run([*ONLOOKER, "-C", str(project), "watch"], capture_output=True,
                           text=True, timeout=60)
    one_sentence(watch, *words)
    # Reading the catalog needs no config: it works, or fails in one sentence.
    for args in (("runs",), ("runs", "--json"), ("show", "last"), ("show", "1", "--json")):
        res = cli(project, *args, check=False)
        no_traceback(res)
        if res.returncode != 0:
            one_sentence(res)
    assert cli(project, "stop", check=False).returncode == 0
    # The guide: start, watch and status refuse to go on until it is fixed. A status that
    # works must at least name the problem rather than report all is well.
    st = cli(project, "status", check=False)
    if st.returncode != 0:
        one_sentence(st, *words)
    else:
        no_traceback(st)
        assert all(w in st.stdout + st.stderr for w in words), (st.stdout, st.stderr)


def test_an_uninstrumented_folder_is_one_sentence(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for args in (("start",), ("stop",), ("status",), ("watch",), ("runs",), ("runs", "--json"),
                 ("show", "last"), ("show", "1", "--json")):
        res = subprocess.run([*ONLOOKER, "-C", str(plain), *args], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        if args == ("stop",) and res.returncode == 0:
            continue  # allowed: stop is unconditional
        if args == ("status",) and res.returncode == 0:
            continue
        one_sentence(res, "init")
    assert not (plain / ".onlooker").exists()


def test_a_damaged_catalog_is_one_sentence(tmp_path):
    project = new_project(tmp_path)
    cli(project, "init")
    (project / ".onlooker" / "catalog.db").write_bytes(b"this is not a database" * 100)
    for args in (("runs",), ("show", "last")):
        one_sentence(cli(project, *args, check=False), "catalog.db")
    # start may show the agent's last words below its sentence, but no traceback.
    res = cli(project, "start", check=False)
    no_traceback(res)
    assert res.returncode == 1 and "catalog.db" in res.stderr, res.stderr
    assert not (project / ".onlooker" / "agent.pid").exists()


# -- onlooker watch and Ctrl-C ----------------------------------------------------------------


@BOTH
def test_watch_in_the_foreground_stops_cleanly_on_sigint(tmp_path, tier):
    need_root(tier)
    project = new_project(tmp_path, hold=HOLD)
    (project / "data" / "a.csv").write_text("a,1\n")
    gate = tmp_path / "gate"
    cli(project, "init")
    if TIERS[tier]:
        (project / ".onlooker" / "config.toml").write_text(TIERS[tier])
    watch = subprocess.Popen([*ONLOOKER, "-C", str(project), "watch"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: status_json(project)["state"] == "watching" or watch.poll() is not None,
                 timeout=60)
        assert watch.poll() is None, watch.communicate()
        assert status_json(project)["pid"] == watch.pid
        # The foreground agent is the project's one agent.
        one_sentence(cli(project, "start", check=False), f"pid {watch.pid}")
        run = subprocess.Popen([sys.executable, "src/hold.py", "data/a.csv", "out/a.txt",
                                str(gate)], cwd=project)
        wait_for(lambda: [r["status"] for r in runs_json(project)] == ["running"])
        gate.touch()
        assert run.wait(timeout=30) == 0
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=60)
    finally:
        gate.touch()
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert not (project / ".onlooker" / "agent.pid").exists()
    st = status_json(project)
    assert st["running"] is False and st["last_state"] == "stopped", st
    (r,) = runs_json(project)
    full = show_json(project, r["id"])
    assert full["status"] in (("completed",) if tier == "privileged" else ("completed", "ended"))
    assert paths(full["inputs"]) == {"data/a.csv"}
    assert paths(full["outputs"]) == {"out/a.txt"}


TRAIN_WITH_KEY = '''
import os, sys, time
time.sleep(0.3)
with open("data/in.csv") as f:
    rows = f.read()
os.makedirs("out", exist_ok=True)
with open("out/model.txt", "w") as f:
    f.write(rows.upper())
'''


@BOTH
def test_secrets_reach_no_file_under_onlooker(tmp_path, tier):
    # Not the catalog, not the agent's log, not the launcher's records: nowhere.
    need_root(tier)
    project = new_project(tmp_path, train=TRAIN_WITH_KEY)
    (project / "data" / "in.csv").write_text("x,1\n")
    key, token, password = "sk-live-4f9a1c0b7e2d", "wandb-7c1e9f3a5b", "hunter2-5e8d7c"
    env = dict(os.environ, WANDB_API_KEY=token)
    started(project, tier)
    try:
        subprocess.run([sys.executable, "src/train.py", "--api-key", key, "--lr", "0.1"],
                       cwd=project, env=env, check=True)
        subprocess.run([*ONLOOKER, "-C", str(project), "run", "--", sys.executable,
                        "src/train.py", f"--password={password}"], cwd=project, env=env,
                       check=True, capture_output=True)
        wait_for(lambda: len(runs_json(project)) == 2, timeout=30)
    finally:
        cli(project, "stop")
    runs = sorted(runs_json(project), key=lambda r: r["id"])
    first = show_json(project, runs[0]["id"])
    assert first["command"][-4:] == ["--api-key", "***", "--lr", "0.1"], first["command"]
    assert first["params"]["lr"] == 0.1
    assert paths(first["outputs"]) == {"out/model.txt"}
    second = show_json(project, runs[1]["id"])
    assert second["command"][-1] == "--password=***", second["command"]
    leaks = []
    for path in (project / ".onlooker").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [(str(path), s) for s in (key, token, password) if s.encode() in data]
    assert leaks == []
