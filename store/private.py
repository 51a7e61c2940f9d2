"""Who owns a project's store, and how its files are kept private to them.

Everything under `.onlooker/` belongs to the project's owner, the uid and gid of the
project folder, whoever made it: an agent started as root (by hand, or by the service
for a registered project) writes files that the owner can read, gc, rm and delete, and
that nobody else can read. Folders are 0700 and files 0600, also for an agent that runs
as the owner: a world-readable project folder must not expose the copies. Objects and
packs are 0400: they are named by their content and never rewritten, so read-only says
what they are; the owner can still delete them, as deleting is the folder's right.

An agent that runs as someone other than the owner (root) must not take in what the
owner could not read themselves: `may_read` is the owner's read right, checked from the
mode bits of the file and the search bits of its folders (`Reader`). It is per process:
one agent process works for one project (`read_for`).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600
OBJECT_MODE = 0o400  # content-addressed and never rewritten (see the module docstring)


@dataclass(frozen=True)
class Owner:
    """The uid and gid the store's files get."""

    uid: int
    gid: int

    @classmethod
    def of(cls, folder: str | os.PathLike[str]) -> Owner:
        """The owner of `folder`, or of its nearest existing parent (a store not yet
        made belongs to whoever owns the folder it will be made in)."""
        path = Path(os.path.abspath(folder))
        for p in (path, *path.parents):
            try:
                st = os.stat(p)
            except OSError:
                continue
            return cls(st.st_uid, st.st_gid)
        return cls(os.geteuid(), os.getegid())

    @property
    def chown_needed(self) -> bool:
        """Whether what this process makes must be given away: only root can, and must
        when the owner is someone else."""
        return os.geteuid() == 0 and (self.uid, self.gid) != (0, os.getegid())

    def give(self, target: int | str | os.PathLike[str]) -> None:
        """Make an fd or a path just created by this process the owner's."""
        if not self.chown_needed:
            return
        if isinstance(target, int):
            os.fchown(target, self.uid, self.gid)
        else:
            os.chown(target, self.uid, self.gid, follow_symlinks=False)


def make_dir(path: str | os.PathLike[str], owner: Owner) -> Path:
    """`mkdir -p` with every folder it makes 0700 and the owner's; returns the path."""
    path = Path(path)
    missing = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, DIR_MODE)
        except FileExistsError:
            if not p.is_dir():
                raise
            continue
        os.chmod(p, DIR_MODE)  # the umask may have taken bits the owner needs
        owner.give(p)
    return path


