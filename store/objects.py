"""Content-addressed object store: loose blobs at `ab/cdef...`, small ones in packs."""

from __future__ import annotations

import ctypes
import errno
import io
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import blake3

from .errors import MissingObject
from .hashing import HEAD_BYTES, PREFIX, HashResult, _check_unchanged, _copy_fd, hash_file
from .packs import PackSet, PackWriter, _unlink_quietly, _write_all, fsync_dir
from .private import FILE_MODE, OBJECT_MODE, Owner, make_dir

# hash_file and HashResult live in .hashing; importing them from here is supported.
__all__ = ["HashResult", "ObjectStore", "hash_bytes", "hash_file", "make_hash"]

log = logging.getLogger(__name__)

PACK_MAX = 256 * 1024  # objects up to this size go into a pack under batch()...
PACK_MIN = 32  # ...when the batch has this many: fewer are cheaper loose than a pack
# Small objects gathered before one write() into the pack. Measured here: 1 MiB
# writes reach ~3 GB/s into the page cache, 4 MiB ones fall to 0.2-0.9 GB/s.
_PENDING_MAX = 1 << 20
_HASH_RE = re.compile(r"blake3:[0-9a-f]{64}")


def make_hash(hexdigest: str) -> str:
    return PREFIX + hexdigest


def hash_bytes(data: bytes) -> str:
    """The store's hash string for in-memory content."""
    return PREFIX + blake3.blake3(data).hexdigest()


def _hex(hash: str) -> str:
    if not isinstance(hash, str) or not _HASH_RE.fullmatch(hash):
        raise ValueError(f"not an onlooker hash (want 'blake3:' and 64 hex digits): {hash!r}")
    return hash[len(PREFIX) :]


@dataclass
class _Batch:
    depth: int = 0
    loose: dict[str, str] = field(default_factory=dict)  # hex -> temp path
    small: dict[str, bytes] = field(default_factory=dict)  # until PACK_MIN of them
    writer: PackWriter | None = None
    pending: list[tuple[str, bytes]] = field(default_factory=list)  # for the writer
    pending_bytes: int = 0

    def __contains__(self, hexdigest: str) -> bool:
        return (hexdigest in self.loose or hexdigest in self.small
                or (self.writer is not None and hexdigest in self.writer.rows))


