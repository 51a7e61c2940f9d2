"""Packs: many small objects in one append-only file, found through a sorted index.

Creating one file per object costs 60-90 us on these machines (inode allocation
dominates): four times a bare stat+read+hash of a 1 KiB file. A large batch
therefore streams its small objects into one `packs/<name>.pack` and writes one
`packs/<name>.idx` (sorted digests, then offsets and sizes). The pack is fsync'ed
and renamed before its index, so an object named by an index is always readable.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .private import OBJECT_MODE, Owner, make_dir

log = logging.getLogger(__name__)

_MAGIC = b"OLKPACK1"
_HEADER = struct.Struct("<8sQ")  # magic, count
_ENTRY = struct.Struct("<QQ")  # offset, size
_DIGEST = 32
_REFRESH_S = 1.0


class _Index:
    """One loaded .idx file: binary search over its sorted digests."""

    __slots__ = ("name", "data", "count", "_entries_at")

    def __init__(self, name: str, data: bytes) -> None:
        magic, count = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC or len(data) != _HEADER.size + count * (_DIGEST + _ENTRY.size):
            raise ValueError(f"pack index {name} is damaged")
        self.name = name
        self.data = data
        self.count = count
        self._entries_at = _HEADER.size + count * _DIGEST

    def digest(self, i: int) -> bytes:
        at = _HEADER.size + i * _DIGEST
        return self.data[at : at + _DIGEST]

    def find(self, digest: bytes) -> tuple[int, int] | None:
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.digest(mid) < digest:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.count and self.digest(lo) == digest:
            return _ENTRY.unpack_from(self.data, self._entries_at + lo * _ENTRY.size)
        return None

    def entries(self) -> Iterator[tuple[bytes, int, int]]:
        for i in range(self.count):
            yield (self.digest(i), *_ENTRY.unpack_from(self.data, self._entries_at + i * 16))


class PackSet:
    """The packs under `<objects>/packs/`, their indexes loaded lazily and cached."""

    def __init__(self, objects_root: Path, owner: Owner | None = None) -> None:
        self.dir = Path(objects_root) / "packs"
        self.owner = owner if owner is not None else Owner.of(objects_root)
        self._indexes: dict[str, _Index] = {}
        # digest -> (pack, offset, size) over all loaded indexes: one dict lookup per
        # object instead of a binary search in every pack (a batch makes one pack, so
        # a busy project has many).
        self._where: dict[bytes, tuple[str, int, int]] = {}
        self._lock = threading.Lock()
        self._refreshed = float("-inf")

    def refresh(self) -> None:
        """Load indexes written (by anyone) since the last look."""
        with self._lock:
            self._refreshed = time.monotonic()
            try:
                names = {n[:-4] for n in os.listdir(self.dir) if n.endswith(".idx")}
            except OSError:
                names = set()
            gone = set(self._indexes) - names
            for name in gone:
                del self._indexes[name]
            if gone:
                # gc's repack publishes a pack's live objects in a new pack before it drops
                # the old one: those digests must now point at the pack that stays.
                self._where = {}
                for index in self._indexes.values():
                    for digest, offset, size in index.entries():
                        self._where.setdefault(digest, (index.name, offset, size))
            for name in names - set(self._indexes):
                try:
                    data = (self.dir / f"{name}.idx").read_bytes()
                    index = _Index(name, data)
                except (OSError, ValueError, struct.error) as err:
                    log.warning("skipping pack index %s: %s", name, err)
                    continue
                self._indexes[name] = index
                for digest, offset, size in index.entries():
                    self._where.setdefault(digest, (name, offset, size))

    def lookup(self, hexdigest: str, *, fresh: bool = True) -> tuple[str, int, int] | None:
        """(pack name, offset, size) of a packed object, or None.

        With fresh=False a miss does not look for new indexes more than once a
        second: for dedup, where a stale answer only costs a duplicate.
        """
        if time.monotonic() - self._refreshed > _REFRESH_S:
            self.refresh()
        if not self._indexes and not fresh:
            return None
        found = self._find(bytes.fromhex(hexdigest))
        if found is None and fresh:
            self.refresh()
            found = self._find(bytes.fromhex(hexdigest))
        return found

    def lookup_many(self, hexdigests: list[str]) -> list[tuple[str, int, int] | None]:
        """lookup(fresh=False) of many objects at once, one dict lookup each without the
        per-call clock: for export, where the call would cost more than a small object."""
        if time.monotonic() - self._refreshed > _REFRESH_S:
            self.refresh()
        where = self._where
        return [where.get(bytes.fromhex(h)) for h in hexdigests]

    def any(self) -> bool:
        """Whether any pack index is known (looked for at most once a second)."""
        if time.monotonic() - self._refreshed > _REFRESH_S:
            self.refresh()
        return bool(self._indexes)

    def add_index(self, name: str, data: bytes) -> None:
        """A pack this process just wrote: known at once, without a refresh."""
        index = _Index(name, data)
        with self._lock:
            self._indexes[name] = index
            for digest, offset, size in index.entries():
                self._where.setdefault(digest, (name, offset, size))

    def _find(self, digest: bytes) -> tuple[str, int, int] | None:
        return self._where.get(digest)

    def read(self, hexdigest: str) -> bytes | None:
        where = self.lookup(hexdigest)
        if where is None:
            return None
        name, offset, size = where
        try:
            f = open(self.dir / f"{name}.pack", "rb")
        except FileNotFoundError:
            # gc repacked it since we loaded its index: the object, if live, is in a newer one
            self.refresh()
            where = self._find(bytes.fromhex(hexdigest))
            if where is None:
                return None
            name, offset, size = where
            f = open(self.dir / f"{name}.pack", "rb")
        with f:
            data = os.pread(f.fileno(), size, offset)
        if len(data) != size:
            raise OSError(f"pack {name} is shorter than its index says")
        return data

    def iter_hashes(self) -> Iterator[str]:
        self.refresh()
        with self._lock:
            indexes = list(self._indexes.values())
        for index in indexes:
            for digest, _, _ in index.entries():
                yield digest.hex()

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) named by the indexes."""
        self.refresh()
        with self._lock:
            indexes = list(self._indexes.values())
        count = total = 0
        for index in indexes:
            count += index.count
            total += sum(size for _, _, size in index.entries())
        return count, total

    def remove(self, hexdigest: str) -> bool:
        """Drop an object from its index; its bytes stay in the pack until a repack."""
        where = self.lookup(hexdigest)
        if where is None:
            return False
        digest = bytes.fromhex(hexdigest)
        with self._lock:
            index = self._indexes[where[0]]
            rows = [(d, o, s) for d, o, s in index.entries() if d != digest]
            tmp = self.dir / f".{index.name}.{uuid.uuid4().hex}.idx"
            data = _encode_index(rows)
            _write_file(tmp, data, self.owner)
            os.replace(tmp, self.dir / f"{index.name}.idx")
            fsync_dir(self.dir)
            self._indexes[index.name] = _Index(index.name, data)
            self._where.pop(digest, None)
        return True


    def entries(self) -> Iterator[tuple[str, int, str]]:
        """(hex digest, size, pack name) of every packed object, for gc and du."""
        self.refresh()
        with self._lock:
            indexes = list(self._indexes.values())
        for index in indexes:
            for digest, _, size in index.entries():
                yield digest.hex(), size, index.name

    def pack_mtime(self, name: str) -> float | None:
        """When a pack was written (Unix seconds), None if it is gone."""
        try:
            return os.stat(self.dir / f"{name}.pack").st_mtime
        except OSError:
            return None

    def repack(self, name: str, drop: set[str], tmp_dir: Path,
               trash_dir: Path) -> tuple[int, dict[str, tuple[Path, int, int]]]:
        """Rewrite pack `name` without the objects in `drop` (hex digests), for gc.

        Readers never miss a kept object: its new pack and index are published
        before the old index goes, and a reader holding the old index retries after
        a refresh (read). The old pack is moved into `trash_dir`, not deleted, so gc
        can still bring back an object found referenced after all. Returns the bytes
        dropped and where each dropped object now lies: hex -> (trashed pack, offset,
        size)."""
        self.refresh()
        with self._lock:
            index = self._indexes.get(name)
        if index is None:
            return 0, {}
        kept: list[tuple[str, int, int]] = []
        dropped: dict[str, tuple[int, int]] = {}
        for digest, offset, size in index.entries():
            hexdigest = digest.hex()
            if hexdigest in drop:
                dropped[hexdigest] = (offset, size)
            else:
                kept.append((hexdigest, offset, size))
        if not dropped:
            return 0, {}
        pack_path = self.dir / f"{name}.pack"
        if kept:
            writer = PackWriter(self, tmp_dir)
            with open(pack_path, "rb") as f:
                for hexdigest, offset, size in kept:
                    writer.add_many([(hexdigest, os.pread(f.fileno(), size, offset))])
            writer.finish()
        make_dir(trash_dir, self.owner)
        os.unlink(self.dir / f"{name}.idx")
        trashed = trash_dir / f"{name}.pack"
        os.rename(pack_path, trashed)
        fsync_dir(self.dir)
        with self._lock:
            self._indexes.pop(name, None)
            self._where = {}
            for other in self._indexes.values():
                for digest, offset, size in other.entries():
                    self._where.setdefault(digest, (other.name, offset, size))
        freed = sum(size for _, size in dropped.values())
        return freed, {h: (trashed, o, s) for h, (o, s) in dropped.items()}


