"""Restore: write back, byte for byte, the versions a run read or wrote (or one version
of one file, `PATH@HASH`) from the object store.

Every file goes to a temporary file in its target folder, hashed (BLAKE3) as it is
written, and is renamed into place only when that hash is the recorded one: a damaged
object is an error for that file and nothing of it is left behind. What is in the way
decides the rest, per file:

- ``unchanged``: the target already holds the wanted content (it is hashed to know);
- ``skipped``: the version was only referenced (larger than the copy limit when the
  agent saw it), so its bytes were never kept; the report says what the file holds now;
- ``refused``: the target holds content onlooker never recorded for that path, which a
  restore would destroy (``force`` overwrites it); a symlink or other non-file too;
- ``failed``: the object is missing or damaged, or the target is a folder;
- ``restored`` (``would_restore`` under ``dry_run``).

A disk that fills up or a target that cannot be written stops the whole restore with
one sentence (RestoreError), the temporary file removed. Files restored before stay:
each is complete and verified.

Targets: a project-relative path goes under the project (default) or under ``to``;
a path outside the project goes back to itself, or under ``to/_outside/`` followed by
its absolute path, so a restore into another folder never writes outside it. Mode
bits are not in the catalog: a replaced file keeps its mode, a new one gets the
default (0666 less the umask). Files are not fsynced one by one (20,000 small files
would pay for it); the renames make each file appear whole or not at all.

Owners (`_Places`). A restore by the files' owner makes what any program of theirs
would. One by root (`sudo onlooker restore`) into a folder of another user's (the
project, or `to`) makes every file and folder it creates in a folder of that user's
theirs, not root's: a file of root's in their tree is one they can neither change nor
replace. A replaced file keeps its owner, as it keeps its mode. Below that folder such
a restore follows no symbolic link (the file is refused): the user could otherwise
point a folder of theirs at one of root's and have root write there. A file outside the
project restored by root to where it was (``/home/ana/data/x.csv``) is reached from
``/`` folder by folder: a link of root's in a folder of root's is root's own choice
(``/var/run -> /run``) and is followed, its target walked by the same rule; from the
first folder of a user's on, no link is (the file is refused, as below the project),
nor is a link of a user's in root's folder (``/tmp`` is anyone's); what it makes there
is that user's. The file itself is never followed: a link in its place is refused (or,
with ``force``, replaced).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from . import records
from .errors import HashError, MissingObject, StoreError
from .hashing import PieceHasher, hash_file
from .private import Owner

if TYPE_CHECKING:
    from .catalog import Catalog

ROLE_KEYS = ("inputs", "outputs", "code", "meta")
DEFAULT_ROLES = ("inputs", "outputs", "code")
STATUSES = ("restored", "would_restore", "unchanged", "skipped", "refused", "failed")
OUTSIDE = "_outside"
_CHUNK = 8 * 1024 * 1024
_BIG = 4 * 1024 * 1024  # loose objects over this are copied by the kernel
_PIECE = 16 * 1024 * 1024  # ...and hashed in pieces of this (a multiple of the page)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_HEX = re.compile(r"(?:blake3:)?[0-9a-fA-F]+")
# A path that is in several roles is restored once; the content the run left wins.
_PRECEDENCE = {"outputs": 0, "inputs": 1, "code": 2, "meta": 3}
# Errors that stop a restore: the next file would meet the same wall.
_FATAL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}

Progress = Callable[[int, int, int, int], None]


class RestoreError(StoreError):
    """A restore that cannot go on (disk full, target not writable), or bad input."""


class VersionNotFound(RestoreError):
    """PATH@HASH names no recorded version: the path, or no hash with that prefix."""


class AmbiguousVersion(VersionNotFound):
    """A hash prefix that names more than one version of the path."""


class _Damaged(Exception):
    """The object's bytes do not hash to its name."""


class _LinkOnTheWay(Exception):
    """A folder on the way to the target is a symbolic link (see `_Places`)."""