class ObjectStore:
    """Blobs named by hash: loose files at `ab/cdef...`, small batched ones in packs.

    Safe to share between threads; each thread has its own batch. What it makes is
    `owner`'s (default: the owner of `root`, or of the folder it will be made in), in
    folders 0700, objects 0400 (`private`).
    """

    def __init__(self, root: Path, owner: Owner | None = None) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.owner = owner if owner is not None else Owner.of(self.root)
        self.packs = PackSet(self.root, self.owner)
        self._local = threading.local()
        self._dirs_made: set[str] = set()

    # ---- reading -------------------------------------------------------------
    def path_for(self, hash: str) -> Path:
        """Where the loose blob of `hash` lives (packed objects have no own file)."""
        hexdigest = _hex(hash)
        return self.root / hexdigest[:2] / hexdigest[2:]

    def has(self, hash: str, *, fresh: bool = True) -> bool:
        """Whether the object is stored. fresh=False does not look for packs written
        since the last look more than once a second: for dedup, where a stale "no"
        only costs a duplicate write."""
        hexdigest = _hex(hash)
        batch = self._batch()
        if batch is not None:
            self._drain(batch)
            if hexdigest in batch:
                return True
        return (os.path.exists(f"{self.root}/{hexdigest[:2]}/{hexdigest[2:]}")
                or self.packs.lookup(hexdigest, fresh=fresh) is not None)

    def read_packed(self, hashes: list[str]) -> Iterator[tuple[str, bytes]]:
        """(hash, bytes) of those of `hashes` that are packed, each pack opened once and
        read in its own order: for export, where one open per small object would cost
        more than its bytes. The others (loose, missing) are left to open()."""
        where: dict[str, list[tuple[int, int, str]]] = {}
        self.packs.refresh()
        for hash in hashes:
            found = self.packs.lookup(_hex(hash), fresh=False)
            if found is not None:
                where.setdefault(found[0], []).append((found[1], found[2], hash))
        for name, items in where.items():
            try:
                f = open(self.packs.dir / f"{name}.pack", "rb")
            except FileNotFoundError:  # repacked since: one by one, through the index
                for _, _, hash in items:
                    data = self.packs.read(_hex(hash))
                    if data is not None:
                        yield hash, data
                continue
            with f:
                for offset, size, hash in sorted(items):
                    data = os.pread(f.fileno(), size, offset)
                    if len(data) != size:
                        raise OSError(f"pack {name} is shorter than its index says")
                    yield hash, data

    def open(self, hash: str) -> BinaryIO:
        """A binary reader of the object's content; raises MissingObject."""
        hexdigest = _hex(hash)
        try:
            # Never through a link: the agent may run as root in a store its owner can
            # change, and a link there must not hand it another file's bytes.
            fd = os.open(self.path_for(hash), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise MissingObject(f"object {hash} is a symbolic link in the store at"
                                f" {self.root}: not followed") from err
        else:
            return os.fdopen(fd, "rb")
        try:
            data = self.packs.read(hexdigest)
        except OSError as err:
            msg = f"object {hash} is indexed but its pack is unreadable: {err}"
            raise MissingObject(msg) from err
        if data is None:
            raise MissingObject(f"object {hash} is not in the store at {self.root}")
        return io.BytesIO(data)

    def iter_hashes(self) -> Iterator[str]:
        """Every stored object's hash (loose and packed), for gc."""
        for prefix in _scandir_names(self.root):
            if len(prefix) != 2:
                continue
            for rest in _scandir_names(self.root / prefix):
                if len(rest) == 62 and not rest.startswith("."):
                    yield PREFIX + prefix + rest
        for hexdigest in self.packs.iter_hashes():
            yield PREFIX + hexdigest

    def entries(self) -> Iterator[tuple[str, int, float, str | None]]:
        """(hash, size, mtime, pack name or None for a loose file) of every stored object,
        for gc and du; a packed object's mtime is its pack's."""
        for prefix in _scandir_names(self.root):
            if len(prefix) != 2:
                continue
            for entry in _scandir(self.root / prefix):
                if len(entry.name) != 62 or entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield PREFIX + prefix + entry.name, st.st_size, st.st_mtime, None
        mtimes: dict[str, float | None] = {}
        for hexdigest, size, name in self.packs.entries():
            if name not in mtimes:
                mtimes[name] = self.packs.pack_mtime(name)
            mtime = mtimes[name]
            if mtime is not None:
                yield PREFIX + hexdigest, size, mtime, name

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) on disk; walks the loose objects, so O(objects)."""
        count, total = self.packs.usage()
        for h in _scandir_names(self.root):
            if len(h) != 2:
                continue
            for entry in _scandir(self.root / h):
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                    count += 1
                except OSError:
                    continue
        return count, total

    # ---- writing -------------------------------------------------------------
    def _batch(self) -> _Batch | None:
        batch = getattr(self._local, "batch", None)
        return batch if batch is not None and batch.depth > 0 else None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes: no fsync per object, one syncfs and the renames on exit.

        Objects put inside are readable only after the outermost batch exits, so
        commit catalog rows that say `stored` after leaving it. Nested use joins.
        """
        batch = getattr(self._local, "batch", None)
        if batch is None:
            batch = self._local.batch = _Batch()
        batch.depth += 1
        try:
            yield
        finally:
            batch.depth -= 1
            if batch.depth == 0:
                self._local.batch = None
                self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        if batch.writer is not None:
            self._drain(batch)
            batch.writer.finish()
        for hexdigest, data in batch.small.items():
            self._write_tmp(hexdigest, data, batch)
        if not batch.loose:
            return
        _syncfs(self.root)
        for hexdigest, tmp in batch.loose.items():
            self._install(tmp, hexdigest)
        _syncfs(self.root)  # the renames
        log.debug("batch stored %d loose objects", len(batch.loose))

    def put_bytes(self, data: bytes, hash: str | None = None) -> str:
        """Store `data` (whose hash the caller may pass) and return its hash."""
        if hash is None:
            hash = hash_bytes(data)
        self._put(_hex(hash), data)
        return hash

    def _put(self, hexdigest: str, data: bytes) -> None:
        batch = self._batch()
        if batch is not None:
            if batch.writer is not None and len(data) <= PACK_MAX:
                # The scan's hot path: 20,000 small files must cost little more than
                # reading them, so only queue here; _drain dedups and writes in bulk.
                batch.pending.append((hexdigest, data))
                batch.pending_bytes += len(data)
                if batch.pending_bytes >= _PENDING_MAX:
                    self._drain(batch)
                return
            if hexdigest in batch:
                return
            if len(data) <= PACK_MAX:
                self._put_small(batch, hexdigest, data)
                return
        if os.path.exists(f"{self.root}/{hexdigest[:2]}/{hexdigest[2:]}"):
            return
        self._write_tmp(hexdigest, data, batch)

    def _drain(self, batch: _Batch) -> None:
        if not batch.pending or batch.writer is None:
            return
        items, batch.pending, batch.pending_bytes = batch.pending, [], 0
        if self.packs.any():
            items = [(h, d) for h, d in items if self.packs.lookup(h, fresh=False) is None]
        if batch.loose:
            items = [(h, d) for h, d in items if h not in batch.loose]
        batch.writer.add_many(items)

    def _put_small(self, batch: _Batch, hexdigest: str, data: bytes) -> None:
        if self.packs.lookup(hexdigest, fresh=False) is not None:
            return
        batch.small[hexdigest] = data
        if len(batch.small) >= PACK_MIN:
            batch.writer = PackWriter(self.packs, self._tmpdir())
            batch.writer.add_many(list(batch.small.items()))
            batch.small.clear()

    def _write_tmp(self, hexdigest: str, data: bytes, batch: _Batch | None) -> None:
        tmp = self._tmp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, OBJECT_MODE)
        try:
            self.owner.give(fd)
            _write_all(fd, data)
            if batch is None:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        self._commit(tmp, hexdigest, batch)

    def _commit(self, tmp: str, hexdigest: str, batch: _Batch | None) -> None:
        if batch is not None:
            if hexdigest in batch.loose:
                _unlink_quietly(tmp)
            else:
                batch.loose[hexdigest] = tmp
            return
        final = self._install(tmp, hexdigest)
        fsync_dir(final.parent)

    def _install(self, tmp: str, hexdigest: str) -> Path:
        prefix = hexdigest[:2]
        final = self.root / prefix / hexdigest[2:]
        if prefix not in self._dirs_made:
            make_dir(final.parent, self.owner)
            self._dirs_made.add(prefix)
        if final.exists():  # dedup: an object present is never rewritten
            _unlink_quietly(tmp)
        else:
            os.rename(tmp, final)
        return final

    def _tmpdir(self) -> Path:
        if "tmp" not in self._dirs_made:
            make_dir(self.tmp, self.owner)
            self._dirs_made.add("tmp")
        return self.tmp

    def _tmp_name(self) -> str:
        return f"{self._tmpdir()}/{uuid.uuid4().hex}"

    def _put_copy_of(self, src_fd: int, path: str, before: os.stat_result) -> tuple[str, bytes]:
        """Copy an open large file into the store, hash the copy; (hash, head)."""
        tmp = self._tmp_name()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            self.owner.give(out)
            _copy_fd(src_fd, out, before.st_size)
            if self._batch() is None:
                os.fsync(out)
            os.close(out)
            out = -1
            _check_unchanged(path, before)
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            hasher.update_mmap(tmp)  # our private copy: nobody truncates it under us
            with open(tmp, "rb") as f:
                head = f.read(HEAD_BYTES)
            os.chmod(tmp, OBJECT_MODE)
        except BaseException:
            if out >= 0:
                os.close(out)
            _unlink_quietly(tmp)
            raise
        hexdigest = hasher.hexdigest()
        self._commit(tmp, hexdigest, self._batch())
        return PREFIX + hexdigest, head

    def adopt(self, tmp: str | os.PathLike[str], hash: str) -> str:
        """Move a file the caller wrote under `self.tmp` and has already hashed (`hash`)
        into place, without reading it again. Inside batch(): renamed on exit after the
        batch's one syncfs; outside: fsynced first. Returns the hash."""
        hexdigest = _hex(hash)
        tmp = os.fspath(tmp)
        os.chmod(tmp, OBJECT_MODE)
        self.owner.give(tmp)
        batch = self._batch()
        if batch is None:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._commit(tmp, hexdigest, batch)
        return hash

    def remove(self, hash: str) -> bool:
        """Delete an object (for gc); True if it was there."""
        hexdigest = _hex(hash)
        try:
            os.unlink(self.path_for(hash))
            return True
        except FileNotFoundError:
            return self.packs.remove(hexdigest)

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove temp files a crashed writer left behind; returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in _scandir(self.tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed

    def close(self) -> None:
        """Nothing to release today; kept so callers can treat stores as resources."""


_libc_syncfs = None


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` once (syncfs(2)); os.sync() if unavailable."""
    global _libc_syncfs
    if _libc_syncfs is None:
        try:
            _libc_syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _libc_syncfs = False
    if _libc_syncfs:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _libc_syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _scandir_names(path: Path) -> list[str]:
    return sorted(e.name for e in _scandir(path))
