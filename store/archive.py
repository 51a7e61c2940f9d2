"""The export archive on disk: its members, written and read back verified.

See store/share.py for what goes in. Reading never extracts a member by its name: the
manifest comes first (and must match its own hash), every other member must be
`objects/<64 hex digits>` that the manifest lists, with that size and that BLAKE3 hash.
tar's own failures, and the file's, become one sentence (ArchiveError).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import json
import os
import re
import tarfile
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import blake3

from .errors import StoreError
from .hashing import PieceHasher
from .objects import hash_bytes

FORMAT = "onlooker-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.json.blake3"
OBJECT_DIR = "objects/"
MANIFEST_MAX = 1 << 30  # a manifest past this is no export of ours
_CHUNK = 1 << 20
_PIECE = 16 << 20  # a large file is copied, and its writeback started, in pieces of this
_WRITEBACK = 8 << 20  # start writeback once this much more has been written
_SYNC_FILE_RANGE_WRITE = 2
_HEX64 = re.compile(r"[0-9a-f]{64}")
# errors of writing the temporaries, not of reading the archive
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class ArchiveError(StoreError):
    """An archive that is not a complete, intact onlooker export; nothing was imported."""


class TarWriter:
    """An uncompressed tar written straight to a file descriptor: ustar headers built
    here (PAX by tarfile where ustar cannot say it), a large file's bytes copied by the
    kernel (copy_file_range) rather than through Python, small ones gathered into
    ~1 MiB writes. The disk is asked to start writing each piece as it is done
    (writeback), so the caller's final fsync waits for the tail, not the whole file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self._buf = bytearray()  # small members gathered into ~1 MiB writes
        self._flushed = 0  # bytes of the file handed to the kernel
        self._kicked = 0  # bytes of the file whose writeback was started

    def _write(self, data: bytes | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        # a fresh buffer rather than clear(): a view of the old one may still be alive
        buf, self._buf = self._buf, bytearray()
        view = memoryview(buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self._flushed += n
        if self._flushed - self._kicked >= _WRITEBACK:
            self._kicked = writeback(self.fd, self._kicked, self._flushed)

    def _header(self, name: str, size: int, mtime: float) -> None:
        ascii_name = name.isascii() and len(name) <= 100
        if ascii_name and size < 8 ** 11:
            buf = _ustar_header(name.encode("ascii"), size, int(mtime))
        else:  # what plain ustar cannot say (a long name, 8 GiB or more): tarfile's PAX
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, int(mtime), 0o444
            buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._write(buf)
        self.offset += len(buf)

    def _pad(self, size: int) -> None:
        rest = -size % tarfile.BLOCKSIZE
        if rest:
            self._write(tarfile.NUL * rest)
        self.offset += size + rest

    def add_bytes(self, name: str, data: bytes | memoryview, mtime: float) -> None:
        self._header(name, len(data), mtime)
        self._write(data)
        self._pad(len(data))

    def add_object(self, name: bytes, data: bytes | memoryview, mtime: int) -> None:
        """A small member whose name is plain ASCII of at most 100 bytes (an object's):
        the hot path of exporting many small objects, one bytearray append each."""
        size = len(data)
        pad = -size % 512
        buf = self._buf
        buf += _ustar_header(name, size, mtime)
        buf += data
        buf += _ZEROS[:pad]
        self.offset += 512 + size + pad
        if len(buf) >= _CHUNK:
            self.flush()

    def add_objects(self, members: list[tuple[bytes, memoryview]], mtime: int) -> None:
        """add_object for many (name, data) at once: the loop of exporting 20,000 small
        objects, with its lookups hoisted (a few microseconds an object count here)."""
        buf, header, zeros, offset = self._buf, _ustar_header, _ZEROS, self.offset
        for name, data in members:
            size = len(data)
            pad = -size % 512
            buf += header(name, size, mtime)
            buf += data
            buf += zeros[:pad]
            offset += 512 + size + pad
        self.offset = offset
        if len(buf) >= _CHUNK:
            self.flush()

    def add_file(self, name: str, src: int, size: int, mtime: float) -> None:
        """`size` bytes of the open file `src` from its start; OSError if it has fewer."""
        self._header(name, size, mtime)
        self.flush()  # the kernel writes at the file's position: ours must be there
        done, kernel = 0, True
        while done < size:  # in pieces, each one's writeback started as it lands
            want = min(_PIECE, size - done)
            n = _copy_range(src, self.fd, done, want) if kernel else -1
            if n >= 0:
                self._flushed += n
                self._kicked = writeback(self.fd, self._kicked, self._flushed)
            else:  # no kernel copy here: through Python, in chunks
                kernel = False
                chunk = os.pread(src, min(_CHUNK, want), done)
                self._write(chunk)
                n = want = len(chunk)
            done += n
            if n < want or not n:
                break  # the file ended early: said below
        self.flush()
        if done != size:
            raise OSError(errno.EIO, f"a file ended after {done} of its {size} bytes")
        self._pad(size)

    def close(self) -> None:
        """The end-of-archive blocks, padded to a whole record as tar writes it."""
        end = 2 * tarfile.BLOCKSIZE
        end += -(self.offset + end) % tarfile.RECORDSIZE
        self._write(tarfile.NUL * end)
        self.offset += end
        self.flush()


# the constant fields of the headers export writes: a read-only regular file of 0:0
_H_MODE = b"0000444\0" b"0000000\0" b"0000000\0"
_H_TAIL = tarfile.REGTYPE + bytes(100) + b"ustar\x0000" + bytes(32 + 32 + 16 + 155 + 12)
_H_SUM = sum(_H_MODE) + sum(b" " * 8) + sum(_H_TAIL)  # the checksum's field as spaces
_ZEROS = bytes(512)


def _ustar_header(name: bytes, size: int, mtime: int) -> bytes:
    """A POSIX ustar header for a read-only regular file owned by 0:0, built directly:
    tarfile's TarInfo.tobuf costs more than a small object's bytes. The checksum is
    the constant fields' sum plus the variable ones'."""
    global _mtime_cache
    if _mtime_cache[0] != mtime:  # one export writes one mtime: its field made once
        field = b"%011o\0" % mtime
        _mtime_cache = (mtime, field, sum(field))
    size_f = b"%011o\0" % size
    chksum = _H_SUM + _mtime_cache[2] + sum(name) + sum(size_f)
    return b"".join((name, _ZEROS[:100 - len(name)], _H_MODE, size_f, _mtime_cache[1],
                     b"%06o\0 " % chksum, _H_TAIL))


_mtime_cache: tuple[int, bytes, int] = (-1, b"", 0)


_libc: Any = None


def writeback(fd: int, start: int, end: int) -> int:
    """Ask the kernel to start writing bytes [start, end) of `fd` to disk now
    (sync_file_range, no waiting), so that a later fsync has only the tail left;
    returns `end`. A no-op where the call is missing."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True).sync_file_range
            _libc.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        except (OSError, AttributeError):
            _libc = False
    if _libc and end > start:
        _libc(fd, start, end - start, _SYNC_FILE_RANGE_WRITE)
    return end


def foreign(path: Path, why: str) -> ArchiveError:
    return ArchiveError(f"{path} is not an onlooker export: {why}")


def damaged(path: Path, why: str) -> ArchiveError:
    return ArchiveError(f"{path} is damaged or truncated ({why}): nothing was imported")


def members(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every member of the archive; read them inside `tar_errors`."""
    with tar_errors(path), tarfile.open(path, mode="r:*") as tar:
        yield from ((tar, member) for member in tar)


@contextmanager
def tar_errors(path: Path) -> Iterator[None]:
    """tar's own failures (and the file's) as one sentence."""
    try:
        yield
    except FileNotFoundError as err:
        raise ArchiveError(f"{path} does not exist") from err
    except IsADirectoryError as err:
        raise ArchiveError(f"{path} is a folder, not an archive") from err
    except PermissionError as err:
        raise ArchiveError(f"cannot read {path}: permission denied") from err
    except tarfile.ReadError as err:
        if "empty file" in str(err) or "not a" in str(err) or "invalid header" in str(err):
            raise foreign(path, "it is not a tar archive") from err
        raise damaged(path, " ".join(str(err).split())) from err
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise damaged(path, " ".join(str(err).split()) or type(err).__name__) from err


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, limit: int) -> bytes:
    f = tar.extractfile(member)
    if f is None:
        raise foreign(path, f"member {member.name!r} is not a file")
    data = f.read(limit + 1)
    if len(data) != member.size:
        raise damaged(path, f"{member.name} ends early")
    return data


def object_hash(member: tarfile.TarInfo, path: Path) -> str:
    return _object_name_hash(member.name, member.isreg(), path)


def _object_name_hash(name: str, isreg: bool, path: Path) -> str:
    hexdigest = name[len(OBJECT_DIR):] if name.startswith(OBJECT_DIR) else ""
    if not isreg or not _HEX64.fullmatch(hexdigest):
        # never a path on disk: a name like ../x or /etc/x is refused, not followed
        raise foreign(path, f"it holds an unexpected member {name!r}")
    return "blake3:" + hexdigest


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The archive's manifest, after checking every member against it: names, sizes and
    BLAKE3 hashes. Writes nothing; raises ArchiveError with one sentence."""
    return stage(path, None)[0]


class Staged:
    """Object bytes read from an archive and verified, waiting in the store's tmp folder
    to be moved into place: small ones (read whole, at most `small_max` bytes each)
    appended to one spool file in ~1 MiB writes, large ones each in its own temp file."""

    def __init__(self, tmpdir: Path | None, small_max: int) -> None:
        self.tmpdir, self.small_max = tmpdir, small_max
        self.small: list[tuple[str, int, int]] = []  # hash, offset in the spool, size
        self.large: dict[str, str] = {}  # verified hash -> temp path
        self.temps: list[str] = []  # every temp file made, for discard
        self.spool = -1
        self.spool_size = 0
        self.bytes = 0
        self._pending: list[bytes | memoryview] = []  # small ones not yet in the spool
        self._pending_bytes = 0

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A failed write here is the store's trouble (a full disk), not the archive's:
        a StoreError, which tar_errors passes on as it is."""
        try:
            yield
        except OSError as err:
            if err.errno not in _WRITE_ERRNOS:
                raise
            raise StoreError(f"cannot write to {self.tmpdir}: {err.strerror or err}"
                             "; nothing was imported") from err

    def _new(self) -> tuple[str, int]:
        assert self.tmpdir is not None
        name = f"{self.tmpdir}/{uuid.uuid4().hex}"
        with self.writing():
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.temps.append(name)
        return name, fd

    def add_small(self, hash: str, data: bytes | memoryview) -> None:
        """Keep verified bytes (copied into the spool by the next ~1 MiB write: `data`
        must not change until then)."""
        if self.spool < 0:
            name, self.spool = self._new()
            os.unlink(name)  # anonymous: a crash leaves nothing behind
        size = len(data)
        self._pending.append(data)
        self._pending_bytes += size
        self.small.append((hash, self.spool_size, size))
        self.spool_size += size
        self.bytes += size
        if self._pending_bytes >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write the small objects still pending into the spool."""
        if not self._pending:
            return
        view = memoryview(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0
        with self.writing():
            while view:
                view = view[os.write(self.spool, view):]

    def read_small(self, offset: int, size: int) -> bytes:
        self.flush()
        return os.pread(self.spool, size, offset)

    def iter_small(self) -> Iterator[tuple[str, bytes]]:
        """(hash, bytes) of every small object, read back from the spool in ~1 MiB
        reads (one pread each would cost more than a small object's bytes)."""
        self.flush()
        buf, base = b"", 0
        for hash, offset, size in self.small:
            if offset + size > base + len(buf):
                buf, base = os.pread(self.spool, max(size, _CHUNK), offset), offset
                if len(buf) < size:
                    raise OSError(errno.EIO, "the import's spool file is shorter than written")
            yield hash, buf[offset - base:offset - base + size]

    def discard(self) -> None:
        """Remove what is still here (what was moved into place is no longer)."""
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.temps.clear()
        self.large.clear()
        self._pending.clear()
        if self.spool >= 0:
            os.close(self.spool)
            self.spool = -1


def stage(path: str | os.PathLike[str], tmpdir: Path | None, small_max: int = 1 << 18,
          skip: Callable[[str], bool] | None = None,
          present: Callable[[list[str]], set[str]] | None = None
          ) -> tuple[dict[str, Any], Staged]:
    """One pass over the archive: the manifest first (checked against its own hash),
    then every object member checked for its name, size and BLAKE3 hash. With a
    `tmpdir`, the bytes of each object are kept there (Staged) unless `skip` names it
    or it is among those `present` returns (asked once, with the manifest's hashes:
    the objects the store has already); on any failure they are removed before the
    ArchiveError goes up. Nothing is ever extracted by its name.

    A plain tar of the headers export writes (ustar, regular files) is read by the
    reader here, which costs a few microseconds a member; anything else (compressed,
    PAX, an odd or damaged header, cut short) is read again from the start by
    tarfile, which says what is wrong with it."""
    path = Path(path)
    staged = Staged(tmpdir, small_max)
    try:
        try:
            with tar_errors(path):
                manifest, text, seen = _checkplain(path, staged if tmpdir else None,
                                                    _Skip(skip, present))
        except _NotPlain:
            staged.discard()
            staged = Staged(tmpdir, small_max)
            with tar_errors(path):
                manifest, text, seen = _checkmembers(path, staged if tmpdir else None,
                                                      _Skip(skip, present))
        if manifest is None:
            raise foreign(path, "it has no manifest") if not text else damaged(
                path, "it ends after the manifest")
        lost = set(manifest["objects"]) - seen
        if lost:
            raise damaged(path, f"{len(lost)} of its {len(manifest['objects'])} objects are"
                                 " missing")
        staged.flush()
    except BaseException:
        staged.discard()
        raise
    return manifest, staged


class _Skip:
    """Which objects need not be kept: `skip` asked per object, `present` once."""

    def __init__(self, skip: Callable[[str], bool] | None,
                 present: Callable[[list[str]], set[str]] | None) -> None:
        self.skip, self.present = skip, present
        self.known: set[str] = set()

    def manifest(self, manifest: dict[str, Any]) -> None:
        if self.present is not None:
            self.known = self.present(list(manifest["objects"]))

    def __call__(self, hash: str) -> bool:
        return hash in self.known or (self.skip is not None and self.skip(hash))


# ---- the checks every member passes, whichever reader read it -------------------------


def _expect_manifest(path: Path, name: str, isreg: bool, size: int) -> None:
    if name != MANIFEST or not isreg:
        raise foreign(path, f"its first member is {name!r}, not {MANIFEST}")
    if size > MANIFEST_MAX:
        raise foreign(path, "its manifest is implausibly large")


def _expect_manifest_hash(path: Path, name: str, isreg: bool, size: int) -> None:
    if name != MANIFEST_HASH or not isreg or size > 200:
        raise foreign(path, f"{MANIFEST_HASH} does not follow {MANIFEST}")


def _checked_manifest(path: Path, text: bytes, stated: bytes) -> dict[str, Any]:
    if stated.decode("ascii", "replace") != hash_bytes(text):
        raise damaged(path, "the manifest does not match its hash")
    return _parse(text, path)


def _expect_object(path: Path, manifest: dict[str, Any], seen: set[str], name: str,
                   isreg: bool, size: int) -> tuple[str, int]:
    """The hash a member names and the size the manifest gives it, once checked."""
    hash = _object_name_hash(name, isreg, path)
    want = manifest["objects"].get(hash)
    if want is None or hash in seen:
        raise foreign(path, f"it holds an object the manifest does not list ({hash})")
    if size != want:
        raise damaged(path, f"object {hash} is {size} bytes, the manifest says {want}")
    return hash, want


def _verified(path: Path, hash: str, got: str, count: int, want: int) -> None:
    if count != want:
        raise damaged(path, f"object {hash} ends early")
    if got != hash:
        raise damaged(path, f"object {hash} does not match its hash")


# ---- the plain reader: export's own archives, fast ------------------------------------


class _NotPlain(Exception):
    """Not a tar the plain reader takes: tarfile reads it (and says what is wrong)."""


class _Window:
    """Reads of one file at absolute offsets, served from one buffer of ~1 MiB: the
    headers and bytes of small members come from a few large reads."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.base = 0

    def view(self, offset: int, n: int) -> memoryview:
        rel = offset - self.base
        if rel < 0 or rel + n > len(self.buf):
            self.buf, self.base, rel = os.pread(self.fd, max(n, _CHUNK), offset), offset, 0
        return memoryview(self.buf)[rel:rel + n]


def _plain_header(hdr: bytes) -> tuple[str, int]:
    """(name, size) of a ustar header for a regular file; _NotPlain for anything else
    (a PAX or GNU extension, a link, a bad checksum, a name with a prefix)."""
    if (hdr[257:262] != b"ustar" or hdr[156] not in (0x30, 0) or hdr[124] & 0x80
            or hdr[345]):
        raise _NotPlain
    try:
        stated = int(hdr[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
        name = hdr[:100].split(b"\0", 1)[0].decode("ascii")
        size = int(hdr[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise _NotPlain from None
    if stated != sum(hdr) - sum(hdr[148:156]) + 256 or name.endswith("/"):
        raise _NotPlain
    return name, size


def _checkplain(path: Path, staged: Staged | None, skip: _Skip
                ) -> tuple[dict[str, Any] | None, bytes, set[str]]:
    manifest: dict[str, Any] | None = None
    text = b""
    seen: set[str] = set()
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        end = os.fstat(fd).st_size
        window = _Window(fd)
        offset = 0
        while True:
            hdr = bytes(window.view(offset, 512))
            if len(hdr) < 512 or hdr == _ZEROS:
                if offset == 0:
                    raise _NotPlain  # empty: tarfile's sentence
                if len(hdr) and hdr != _ZEROS:
                    raise _NotPlain  # a header cut short
                break
            name, size = _plain_header(hdr)
            at = offset + 512
            if at + size > end:
                raise _NotPlain  # cut short: tarfile's sentence
            offset = at + size + (-size % 512)
            if manifest is None and not text:
                _expect_manifest(path, name, True, size)
                text = bytes(window.view(at, size))
                continue
            if manifest is None:
                _expect_manifest_hash(path, name, True, size)
                manifest = _checked_manifest(path, text, bytes(window.view(at, size)))
                skip.manifest(manifest)
                continue
            hash, want = _expect_object(path, manifest, seen, name, True, size)
            keep = staged is not None and not skip(hash)
            if keep and want > staged.small_max:  # type: ignore[union-attr]
                tmp, got = _copy_hashed(fd, at, size, staged)  # type: ignore[arg-type]
                _verified(path, hash, got, size, want)
                staged.large[hash] = tmp  # type: ignore[union-attr]
                staged.bytes += size  # type: ignore[union-attr]
            elif size > _CHUNK:  # only checked: hashed in pieces
                hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
                for start in range(at, at + size, _PIECE):
                    hasher.update(os.pread(fd, min(_PIECE, at + size - start), start))
                _verified(path, hash, "blake3:" + hasher.hexdigest(), size, want)
            else:
                data = window.view(at, size)
                _verified(path, hash, "blake3:" + blake3.blake3(data).hexdigest(), size, want)
                if keep:
                    staged.add_small(hash, data)  # type: ignore[union-attr]
            seen.add(hash)
    return manifest, text, seen


def _copy_hashed(src: int, offset: int, size: int, staged: Staged) -> tuple[str, str]:
    """Copy `size` bytes of the archive from `offset` into a temp file of its own and
    hash the copy (our private file: nobody changes it under us), the hash of each
    piece in a thread while the kernel copies the next one, and the disk asked to
    write each piece as it lands. (temp path, hash)."""
    tmp, fd = staged._new()  # removed by discard() on failure
    hasher = PieceHasher(fd, what="a temp file of the import", name="onlooker-import-hash",
                         piece=_PIECE)
    try:
        done = 0
        while done < size and not hasher.failed:  # the hash failing stops the copy too
            n = min(_PIECE, size - done)
            with staged.writing():  # an EIO reading the archive stays the archive's
                got = _copy_range(src, fd, offset + done, n, dst_offset=done)
                if got < 0:  # no kernel copy here: through Python
                    chunk = os.pread(src, n, offset + done)
                    got = len(chunk)
                    view = memoryview(chunk)
                    at = done
                    while view:
                        w = os.pwrite(fd, view, at)
                        view, at = view[w:], at + w
            if got <= 0:
                break
            hasher.add(done, got)
            writeback(fd, done, done + got)
            done += got
    finally:
        hasher.close()
        os.close(fd)
    if hasher.failed:
        raise hasher.failed[0]
    if done != size:
        raise OSError(errno.EIO, f"the archive ended after {done} of {size} bytes")
    return tmp, hasher.hexdigest()


# ---- the tarfile reader: any other tar ------------------------------------------------


def _checkmembers(path: Path, staged: Staged | None, skip: _Skip
                  ) -> tuple[dict[str, Any] | None, bytes, set[str]]:
    manifest: dict[str, Any] | None = None
    text = b""
    seen: set[str] = set()
    for tar, member in members(path):
        if manifest is None and not text:
            _expect_manifest(path, member.name, member.isreg(), member.size)
            text = read_member(tar, member, path, MANIFEST_MAX)
            continue
        if manifest is None:
            _expect_manifest_hash(path, member.name, member.isreg(), member.size)
            manifest = _checked_manifest(path, text, read_member(tar, member, path, 200))
            skip.manifest(manifest)
            continue
        hash, want = _expect_object(path, manifest, seen, member.name, member.isreg(),
                                    member.size)
        small = tmp = None
        if staged is None or skip(hash):
            got, count = _hash_member(tar, member)
        elif want <= staged.small_max:
            small = read_member(tar, member, path, want)
            got, count = hash_bytes(small), len(small)
        else:
            tmp, got, count = _stage_large(tar, member, staged)
        _verified(path, hash, got, count, want)
        if staged is not None and small is not None:
            staged.add_small(hash, small)
        elif staged is not None and tmp is not None:
            staged.large[hash] = tmp
            staged.bytes += count
        seen.add(hash)
    return manifest, text, seen


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[str, int]:
    f = tar.extractfile(member)
    hasher, count = blake3.blake3(max_threads=blake3.blake3.AUTO), 0
    while f is not None and (chunk := f.read(_CHUNK)):
        hasher.update(chunk)
        count += len(chunk)
    return "blake3:" + hasher.hexdigest(), count


def _stage_large(tar: tarfile.TarFile, member: tarfile.TarInfo, staged: Staged
                 ) -> tuple[str, str, int]:
    """Copy one member into its own temp file, then hash the copy (our private file:
    nobody changes it under us). A plain tar on disk is copied by the kernel
    (copy_file_range from the member's offset), anything else in chunks."""
    tmp, fd = staged._new()  # removed by discard() on failure
    try:
        count = -1
        raw = tar.fileobj
        if type(raw) is io.BufferedReader and not member.issparse():
            with staged.writing():  # an EIO reading the archive stays the archive's
                count = _copy_range(raw.fileno(), fd, member.offset_data, member.size)
        if count < 0:
            f = tar.extractfile(member)
            count = 0
            while f is not None and (chunk := f.read(_CHUNK)):
                view = memoryview(chunk)
                with staged.writing():
                    while view:
                        view = view[os.write(fd, view):]
                count += len(chunk)
    finally:
        os.close(fd)
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if count:
        hasher.update_mmap(tmp)
    return tmp, "blake3:" + hasher.hexdigest(), count


def _copy_range(src: int, dst: int, offset: int, size: int, dst_offset: int | None = None
                ) -> int:
    """Bytes copied by copy_file_range (to `dst`'s position, or `dst_offset`), or -1
    where the kernel cannot do it here."""
    done = 0
    try:
        while done < size:
            if dst_offset is None:
                n = os.copy_file_range(src, dst, size - done, offset + done)
            else:
                n = os.copy_file_range(src, dst, size - done, offset + done,
                                       dst_offset + done)
            if n == 0:
                break  # the archive ends early: the caller says so
            done += n
    except OSError as err:
        if done or err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                     errno.EOPNOTSUPP):
            raise
        return -1
    return done


def _parse(text: bytes, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise damaged(path, "its manifest is not JSON") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise foreign(path, "its manifest is not an onlooker manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"{path} is an onlooker export of format version"
                           f" {manifest.get('format_version')!r}, and this onlooker reads"
                           f" {FORMAT_VERSION}: use the onlooker that wrote it or upgrade")
    objects = manifest.get("objects")
    if (not isinstance(objects, dict) or not isinstance(manifest.get("runs"), list)
            or not isinstance(manifest.get("versions"), list)
            or not all(isinstance(h, str) and len(h) == 71 and h.startswith("blake3:")
                       and isinstance(s, int) and s >= 0 for h, s in objects.items())):
        raise damaged(path, "its manifest is malformed")
    return manifest