def restore(catalog: Catalog, run: int | str, *, paths: Iterable[str] | None = None,
            roles: Iterable[str] = DEFAULT_ROLES, to: str | os.PathLike[str] | None = None,
            force: bool = False, dry_run: bool = False,
            on_progress: Progress | None = None) -> dict[str, Any]:
    """Restore the files of a run: those of `roles` (inputs, outputs, code; meta files
    only when `paths` names them), or with `paths` only the files at or under those
    paths (project-relative, or absolute). Returns the report (see `_report`); raises
    NoSuchRun, RestoreError for a path the run never used or a target not writable."""
    run_id = catalog.resolve_run(run)
    roles = tuple(roles)
    bad = [r for r in roles if r not in ROLE_KEYS]
    if bad:
        raise RestoreError(f"unknown role {bad[0]!r}: use {', '.join(ROLE_KEYS)}")
    from .catalog import _FILES_SQL

    files = records.group_files(catalog._execute(
        f"{_FILES_SQL} WHERE io.run_id = ? ORDER BY a.path, v.id", (run_id,))).get(
        run_id, records.empty_files())
    names = None if paths is None else [catalog.relpath(p) for p in paths]
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for role in ROLE_KEYS:
        for entry in files.get(role, ()):
            path = entry["path"]
            if names is None:
                if role not in roles or role == "meta":
                    continue
            elif not any(_under(path, n) for n in names) or (
                    role not in roles and role != "meta"):
                continue
            held = chosen.get(path)
            if held is None or _PRECEDENCE[role] < _PRECEDENCE[held[0]]:
                chosen[path] = (role, entry)
    if names is not None:
        for name in names:
            if not any(_under(p, name) for p in chosen):
                which = "/".join(r for r in roles if r != "meta")
                raise RestoreError(f"run {run_id} has no file at {name} among its {which}"
                                   " (or meta files): `onlooker show "
                                   f"{run_id} --all` lists them")
    plan = [(role, e["path"], e["hash"], e["size"]) for _, (role, e) in sorted(chosen.items())]
    return _restore(catalog, plan, run_id, to, force, dry_run, on_progress)


def restore_version(catalog: Catalog, path: str, hash_prefix: str, *,
                    to: str | os.PathLike[str] | None = None, force: bool = False,
                    dry_run: bool = False) -> dict[str, Any]:
    """Restore the version of `path` whose hash starts with `hash_prefix` (hex, with
    or without `blake3:`). Raises VersionNotFound / AmbiguousVersion in one sentence."""
    name = catalog.relpath(path)
    text = str(hash_prefix).strip()
    if not text or not _HEX.fullmatch(text):
        raise VersionNotFound(f"'{hash_prefix}' is not a hash: give hex digits of one, "
                              f"as `onlooker lineage {name}` shows them")
    hexpart = text.lower().removeprefix("blake3:")
    rows = catalog._execute(
        "SELECT v.hash, v.size FROM versions v JOIN assets a ON a.id = v.asset_id"
        " WHERE a.path = ? ORDER BY v.created_at, v.id", (name,)).fetchall()
    if not rows:
        raise VersionNotFound(f"{name} is not in the catalog: no run read or wrote it while"
                              " the agent watched")
    hits = [r for r in rows if r[0].startswith("blake3:" + hexpart)]
    if not hits:
        raise VersionNotFound(f"{name} has no version whose hash starts with {hexpart} (it"
                              f" has {len(rows)})")
    if len(hits) > 1:
        raise AmbiguousVersion(f"{hexpart} names {len(hits)} versions of {name}: give more"
                               " digits of the hash")
    return _restore(catalog, [("version", name, hits[0][0], hits[0][1])], None, to, force,
                    dry_run, None)


def _under(path: str, name: str) -> bool:
    return name == "." or path == name or path.startswith(name.rstrip("/") + "/")


def _base(catalog: Catalog, to: str | os.PathLike[str] | None) -> Path:
    if to is None:
        return catalog.project
    base = Path(os.path.abspath(to))
    if base.exists() and not base.is_dir():
        raise RestoreError(f"cannot restore into {base}: it is not a folder")
    return base