def open_private(path: str | os.PathLike[str], flags: int, owner: Owner,
                 mode: int = FILE_MODE) -> int:
    """os.open with O_CREAT: a file made here is `mode` and the owner's. An existing
    file is opened as it is, never through a link (an agent running as root must not
    be led by its owner's link to write, or give away, another file)."""
    # O_NONBLOCK: a FIFO put in its place must not hang the open (regular files ignore it)
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a plain file")
        if owner.chown_needed:
            if st.st_nlink != 1:  # another name of the same file may be anyone's
                raise OSError(errno.EPERM, f"{path} has other hard links")
            if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
                os.fchown(fd, owner.uid, owner.gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: str | os.PathLike[str], data: bytes, owner: Owner) -> None:
    """Replace `path` with `data` at once (a temp file renamed over it), private."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC, owner)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def secure_store(store_dir: str | os.PathLike[str], owner: Owner) -> int:
    """Give a store made by an older version (folders 0755, files 0644, root's when the
    agent ran as root) to its owner, private; returns how many entries changed.

    Every folder and every file is fixed except the loose objects inside the object
    store's 256 prefix folders, which can be millions: once their folder is the owner's
    and 0700, nobody else can reach them, the owner can delete them (that is the
    folder's right), and they were always made readable (0444), so they need nothing.
    The cost is then a walk of the folders, not of the objects. Files with other links
    (the side door's hard links to project files) are left alone: changing their owner
    would change the project file's."""
    store_dir = Path(store_dir)
    changed = 0
    objects = store_dir / "objects"
    foreign = owner.chown_needed

    def fix(path: str, is_dir: bool) -> None:
        nonlocal changed
        # Through an O_PATH descriptor, checked after it is taken: a name swapped for a
        # link (or a hard link to another file) meanwhile is never changed.
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if not (stat.S_ISDIR(st.st_mode) if is_dir
                    else stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
                return
            mode = stat.S_IMODE(st.st_mode)
            want = DIR_MODE if is_dir else mode & 0o700
            here = f"/proc/self/fd/{fd}"
            if foreign and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
                os.chown(here, owner.uid, owner.gid)
                changed += 1
            if mode != want:
                os.chmod(here, want)
                changed += 1
        except OSError:
            pass  # not ours to change (an agent that is not root, a file of another user)
        finally:
            os.close(fd)

    def no_link(path: str) -> None:
        if foreign:
            raise StoreError(
                f"{path} is a symbolic link: an agent running as root for another user does"
                " not follow links in their store (remove it, or start the agent as"
                " the project's owner)")

    try:
        top = os.lstat(store_dir)
    except OSError:
        return 0
    if stat.S_ISLNK(top.st_mode):
        no_link(str(store_dir))
    if not stat.S_ISDIR(top.st_mode):
        return 0
    fix(str(store_dir), True)
    unwalked = {str(store_dir / "tmp" / "read")}  # the side door's links: see above
    for folder, dirs, files in os.walk(store_dir):
        for name in dirs:
            path = os.path.join(folder, name)
            if os.path.islink(path):  # os.walk lists links to folders among the folders
                no_link(path)
                continue
            fix(path, True)
        # The prefix folders are fixed above, never listed: listing them is reading
        # every object's name.
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in unwalked
                   and not (folder == str(objects) and len(d) == 2)]
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                no_link(path)
                continue
            fix(path, False)
    return changed


# ---- reading for the owner ---------------------------------------------------------------

_DIR_TTL = 1.0  # seconds a folder's verdict is trusted (a chmod of a folder is rare)
_DIR_CACHE_MAX = 10_000


@dataclass
class Reader:
    """The owner's right to read, for a process that has more rights than the owner
    (root). Mode bits as the kernel applies them: the owner class if the file is the
    owner's, else the group class if one of the owner's groups has it, else the others;
    and search (x) on every folder above. A file of someone else's with an access ACL
    is refused whatever it says (it may deny the owner by name): the safe side."""

    uid: int
    groups: frozenset[int]
    _dirs: dict[str, tuple[bool, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def for_owner(cls, owner: Owner) -> Reader:
        try:
            name = pwd.getpwuid(owner.uid).pw_name
            groups = frozenset(os.getgrouplist(name, owner.gid))
        except (KeyError, OSError):  # a uid with no account: its folder's group only
            groups = frozenset({owner.gid})
        return cls(owner.uid, groups)

    def _allows(self, st: os.stat_result, bit: int) -> bool:
        """`bit` is the "others" bit (4 read, 1 search), shifted for the class."""
        if st.st_uid == self.uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in self.groups:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    def may_read(self, path: str | os.PathLike[str], st: os.stat_result | None = None) -> bool:
        path = os.path.abspath(path)
        try:
            if st is None:
                st = os.stat(path)
        except OSError:
            return False
        if not self._allows(st, 4):
            return False
        if st.st_uid != self.uid and _has_acl(path):
            return False
        return self._may_search(os.path.dirname(path))

    def _may_search(self, folder: str) -> bool:
        now = time.monotonic()
        hit = self._dirs.get(folder)
        if hit is not None and now - hit[1] < _DIR_TTL:
            return hit[0]
        try:
            ok = self._allows(os.stat(folder), 1)
        except OSError:
            ok = False
        parent = os.path.dirname(folder)
        if ok and parent != folder:
            ok = self._may_search(parent)
        if len(self._dirs) > _DIR_CACHE_MAX:
            self._dirs.clear()
        self._dirs[folder] = (ok, now)
        return ok


_reader: Reader | None = None


def read_for(owner: Owner | None) -> Reader | None:
    """Make `may_read` the owner's right for this process (None: no limit beyond the
    kernel's). No limit is needed when this process is the owner, or the owner is root."""
    global _reader
    if owner is None or owner.uid in (0, os.geteuid()):
        _reader = None
    else:
        _reader = Reader.for_owner(owner)
    return _reader


def reader_state() -> tuple[int, list[int]] | None:
    """The process's reader as plain data, for a child process (`set_reader_state`)."""
    r = _reader
    return None if r is None else (r.uid, sorted(r.groups))


def set_reader_state(state: tuple[int, list[int]] | list | None) -> None:
    global _reader
    _reader = None if not state else Reader(int(state[0]), frozenset(int(g) for g in state[1]))


def may_read(path: str | os.PathLike[str], st: os.stat_result | None = None) -> bool:
    """Whether the project's owner may read `path` (always, where no reader is set)."""
    r = _reader
    return True if r is None else r.may_read(path, st)


def _has_acl(path: str) -> bool:
    try:
        os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError:  # none (ENODATA), or a filesystem without ACLs
        return False
    return True


def _unlink(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ---- reading what the owner can write ----------------------------------------------------

SMALL_MAX = 1 << 20  # agent.json, config.toml: far below; a pidfile is read with 64


def acting_for(owner: Owner) -> bool:
    """Whether this process works for someone else (root for the project's owner): what
    it reads in their store may then be a trap set for it."""
    return os.geteuid() != owner.uid


def store_folder_problem(path: str | os.PathLike[str], owner: Owner) -> str | None:
    """Why a process acting for `owner` must not use the store folder `path`, or None.

    A link (the owner could point it at any folder, where root would then make and give
    away files) or a folder of a third user's is refused; root's own is not, as an older
    version's `sudo onlooker init` made the store root's (`secure_store` gives it)."""
    if not acting_for(owner):
        return None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None  # not made yet: whoever makes it makes it the owner's
    except OSError as err:
        return f"cannot look at {path}: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return (f"{path} is a symbolic link: an agent running as root for another user does"
                " not follow links in their store")
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    if st.st_uid not in (owner.uid, os.geteuid()):
        return f"{path} belongs to another user than the project's owner (uid {owner.uid})"
    return None


def read_small(path: str | os.PathLike[str], owner: Owner | None = None, *,
               limit: int = SMALL_MAX, tail: bool = False, since: int = 0,
               dir_fd: int | None = None) -> bytes:
    """The bytes of a small file that its owner can write, read safely by anyone: never
    through a link, a plain file only (a FIFO or /dev/zero put in its place neither hangs
    nor fills memory), at most `limit` bytes. A file larger than `limit` is refused
    (EFBIG: a cut config would mean something else), or with `tail` its last `limit`
    bytes from offset `since` on are read (a log).

    With `owner` and a process acting for them (`acting_for`), the folder the file is in
    must not be a link and must be the owner's, and a file of another user's must have no
    other name (a hard link to a file the owner cannot read). Raises OSError."""
    foreign = owner is not None and acting_for(owner)
    path = os.fspath(path)
    opened: int | None = None
    if foreign and dir_fd is None:
        # the folder pinned first: its name swapped for a link later changes nothing
        folder = os.path.dirname(path) or "."
        opened = os.open(folder, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if os.fstat(opened).st_uid not in (owner.uid, os.geteuid()):  # type: ignore[union-attr]
                raise OSError(errno.EPERM, f"{folder} is not the owner's")
        except BaseException:
            os.close(opened)
            raise
        dir_fd, path = opened, os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    finally:
        if opened is not None:
            os.close(opened)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a plain file")
        if foreign and st.st_uid != owner.uid and st.st_nlink != 1:  # type: ignore[union-attr]
            raise OSError(errno.EPERM, f"{path} is another user's file with other names")
        if tail:
            at = max(since, st.st_size - limit)
        elif st.st_size > limit:
            raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
        else:
            at = 0
        chunks, got = [], 0
        while got <= limit:  # one byte more than allowed says it grew meanwhile
            chunk = os.pread(fd, limit + 1 - got, at + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        if not tail:
            raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
        data = data[:limit]
    return data
