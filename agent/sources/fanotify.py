"""The privileged file tier: fanotify on the project's mount, with the pid of every open."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import resource
import select
import struct
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from onlooker.agent import clock
from onlooker.agent.errors import AgentError
from onlooker.agent.events import CLOSE_NOWRITE, CLOSE_WRITE, OPEN, FileEvent, Overflow
from onlooker.agent.rules.ignore import Ignore
from onlooker.agent.sources.reader import IdleWait, pid_set, stop_reader

log = logging.getLogger(__name__)

FAN_CLASS_NOTIF = 0x0
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_DFID_NAME = 0x400 | 0x800  # FAN_REPORT_DIR_FID | FAN_REPORT_NAME (Linux 5.9)
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_OPEN = 0x20
FAN_CLOSE_WRITE = 0x8
FAN_CLOSE_NOWRITE = 0x10
_CLOSES = FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE
FAN_Q_OVERFLOW = 0x4000
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100
MARK_MASK = FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE  # FAN_ONDIR off: no folder events

# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid
_META = struct.Struct("=IBBHQii")
_INFO = struct.Struct("=BBH")  # fanotify_event_info_header: type, pad, len
_U32 = struct.Struct("=I")
_INFO_DFID_NAME = 2
_DELETED = " (deleted)"
_GATHER_MS = 20
_OUTSIDE_TTL = 1.0  # seconds a folder's "outside the project" verdict is trusted unchecked
_DIR_CACHE_MAX = 100_000
_libc: ctypes.CDLL | None = None


class FanotifyUnavailable(AgentError):
    """fanotify cannot be used here; the message says why in one sentence."""

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.errno = err


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                      ctypes.c_int, ctypes.c_char_p]
        lib.fanotify_mark.restype = ctypes.c_int
        lib.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.open_by_handle_at.restype = ctypes.c_int
        _libc = lib
    return _libc


def _why(err: int, what: str) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return "fanotify: permission denied (needs CAP_SYS_ADMIN)"
    if err == errno.ENOSYS:
        return "fanotify: not supported by this kernel"
    return f"fanotify: {what} failed: {os.strerror(err)}"


def _init(names: bool = False) -> int:
    """A fanotify fd; an unlimited queue where allowed, else the kernel's default.

    names: events carry the folder's file handle and the name instead of an
    open fd (no file is opened for us per event: far cheaper on a busy mount).
    """
    lib = _lib()
    event_flags = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC
    base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | (FAN_REPORT_DFID_NAME if names else 0)
    try:
        fd = lib.fanotify_init(base | FAN_UNLIMITED_QUEUE, event_flags)
    except AttributeError as err:
        raise FanotifyUnavailable("fanotify: the C library has no fanotify_init") from err
    if fd < 0:
        fd = lib.fanotify_init(base, event_flags)
        if fd >= 0:
            log.info("fanotify: unlimited queue not allowed; using the default queue")
    if fd < 0:
        err = ctypes.get_errno()
        raise FanotifyUnavailable(_why(err, "fanotify_init"), err)
    return fd


def _mark(fd: int, path: str) -> None:
    rc = _lib().fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MOUNT, MARK_MASK, AT_FDCWD,
                              os.fsencode(path))
    if rc < 0:
        err = ctypes.get_errno()
        raise FanotifyUnavailable(_why(err, f"marking the mount of {path}"), err)


def _can_open_handles() -> bool:
    """open_by_handle_at needs CAP_DAC_READ_SEARCH (bit 2 of the effective set)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 2))
    except (OSError, ValueError):
        pass
    return False


