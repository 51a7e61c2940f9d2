"""The run always wins: bulk work at idle CPU and IO priority, in its own process."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import psutil
import pytest

from onlooker.agent.workers import priority
from onlooker.agent.workers.hasher import Hasher, SideDoor, StatCache
from onlooker.store.hashing import hash_file
from onlooker.store.objects import ObjectStore

from .test_hasher import collect


def _tids(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def _policy_of(tid: int) -> int:
    """The scheduling policy of one thread, read back from the kernel."""
    return os.sched_getscheduler(tid)


def _old_files(folder: Path, n: int, size: int = 100) -> list[str]:
    out = []
    old = time.time() - 10
    for i in range(n):
        p = folder / f"f{i}.bin"
        p.write_bytes(bytes([i % 256]) * size)
        os.utime(p, (old, old))
        out.append(str(p))
    return out


@pytest.fixture
def hasher(tmp_path):
    q: queue.Queue = queue.Queue()
    objects = ObjectStore(tmp_path / "objects")
    h = Hasher(q, objects, StatCache(), threads=2, quiet=0.05)
    yield tmp_path, q, objects, h
    h.stop()


def test_lower_this_thread_lowers_only_the_calling_thread():
    seen: dict[str, object] = {}

    def worker() -> None:
        seen["got"] = priority.lower_this_thread()
        seen["policy"] = os.sched_getscheduler(0)  # pid 0: this thread
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen["io"] = psutil.Process(threading.get_native_id()).ionice().ioclass
        seen["back"] = priority.of_this_thread()

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    got = seen["got"]
    assert got["cpu"] in (priority.IDLE, priority.NICE)
    if got["cpu"] == priority.IDLE:
        assert seen["policy"] == os.SCHED_IDLE
    else:
        assert seen["nice"] == 19
    if got["io"] == priority.IDLE:
        assert seen["io"] == psutil.IOPRIO_CLASS_IDLE
    assert seen["back"] == got
    # The caller (the event path's process) is untouched.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert priority.of_this_thread()["cpu"] == priority.NORMAL


def test_the_hashing_runs_in_a_separate_process_at_idle_priority(hasher):
    tmp, q, objects, h = hasher
    h.start()
    files = _old_files(tmp, 50)
    for f in files:
        h.request(f, copy=True)
    got = collect(q, len(files))
    assert all(got[f].hash == hash_file(f).hash and got[f].stored for f in files)
    pid = h.bulk_pid
    assert pid is not None and pid != os.getpid()
    assert h.priority["where"] == "bulk process" and h.priority["pid"] == pid
    assert h.priority["cpu"] in (priority.IDLE, priority.NICE)
    # Every thread of the bulk process (its lanes too) runs at the lowered priority...
    tids = _tids(pid)
    assert len(tids) >= 3  # main + 2 lanes
    for tid in tids:
        if h.priority["cpu"] == priority.IDLE:
            assert _policy_of(tid) == os.SCHED_IDLE, tid
        else:
            assert os.getpriority(os.PRIO_PROCESS, tid) == 19
        if h.priority["io"] == priority.IDLE:
            assert psutil.Process(tid).ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
    # ... and no thread of the agent's own process does: a starved thread there could
    # hold the GIL the event path needs.
    for tid in _tids(os.getpid()):
        assert _policy_of(tid) == os.SCHED_OTHER, tid
    assert h.files_hashed == len(files)


def test_the_bulk_process_reads_an_unchanged_file_once_by_the_agents_hint(hasher):
    # The bulk process keeps no stat cache of its own (it was one more entry a file, in
    # a second process): each job carries the agent's entry for that file, and the
    # bulk process trusts it only when its own lstat of the file agrees.
    tmp, q, _, h = hasher
    h.start()
    same, changed = _old_files(tmp, 2, size=500)
    for f in (same, changed):
        h.request(f, copy=True)
    first = collect(q, 2)
    assert h.bulk_pid is not None and h.files_hashed == 2
    old = os.lstat(changed).st_mtime - 5
    Path(changed).write_bytes(b"x" * 500)  # same size, other bytes and mtime
    os.utime(changed, (old, old))
    for f in (same, changed):
        h.request(f, copy=True)
    again = collect(q, 2)
    assert h.files_hashed == 3  # only the changed one was read again
    assert again[same].hash == first[same].hash
    assert again[changed].hash == hash_file(changed).hash != first[changed].hash


def test_the_backlog_counts_files_and_the_bytes_known(hasher):
    tmp, q, _, h = hasher
    files = _old_files(tmp, 20, size=1000)
    for f in files:
        h.request(f, copy=False, size=1000)
    h.request(files[0], copy=True, size=1000)  # merged: counted once
    assert h.backlog() == {"files": 20, "bytes": 20_000}
    h.start()
    collect(q, len(files))
    assert h.wait_idle(10)
    assert h.backlog() == {"files": 0, "bytes": 0}


def test_a_file_changed_while_it_waits_is_hashed_as_it_is_last(hasher):
    # However long the idle-priority worker waits, the stat pair decides: the version
    # is the content the file holds when it is read, with that content's own stat.
    tmp, q, _, h = hasher
    p = tmp / "data.bin"
    p.write_bytes(b"one" * 100)
    h.request(str(p), copy=True)
    p.write_bytes(b"two" * 200)  # changed before the worker got to it
    h.start()
    (ev,) = collect(q, 1).values()
    st = os.lstat(p)
    assert ev.hash == hash_file(p).hash and (ev.size, ev.mtime_ns) == (600, st.st_mtime_ns)


def test_a_dead_bulk_process_leaves_the_hashing_to_the_agent(hasher):
    tmp, q, _, h = hasher
    h.start()
    (tmp / "a").mkdir()
    first = _old_files(tmp / "a", 5)
    for f in first:
        h.request(f, copy=True)
    collect(q, len(first))
    psutil.Process(h.bulk_pid).kill()
    psutil.Process(h.bulk_pid).wait(5)
    (tmp / "b").mkdir()
    later = _old_files(tmp / "b", 5)
    for f in later:
        h.request(f, copy=True)
    got = collect(q, len(later))
    assert all(got[f].hash == hash_file(f).hash for f in later)


def test_a_side_door_that_cannot_link_announces_the_read_first(tmp_path):
    # /dev/shm is another filesystem: no hard link into the door folder can be made,
    # and the bulk process cannot call into the inotify source, so the agent must.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem")
    announced: list[str] = []
    door = SideDoor(tmp_path / "door", fallback=announced.append)
    q: queue.Queue = queue.Queue()
    h = Hasher(q, ObjectStore(tmp_path / "objects"), StatCache(), threads=1, quiet=0.05,
               side_door=door)
    src = shm / f"onlooker-test-{os.getpid()}.txt"
    src.write_text("x,y\n")
    try:
        h.start()
        h.request(str(src), copy=True, settled=True)
        (ev,) = collect(q, 1).values()
        assert ev.hash == hash_file(src).hash
        assert announced == [str(src)]
    finally:
        h.stop()
        src.unlink()


def test_in_process_hashing_stays_at_normal_priority(tmp_path):
    q: queue.Queue = queue.Queue()
    h = Hasher(q, ObjectStore(tmp_path / "objects"), StatCache(), threads=1, quiet=0.05,
               isolate=False)
    h.start()
    try:
        files = _old_files(tmp_path, 3)
        for f in files:
            h.request(f, copy=True)
        collect(q, 3)
        assert h.bulk_pid is None and h.priority["where"] == "agent"
        assert h.priority["cpu"] == "normal"
    finally:
        h.stop()


def test_status_says_the_backlog_and_where_the_hashing_runs():
    from onlooker.cli.commands.status import render_backlog, render_bulk

    assert render_backlog({"queue": 0, "hashing": 1204, "hash_bytes": 3 * 1024 * 1024,
                           "pending_events": 12, "scanning": True}) == (
        "1,204 files to hash (at least 3.0 MiB), 12 events in the grace window, scanning")
    assert render_backlog({"queue": 0, "hashing": 0, "hash_bytes": 0, "pending_events": 0,
                           "scanning": False}) == "none"
    assert render_backlog({"hashing": 1, "later_key": 5}) == "1 file to hash, later_key 5"
    assert render_bulk({"where": "bulk process", "pid": 42, "cpu": "idle", "io": "idle"}) == (
        "bulk process 42 at CPU idle, IO idle")
    assert render_bulk({}) is None