def target_of(catalog: Catalog, name: str, to: str | os.PathLike[str] | None) -> str:
    """Where the file the catalog calls `name` is restored (see the module's doc)."""
    if os.path.isabs(name):
        if to is None:
            return name
        return os.path.join(os.path.abspath(to), OUTSIDE, name.lstrip("/"))
    return os.path.join(_base(catalog, to), name)


def _restore(catalog: Catalog, plan: list[tuple[str, str, str, int]], run_id: int | None,
             to: str | os.PathLike[str] | None, force: bool, dry_run: bool,
             on_progress: Progress | None) -> dict[str, Any]:
    base = _base(catalog, to)
    places = _Places(catalog, base, to)
    try:
        return _restore_in(catalog, plan, run_id, to, force, dry_run, on_progress, base,
                           places)
    finally:
        places.close()


def _restore_in(catalog: Catalog, plan: list[tuple[str, str, str, int]], run_id: int | None,
                to: str | os.PathLike[str] | None, force: bool, dry_run: bool,
                on_progress: Progress | None, base: Path, places: _Places) -> dict[str, Any]:
    store_dir = str(catalog.store_dir)
    total_bytes = sum(size or 0 for *_, size in plan)
    done_bytes = 0
    written = 0
    out: list[dict[str, Any]] = []

    def tick(extra: int = 0) -> None:
        if on_progress is not None:
            on_progress(len(out), len(plan), done_bytes + extra, total_bytes)

    for role, name, want, size in plan:
        target = target_of(catalog, name, to)
        entry: dict[str, Any] = {"path": name, "role": role, "hash": want, "size": size,
                                 "target": target}
        out.append(entry)
        status, reason, mode = _decide(catalog, name, want, target, store_dir, force, entry,
                                       places)
        if status == "restore":
            if dry_run:
                status = "would_restore"
            else:
                try:
                    _write(catalog, want, target, mode,
                           (lambda n: tick(n)) if size and size > _CHUNK else None, places)
                    status, written = "restored", written + (size or 0)
                except _Damaged as err:
                    status, reason = "failed", str(err)
                except _LinkOnTheWay as err:
                    status, reason = "refused", _link_reason(err)
                except MissingObject as err:
                    status, reason = "failed", str(err)
                except OSError as err:
                    if err.errno in _FATAL:
                        done = sum(1 for e in out if e.get("status") == "restored")
                        raise RestoreError(
                            f"cannot write {target}: {err.strerror or err}; nothing of it was"
                            f" left behind ({done} file{'s' if done != 1 else ''} restored"
                            " before it stay)") from err
                    status, reason = "failed", f"cannot write it: {err.strerror or err}"
        entry["status"] = status
        if reason:
            entry["reason"] = reason
        done_bytes += size or 0
        tick()
    counts = {s: 0 for s in STATUSES}
    for e in out:
        counts[e["status"]] += 1
    return {
        "run": run_id,
        "target": str(base),
        "dry_run": dry_run,
        "files": out,
        "counts": counts,
        "bytes_written": written,
        "ok": not (counts["skipped"] or counts["refused"] or counts["failed"]),
    }


def _link_reason(err: _LinkOnTheWay) -> str:
    return (f"{err} is a symbolic link, which a restore by root into another user's folder"
            " never follows (restore as that user, or --to a folder of root's)")


def _decide(catalog: Catalog, name: str, want: str, target: str, store_dir: str,
            force: bool, entry: dict[str, Any], places: _Places
            ) -> tuple[str, str | None, int | None]:
    """(status, reason, mode to keep) for one file; status "restore" means write it."""
    if target == store_dir or target.startswith(store_dir + os.sep):
        return "failed", "it is in onlooker's own store, which a restore never writes", None
    folder_fd = None
    try:
        # Root looks at what is there the way it would write it: never through a link
        # of the user's, which could point it at a file the user may not read.
        folder_fd = places.peek(target)
        look = (target if folder_fd is None else
                f"/proc/self/fd/{folder_fd}/{os.path.basename(target)}")
        st = os.lstat(look)
    except _LinkOnTheWay as err:
        return "refused", _link_reason(err), None
    except FileNotFoundError:
        st = None
    except OSError as err:
        if folder_fd is not None:
            os.close(folder_fd)
        return "failed", f"cannot look at it: {err.strerror or err}", None
    try:
        return _judge(catalog, name, want, look if st is not None else target, st, force,
                      entry)
    finally:
        if folder_fd is not None:
            os.close(folder_fd)


