"""NetlinkProcSource against the real kernel's proc connector."""

from __future__ import annotations

import itertools
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from onlooker.agent.events import Overflow, ProcExec, ProcExit, ProcFork
from onlooker.agent.sources import netlink
from onlooker.agent.sources.netlink import NetlinkProcSource

OK, WHY = NetlinkProcSource.probe()
needs_netlink = pytest.mark.skipif(not OK, reason=f"netlink proc connector unusable here: {WHY}")


class Collector:
    """Drains the queue into a list; `wait` polls for a matching event with a deadline."""

    def __init__(self, q: queue.Queue) -> None:
        self.q = q
        self.events: list = []

    def wait(self, pred, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout:.1f} s")
            try:
                self.events.append(self.q.get(timeout=min(left, 0.1)))
            except queue.Empty:
                pass


@pytest.fixture
def source():
    q: queue.Queue = queue.Queue()
    # The test process forks the children; ignore a pid that is not ours so
    # that ProcFork from this process is reported.
    src = NetlinkProcSource(q, ignore_pid=1)
    src.start()
    yield src, Collector(q)
    started = time.monotonic()
    src.stop()
    assert time.monotonic() - started < 0.6


@needs_netlink
def test_exit_code_of_a_shell(source):
    _, col = source
    # The sleep keeps the shell alive long enough for /proc to be read.
    proc = subprocess.Popen(["sh", "-c", "sleep 0.1; exit 3"])
    proc.wait()
    ex = col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == proc.pid)
    assert ex.info.argv == ("sh", "-c", "sleep 0.1; exit 3")
    assert ex.info.ppid == os.getpid()
    fork = col.wait(lambda e: isinstance(e, ProcFork) and e.child_pid == proc.pid)
    assert fork.parent_pid == os.getpid()
    end = col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)
    assert (end.exit_code, end.signal) == (3, None)
    assert fork.t <= ex.t <= end.t


@needs_netlink
def test_signal_of_a_killed_python(source):
    _, col = source
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    end = col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)
    assert (end.exit_code, end.signal) == (None, 15)


@needs_netlink
def test_fork_without_exec_and_threads(source):
    _, col = source
    code = (
        "import os, threading\n"
        "ts = [threading.Thread(target=lambda: None) for _ in range(3)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "pid = os.fork()\n"
        "if pid == 0: os._exit(5)\n"
        "os.waitpid(pid, 0); print(pid, flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    child = int(proc.stdout)
    parent_exec = col.wait(lambda e: isinstance(e, ProcExec) and e.info.argv[-1:] == (code,))
    parent = parent_exec.info.pid
    fork = col.wait(lambda e: isinstance(e, ProcFork) and e.child_pid == child)
    assert fork.parent_pid == parent
    end = col.wait(lambda e: isinstance(e, ProcExit) and e.pid == child)
    assert end.exit_code == 5
    col.wait(lambda e: isinstance(e, ProcExit) and e.pid == parent)
    # Threads never appear as forks nor exits; the forked child never exec'd.
    assert [e.child_pid for e in col.events if isinstance(e, ProcFork)
            and e.parent_pid == parent] == [child]
    assert [e.pid for e in col.events if isinstance(e, ProcExit)].count(child) == 1
    assert not any(isinstance(e, ProcExec) and e.info.pid == child for e in col.events)


@needs_netlink
def test_ignore_pid_is_skipped():
    q: queue.Queue = queue.Queue()
    src = NetlinkProcSource(q, ignore_pid=os.getpid())
    src.start()
    try:
        proc = subprocess.Popen(["sh", "-c", "exit 0"])
        proc.wait()
        col = Collector(q)
        col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)
        # Forks by this (ignored) process are not reported; its child's own events are.
        assert not any(isinstance(e, ProcFork) and e.parent_pid == os.getpid()
                       for e in col.events)
    finally:
        src.stop()


