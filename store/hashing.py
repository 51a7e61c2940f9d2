"""BLAKE3 hashing of one file, with the before/after stat that rules out torn hashes."""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import shutil
import signal
import stat
import threading
from typing import TYPE_CHECKING, NamedTuple

import blake3

from .errors import (
    ChangedWhileHashing,
    FileVanished,
    NotAFile,
    OpenForWriting,
    StoreError,
    Unreadable,
)

if TYPE_CHECKING:
    from .objects import ObjectStore

ALGORITHM = "blake3"
PREFIX = ALGORITHM + ":"
SMALL_MAX = 4 * 1024 * 1024  # files up to this size are read once into memory
HEAD_BYTES = 4096
DEFAULT_COPY_MAX = 256 * 1024 * 1024
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
_READ_CHUNK = 8 * 1024 * 1024


class HashResult(NamedTuple):
    """What hashing one file found (a named tuple: cheap to build 20,000 times)."""

    hash: str
    size: int
    mtime_ns: int
    dev: int
    ino: int
    head: bytes  # the first HEAD_BYTES bytes, for content sniffing
    stored: bool  # the content is (or, inside a batch, will be on exit) in the store


def hash_file(
    path: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
    copy: bool = False,
    copy_max_bytes: int = DEFAULT_COPY_MAX,
    writers_ok: bool = True,
) -> HashResult:
    """Hash a regular file (and store it if `copy`); never returns a torn hash.

    Where the kernel grants a read lease (our file, or root), a small file is held
    against new writers and truncation while it is read (a writer's open waits that
    long: milliseconds). With `writers_ok` False, a file some process holds open for
    writing raises OpenForWriting instead: what it holds now may be half written
    (truncated by an `open(..., "w")`, not yet filled).

    Raises NotAFile, FileVanished, Unreadable, OpenForWriting or ChangedWhileHashing.
    """
    path = os.fspath(path)
    before = _lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotAFile(f"{path} is not a regular file", path)
    size = before.st_size
    keep = copy and store is not None and size <= copy_max_bytes
    if size <= SMALL_MAX:
        fd = _open(path, before)
        try:
            _lease(fd, path, writers_ok)
            data = _read_small(fd, path, size)
        finally:
            os.close(fd)  # and with it the lease
        _check_unchanged(path, before)
        hexdigest = blake3.blake3(data).hexdigest()
        if keep:
            assert store is not None
            try:
                store._put(hexdigest, data)
            except OSError as err:
                raise _store_failed(path, err) from err
        return HashResult(PREFIX + hexdigest, size, before.st_mtime_ns, before.st_dev,
                          before.st_ino, data[:HEAD_BYTES], keep)
    fd = _open(path, before)
    try:
        # A probe only: held through a long copy, the lease would make a writer wait.
        if _lease(fd, path, writers_ok):
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        if keep:
            assert store is not None
            try:
                hash, head = store._put_copy_of(fd, path, before)
            except OSError as err:
                raise _store_failed(path, err) from err
        else:
            head = os.pread(fd, HEAD_BYTES, 0)
            hash = PREFIX + _hash_large(fd)
            _check_unchanged(path, before)
    except OSError as err:
        raise _translate(err, path) from err
    finally:
        os.close(fd)
    return HashResult(hash, size, before.st_mtime_ns, before.st_dev, before.st_ino, head, keep)


def _store_failed(path: str, err: OSError) -> StoreError:
    return StoreError(f"cannot store {path} in the object store: {err.strerror or err}")