def _judge(catalog: Catalog, name: str, want: str, target: str, st: os.stat_result | None,
           force: bool, entry: dict[str, Any]) -> tuple[str, str | None, int | None]:
    current = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return "failed", "a folder is in its place", None
        if stat.S_ISREG(st.st_mode):
            try:
                current = hash_file(target).hash
            except HashError as err:
                return "failed", f"cannot read what is there now: {err}", None
            if current == want:
                return "unchanged", None, None
        entry["current_hash"] = current
    versions = {r[0]: bool(r[1]) for r in catalog._execute(
        "SELECT v.hash, v.stored FROM versions v JOIN assets a ON a.id = v.asset_id"
        " WHERE a.path = ?", (name,))}
    if not versions.get(want):
        now = ("the file is missing" if st is None else
               "the file there now has other content" if current is not None else
               "something other than a file is there now")
        return "skipped", f"only referenced (too large to copy when recorded): {now}", None
    if not catalog.objects.has(want):
        return "failed", "its object is missing from the store (removed by gc?)", None
    mode = None
    if st is not None:
        if not force:
            if current is None:
                return "refused", "something other than a file is there (--force replaces" \
                                  " it)", None
            if current not in versions:
                return "refused", ("it holds content onlooker never recorded for this path"
                                   " (--force overwrites it)"), None
        if stat.S_ISREG(st.st_mode):
            mode = stat.S_IMODE(st.st_mode)
    return "restore", None, mode


