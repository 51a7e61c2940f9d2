"""The hasher pool against real files: batching, quiet period, stat cache, side door."""

from __future__ import annotations

import os
import queue
import time

import pytest

from onlooker.agent.events import HashDone
from onlooker.agent.workers.hasher import Hasher, SideDoor, StatCache
from onlooker.store.hashing import hash_file
from onlooker.store.objects import ObjectStore


def collect(q: queue.Queue, n: int, timeout: float = 20.0) -> dict[str, HashDone]:
    out: dict[str, HashDone] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} results"
        ev = q.get(timeout=left)
        out[ev.path] = ev
    return out


@pytest.fixture
def setup(tmp_path):
    q: queue.Queue = queue.Queue()
    objects = ObjectStore(tmp_path / "objects")
    cache = StatCache()
    h = Hasher(q, objects, cache, threads=2, quiet=0.05)
    h.start()
    yield tmp_path, q, objects, cache, h
    h.stop()


def test_many_small_files_are_hashed_and_stored_readably(setup):
    tmp, q, objects, _, h = setup
    files = []
    for i in range(300):
        p = tmp / f"f{i}.txt"
        p.write_bytes(f"content {i}\n".encode())
        files.append(str(p))
    old = time.time() - 10
    for f in files:
        os.utime(f, (old, old))
        h.request(f, copy=True)
    got = collect(q, len(files))
    for f in files:
        ev = got[f]
        assert ev.hash and ev.stored
        assert ev.began is not None and ev.began <= ev.t  # what the assembler matches on
        with objects.open(ev.hash) as blob:  # readable as soon as the result is out
            assert blob.read() == open(f, "rb").read()
    assert h.wait_idle(5)


def test_a_file_still_being_written_waits_until_quiet(setup):
    tmp, q, _, _, h = setup
    p = tmp / "growing.bin"
    p.write_bytes(b"a")
    h.request(str(p), copy=False)
    p.write_bytes(b"ab")  # modified just now: the hash must be of the settled content
    ev = collect(q, 1)[str(p)]
    assert ev.size == 2


def test_unchanged_files_come_from_the_stat_cache(setup):
    tmp, q, _, cache, h = setup
    p = tmp / "x.bin"
    p.write_bytes(b"x" * 100)
    old = time.time() - 10
    os.utime(p, (old, old))
    h.request(str(p), copy=False)
    first = collect(q, 1)[str(p)]
    assert h.files_hashed == 1 and len(cache) == 1
    h.request(str(p), copy=False)
    again = collect(q, 1)[str(p)]
    assert again.hash == first.hash and h.files_hashed == 1  # not read again


def test_vanished_and_special_files_are_reported_not_raised(setup):
    tmp, q, _, _, h = setup
    fifo = tmp / "pipe"
    os.mkfifo(fifo)
    h.request(str(tmp / "gone"), copy=True)
    h.request(str(fifo), copy=True)
    got = collect(q, 2)
    assert got[str(tmp / "gone")].error == "vanished"
    assert got[str(fifo)].hash is None and got[str(fifo)].error


def test_side_door_reads_through_a_link_and_cleans_up(tmp_path):
    door = SideDoor(tmp_path / "door")
    src = tmp_path / "data.csv"
    src.write_text("a,b\n")
    with door.path(str(src)) as p:
        assert p != str(src) and open(p).read() == "a,b\n"
        assert os.stat(p).st_ino == os.stat(src).st_ino
    assert list((tmp_path / "door").iterdir()) == []


def test_a_closed_file_opened_again_for_writing_waits_for_that_writer(setup):
    # `open(path, "w")` empties the file before it is filled: a file closed (so
    # "settled") and at once rewritten must not be versioned while it is empty.
    tmp, q, _, _, h = setup
    p = tmp / "rewritten.bin"
    p.write_bytes(b"first" * 1000)
    with open(p, "wb") as f:  # the next rewrite has begun: truncated, nothing yet
        h.request(str(p), copy=True, settled=True)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)  # several tries at the quiet time of 0.05 s
        f.write(b"second" * 1000)
    (ev,) = collect(q, 1).values()
    assert ev.hash == hash_file(p).hash and ev.size == 6000


def test_hurry_hashes_a_file_held_open_for_writing_at_once(setup):
    # The agent is stopping: a run that holds its log open must not hold `stop`.
    tmp, q, _, _, h = setup
    p = tmp / "held.log"
    with open(p, "wb") as f:
        f.write(b"epoch=1 loss=0.5\n")
        f.flush()
        h.request(str(p), copy=True, settled=True)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.3)
        h.hurry()
        ev = q.get(timeout=2)
    assert ev.hash == hash_file(p).hash


# -- a store that cannot take copies (its disk full) ------------------------------------


def _full(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("size", [2048, 600 * 1024], ids=["packed", "loose"])
def test_a_full_store_still_records_the_hash_as_only_referenced(tmp_path, monkeypatch, size):
    from onlooker.agent.workers.hasher import DONE, hash_batch

    objects = ObjectStore(tmp_path / "objects")
    files = []
    for i in range(40):  # enough small ones that the batch writes a pack
        p = tmp_path / f"f{i:02d}.bin"
        p.write_bytes(os.urandom(size))
        old = time.time() - 10
        os.utime(p, (old, old))
        files.append(p)
    monkeypatch.setattr(ObjectStore, "_write_tmp", _full)
    monkeypatch.setattr("onlooker.store.packs.PackWriter.add_many", _full)
    monkeypatch.setattr("onlooker.store.objects.ObjectStore._put_copy_of", _full)
    specs = [(str(p), True, True, 0, True, False) for p in files]
    outcomes = hash_batch(specs, None, objects=objects, cache=StatCache(), quiet=0.0,
                          copy_max=1 << 30)
    assert len(outcomes) == len(files)
    for p, (kind, done, _) in zip(files, outcomes, strict=True):
        assert kind == DONE
        _t, path, h, got_size, *_rest = done
        stored, error = done[7], done[8]
        assert path == str(p) and error is None
        assert h == hash_file(p).hash and got_size == size
        assert stored is False and not objects.has(h)
