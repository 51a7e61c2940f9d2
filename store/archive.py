"""The export archive on disk: its members, written and read back verified.

See store/share.py for what goes in. Reading never extracts a member by its name: the
manifest comes first (and must match its own hash), every other member must be
`objects/<64 hex digits>` that the manifest lists, with that size and that BLAKE3 hash.
tar's own failures, and the file's, become one sentence (ArchiveError).
"""

from __future__ import annotations

import contextlib
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
from .objects import hash_bytes

FORMAT = "onlooker-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.json.blake3"
OBJECT_DIR = "objects/"
MANIFEST_MAX = 1 << 30  # a manifest past this is no export of ours
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
# errors of writing the temporaries, not of reading the archive
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class ArchiveError(StoreError):
    """An archive that is not a complete, intact onlooker export; nothing was imported."""


class TarWriter:
    """An uncompressed PAX tar written straight to a file descriptor: headers by
    tarfile's own TarInfo.tobuf, a file's bytes copied by the kernel (copy_file_range)
    rather than through Python, so a 1 GiB model costs about what `tar cf` does."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self._buf = bytearray()  # small members gathered into ~1 MiB writes

    def _write(self, data: bytes | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self._buf)
        while view:
            view = view[os.write(self.fd, view):]
        view.release()
        self._buf.clear()

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

    def add_bytes(self, name: str, data: bytes, mtime: float) -> None:
        self._header(name, len(data), mtime)
        self._write(data)
        self._pad(len(data))

    def add_file(self, name: str, src: int, size: int, mtime: float) -> None:
        """`size` bytes of the open file `src` from its start; OSError if it has fewer."""
        self._header(name, size, mtime)
        self.flush()  # the kernel writes at the file's position: ours must be there
        done = _copy_range(src, self.fd, 0, size)
        if done < 0:  # no kernel copy here: through Python, in chunks
            done = 0
            while done < size and (chunk := os.pread(src, min(_CHUNK, size - done), done)):
                self._write(chunk)
                done += len(chunk)
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


def _ustar_header(name: bytes, size: int, mtime: int) -> bytes:
    """A POSIX ustar header for a read-only regular file owned by 0:0, built directly:
    tarfile's TarInfo.tobuf costs more than a small object's bytes."""
    head = b"".join((
        name.ljust(100, b"\0"), b"0000444\0", b"0000000\0", b"0000000\0",
        b"%011o\0" % size, b"%011o\0" % mtime, b" " * 8, tarfile.REGTYPE,
        b"\0" * 100, b"ustar\x0000", b"\0" * 32, b"\0" * 32, b"\0" * 16,
        b"\0" * 155, b"\0" * 12))
    chksum = b"%06o\0 " % sum(head)
    return head[:148] + chksum + head[156:]


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
    name = member.name
    hexdigest = name[len(OBJECT_DIR):] if name.startswith(OBJECT_DIR) else ""
    if not member.isreg() or not _HEX64.fullmatch(hexdigest):
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
    appended to one spool file, large ones each in its own temp file."""

    def __init__(self, tmpdir: Path | None, small_max: int) -> None:
        self.tmpdir, self.small_max = tmpdir, small_max
        self.small: list[tuple[str, int, int]] = []  # hash, offset in the spool, size
        self.large: dict[str, str] = {}  # verified hash -> temp path
        self.temps: list[str] = []  # every temp file made, for discard
        self.spool = -1
        self.spool_size = 0
        self.bytes = 0

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
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.temps.append(name)
        return name, fd

    def add_small(self, hash: str, data: bytes) -> None:
        if self.spool < 0:
            name, self.spool = self._new()
            os.unlink(name)  # anonymous: a crash leaves nothing behind
        view = memoryview(data)
        with self.writing():
            while view:
                view = view[os.write(self.spool, view):]
        self.small.append((hash, self.spool_size, len(data)))
        self.spool_size += len(data)
        self.bytes += len(data)

    def read_small(self, offset: int, size: int) -> bytes:
        return os.pread(self.spool, size, offset)

    def discard(self) -> None:
        """Remove what is still here (what was moved into place is no longer)."""
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.temps.clear()
        self.large.clear()
        if self.spool >= 0:
            os.close(self.spool)
            self.spool = -1


def stage(path: str | os.PathLike[str], tmpdir: Path | None, small_max: int = 1 << 18,
          skip: Callable[[str], bool] | None = None) -> tuple[dict[str, Any], Staged]:
    """One pass over the archive: the manifest first (checked against its own hash),
    then every object member checked for its name, size and BLAKE3 hash. With a
    `tmpdir`, the bytes of each object `skip` does not name are kept there (Staged);
    on any failure they are removed before the ArchiveError goes up. Nothing is ever
    extracted by its name."""
    path = Path(path)
    staged = Staged(tmpdir, small_max)
    try:
        with tar_errors(path):
            manifest, text, seen = _checkmembers(path, staged if tmpdir else None, skip)
        if manifest is None:
            raise foreign(path, "it has no manifest") if not text else damaged(
                path, "it ends after the manifest")
        lost = set(manifest["objects"]) - seen
        if lost:
            raise damaged(path, f"{len(lost)} of its {len(manifest['objects'])} objects are"
                                 " missing")
    except BaseException:
        staged.discard()
        raise
    return manifest, staged


def _checkmembers(path: Path, staged: Staged | None, skip: Callable[[str], bool] | None
                  ) -> tuple[dict[str, Any] | None, bytes, set[str]]:
    manifest: dict[str, Any] | None = None
    text = b""
    seen: set[str] = set()
    for tar, member in members(path):
        if manifest is None and not text:
            if member.name != MANIFEST or not member.isreg():
                raise foreign(path, f"its first member is {member.name!r}, not {MANIFEST}")
            if member.size > MANIFEST_MAX:
                raise foreign(path, "its manifest is implausibly large")
            text = read_member(tar, member, path, MANIFEST_MAX)
            continue
        if manifest is None:
            if member.name != MANIFEST_HASH or not member.isreg() or member.size > 200:
                raise foreign(path, f"{MANIFEST_HASH} does not follow {MANIFEST}")
            if read_member(tar, member, path, 200).decode("ascii", "replace") != hash_bytes(text):
                raise damaged(path, "the manifest does not match its hash")
            manifest = _parse(text, path)
            continue
        hash = object_hash(member, path)
        want = manifest["objects"].get(hash)
        if want is None or hash in seen:
            raise foreign(path, f"it holds an object the manifest does not list ({hash})")
        if member.size != want:
            raise damaged(path, f"object {hash} is {member.size} bytes, the manifest says"
                                 f" {want}")
        small = tmp = None
        if staged is None or (skip is not None and skip(hash)):
            got, count = _hash_member(tar, member)
        elif want <= staged.small_max:
            small = read_member(tar, member, path, want)
            got, count = hash_bytes(small), len(small)
        else:
            tmp, got, count = _stage_large(tar, member, staged)
        if count != want:
            raise damaged(path, f"object {hash} ends early")
        if got != hash:
            raise damaged(path, f"object {hash} does not match its hash")
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


def _copy_range(src: int, dst: int, offset: int, size: int) -> int:
    """Bytes copied by copy_file_range, or -1 where the kernel cannot do it here."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, offset + done)
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