class _Places:
    """The folders a restore writes into, and who gets what it makes (the module's doc:
    Owners). Folders are opened one by one from the base down, so what is checked is
    what is written into."""

    def __init__(self, catalog: Catalog, base: Path, to: str | os.PathLike[str] | None
                 ) -> None:
        self.catalog, self.base, self.to = catalog, str(base), to
        self.root = os.geteuid() == 0
        self.owner = Owner.of(base)
        self._fd = -1

    @property
    def foreign(self) -> bool:
        """Root, writing into a folder of another user's."""
        return self.root and self.owner.uid != 0

    def inside(self, target: str) -> bool:
        return target.startswith(self.base.rstrip(os.sep) + os.sep)

    def _base_fd(self) -> int:
        if self._fd < 0:
            if self.to is not None:
                self._make_base()
            fd = os.open(self.base, _DIR)
            st = os.fstat(fd)
            if self.to is None and self.root and st.st_uid != self.catalog.owner.uid:
                os.close(fd)  # the project folder was swapped since the catalog was opened
                raise RestoreError(f"{self.base} is no longer the project the catalog was"
                                   " opened in (another user owns it now): nothing was"
                                   " restored")
            self.owner = Owner(st.st_uid, st.st_gid)
            self._fd = fd
        return self._fd

    def _make_base(self) -> None:
        missing = []
        p = Path(self.base)
        while not p.exists():
            missing.append(p)
            p = p.parent
        for p in reversed(missing):
            try:
                os.mkdir(p)
            except FileExistsError:
                continue
            if self.owner.chown_needed:  # the folder `to` is made in is the owner's
                os.chown(p, self.owner.uid, self.owner.gid, follow_symlinks=False)

    def folder(self, target: str) -> tuple[int, Owner | None]:
        """A descriptor of the folder `target` goes into, made if missing (the caller
        closes it), and who must get what is made in it (None: as made). Raises
        _LinkOnTheWay where a root restore meets a link it must not follow."""
        folder = os.path.dirname(target)
        if self.inside(target):
            fd = os.dup(self._base_fd())  # first: it settles the owner
            rel = os.path.relpath(folder, self.base)
            return self._walk(fd, self.base, [] if rel == "." else rel.split(os.sep),
                              self.owner, self.foreign)
        if not self.root:
            os.makedirs(folder, exist_ok=True)
            return os.open(folder, _DIR), None
        # root, outside the base: the path's folders may be anyone's, so they are
        # walked from "/" and who owns each one decides (see _walk)
        return self._walk(os.open("/", _DIR), "/", folder.split(os.sep), None, True)

    def peek(self, target: str) -> int | None:
        """A descriptor of the folder `target` is in, reached by the rules `folder`
        writes by but making nothing (the caller closes it), for root, which must not
        read through a link it would not write through; None: the path is read as it
        is. Raises FileNotFoundError when a folder on the way is missing, and
        _LinkOnTheWay as `folder` does."""
        if not self.root:
            return None
        folder = os.path.dirname(target)
        if not self.inside(target):
            return self._walk(os.open("/", _DIR), "/", folder.split(os.sep), None, True,
                              make=False)[0]
        if not self.foreign:
            return None
        if self._fd < 0 and self.to is not None and not os.path.isdir(self.base):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.base)
        fd = os.dup(self._base_fd())
        rel = os.path.relpath(folder, self.base)
        return self._walk(fd, self.base, [] if rel == "." else rel.split(os.sep),
                          self.owner, True, make=False)[0]

    def _walk(self, fd: int, start: str, parts: list[str], owner: Owner | None,
              strict: bool, make: bool = True) -> tuple[int, Owner | None]:
        """Open `parts` one by one from `fd` (the folder `start`), making those missing.
        Not `strict`: links are followed as any open would. `strict`: none is, except
        while `owner` is None (every folder so far root's), where a link of root's is
        root's own choice (/var/run -> /run) and is resolved here, its target walked by
        the same rule; the first folder of a user's on the way becomes `owner`. Not
        `make`: a missing folder raises FileNotFoundError instead of being made."""
        flags = _DIR | (os.O_NOFOLLOW if strict else 0)
        todo = list(reversed(parts))
        where = [start]  # the path walked so far, as the kernel would resolve it
        hops = 0
        try:
            while True:
                if owner is None:
                    st = os.fstat(fd)
                    if st.st_uid != 0:
                        owner = Owner(st.st_uid, st.st_gid)
                if not todo:
                    return fd, owner
                part = todo.pop()
                if part in ("", "."):
                    continue
                try:
                    try:
                        nfd = os.open(part, flags, dir_fd=fd)
                    except FileNotFoundError:
                        if not make:
                            raise
                        self._mkdir(part, fd, owner)
                        nfd = os.open(part, flags, dir_fd=fd)
                except OSError:
                    link = _link(part, fd) if strict else None
                    if link is None:
                        raise
                    # a link of a user's in root's folder (/tmp is anyone's) is theirs
                    if owner is not None or link[0] != 0:
                        raise _LinkOnTheWay(os.path.join(*where, part)) from None
                    hops += 1
                    if hops > 40:  # the kernel's own limit
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                    if link[1].startswith("/"):
                        os.close(fd)
                        fd, where = -1, ["/"]  # -1 until open: closed once only
                        fd = os.open("/", _DIR)
                    todo.extend(reversed(link[1].split("/")))
                    continue
                os.close(fd)
                fd = nfd
                if part == "..":
                    where = [os.path.dirname(os.path.join(*where))]
                else:
                    where.append(part)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def _mkdir(self, name: str, parent_fd: int, owner: Owner | None) -> None:
        try:
            os.mkdir(name, dir_fd=parent_fd)
        except FileExistsError:
            return
        got = self._heir(parent_fd, None, owner)
        if got is not None:
            os.chown(name, *got, dir_fd=parent_fd, follow_symlinks=False)

    def _heir(self, folder_fd: int, old: os.stat_result | None, owner: Owner | None
              ) -> tuple[int, int] | None:
        """(uid, gid) a file or folder made in `folder_fd` must get, None: as made.
        `old`: the file it replaces; `owner`: whose the tree it is made in is."""
        if not self.root:
            return None
        if old is not None:
            want = (old.st_uid, old.st_gid)
        else:
            st = os.fstat(folder_fd)
            if owner is None or not owner.chown_needed or st.st_uid != owner.uid:
                return None
            # a setgid folder hands its group down, as the kernel would for the owner
            want = (st.st_uid, st.st_gid if st.st_mode & stat.S_ISGID else owner.gid)
        return None if want == (os.geteuid(), os.getegid()) else want

    def give(self, fd: int, folder_fd: int, old: os.stat_result | None,
             owner: Owner | None) -> None:
        """Make the restored file `fd` whose it must be (the module's doc: Owners)."""
        got = self._heir(folder_fd, old, owner)
        if got is not None:
            os.fchown(fd, *got)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _link(name: str, dir_fd: int) -> tuple[int, str] | None:
    """(owner, target) of the link `name`, None if it is none: both read from the
    link itself, so a link swapped meanwhile cannot lend another's target an owner."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return (st.st_uid, os.readlink("", dir_fd=fd)) if stat.S_ISLNK(st.st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _write(catalog: Catalog, want: str, target: str, mode: int | None,
           progress: Callable[[int], None] | None, places: _Places) -> None:
    """Copy the object to a temp file beside `target`, hashing as it goes, and rename
    it into place only when the hash is `want`; nothing is left behind otherwise."""
    leaf = os.path.basename(target)
    dir_fd, owner = places.folder(target)
    # ends in .tmp: the agent takes it for a tool's temp file, not an asset
    tmp = f".{leaf}.{uuid.uuid4().hex[:12]}.onlooker-restore.tmp"
    fd = -1
    try:
        try:
            old: os.stat_result | None = os.lstat(leaf, dir_fd=dir_fd)
        except FileNotFoundError:
            old = None
        if old is not None and not stat.S_ISREG(old.st_mode):
            old = None  # a link or other thing replaced (--force): nobody's file to keep
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o666, dir_fd=dir_fd)
        with catalog.objects.open(want) as src:
            if _is_big_file(src):
                got = _copy_big(src, fd, progress)
            else:
                hasher = blake3.blake3()
                copied = 0
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    hasher.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    copied += len(chunk)
                    if progress is not None:
                        progress(copied)
                got = "blake3:" + hasher.hexdigest()
        if got != want:
            raise _Damaged(f"the stored object is damaged (its bytes hash to {got[:19]}…, not"
                           " the recorded hash); nothing was written")
        places.give(fd, dir_fd, old, owner)  # before the mode: a chown clears setuid bits
        if mode is not None:
            os.fchmod(fd, mode)
        os.close(fd)
        fd = -1
        os.rename(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(dir_fd)


def _is_big_file(src: Any) -> bool:
    """A loose object (a real file) big enough that a copy in the kernel pays."""
    try:
        return os.fstat(src.fileno()).st_size > _BIG
    except (AttributeError, OSError, ValueError):  # a packed object: bytes in memory
        return False


def _copy_big(src: Any, fd: int, progress: Callable[[int], None] | None) -> str:
    """Copy in the kernel (copy_file_range, a reflink where the filesystem has them,
    else sendfile) and hash what was written, read back piece by piece (PieceHasher)
    in a thread while the kernel copies the next piece (BLAKE3 releases the GIL): the
    bytes about to be renamed into place are the ones checked, in about the time of
    the copy alone rather than the copy and then the hash."""
    size = os.fstat(src.fileno()).st_size
    in_fd = src.fileno()
    # the temp file is open write-only: the hash reads it through a descriptor opened
    # from this one (its folder may have been renamed meanwhile)
    reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    hasher = PieceHasher(reader, what="the restored temp file", name="onlooker-restore-hash",
                         piece=_PIECE)
    copied = queued = 0
    try:
        while copied < size and not hasher.failed:
            want = min(_PIECE, size - copied)
            try:
                n = os.copy_file_range(in_fd, fd, want, copied, copied)
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                n = os.sendfile(fd, in_fd, copied, want)
            if n == 0:
                break
            copied += n
            while copied - queued >= _PIECE:  # whole pieces
                hasher.add(queued, _PIECE)
                queued += _PIECE
            if progress is not None:
                progress(copied)
        if copied > queued:
            hasher.add(queued, copied - queued)
    finally:
        hasher.close()
        os.close(reader)
    return hasher.hexdigest()
