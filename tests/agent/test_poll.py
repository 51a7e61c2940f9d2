"""PollProcSource against the real /proc."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time

import pytest

from onlooker.agent import clock
from onlooker.agent.events import ProcExec, ProcExit
from onlooker.agent.probes import procfs
from onlooker.agent.probes.procfs import zombie_exit
from onlooker.agent.sources.poll import PollProcSource


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

    def drain(self) -> list:
        while True:
            try:
                self.events.append(self.q.get_nowait())
            except queue.Empty:
                return self.events


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        time.sleep(0.005)


@pytest.fixture
def poll():
    q: queue.Queue = queue.Queue()
    watched: set[int] = set()
    src = PollProcSource(q, hz=50, ignore_pid=os.getpid(), watched=lambda: frozenset(watched))
    col = Collector(q)
    src.start()
    # The initial listing is emitted once; this test process is ignored.
    col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == 1)
    yield src, col, watched
    started = time.monotonic()
    src.stop()
    assert time.monotonic() - started < 0.5
    assert not any(t.name == "onlooker-poll" for t in threading.enumerate())


def test_initial_processes_are_announced(poll):
    _, col, _ = poll
    col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == os.getppid())
    assert not any(isinstance(e, ProcExec) and e.info.pid == os.getpid() for e in col.events)


def test_short_process_exec_and_exit(poll):
    _, col, _ = poll
    proc = subprocess.Popen(["sleep", "0.3"])
    ex = col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == proc.pid
                  and e.info.argv == ("sleep", "0.3"))
    assert ex.info.ppid == os.getpid()
    assert ex.t >= ex.info.started - 0.02
    proc.wait()
    end = col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)
    assert end.t >= ex.t
    # Exactly one exit for it.
    assert sum(isinstance(e, ProcExit) and e.pid == proc.pid for e in col.drain()) == 1


def test_caught_up_passes_a_process_only_after_it_was_reported(poll):
    """`caught_up` is a promise: a process alive then has been announced already."""
    src, col, _ = poll
    proc = subprocess.Popen(["sleep", "0.5"])
    started = clock.now()
    try:
        wait_until(lambda: src.caught_up > started)
        # by the time caught_up passed its start, its exec is on the queue
        assert any(isinstance(e, ProcExec) and e.info.pid == proc.pid for e in col.drain())
    finally:
        proc.kill()
        proc.wait()


def test_exec_in_place_of_a_watched_pid(poll):
    _, col, watched = poll
    proc = subprocess.Popen(["sh", "-c", "sleep 0.2; exec sleep 0.3"])
    watched.add(proc.pid)
    first = col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == proc.pid
                     and e.info.argv[:1] == ("sh",))
    second = col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == proc.pid
                      and e.info.argv == ("sleep", "0.3"))
    assert second.t > first.t
    assert second.info.start_ticks == first.info.start_ticks  # same process, new program
    proc.wait()
    col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)


def test_exit_code_of_a_watched_zombie(poll):
    _, col, watched = poll
    proc = subprocess.Popen(["sh", "-c", "sleep 0.2; exit 4"])
    watched.add(proc.pid)
    col.wait(lambda e: isinstance(e, ProcExec) and e.info.pid == proc.pid)
    # Reaped only once the source has had two ticks to look at the zombie.
    wait_until(lambda: zombie_exit(proc.pid) is not None)
    seen = poll[0].ticks
    wait_until(lambda: poll[0].ticks >= seen + 2)
    assert proc.wait() == 4
    end = col.wait(lambda e: isinstance(e, ProcExit) and e.pid == proc.pid)
    assert (end.exit_code, end.signal) == (4, None)


def test_idle_cost(poll):
    src, col, _ = poll
    before = src.cpu_seconds()
    started = time.monotonic()
    deadline = started + 1.0
    while time.monotonic() < deadline:
        col.drain()
        time.sleep(0.05)
    share = (src.cpu_seconds() - before) / (time.monotonic() - started)
    # 50 Hz here; the design target is ~1% of a core at 20 Hz. Loose bound for CI noise.
    assert share < 0.10, f"poll source used {share:.1%} of a core idle"


def test_rejects_bad_rate():
    with pytest.raises(ValueError):
        PollProcSource(queue.Queue(), hz=0, ignore_pid=0, watched=lambda: ())


def test_pid_reuse_is_an_exit_and_a_new_process():
    # Driven tick by tick, no thread: a watched pid whose start time changed is
    # another process that got the same pid.
    q: queue.Queue = queue.Queue()
    watched: set[int] = set()
    src = PollProcSource(q, hz=50, ignore_pid=os.getpid(), watched=lambda: watched)
    src.setup()
    proc = subprocess.Popen(["sleep", "5"])
    try:
        wait_until(lambda: procfs.read_info(proc.pid).argv == ("sleep", "5"))
        src.tick(clock.now())
        first = [e for e in drain(q) if getattr(e, "info", None) and e.info.pid == proc.pid]
        assert len(first) == 1
        src._known[proc.pid] -= 1  # as if an older process had held this pid
        watched.add(proc.pid)
        src.tick(clock.now())
        events = [e for e in drain(q) if getattr(e, "pid", None) == proc.pid
                  or getattr(e, "info", None) and e.info.pid == proc.pid]
        assert [type(e).__name__ for e in events] == ["ProcExit", "ProcExec"]
        assert events[1].info.start_ticks == first[0].info.start_ticks
    finally:
        proc.kill()
        proc.wait()
    src.tick(clock.now())
    assert [e for e in drain(q) if isinstance(e, ProcExit) and e.pid == proc.pid]


def drain(q: queue.Queue) -> list:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out
