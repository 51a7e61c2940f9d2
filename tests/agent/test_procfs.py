"""procfs against the real kernel: a child process we control."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from onlooker.agent import clock
from onlooker.agent.probes import procfs

# The child signals readiness by printing a line once its files are open.
CHILD = r"""
import sys, time
out = open(sys.argv[1], "w")
inp = open(sys.argv[2], "r")
print("ready", flush=True)
time.sleep(30)
"""

BAD_ARG = os.fsdecode(b"caf\xe9")  # not UTF-8: survives as a surrogate escape


def wait_for(cond, timeout=5.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout:.1f} s")


@pytest.fixture
def child(tmp_path):
    out = tmp_path / "out file.txt"
    inp = tmp_path / "in.txt"
    inp.write_text("x")
    env = dict(os.environ, ONLOOKER_TEST_VAR="a=b c")
    argv = [sys.executable, "-c", CHILD, str(out), str(inp), "two words", BAD_ARG]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    yield proc, argv, out, inp
    proc.kill()
    proc.wait()


def test_read_info_describes_the_child(child, tmp_path):
    proc, argv, _, _ = child
    info = procfs.read_info(proc.pid)
    assert info is not None
    assert info.pid == proc.pid
    assert info.ppid == os.getpid()
    assert info.argv == tuple(argv)
    assert info.argv[-2] == "two words" and info.argv[-1] == BAD_ARG
    assert info.cwd == str(tmp_path)
    assert info.exe == os.path.realpath(sys.executable)
    assert info.uid == os.getuid()
    assert info.ancestors[0] == os.getpid()
    assert info.ancestors[-1] == 1
    assert ("ONLOOKER_TEST_VAR", "a=b c") in info.environ
    # Started within the last minute, on the agent clock.
    assert clock.now() - 60 < info.started <= clock.now() + 0.02


def test_read_info_without_environ(child):
    proc = child[0]
    info = procfs.read_info(proc.pid, with_environ=False)
    assert info is not None and info.environ == ()


def test_read_info_none_for_gone_kernel_thread_and_thread():
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert procfs.read_info(dead.pid) is None
    assert procfs.read_info(2) is None  # kthreadd
    kthreads = [p for p in procfs.list_pids() if procfs.stat_brief(p) and
                procfs.stat_brief(p)[1] == 2]
    if kthreads:
        assert procfs.read_info(kthreads[0]) is None
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert t.native_id != os.getpid()
        assert procfs.read_info(t.native_id) is None
    finally:
        stop.set()
        t.join()


def test_alive_and_pid_reuse(child):
    proc = child[0]
    info = procfs.read_info(proc.pid)
    assert procfs.alive(proc.pid, info.start_ticks)
    # Same pid, another start time: another process.
    assert not procfs.alive(proc.pid, info.start_ticks + 1)
    proc.kill()
    proc.wait()
    assert not procfs.alive(proc.pid, info.start_ticks)


def test_open_files_shows_writable_and_readonly(child):
    proc, _, out, inp = child
    files = procfs.open_files(proc.pid)
    assert (str(out), True) in files
    assert (str(inp), False) in files
    assert not any(p.startswith(("/dev/", "pipe:", "socket:")) for p, _ in files)
    only = procfs.open_files(proc.pid, keep=lambda p: p.endswith(".txt") and "out" in p)
    assert only == [(str(out), True)]


def test_open_files_skips_deleted_and_gone(tmp_path):
    gone = tmp_path / "gone.bin"
    with open(gone, "w"):
        gone.unlink()
        paths = [p for p, _ in procfs.open_files(os.getpid())]
        assert str(gone) not in paths
    assert procfs.open_files(2**22 + 1) == []


def test_list_pids_and_descendants():
    proc = subprocess.Popen(["sh", "-c", "sleep 5 & wait"])
    try:
        pids = procfs.list_pids()
        assert os.getpid() in pids and proc.pid in pids
        def sleeping_kids():
            kids = procfs.descendants(proc.pid)
            infos = [procfs.read_info(k) for k in kids]
            return kids if [i.argv for i in infos if i] == [("sleep", "5")] else None

        kids = wait_for(sleeping_kids)
        assert len(kids) == 1
        assert proc.pid in procfs.descendants(os.getpid())
    finally:
        for pid in procfs.descendants(proc.pid):
            os.kill(pid, 9)
        proc.kill()
        proc.wait()
    assert procfs.descendants(proc.pid) == []


def test_zombie_exit_codes():
    exited = subprocess.Popen(["sh", "-c", "exit 7"])
    killed = subprocess.Popen(["sleep", "30"])
    running = subprocess.Popen(["sleep", "30"])
    try:
        killed.terminate()
        # Not reaped: they stay zombies until wait().
        assert wait_for(lambda: procfs.zombie_exit(exited.pid)) == (7, None)
        assert wait_for(lambda: procfs.zombie_exit(killed.pid)) == (None, 15)
        assert procfs.zombie_exit(running.pid) is None
        assert not procfs.alive(exited.pid, procfs.stat_brief(exited.pid)[2])
    finally:
        running.kill()
        for p in (exited, killed, running):
            p.wait()
    assert procfs.zombie_exit(exited.pid) is None


def test_comm_with_parens_and_spaces(tmp_path):
    # A comm with ") (" must not confuse the stat parser.
    exe = tmp_path / "a) (b c"
    os.symlink("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "5"])
    try:
        def after_exec():
            info = procfs.read_info(proc.pid)
            return info if info and info.argv[:1] == (str(exe),) else None

        info = wait_for(after_exec)
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            assert b"(a) (b c)" in f.read()
        assert info.ppid == os.getpid()
        assert procfs.alive(proc.pid, info.start_ticks)
    finally:
        proc.kill()
        proc.wait()


def test_decode_wait_status():
    assert procfs.decode_wait_status(3 << 8) == (3, None)
    assert procfs.decode_wait_status(9) == (None, 9)
    assert procfs.decode_wait_status(0x80 | 11) == (None, 11)  # core dumped


def test_read_info_stdio_names_redirected_files_only(tmp_path):
    log_file = tmp_path / "train.log"
    with log_file.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True);"
                                 " time.sleep(30)"], stdout=out, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: log_file.read_text() == "up\n")
        info = procfs.read_info(proc.pid)
        assert info is not None
        assert info.stdio == (str(log_file), None)  # stderr is a pipe
    finally:
        proc.kill()
        proc.wait()
