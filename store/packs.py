"""Packs: many small objects in one append-only file, found through a sorted index.

Creating one file per object costs 60-90 us on these machines (inode allocation
dominates): four times a bare stat+read+hash of a 1 KiB file. A large batch
therefore streams its small objects into one `packs/<name>.pack` and writes one
`packs/<name>.idx` (sorted digests, then offsets and sizes). The pack is fsync'ed
and renamed before its index, so an object named by an index is always readable.
"""

from __future__ import annotations

import heapq
import logging
import os
import struct
import sys
import threading
import time
import uuid
from array import array
from bisect import bisect_left
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
    """One loaded .idx file: its sorted digests, then (offset, size) of each."""

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

    def entries(self) -> Iterator[tuple[bytes, int, int]]:
        for i in range(self.count):
            yield (self.digest(i), *_ENTRY.unpack_from(self.data, self._entries_at + i * 16))

    def keys(self) -> array:
        """Each digest's first 8 bytes as an unsigned int (_Locator's key), in order:
        read big-endian, so the ints sort as the digests do."""
        out = array("Q")
        blob = memoryview(self.data)[_HEADER.size:self._entries_at]
        out.frombytes(blob.cast("Q")[::_DIGEST // 8].tobytes())
        if sys.byteorder == "little":
            out.byteswap()
        return out


# New packs' keys wait in a dict until this many have come, then go into the sorted
# arrays in one merge: a batch's pack is added whole, and merges stay rare.
_MERGE_AT = 16384


class _Locator:
    """Where every packed object is, over all loaded indexes, in about 16 bytes an
    object: the first 8 bytes of each digest (the key) and (slot << 32 | position) in
    two sorted arrays, found by bisection; the full digest is then compared in the
    index itself. A dict of digests to tuples cost about 245 bytes an object: 25 MB
    per 100,000 small files in every process that looks objects up (the bulk worker
    during a burst, export, gc). Keys added since the last merge wait in `recent`;
    the rare digest whose key another one already holds there waits in `more`.

    Readers take no lock: one state tuple is replaced whole, and `recent` / `more`
    only grow in place (a dict's get and set are atomic under the GIL)."""

    __slots__ = ("state",)

    def __init__(self, indexes: list[_Index]) -> None:
        slots = list(indexes)
        keys, locs = array("Q"), array("Q")
        # each index is sorted already: merged as streams, never a list of them all
        streams = [zip(index.keys(), range(slot << 32, (slot << 32) + index.count),
                       strict=True) for slot, index in enumerate(slots)]
        for key, loc in heapq.merge(*streams):
            keys.append(key)
            locs.append(loc)
        self.state = (slots, keys, locs, {}, {})

    def add(self, index: _Index) -> None:
        """Called under the PackSet's lock."""
        slots, keys, locs, recent, more = self.state
        slot = len(slots)
        slots.append(index)
        base = slot << 32
        for pos, key in enumerate(index.keys()):
            held = recent.setdefault(key, base | pos)
            if held != base | pos and self._digest(held) != index.digest(pos):
                more.setdefault(index.digest(pos), base | pos)
        if len(recent) >= _MERGE_AT:  # new arrays: a reader may hold the old ones
            self.state = (slots, *_merged(keys, locs, sorted(recent.items())), {}, more)

    def _digest(self, loc: int) -> bytes:
        return self.state[0][loc >> 32].digest(loc & 0xFFFFFFFF)

    def get(self, digest: bytes) -> tuple[str, int, int] | None:
        slots, keys, locs, recent, more = self.state
        key = int.from_bytes(digest[:8], "big")
        loc = recent.get(key)
        if loc is not None:
            found = _at(slots, loc, digest)
            if found is not None:
                return found
        i = bisect_left(keys, key)
        while i < len(keys) and keys[i] == key:
            found = _at(slots, locs[i], digest)
            if found is not None:
                return found
            i += 1
        loc = more.get(digest) if more else None
        return None if loc is None else _at(slots, loc, digest)

    def get_many(self, hexdigests: list[str]) -> list[tuple[str, int, int] | None]:
        get, from_hex = self.get, bytes.fromhex
        return [get(from_hex(h)) for h in hexdigests]


def _at(slots: list[_Index], loc: int, digest: bytes) -> tuple[str, int, int] | None:
    index, pos = slots[loc >> 32], loc & 0xFFFFFFFF
    if index.digest(pos) != digest:
        return None
    return (index.name, *_ENTRY.unpack_from(index.data, index._entries_at + pos * 16))


def _merged(keys: array, locs: array, items: list[tuple[int, int]]) -> tuple[array, array]:
    """The sorted arrays with the sorted (key, loc) `items` put in: runs between them
    copied whole, so a merge costs per item added, not per item held."""
    out_keys, out_locs = array("Q"), array("Q")
    i = 0
    for key, loc in items:
        j = bisect_left(keys, key, i)
        out_keys.extend(keys[i:j])
        out_locs.extend(locs[i:j])
        out_keys.append(key)
        out_locs.append(loc)
        i = j
    out_keys.extend(keys[i:])
    out_locs.extend(locs[i:])
    return out_keys, out_locs


class PackSet:
    """The packs under `<objects>/packs/`, their indexes loaded lazily and cached."""

    def __init__(self, objects_root: Path, owner: Owner | None = None) -> None:
        self.dir = Path(objects_root) / "packs"
        self.owner = owner if owner is not None else Owner.of(objects_root)
        self._indexes: dict[str, _Index] = {}
        # every loaded index's objects in one place: one lookup per object instead of a
        # binary search in every pack (a batch makes one pack, so a busy project has many)
        self._where = _Locator([])
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
            new = []
            for name in sorted(names - set(self._indexes)):
                try:
                    data = (self.dir / f"{name}.idx").read_bytes()
                    index = _Index(name, data)
                except (OSError, ValueError, struct.error) as err:
                    log.warning("skipping pack index %s: %s", name, err)
                    continue
                self._indexes[name] = index
                new.append(index)
            if gone or len(new) > 1:
                # gc's repack publishes a pack's live objects in a new pack before it drops
                # the old one: those digests must now point at the pack that stays. Many
                # new indexes at once (the first look) are sorted in one go.
                self._where = _Locator(list(self._indexes.values()))
            elif new:
                self._where.add(new[0])

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
        return self._where.get_many(hexdigests)

    def any(self) -> bool:
        """Whether any pack index is known (looked for at most once a second)."""
        if time.monotonic() - self._refreshed > _REFRESH_S:
            self.refresh()
        return bool(self._indexes)

    def add_index(self, name: str, data: bytes) -> None:
        """A pack this process just wrote: known at once, without a refresh."""
        index = _Index(name, data)
        with self._lock:
            if name not in self._indexes:
                self._indexes[name] = index
                self._where.add(index)

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
            # its objects' positions moved: rare (doctor's removal of a damaged object)
            self._where = _Locator(list(self._indexes.values()))
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
            self._where = _Locator(list(self._indexes.values()))
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