@needs_netlink
def test_exec_storm_keeps_up(source):
    _, col = source
    n = 150
    shell = subprocess.Popen(
        ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"])
    shell.wait()

    # A child that ended before /proc was read still names its parent (from its fork).
    found = overflows = 0
    deadline = time.monotonic() + 10
    while found < n and time.monotonic() < deadline:
        try:
            e = col.q.get(timeout=0.1)
        except queue.Empty:
            continue
        found += isinstance(e, ProcExec) and e.info.ppid == shell.pid
        overflows += isinstance(e, Overflow)
    # None lost; /bin/true often ends before /proc is read (argv=() then). On a machine
    # so loaded that the socket buffer overflowed, the loss must at least be reported.
    assert found == n or overflows > 0, (found, overflows)


def test_probe_says_why_not_when_unprivileged_in_a_user_namespace():
    # `unshare --user` leaves the initial user namespace: no events there.
    if not os.path.exists("/usr/bin/unshare"):
        pytest.skip("unshare not installed")
    code = ("from onlooker.agent.sources.netlink import NetlinkProcSource as N;"
            "ok, why = N.probe(timeout=0.3); print(ok, why)")
    res = subprocess.run(["unshare", "--user", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        pytest.skip(f"cannot create a user namespace: {res.stderr.strip()[:200]}")
    assert res.stdout.startswith("False netlink proc connector:")


@needs_netlink
def test_stop_is_quick_and_idempotent():
    src = NetlinkProcSource(queue.Queue(), ignore_pid=os.getpid())
    src.start()
    started = time.monotonic()
    src.stop()
    src.stop()
    assert time.monotonic() - started < 0.6
    assert not any(t.name == "onlooker-netlink" for t in threading.enumerate())


_SEQ = itertools.count()


def _message(what: int, *body: int, cpu: int = 0, seq: int | None = None) -> bytes:
    """A datagram as the kernel sends it: nlmsghdr + cn_msg + proc_event.

    The kernel numbers events per CPU, consecutively; by default so do these."""
    seq = next(_SEQ) if seq is None else seq
    union = struct.pack(f"={len(body)}I", *body).ljust(24, b"\0")  # as large as comm's
    ev = struct.pack("=IIQ", what, cpu, 0) + union
    cn = struct.pack("=IIIIHH", 1, 1, seq, 0, len(ev), 0)
    return struct.pack("=IHHII", 16 + len(cn) + len(ev), 3, 0, 0, 0) + cn + ev


def test_parsing_without_the_kernel():
    q: queue.Queue = queue.Queue()
    src = NetlinkProcSource(q, ignore_pid=99)
    gone = 2**22 + 11  # no such process: its exec cannot be read from /proc
    for data in (
        _message(netlink.PROC_EVENT_FORK, 10, 10, 11, 10),  # a thread: skipped
        _message(netlink.PROC_EVENT_FORK, 12, 10, gone, gone),  # from thread 12 of 10
        _message(netlink.PROC_EVENT_FORK, 99, 99, 13, 13),  # the agent's own fork
        _message(netlink.PROC_EVENT_EXEC, gone, gone),
        _message(netlink.PROC_EVENT_EXIT, 11, 10, 0, 17, 10, 10),  # a thread ends
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 9, 17, 10, 10),  # SIGKILL
        _message(netlink.PROC_EVENT_EXIT, 10, 10, 2 << 8, 17, 1, 1),  # exit(2)
        _message(0x200, 10, 10),  # PROC_EVENT_COMM: ignored
    ):
        src._handle(memoryview(data))
    events = [q.get_nowait() for _ in range(q.qsize())]
    assert [type(e).__name__ for e in events] == ["ProcFork", "ProcExec", "ProcExit", "ProcExit"]
    fork, ex, killed, ended = events
    assert (fork.parent_pid, fork.child_pid) == (10, gone)
    assert ex.info.pid == gone and ex.info.argv == () and ex.info.ppid == 10
    assert ex.info.started == fork.t
    assert (killed.pid, killed.exit_code, killed.signal) == (gone, None, 9)
    assert (ended.pid, ended.exit_code, ended.signal) == (10, 2, None)


def test_a_gap_in_a_cpus_sequence_is_reported_as_lost_events():
    # The kernel drops an event it cannot allocate without telling the socket; the
    # per-CPU sequence number is the only trace of it.
    q: queue.Queue = queue.Queue()
    src = NetlinkProcSource(q, ignore_pid=99)
    src._live = set(netlink.procfs.list_pids())  # as start() does
    gone = 2**22 + 21
    for data in (
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 0, 17, 1, 1, cpu=0, seq=7),
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 0, 17, 1, 1, cpu=1, seq=3),
        _message(netlink.PROC_EVENT_NONE, 0, cpu=0xFFFFFFFF, seq=12345),  # an old reply
        # a reply to another listener's subscription, numbered on its CPU (newer kernels)
        _message(netlink.PROC_EVENT_NONE, 0, cpu=0, seq=8),
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 0, 17, 1, 1, cpu=0, seq=9),
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 0, 17, 1, 1, cpu=1, seq=4),
    ):
        src._handle(memoryview(data))
    assert not any(isinstance(q.get_nowait(), Overflow) for _ in range(q.qsize()))
    src._handle(memoryview(
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 0, 17, 1, 1, cpu=1, seq=6)))
    events = [q.get_nowait() for _ in range(q.qsize())]
    # (then what /proc shows changed since: processes of others on this machine)
    assert isinstance(events[0], Overflow) and events[0].source == "netlink"
    assert isinstance(events[-1], ProcExit) and events[-1].pid == gone
    assert sum(isinstance(e, Overflow) for e in events) == 1