def _open(path: str) -> tuple[int, bool]:
    """A marked fanotify fd, and whether it reports names (else open fds)."""
    fd = -1
    if _can_open_handles():  # else names could never be turned into paths
        try:
            fd = _init(names=True)
        except FanotifyUnavailable as err:
            if err.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
                raise
            # An older kernel (before 5.9): no name reporting.
    if fd >= 0:
        try:
            _mark(fd, path)
            return fd, True
        except FanotifyUnavailable as err:
            os.close(fd)
            if err.errno in (errno.EPERM, errno.EACCES, errno.ENOENT):
                raise
            # This filesystem cannot give file handles (EXDEV, ENODEV, EOPNOTSUPP).
    log.info("fanotify: name reporting unavailable here; reading an fd per event")
    fd = _init()
    try:
        _mark(fd, path)
    except FanotifyUnavailable:
        os.close(fd)
        raise
    return fd, False


def _batch_events() -> int:
    """Events per read: each carries an open fd, so stay well inside RLIMIT_NOFILE."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    return max(16, min(4096, (soft - used) // 4))


class FanotifySource:
    """Reports every open/close on the project's mount with the pid that did it.

    Kept: paths inside the project that the rules keep, and outside paths that
    a run's process touched when `ignore.outside_ok` allows them. The agent's
    own opens (`ignore_pid`) are dropped before any work. `run_pids` is called
    on the reader thread, at most once per batch of events.
    """

    def __init__(self, out: queue.Queue, project: Path, ignore: Ignore, *,
                 ignore_pid: int | Collection[int],
                 run_pids: Callable[[], Collection[int]]) -> None:
        self._out = out
        self._root = str(Path(project).resolve())
        self._root_slash = self._root.rstrip("/") + "/"
        self._ignore = ignore
        self._ignore_pid = pid_set(ignore_pid)
        self._run_pids = run_pids
        self._fd = -1
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._read_size = _META.size * _batch_events()
        self._names = False
        self._mount_fd = -1
        # folder file handle (fsid + handle) -> (path or None, inside, dev, ino, checked)
        self._dirs: dict[bytes, tuple[str | None, bool, int, int, float]] = {}
        self.events_seen = 0  # every event read, kept or not (for benchmarks and status)
        self._caught_up = 0.0
        self._idle = IdleWait()

    @property
    def caught_up(self) -> float:
        """Agent clock time before which every event the kernel queued has been passed on."""
        idle = self._idle.caught_up(self._fd)
        return self._caught_up if idle is None else max(idle, self._caught_up)

    @property
    def mode(self) -> str:
        """'names' (folder handle + name per event) or 'fds' (an open fd per event)."""
        return "names" if self._names else "fds"

    @staticmethod
    def probe(project: Path | None = None) -> tuple[bool, str]:
        """Whether fanotify with pids works here, and if not, why (one sentence)."""
        fd = -1
        try:
            fd, _ = _open(str(project) if project is not None else "/")
        except FanotifyUnavailable as err:
            return False, str(err)
        except OSError as err:
            return False, _why(err.errno or 0, "probe")
        finally:
            if fd >= 0:
                os.close(fd)
        return True, "fanotify: mount mark with pids works"

    def start(self) -> None:
        """Mark the project's mount and start the reader thread.

        Raises FanotifyUnavailable when the kernel or the privileges say no.
        """
        self._fd, self._names = _open(self._root)
        if self._names:
            self._read_size = 256 * 1024
            try:
                self._mount_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as err:
                self._close()
                raise FanotifyUnavailable(f"fanotify: cannot open {self._root}: {err.strerror}",
                                          err.errno or 0) from err
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="onlooker-fanotify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader thread once it has passed on what the kernel holds."""
        stop_reader(self, "fanotify")

    def _close(self) -> None:
        for name in ("_fd", "_wake_r", "_wake_w", "_mount_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        wake = select.poll()
        wake.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopping:
                # No timed wake-up: `caught_up` asks whether we are blocked here, with
                # everything read so far passed on.
                self._idle.enter()
                ready = poller.poll()
                self._idle.leave()
                if any(fd == self._wake_r for fd, _ in ready):
                    break
                # Let events gather: one read then serves hundreds, and the kernel
                # merges an open with its close into one event meanwhile.
                if ready and wake.poll(_GATHER_MS):
                    break
                self._drain()
            self._drain()  # asked to stop: pass on what happened before that
        except Exception:  # a bug here must not end file capture silently
            log.exception("fanotify: reader thread failed")
            self._out.put(Overflow(clock.now(), "fanotify"))
        finally:
            self._stopping = True
            self._close()

    def _drain(self) -> None:
        while not self._stopping:
            tried = clock.now()
            try:
                data = os.read(self._fd, self._read_size)
            except BlockingIOError:
                # Everything the kernel queued before `tried` was read by earlier reads
                # and is on the queue already: runs that ended before it may close.
                self._caught_up = tried
                return
            except InterruptedError:
                return
            except OSError as err:
                # EMFILE/ENFILE: the kernel could not give us an fd; that event is lost.
                log.warning("fanotify: read failed: %s; asking for a rescan", err.strerror)
                self._out.put(Overflow(clock.now(), "fanotify"))
                return
            if not data:
                return
            if self._names:
                self._handle_names(data)
            else:
                self._handle(data)

    def _handle(self, data: bytes) -> None:
        t = clock.now()
        unpack, readlink, close = _META.unpack_from, os.readlink, os.close
        root_slash, ignore_pid = self._root_slash, self._ignore_pid
        ignore, put = self._ignore, self._out.put
        run_pids: Collection[int] | None = None
        pos, end = 0, len(data)
        while pos + _META.size <= end:
            event_len, vers, _, _, mask, fd, pid = unpack(data, pos)
            if vers != FANOTIFY_METADATA_VERSION:  # a layout we cannot read: stop, loudly
                log.error("fanotify: unknown event format version %d; file capture stops", vers)
                self._stopping = True
                return
            pos += event_len if event_len >= _META.size else _META.size
            self.events_seen += 1
            if mask & FAN_Q_OVERFLOW:
                log.warning("fanotify: kernel queue overflowed; asking for a rescan")
                put(Overflow(t, "fanotify"))
            if fd < 0:
                continue
            if pid in ignore_pid:
                close(fd)
                continue
            try:
                path = readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            finally:
                close(fd)  # always: a leaked fd per event would exhaust the table
            if path.endswith(_DELETED):
                continue
            if path.startswith(root_slash):
                if ignore.skip_file(path) and not ignore.kept_pyc(path):
                    continue
            else:
                if run_pids is None:
                    run_pids = self._current_run_pids()
                if pid not in run_pids or not ignore.outside_ok(path):
                    continue
            # An open merged with its close (the usual case for a small file, gathered
            # for 5 ms) says nothing the close does not: one event, not two.
            if mask & FAN_OPEN and not mask & _CLOSES:
                put(FileEvent(t, OPEN, path, pid))
            if mask & FAN_CLOSE_WRITE:
                put(FileEvent(t, CLOSE_WRITE, path, pid))
            if mask & FAN_CLOSE_NOWRITE:
                put(FileEvent(t, CLOSE_NOWRITE, path, pid))

    def _handle_names(self, data: bytes) -> None:
        """Events naming (folder handle, name): a dict lookup per event, no syscalls."""
        t, now = clock.now(), time.monotonic()
        unpack, info, u32 = _META.unpack_from, _INFO.unpack_from, _U32.unpack_from
        ignore_pid, root_slash = self._ignore_pid, self._root_slash
        ignore, put, dirs = self._ignore, self._out.put, self._dirs
        run_pids: Collection[int] | None = None
        checked: dict[bytes, tuple[str | None, bool, int, int, float]] = {}
        pos, end = 0, len(data)
        while pos + _META.size <= end:
            event_len, vers, _, meta_len, mask, fd, pid = unpack(data, pos)
            if vers != FANOTIFY_METADATA_VERSION:
                log.error("fanotify: unknown event format version %d; file capture stops", vers)
                self._stopping = True
                return
            rec, ev_end = pos + meta_len, pos + max(event_len, _META.size)
            pos = ev_end
            self.events_seen += 1
            if fd >= 0:
                os.close(fd)
            if mask & FAN_Q_OVERFLOW:
                log.warning("fanotify: kernel queue overflowed; asking for a rescan")
                put(Overflow(t, "fanotify"))
                continue
            if pid in ignore_pid:
                continue
            while rec + _INFO.size <= ev_end:
                kind, _, rec_len = info(data, rec)
                if kind == _INFO_DFID_NAME or rec_len == 0:
                    break
                rec += rec_len
            if rec + 20 > ev_end or kind != _INFO_DFID_NAME:
                continue
            # info header (4), fsid (8), file_handle: handle_bytes (4), type (4), f_handle
            key_end = rec + 20 + u32(data, rec + 12)[0]
            key = data[rec + 4:key_end]
            entry = dirs.get(key)
            if entry is None or (not entry[1] and now - entry[4] > _OUTSIDE_TTL):
                entry = self._resolve(key, now)
            if entry[0] is None:
                continue
            if not entry[1]:
                if run_pids is None:
                    run_pids = self._current_run_pids()
                if pid not in run_pids:
                    continue
            # Renamed since cached? Once per folder per read: every event of a read was
            # queued before it, so a second look within it would tell nothing newer.
            seen = checked.get(key)
            if seen is None:
                seen = checked[key] = self._still_named(key, entry, now)
            entry = seen
            folder = entry[0]
            if folder is None:
                continue
            name = os.fsdecode(data[key_end:rec + rec_len].split(b"\0", 1)[0])
            path = f"{folder}/{name}" if folder != "/" else f"/{name}"
            if path.startswith(root_slash):
                if ignore.skip_file(path) and not ignore.kept_pyc(path):
                    continue
            else:
                if run_pids is None:
                    run_pids = self._current_run_pids()
                if pid not in run_pids or not ignore.outside_ok(path):
                    continue
            # An open merged with its close (the usual case for a small file, gathered
            # for 5 ms) says nothing the close does not: one event, not two.
            if mask & FAN_OPEN and not mask & _CLOSES:
                put(FileEvent(t, OPEN, path, pid))
            if mask & FAN_CLOSE_WRITE:
                put(FileEvent(t, CLOSE_WRITE, path, pid))
            if mask & FAN_CLOSE_NOWRITE:
                put(FileEvent(t, CLOSE_NOWRITE, path, pid))

    def _resolve(self, key: bytes,
                 now: float) -> tuple[str | None, bool, int, int, float]:
        """A folder's file handle -> its path now (once per folder, then cached)."""
        path, dev, ino = None, 0, 0
        fd = _lib().open_by_handle_at(self._mount_fd, key[8:], os.O_PATH | os.O_CLOEXEC)
        if fd >= 0:
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
                st = os.fstat(fd)
                dev, ino = st.st_dev, st.st_ino
            except OSError:
                path = None
            finally:
                os.close(fd)
        if path is not None and (path.endswith(_DELETED) or not path.startswith("/")):
            path = None
        inside = path is not None and (path == self._root or path.startswith(self._root_slash))
        entry = (path, inside, dev, ino, now)
        if len(self._dirs) >= _DIR_CACHE_MAX:
            self._dirs.clear()
        self._dirs[key] = entry
        return entry

    def _still_named(self, key: bytes, entry: tuple[str | None, bool, int, int, float],
                     now: float) -> tuple[str | None, bool, int, int, float]:
        """Check a cached folder path before it is reported: folders get renamed."""
        try:
            st = os.stat(entry[0])
        except (OSError, TypeError):
            return self._resolve(key, now)
        if st.st_ino != entry[3] or st.st_dev != entry[2]:
            return self._resolve(key, now)
        return entry

    def _current_run_pids(self) -> Collection[int]:
        try:
            pids = self._run_pids()
        except Exception:
            log.exception("fanotify: run_pids() failed")
            return ()
        return pids if isinstance(pids, (set, frozenset, dict)) else set(pids)