def _lstat(path: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as err:
        raise _translate(err, path) from err


def _translate(err: OSError, path: str) -> Exception:
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return FileVanished(f"{path} vanished before it could be hashed", path)
    if err.errno == errno.ELOOP:  # O_NOFOLLOW: replaced by a symlink since lstat
        return ChangedWhileHashing(f"{path} was replaced while it was hashed", path)
    return Unreadable(f"cannot read {path}: {err.strerror or err}", path)


def _open(path: str, before: os.stat_result) -> int:
    # O_NONBLOCK: if a FIFO was swapped in after lstat, open must not hang the hasher.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    euid = os.geteuid()
    if euid == 0 or before.st_uid == euid:
        flags |= os.O_NOATIME  # watching must not change what users see
    try:
        return os.open(path, flags)
    except OSError as err:
        raise _translate(err, path) from err


def _lease(fd: int, path: str, writers_ok: bool) -> bool:
    """Take a read lease on `fd`: True if held (until released or the fd closes).

    The break notice of a lease goes to SIGURG, ignored by default. EAGAIN means
    some process holds the file open for writing."""
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except OSError as err:
        if err.errno == errno.EAGAIN and not writers_ok:
            raise OpenForWriting(f"{path} is open for writing", path) from err
        return False  # not ours and not root, or a filesystem without leases
    return True


def _read_small(fd: int, path: str, size: int) -> bytes:
    if size == 0:
        return b""
    try:
        data = os.read(fd, size)
        if len(data) < size:  # short read: rare (FUSE, NFS); finish it
            parts = [data]
            got = len(data)
            while got < size:
                more = os.read(fd, size - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
    except OSError as err:
        raise _translate(err, path) from err
    if len(data) != size:
        raise ChangedWhileHashing(f"{path} shrank while it was read", path)
    return data


def _check_unchanged(path: str, before: os.stat_result) -> None:
    try:
        after = os.lstat(path)
    except OSError as err:
        raise _translate(err, path) from err
    if (after.st_size, after.st_mtime_ns, after.st_ino, after.st_dev) != (
        before.st_size, before.st_mtime_ns, before.st_ino, before.st_dev
    ):
        raise ChangedWhileHashing(f"{path} changed while it was hashed", path)


def _hash_large(fd: int) -> str:
    """BLAKE3 of an open file: mmap and all cores when a read lease protects it.

    A file truncated under an mmap kills the process with SIGBUS. A read lease
    makes every other opener-for-write (and truncate(2)) wait until we release it;
    the break notice goes to SIGURG, ignored by default, so nothing else happens.
    Without a lease (not our file, or someone has it open for writing) read it.
    """
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        leased = False
    else:
        leased = True
    if leased:
        try:
            hasher.update_mmap(f"/proc/self/fd/{fd}")
            return hasher.hexdigest()
        finally:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n <= 0:
            break
        hasher.update(view[:n])
        offset += n
    return hasher.hexdigest()


def _copy_fd(src: int, dst: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            n = os.copy_file_range(src, dst, size - offset, offset, offset)
            if n == 0:
                break
            offset += n
        return
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    with os.fdopen(os.dup(src), "rb") as fin, os.fdopen(os.dup(dst), "wb") as fout:
        fin.seek(offset)
        fout.seek(offset)
        shutil.copyfileobj(fin, fout, _READ_CHUNK)


class PieceHasher:
    """The BLAKE3 of a file as it is written, hashed piece by piece in a thread while
    the caller writes the next piece (BLAKE3 releases the GIL): the bytes hashed are
    those read back from `fd` (a descriptor that reads the file). `add(start, n)` after
    each piece is written, in order; `failed` says the thread has given up, so the
    caller can stop early; `hexdigest()` waits for the last piece and raises what the
    thread met. `what` names the file in the error of a short read."""

    def __init__(self, fd: int, *, what: str, name: str, piece: int = 16 << 20) -> None:
        self.fd, self.what, self.piece = fd, what, piece
        self._pieces: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._hasher = blake3.blake3()
        self.failed: list[BaseException] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(self.piece)
        try:
            while (piece := self._pieces.get()) is not None:
                start, n = piece
                got = os.preadv(self.fd, [memoryview(buf)[:n]], start)
                self._hasher.update(memoryview(buf)[:got])
                if got != n:
                    raise OSError(errno.EIO, f"{self.what} is shorter than written")
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            self.failed.append(err)
            while self._pieces.get() is not None:
                pass

    def add(self, start: int, n: int) -> None:
        self._pieces.put((start, n))

    def close(self) -> None:
        """Let the thread finish (also after a failure of the caller's)."""
        if not self._closed:
            self._closed = True
            self._pieces.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        """"blake3:<hex>" of every piece added; raises what the thread met."""
        self.close()
        if self.failed:
            raise self.failed[0]
        return "blake3:" + self._hasher.hexdigest()