def test_lost_events_are_made_up_from_proc():
    # After a loss the source lists /proc: a process it never heard of is reported
    # as exec'd, one it knew that is gone as ended with its code unknown.
    q: queue.Queue = queue.Queue()
    src = NetlinkProcSource(q, ignore_pid=os.getpid())
    unseen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # /proc shows the command line only once the child has exec'd
        deadline = time.monotonic() + 10
        while b"sleep" not in open(f"/proc/{unseen.pid}/cmdline", "rb").read():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        gone = 2**22 + 31  # no such process now
        zombie = subprocess.Popen(["true"])  # ended, not reaped yet: its exit was reported
        deadline = time.monotonic() + 10
        while netlink.procfs.alive_pid(zombie.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        src._live = (set(netlink.procfs.list_pids()) - {unseen.pid, zombie.pid}) | {gone}
        for seq in (1, 3):  # event 2 never came
            src._handle(memoryview(
                _message(netlink.PROC_EVENT_EXIT, gone + 1, gone + 1, 0, 17, 1, 1, seq=seq)))
        events = [q.get_nowait() for _ in range(q.qsize())]
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("Overflow") == 1
        (ended,) = [e for e in events if isinstance(e, ProcExit) and e.pid == gone]
        assert ended.exit_code is None and ended.signal is None
        (found,) = [e for e in events if isinstance(e, ProcExec)]
        assert found.info.pid == unseen.pid and "time.sleep(30)" in found.info.argv[-1]
        assert gone not in src._live and unseen.pid in src._live
        zombie.wait()
    finally:
        unseen.kill()
        unseen.wait()


@needs_netlink
def test_other_listeners_subscribing_is_no_loss(source):
    # Each subscription is answered to every listener, numbered like an event.
    src, col = source
    for _ in range(3):
        assert NetlinkProcSource.probe()[0]
    proc = subprocess.Popen(["sh", "-c", "exit 0"])  # events after the replies
    proc.wait()
    col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)
    assert not any(isinstance(e, Overflow) for e in col.events)


def test_an_exec_and_exit_before_their_fork_come_out_in_order():
    # The kernel sends a fork event after waking the child, which may exec and exit
    # first; the assembler must see fork, exec, exit (or the run never ends).
    q: queue.Queue = queue.Queue()
    src = NetlinkProcSource(q, ignore_pid=99)
    gone, orphan = 2**22 + 41, 2**22 + 43  # no such processes: /proc cannot be read
    for data in (
        _message(netlink.PROC_EVENT_EXEC, gone, gone),
        _message(netlink.PROC_EVENT_EXIT, gone, gone, 0, 17, 10, 10),
        _message(netlink.PROC_EVENT_EXEC, orphan, orphan),  # its fork never comes
    ):
        src._handle(memoryview(data))
    assert q.qsize() == 0  # held
    src._handle(memoryview(_message(netlink.PROC_EVENT_FORK, 10, 10, gone, gone)))
    events = [q.get_nowait() for _ in range(q.qsize())]
    assert [type(e).__name__ for e in events] == ["ProcFork", "ProcExec", "ProcExit"]
    assert events[1].info.pid == gone and events[1].info.ppid == 10
    src._release_due(time.monotonic() + 3600.0)  # later than any hold
    (late,) = [q.get_nowait() for _ in range(q.qsize())]
    assert isinstance(late, ProcExec) and late.info.pid == orphan and late.info.ppid == 0


def test_a_child_read_while_being_reaped_keeps_the_parent_its_fork_named(monkeypatch):
    # /proc shows a dying task's ppid as 0; the fork said who the parent was.
    from onlooker.agent.events import ProcInfo

    def dying(pid, **_):
        return ProcInfo(pid=pid, ppid=0, argv=("/bin/true",), cwd=None, exe=None, uid=0,
                        start_ticks=0, started=time.clock_gettime(time.CLOCK_BOOTTIME))

    monkeypatch.setattr(netlink.procfs, "read_info", dying)
    monkeypatch.setattr(netlink.procfs, "ancestors", lambda ppid: (ppid, 1))
    q: queue.Queue = queue.Queue()
    src = NetlinkProcSource(q, ignore_pid=99)
    for data in (
        _message(netlink.PROC_EVENT_FORK, 10, 10, 11, 11),
        _message(netlink.PROC_EVENT_EXEC, 11, 11),  # fork seen first
        _message(netlink.PROC_EVENT_EXEC, 12, 12),  # exec seen before its fork
        _message(netlink.PROC_EVENT_FORK, 10, 10, 12, 12),
    ):
        src._handle(memoryview(data))
    execs = [e for e in (q.get_nowait() for _ in range(q.qsize())) if isinstance(e, ProcExec)]
    assert [(e.info.pid, e.info.ppid, e.info.ancestors) for e in execs] == [
        (11, 10, (10, 1)), (12, 10, (10, 1))]