class PackWriter:
    """Streams objects into a new pack; `finish` makes it durable and visible."""

    def __init__(self, packs: PackSet, tmp_dir: Path) -> None:
        self.packs = packs
        self.name = uuid.uuid4().hex
        self._tmp = tmp_dir / f"{self.name}.pack"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           OBJECT_MODE)
        try:
            packs.owner.give(self._fd)
        except BaseException:
            self.abort()
            raise
        self.rows: dict[str, tuple[int, int]] = {}  # hex -> (offset, size)
        self._offset = 0

    def add_many(self, items: list[tuple[str, bytes]]) -> None:
        """Append objects (hex, content), skipping any already in this pack."""
        rows = self.rows
        offset = self._offset
        chunks = []
        for hexdigest, data in items:
            if hexdigest in rows:
                continue
            rows[hexdigest] = (offset, len(data))
            offset += len(data)
            chunks.append(data)
        self._offset = offset
        if chunks:
            try:
                _write_all(self._fd, b"".join(chunks))
            except BaseException:
                self.abort()
                raise

    def finish(self) -> None:
        """Flush, fsync, and publish the pack and then its index."""
        try:
            os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        rows = sorted((bytes.fromhex(h), o, s) for h, (o, s) in self.rows.items())
        idx_tmp = self._tmp.with_suffix(".idx")
        data = _encode_index(rows)
        _write_file(idx_tmp, data, self.packs.owner)
        make_dir(self.packs.dir, self.packs.owner)
        os.rename(self._tmp, self.packs.dir / f"{self.name}.pack")
        os.rename(idx_tmp, self.packs.dir / f"{self.name}.idx")
        fsync_dir(self.packs.dir)
        self.packs.add_index(self.name, data)
        log.debug("packed %d objects (%d bytes) into %s", len(rows), self._offset, self.name)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _unlink_quietly(self._tmp)


def _encode_index(rows: list[tuple[bytes, int, int]]) -> bytes:
    parts = [_HEADER.pack(_MAGIC, len(rows))]
    parts.extend(d for d, _, _ in rows)
    parts.extend(_ENTRY.pack(o, s) for _, o, s in rows)
    return b"".join(parts)


def _write_file(path: Path, data: bytes, owner: Owner) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, OBJECT_MODE)
    try:
        owner.give(fd)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: Path | str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: Path | str) -> None:
    """Make a rename into `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
