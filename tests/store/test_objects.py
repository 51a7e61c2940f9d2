"""ObjectStore: dedup, read-only blobs, batches (loose and packed), reading back, gc helpers."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from onlooker.store.errors import MissingObject
from onlooker.store.hashing import hash_file
from onlooker.store.objects import PACK_MAX, PACK_MIN, ObjectStore, hash_bytes


@pytest.fixture
def store(tmp_path):
    return ObjectStore(tmp_path / "objects")


def read(store, h):
    with store.open(h) as f:
        return f.read()


def test_put_layout_readonly_and_dedup(store):
    h = store.put_bytes(b"hello")
    assert h == hash_bytes(b"hello")
    p = store.path_for(h)
    hexdigest = h.split(":")[1]
    assert p == store.root / hexdigest[:2] / hexdigest[2:]
    assert p.read_bytes() == b"hello"
    assert stat.S_IMODE(p.stat().st_mode) == 0o400
    before = p.stat()
    assert store.put_bytes(b"hello") == h  # dedup: present objects are never rewritten
    after = p.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert list(store.iter_hashes()) == [h]


def test_bad_and_missing_hash(store):
    with pytest.raises(ValueError):
        store.path_for("md5:abc")
    with pytest.raises(MissingObject):
        store.open(hash_bytes(b"never stored"))
    assert not store.has(hash_bytes(b"never stored"))


def test_small_batch_is_loose(store):
    with store.batch():
        hs = [store.put_bytes(f"obj {i}".encode()) for i in range(PACK_MIN - 1)]
        assert all(store.has(h) for h in hs)  # this thread sees its pending objects
    assert all(store.path_for(h).is_file() for h in hs)
    assert [read(store, h) for h in hs] == [f"obj {i}".encode() for i in range(PACK_MIN - 1)]
    assert not (store.root / "packs").exists()


def test_large_batch_is_packed_and_readable(store):
    datas = [os.urandom(100 + i) for i in range(500)] + [os.urandom(PACK_MAX + 1)]
    with store.batch():
        with store.batch():  # nested: joins the outer batch
            hs = [store.put_bytes(d) for d in datas]
        assert all(store.has(h) for h in hs)  # queued ones count as present to this thread
        assert not any((store.root / "packs").glob("*.idx"))  # published on outer exit only
    assert len(list((store.root / "packs").glob("*.idx"))) == 1
    assert all(store.has(h) for h in hs)
    assert [read(store, h) for h in hs] == datas
    assert store.path_for(hs[-1]).is_file()  # too big for a pack: loose
    assert sorted(store.iter_hashes()) == sorted(set(hs))
    count, total = store.usage()
    assert count == len(datas) and total == sum(len(d) for d in datas)
    fresh = ObjectStore(store.root)  # another process's view finds the pack
    assert read(fresh, hs[7]) == datas[7]
    # A second batch of the same content writes no new pack entries.
    with store.batch():
        for d in datas[: PACK_MIN * 2]:
            store.put_bytes(d)
    assert store.usage()[0] == len(datas)


def test_remove(store):
    loose = store.put_bytes(b"loose one")
    with store.batch():
        packed = [store.put_bytes(f"p{i}".encode()) for i in range(PACK_MIN)]
    assert store.remove(loose) and not store.has(loose)
    assert store.remove(packed[3]) and not store.has(packed[3])
    assert not ObjectStore(store.root).has(packed[3])
    assert read(store, packed[4]) == b"p4"
    assert not store.remove(loose)


def test_hash_file_batch_of_many_files(tmp_path, store):
    files = []
    for i in range(300):
        p = tmp_path / f"f{i}.txt"
        p.write_bytes(f"content {i}\n".encode() * (i % 7 + 1))
        files.append(p)
    with store.batch():
        results = [hash_file(p, store=store, copy=True) for p in files]
    for p, r in zip(files, results, strict=True):
        assert r.stored and read(store, r.hash) == p.read_bytes()


def test_batches_are_per_thread(store):
    errors = []

    def worker(n):
        try:
            with store.batch():
                for i in range(PACK_MIN * 2):
                    store.put_bytes(f"t{n}-{i}".encode())
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert read(store, hash_bytes(b"t2-5")) == b"t2-5"
    assert store.usage()[0] == 3 * PACK_MIN * 2


def test_clean_tmp(store):
    store._tmpdir()
    old = store.tmp / "leftover"
    old.write_bytes(b"x")
    os.utime(old, (1, 1))
    new = store.tmp / "in-flight"
    new.write_bytes(b"y")
    assert store.clean_tmp(older_than=3600) == 1
    assert not old.exists() and new.exists()
