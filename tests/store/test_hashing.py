"""hash_file: regular, empty and large files, refusals, and torn-hash protection."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys

import blake3
import pytest

from onlooker.store import hashing
from onlooker.store.errors import (
    ChangedWhileHashing,
    FileVanished,
    NotAFile,
    OpenForWriting,
    Unreadable,
)
from onlooker.store.hashing import HEAD_BYTES, SMALL_MAX, hash_file
from onlooker.store.objects import ObjectStore


def b3(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return ObjectStore(tmp_path / "objects")


def test_small_file(tmp_path):
    data = os.urandom(10_000)
    p = tmp_path / "a.bin"
    p.write_bytes(data)
    st = p.stat()
    r = hash_file(p)
    assert r.hash == b3(data)
    assert (r.size, r.mtime_ns, r.dev, r.ino) == (len(data), st.st_mtime_ns, st.st_dev, st.st_ino)
    assert r.head == data[:HEAD_BYTES]
    assert r.stored is False


def test_empty_file(tmp_path, store):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    r = hash_file(p, store=store, copy=True)
    assert r.hash == b3(b"") and r.size == 0 and r.head == b"" and r.stored
    with store.open(r.hash) as f:
        assert f.read() == b""


def test_small_copy_stores_same_bytes(tmp_path, store):
    data = b"lr: 0.1\n"
    p = tmp_path / "cfg.yaml"
    p.write_bytes(data)
    r = hash_file(p, store=store, copy=True, copy_max_bytes=1024)
    assert r.stored and store.has(r.hash)
    assert store.path_for(r.hash).read_bytes() == data
    assert stat.S_IMODE(store.path_for(r.hash).stat().st_mode) == 0o400


def test_copy_respects_limit(tmp_path, store):
    p = tmp_path / "x"
    p.write_bytes(b"0123456789")
    r = hash_file(p, store=store, copy=True, copy_max_bytes=5)
    assert not r.stored and not store.has(r.hash)


@pytest.mark.parametrize("copy", [False, True])
def test_large_file(tmp_path, store, copy):
    data = os.urandom(SMALL_MAX + 123_457)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    r = hash_file(p, store=store, copy=copy, copy_max_bytes=1 << 30)
    assert r.hash == b3(data) and r.size == len(data) and r.head == data[:HEAD_BYTES]
    assert r.stored is copy
    assert store.has(r.hash) is copy
    if copy:
        with store.open(r.hash) as f:
            assert f.read() == data
    tmp = store.root / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []  # no temp copy left behind


def test_large_file_without_lease_is_read(tmp_path):
    data = os.urandom(SMALL_MAX + 10)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    with open(p, "r+b"):  # an open writer: no read lease, so the read loop is used
        assert hash_file(p).hash == b3(data)


def test_fifo_socket_dir_symlink_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotAFile):
        hash_file(fifo)
    sock_path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    try:
        with pytest.raises(NotAFile):
            hash_file(sock_path)
    finally:
        s.close()
    with pytest.raises(NotAFile):
        hash_file(tmp_path)
    target = tmp_path / "t"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(NotAFile):
        hash_file(tmp_path / "link")


def test_vanished(tmp_path):
    with pytest.raises(FileVanished):
        hash_file(tmp_path / "nope")
    with pytest.raises(FileVanished):
        hash_file(tmp_path / "nodir" / "nope")


def test_unreadable(tmp_path, monkeypatch):
    p = tmp_path / "secret"
    p.write_bytes(b"x")
    real_open = os.open

    def deny(path, flags, *a, **k):
        if os.fspath(path) == str(p):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(hashing.os, "open", deny)
    with pytest.raises(Unreadable) as info:
        hash_file(p)
    assert info.value.path == str(p)


def test_changed_while_hashing_small(tmp_path, store, monkeypatch):
    p = tmp_path / "grows.txt"
    p.write_bytes(b"first")
    real = hashing._check_unchanged

    def append_then_check(path, before):  # written after the read, before the re-stat
        with open(path, "ab") as f:
            f.write(b" and more")
        real(path, before)

    monkeypatch.setattr(hashing, "_check_unchanged", append_then_check)
    with pytest.raises(ChangedWhileHashing):
        hash_file(p, store=store, copy=True)
    assert not store.has(b3(b"first"))  # nothing torn was stored


def test_changed_while_hashing_large(tmp_path, monkeypatch):
    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(SMALL_MAX + 1))
    real = hashing._hash_large

    def hash_then_replace(fd):
        out = real(fd)
        tmp = tmp_path / "other"
        tmp.write_bytes(b"new content")
        os.replace(tmp, p)
        return out

    monkeypatch.setattr(hashing, "_hash_large", hash_then_replace)
    with pytest.raises(ChangedWhileHashing):
        hash_file(p)


def test_replaced_between_stats_large_copy(tmp_path, store, monkeypatch):
    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(SMALL_MAX + 1))
    real = hashing._copy_fd

    def copy_then_touch(src, dst, size):
        real(src, dst, size)
        os.utime(p, ns=(1, 1))

    monkeypatch.setattr("onlooker.store.objects._copy_fd", copy_then_touch)
    with pytest.raises(ChangedWhileHashing):
        hash_file(p, store=store, copy=True)
    assert list(store.iter_hashes()) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_truncation_during_large_hash_never_crashes(tmp_path):
    """A file truncated under an mmap would kill the process with SIGBUS; the read
    lease must make the truncation wait. Run in a child so a crash fails, not kills."""
    target = tmp_path / "big.bin"
    target.write_bytes(os.urandom(SMALL_MAX * 8))
    code = f"""
import os, subprocess, sys, time
from onlooker.store.errors import HashError
from onlooker.store.hashing import hash_file
p = {str(target)!r}
blob = open(p, "rb").read()
churn = subprocess.Popen([sys.executable, "-c", '''
import os, time
p, n = {str(target)!r}, {SMALL_MAX * 8}
end = time.monotonic() + 2
while time.monotonic() < end:
    os.truncate(p, 0)
    with open(p, "r+b") as f:
        f.write(os.urandom(n))
'''])
outcomes = set()
while churn.poll() is None:
    try:
        outcomes.add(type(hash_file(p)).__name__)
    except HashError as err:
        outcomes.add(type(err).__name__)
print(sorted(outcomes))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize("size", [0, 100, SMALL_MAX + 1])
def test_a_file_open_for_writing_is_reported_when_asked(tmp_path, size):
    p = tmp_path / "busy.bin"
    p.write_bytes(b"x" * size)
    with open(p, "ab"):
        with pytest.raises(OpenForWriting):
            hash_file(p, writers_ok=False)
        assert hash_file(p).size == size  # the default hashes what is there
    assert hash_file(p, writers_ok=False).size == size  # the writer is gone
