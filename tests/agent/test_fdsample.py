"""FdSampler against the real /proc/<pid>/fd of a child that writes a file."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

from onlooker.agent.events import FdSeen
from onlooker.agent.sources.fdsample import FdSampler

WRITER = r"""
import sys, time
inp = open(sys.argv[2])
with open(sys.argv[1], "w") as f:
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        f.write("x" * 100); f.flush(); time.sleep(0.01)
"""


def collect_until(q: queue.Queue, pred, timeout: float = 5.0) -> list:
    events: list = []
    deadline = time.monotonic() + timeout
    while not any(pred(e) for e in events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching event within {timeout:.1f} s: {events}")
        try:
            events.append(q.get(timeout=min(left, 0.1)))
        except queue.Empty:
            pass
    return events


def wait_ticks(src: FdSampler, n: int, timeout: float = 5.0) -> None:
    target = src.ticks + n
    deadline = time.monotonic() + timeout
    while src.ticks < target:
        assert time.monotonic() < deadline, "sampler stopped ticking"
        time.sleep(0.005)


@pytest.fixture
def sampler_for(tmp_path):
    sources = []

    def make(pids: set[int]) -> tuple[FdSampler, queue.Queue]:
        q: queue.Queue = queue.Queue()
        src = FdSampler(q, hz=50, watched=lambda: frozenset(pids),
                        keep=lambda p: p.startswith(str(tmp_path)))
        src.start()
        sources.append(src)
        return src, q

    yield make
    for src in sources:
        src.stop()
    assert not any(t.name == "onlooker-fdsample" for t in threading.enumerate())


def test_writer_is_seen_writable_once(tmp_path, sampler_for):
    out, inp = tmp_path / "model.bin", tmp_path / "data.csv"
    inp.write_text("a,b\n")
    pids: set[int] = set()
    src, q = sampler_for(pids)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(inp)])
    pids.add(proc.pid)
    src.nudge()  # as the daemon does when a run opens
    events = collect_until(q, lambda e: e.path == str(out))
    seen = next(e for e in events if e.path == str(out))
    assert isinstance(seen, FdSeen) and seen.pid == proc.pid and seen.writable
    proc.wait()
    wait_ticks(src, 2)
    while not q.empty():
        events.append(q.get_nowait())
    writes = [e for e in events if e.path == str(out)]
    assert len(writes) == 1  # reported the first time only
    reads = [e for e in events if e.path == str(inp)]
    assert all(not e.writable for e in reads)
    # Nothing outside the kept prefix (the interpreter's own files, /dev/null...).
    assert all(e.path.startswith(str(tmp_path)) for e in events)


def test_unwatched_and_gone_pids_are_harmless(tmp_path, sampler_for):
    proc = subprocess.Popen(["true"])
    proc.wait()
    src, q = sampler_for({proc.pid, 2**22 + 7})
    wait_ticks(src, 3)
    assert q.empty()


def test_with_no_run_it_sleeps_until_nudged(tmp_path, sampler_for):
    # An idle agent must not wake 10 times a second to sample nobody.
    pids: set[int] = set()
    src, q = sampler_for(pids)
    deadline = time.monotonic() + 5
    while src.ticks < 1:  # its first look, at start
        assert time.monotonic() < deadline, "sampler never ticked"
        time.sleep(0.005)
    before = src.ticks
    time.sleep(0.3)  # 15 ticks' worth at 50 Hz
    assert src.ticks == before
    (tmp_path / "in.csv").write_text("x\n")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "m.bin"),
                             str(tmp_path / "in.csv")])
    pids.add(proc.pid)
    src.nudge()
    try:
        collect_until(q, lambda e: e.path == str(tmp_path / "m.bin"))
    finally:
        proc.wait()
