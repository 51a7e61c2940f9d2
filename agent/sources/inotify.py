"""The unprivileged file tier: inotify watches on every kept folder of the project."""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

from onlooker.agent import clock
from onlooker.agent import events as ev
from onlooker.agent.errors import AgentError
from onlooker.agent.rules.ignore import IGNORE_FILE, Ignore
from onlooker.agent.sources.reader import IdleWait, queued_bytes, stop_reader

log = logging.getLogger(__name__)

STRUCTURE_MASK = (F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.CLOSE_WRITE
                  | F.DELETE_SELF | F.MOVE_SELF | F.Q_OVERFLOW | F.EXCL_UNLINK | F.DONT_FOLLOW)
READ_MASK = F.OPEN | F.CLOSE_NOWRITE
# A bytecode cache: its reads stand for imports, and a .pyc renamed into place says that
# its source was just compiled to be run (an import, not a read of the text as bytes).
PYCACHE_MASK = READ_MASK | F.MOVED_TO
_OPS = {F.OPEN: ev.OPEN, F.CLOSE_NOWRITE: ev.CLOSE_NOWRITE, F.CLOSE_WRITE: ev.CLOSE_WRITE,
        F.CREATE: ev.CREATE, F.DELETE: ev.DELETE, F.MOVED_FROM: ev.MOVED_FROM,
        F.MOVED_TO: ev.MOVED_TO}
_CHANGES = frozenset((ev.CLOSE_WRITE, ev.MOVED_TO, ev.MOVED_FROM, ev.DELETE))
_ENV_MARKERS = frozenset(("pyvenv.cfg", "conda-meta"))
_SPECIAL = F.Q_OVERFLOW | F.IGNORED | F.DELETE_SELF | F.MOVE_SELF | F.ISDIR
_DIR_NOISE = F.OPEN | F.CLOSE_NOWRITE | F.CLOSE_WRITE  # listing a folder raises these
# A file made (or opened) and then closed after writing, with nothing between in the
# stream, comes as one close_write carrying the ops before it (FileEvent.before): two
# event objects fewer per file written, in this thread and in the assembler's.
_FOLDS = F.CREATE | F.OPEN
_HEADER = struct.Struct("iIII")
_READ_SIZE = 1 << 20
_DRAIN_EVERY = 64  # folders listed between drains: 4 events each, far below any queue limit
_CREDIT_TTL = 30.0  # seconds an unused own-read credit lives
_GATHER_MS = 5
_PYCACHE = "/__pycache__"
_MOVE_WAIT = 0.02  # seconds to wait for the MOVED_TO of a folder's MOVED_FROM
_SYNTHETIC_COOKIE = 1 << 32  # cookies we make for files in renamed folders; kernel's are u32
LIMIT_MESSAGE = ("inotify watch limit reached ({n} watches): raise fs.inotify.max_user_watches, "
                 "e.g. `sysctl fs.inotify.max_user_watches=524288`")


class WatchError(AgentError):
    """The project folder itself cannot be watched; the message says why."""


class InotifySource:
    """Watches every kept folder and turns kernel events into FileEvents (pid=None).

    With reads=False only structure is watched (create, delete, move, close
    after write): the mode used beside fanotify, which reports opens itself.
    """

    def __init__(self, out: queue.Queue, project: Path, ignore: Ignore, *,
                 reads: bool = True) -> None:
        self._out = out
        self._ignore = ignore
        self._root = str(Path(project).resolve())
        self._reads = reads
        self._mask = STRUCTURE_MASK | (READ_MASK if reads else 0)
        self._wd_path: dict[int, str] = {}
        self._path_wd: dict[str, int] = {}
        self._kids: dict[str, set[str]] = {}  # watched folder -> its watched subfolders
        # (t, offset in the fd's byte stream, wd, mask, cookie, name)
        # (read at, queue last empty before, offset, wd, mask, cookie, name)
        self._backlog: deque[tuple[float, float | None, int, int, int, int, str]] = deque()
        self._offset = 0  # bytes read from the inotify fd so far
        self._pending_moves: dict[int, tuple[str, float]] = {}  # cookie -> (old path, deadline)
        self._caught_up = 0.0  # see the property
        self._idle = IdleWait()
        self._fd = -1  # the inotify fd, for `caught_up` asked from another thread
        self._empty_at = 0.0  # when a read last found the kernel queue empty
        # path -> [(stream offset when expected, expiry)] for each expected own open
        self._credits: dict[str, list[tuple[int, float]]] = {}
        self._lock = threading.Lock()  # guards _credits and _offset
        self._own_open: dict[str, int] = {}
        self._cookies = _SYNTHETIC_COOKIE
        self._resync = False
        self._resync_readd = False
        self._limit_hit = 0
        self._stopping = False
        self._ino: INotify | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self.problem: str | None = None  # one sentence for `onlooker status`

    # -- public ------------------------------------------------------------

    @property
    def caught_up(self) -> float:
        """Agent clock time before which every event the kernel queued has been passed
        on (see daemon: a run is closed only once the file sources are past its end)."""
        idle = self._idle.caught_up(self._fd)
        return self._caught_up if idle is None else max(idle, self._caught_up)

    @property
    def watch_count(self) -> int:
        return len(self._path_wd)

    def start(self) -> None:
        """Watch every kept folder, then start the reader thread.

        Raises WatchError when the project folder itself cannot be watched.
        """
        try:
            self._ino = INotify(nonblocking=True)
            self._fd = self._ino.fileno()
        except OSError as err:
            hint = (": raise fs.inotify.max_user_instances" if err.errno == errno.EMFILE else "")
            raise WatchError(f"cannot start inotify: {err.strerror}{hint}") from err
        try:
            with open("/proc/sys/fs/inotify/max_queued_events") as fh:
                log.info("inotify: kernel queue holds %s events", fh.read().strip())
        except OSError:
            pass
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        started = time.monotonic()
        self._sync(self._root, emit_new=False)
        if self._root not in self._path_wd:
            self._close()
            raise WatchError(f"cannot watch the project folder {self._root}: "
                             f"{self.problem or 'it is missing or unreadable'}")
        log.info("inotify: %d folders watched in %.2f s", self.watch_count,
                 time.monotonic() - started)
        self._thread = threading.Thread(target=self._run, name="onlooker-inotify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader thread once it has passed on what the kernel holds."""
        stop_reader(self, "inotify")

    def expect_own_read(self, path: str) -> None:
        """The agent is about to open `path` itself: drop that open and its close."""
        if not self._reads:
            return
        p = os.fspath(path)
        if not self._ignore.inside(p) or self._ignore.skip_file(p):
            return
        now = time.monotonic()
        with self._lock:
            # Only events queued from now on may be ours: events already in the
            # kernel queue (an earlier open by a user of the same file) stay theirs.
            seq = self._offset + self._queued_bytes()
            if len(self._credits) > 4096:
                self._credits = {k: v for k, v in self._credits.items() if v[-1][1] > now}
            self._credits.setdefault(p, []).append((seq, now + _CREDIT_TTL))

    @contextmanager
    def own_read(self, path: str) -> Iterator[None]:
        """`with source.own_read(p): open(p)...`; a failed open takes its credit back."""
        self.expect_own_read(path)
        try:
            yield
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
            with self._lock:
                credits = self._credits.get(os.fspath(path))
                if credits:
                    credits.pop()
                    if not credits:
                        del self._credits[os.fspath(path)]
            raise

    def _queued_bytes(self) -> int:
        return queued_bytes(self._fd) or 0  # (-1 before start and after close)

    # -- reader thread -----------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._ino.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        wake = select.poll()
        wake.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopping:
                self._process_backlog()
                clean = not self._pending_moves and not self._resync and not self._backlog
                if clean:
                    # What was read before the last empty read is handled and passed on.
                    self._caught_up = self._empty_at
                if self._resync and not self._stopping:
                    readd, self._resync, self._resync_readd = self._resync_readd, False, False
                    self._sync(self._root, emit_new=True, readd=readd)
                    continue
                if self._pending_moves:
                    if self._drain():
                        continue
                    self._expire_moves()
                if self._pending_moves:
                    ready = poller.poll(_MOVE_WAIT * 1000)
                else:
                    # No timed wake-up: `caught_up` asks whether we are blocked here.
                    # (Looked at again: moves given up on just now leave it clean too.)
                    if not self._resync and not self._backlog and not self._stopping:
                        self._idle.enter()
                    ready = poller.poll()
                    self._idle.leave()
                if any(fd == self._wake_r for fd, _ in ready):
                    break
                # A short gather turns a burst into few big reads instead of one
                # wake-up per event; the kernel queue holds far more than this.
                if ready and wake.poll(_GATHER_MS):
                    break
                self._drain()
            # Asked to stop: what happened before that is still reported (a run's
            # last closes must reach the catalog).
            self._drain()
            self._process_backlog()
        except Exception:  # a bug here must not kill file capture silently
            log.exception("inotify: reader thread failed")
            self._emit(ev.Overflow(clock.now(), "inotify"))
        finally:
            self._stopping = True
            self._close()

    def _close(self) -> None:
        self._fd = -1  # before the close: `caught_up` must not ask a reused number
        if self._ino is not None and not self._ino.closed:
            self._ino.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1

    def _drain(self) -> bool:
        """Move whatever the kernel holds into the backlog; True if anything came."""
        got = False
        fd = self._ino.fileno()
        header, size, isdir = _HEADER.unpack_from, _HEADER.size, F.ISDIR
        append = self._backlog.append
        create, opened, close_write = F.CREATE, F.OPEN, F.CLOSE_WRITE
        while True:
            with self._lock:
                tried = clock.now()
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    self._empty_at = tried
                    return got
                except InterruptedError:
                    return got
                except OSError as err:
                    log.error("inotify: read failed: %s", err.strerror)
                    return got
                base = self._offset
                self._offset += len(data)
            if not data:
                return got
            got = True
            t = clock.now()
            # The events of this read happened after the queue was last seen empty: under
            # a backlog, long before `t` (the assembler's windows use both ends).
            since = self._empty_at or None
            # Folding (see _FOLDS) only where no own read is expected: a credit is matched
            # against each open's own place in the stream.
            fold = not self._credits
            held: list[tuple] = []  # a create / open that may fold into what follows
            pos, end = 0, len(data)
            while pos < end:
                off = base + pos
                wd, mask, cookie, namelen = header(data, pos)
                name_start = pos + size
                pos = name_start + namelen
                if mask & isdir and mask & _DIR_NOISE:
                    continue  # folder listings (ours and everyone's) are noise
                raw = data[name_start:pos].rstrip(b"\0")
                name = os.fsdecode(raw) if raw else ""
                if fold:
                    if held:
                        last = held[-1]
                        if wd == last[3] and name == last[6] and (
                                mask == close_write or (mask == opened and last[4] == create)):
                            if mask == opened:
                                held.append((t, since, off, wd, mask, cookie, name))
                                continue
                            folded = 0
                            for h in held:
                                folded |= h[4]
                            held.clear()
                            append((t, since, off, wd, mask | folded, cookie, name))
                            continue
                        for h in held:
                            append(h)
                        held.clear()
                    if (mask == create or mask == opened) and name:
                        held.append((t, since, off, wd, mask, cookie, name))
                        continue
                append((t, since, off, wd, mask, cookie, name))
            for h in held:
                append(h)

    def _process_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not self._stopping:
            item = backlog.popleft()
            try:
                self._handle(*item)
            except Exception:
                log.exception("inotify: cannot handle event %r", item)

    def _emit(self, event: object) -> None:
        self._out.put(event)

    def _handle(self, t: float, since: float | None, off: int, wd: int, mask: int, cookie: int,
                name: str) -> None:
        if mask & _FOLDS and mask & F.CLOSE_WRITE:
            self._handle_folded(t, since, off, wd, mask, cookie, name)
            return
        if mask & _SPECIAL or not name:
            self._handle_special(t, wd, mask, cookie, name)
            return
        d = self._wd_path.get(wd)
        op = _OPS.get(mask & 0xFFF)
        if d is None or op is None:
            return
        p = f"{d}/{name}"
        if name == IGNORE_FILE and op in _CHANGES and d == self._root:
            self._ignore_file_changed()
        ignore = self._ignore
        if d.endswith(_PYCACHE):
            # Imports served from bytecode: a .pyc read stands for its source; one
            # written says the source was compiled to run.
            if name.endswith(".pyc") and op in (ev.OPEN, ev.CLOSE_NOWRITE, ev.MOVED_TO):
                self._emit(ev.FileEvent(t, op, p, None, cookie, since))
            return
        if ignore.skip_dir(d) or (ignore.has_patterns and ignore.matches_pattern(p)):
            return
        if op is ev.OPEN:
            if self._credits and self._take_credit(p, off):
                self._own_open[p] = self._own_open.get(p, 0) + 1
                return
        elif op is ev.CLOSE_NOWRITE:
            n = self._own_open.get(p)
            if n:
                if n == 1:
                    del self._own_open[p]
                else:
                    self._own_open[p] = n - 1
                return
        elif name == "pyvenv.cfg" and (op is ev.CREATE or op is ev.MOVED_TO):
            self._folder_became_env(d)
        elif op is ev.CLOSE_WRITE and not self._reads:
            # Beside fanotify, which reports every close with its pid, a pid-less close
            # is nothing to the assembler: not made, not queued (a file written costs one
            # event fewer). The mask keeps it for the ignore file's rewrite above.
            return
        self._emit(ev.FileEvent(t, op, p, None, cookie, since))

    def _handle_folded(self, t: float, since: float | None, off: int, wd: int, mask: int,
                       cookie: int, name: str) -> None:
        """A create and/or open folded into the close_write after it (see _drain)."""
        d = self._wd_path.get(wd)
        if d is None:
            return
        if (name == IGNORE_FILE or name == "pyvenv.cfg" or d.endswith(_PYCACHE)
                or self._credits):
            # what each of the events does on its own (the rules above)
            for bit in (F.CREATE, F.OPEN, F.CLOSE_WRITE):
                if mask & bit:
                    self._handle(t, since, off, wd, bit, cookie, name)
            return
        if not self._reads:
            # Beside fanotify, which reports the file's open and close with their pid:
            # the create is news only for files in folders watched too late, which
            # `_sync` reports itself.
            return
        p = f"{d}/{name}"
        ignore = self._ignore
        if ignore.skip_dir(d) or (ignore.has_patterns and ignore.matches_pattern(p)):
            return
        before = (ev.CREATE, ev.OPEN) if mask & F.CREATE and mask & F.OPEN else (
            (ev.CREATE,) if mask & F.CREATE else (ev.OPEN,))
        self._emit(ev.FileEvent(t, ev.CLOSE_WRITE, p, None, cookie, since, before))

    def _handle_special(self, t: float, wd: int, mask: int, cookie: int, name: str) -> None:
        if mask & F.Q_OVERFLOW:
            log.warning("inotify: kernel queue overflowed; asking for a rescan")
            self._emit(ev.Overflow(t, "inotify"))
            self._resync = self._resync_readd = True  # folders made meanwhile are unwatched
            return
        if mask & F.IGNORED:
            self._forget(wd)
            return
        d = self._wd_path.get(wd)
        if d is None:
            return
        if not name:
            if d == self._root and mask & (F.DELETE_SELF | F.MOVE_SELF):
                what = "deleted" if mask & F.DELETE_SELF else "moved"
                log.error("inotify: the project folder %s was %s; restart the agent", d, what)
                self.problem = f"the project folder was {what}"
            return
        p = f"{d}/{name}"
        if mask & F.CREATE:
            if name == "conda-meta":
                self._folder_became_env(d)
            elif self._pycache_ok(p):
                self._watch(p, PYCACHE_MASK)
                self._bytecode_written_before_watch(p)
            elif not self._ignore.skip_dir(p):
                self._sync(p, emit_new=True)
        elif mask & F.MOVED_FROM:
            self._pending_moves[cookie] = (p, time.monotonic() + _MOVE_WAIT)
        elif mask & F.MOVED_TO:
            old = self._pending_moves.pop(cookie, (None, 0.0))[0]
            self._folder_moved_in(old, p)

    def _take_credit(self, p: str, off: int) -> bool:
        """Consume the oldest live credit for `p` made before this event was queued."""
        with self._lock:
            credits = self._credits.get(p)
            if not credits:
                return False
            now = time.monotonic()
            credits[:] = [c for c in credits if c[1] >= now]
            for i, (seq, _expiry) in enumerate(credits):
                if seq <= off:
                    del credits[i]
                    break
            else:
                if not credits:
                    del self._credits[p]
                return False
            if not credits:
                del self._credits[p]
            return True

    # -- folder structure ---------------------------------------------------

    def _folder_became_env(self, d: str) -> None:
        self._ignore.invalidate()
        if self._ignore.skip_dir(d):
            log.info("inotify: %s is an environment now; no longer watched", d)
            self._unwatch_tree(d)

    def _ignore_file_changed(self) -> None:
        self._ignore.reload()
        self._resync = True  # folders newly ignored lose watches, newly kept gain them

    def _folder_moved_in(self, old: str | None, new: str) -> None:
        renamed = old is not None and self._rekey(old, new)
        self._ignore.invalidate()
        if self._ignore.skip_dir(new):
            if renamed:
                self._unwatch_tree(new)
                self._emit(ev.Overflow(clock.now(), "inotify"))  # its files left unseen
            return
        self._sync(new, emit_new=True, moved_from=old if renamed else None)

    def _expire_moves(self) -> None:
        now = time.monotonic()
        for cookie, (old, deadline) in list(self._pending_moves.items()):
            if deadline <= now:
                del self._pending_moves[cookie]
                if old in self._path_wd:
                    log.info("inotify: %s moved out of the project; asking for a rescan", old)
                    self._unwatch_tree(old)
                    self._emit(ev.Overflow(clock.now(), "inotify"))

    def _sync(self, top: str, *, emit_new: bool, readd: bool = False,
              moved_from: str | None = None) -> None:
        """Make the watches under `top` match the tree and the rules.

        Folders not yet watched get a watch *before* they are listed, so a file
        made in a new folder is either listed here or reported by the watch.
        emit_new: report the files of newly watched folders as CREATE+CLOSE_WRITE.
        readd: re-add known watches too (after an overflow, some may be stale).
        moved_from: `top` is a renamed folder; report its files as moves.
        """
        ignore, emit, n_listed = self._ignore, self._emit, 0
        self._limit_hit = 0
        t = clock.now()
        stack = [top]
        while stack and not self._stopping:
            d = stack.pop()
            if ignore.skip_dir(d):
                if self._pycache_ok(d):
                    if d not in self._path_wd or readd:
                        self._watch(d, PYCACHE_MASK)
                    continue
                self._unwatch_tree(d)
                continue
            known = self._path_wd.get(d)
            fresh = False
            if known is None or readd:
                wd = self._watch(d)
                if wd is None:
                    continue
                fresh = wd != known
            try:
                with os.scandir(d) as it:
                    entries = list(it)
            except OSError:
                continue
            if fresh and any(e.name in _ENV_MARKERS for e in entries):
                ignore.forget(d)  # it became an environment before its watch existed
                if ignore.skip_dir(d):
                    self._unwatch_tree(d)
                    continue
            emit_files = emit_new if fresh else moved_from is not None
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif emit_files and entry.is_file(follow_symlinks=False):
                        p = entry.path
                        if fresh:
                            if not ignore.skip_file(p):
                                emit(ev.FileEvent(t, ev.CREATE, p))
                                emit(ev.FileEvent(t, ev.CLOSE_WRITE, p))
                        else:
                            self._cookies += 1
                            emit(ev.FileEvent(t, ev.MOVED_FROM, moved_from + p[len(top):], None,
                                           self._cookies))
                            if not ignore.skip_file(p):
                                emit(ev.FileEvent(t, ev.MOVED_TO, p, None, self._cookies))
                except OSError:
                    continue
            n_listed += 1
            if n_listed % _DRAIN_EVERY == 0:
                self._drain()
        if self._limit_hit:
            self._emit(ev.Overflow(clock.now(), "inotify"))  # a later rescan covers those folders

    def _bytecode_written_before_watch(self, d: str) -> None:
        """A bytecode cache just made is filled at once, likely before its watch: what is
        already in it was written just now (the first import of its modules)."""
        t = clock.now()
        try:
            names = [n for n in os.listdir(d) if n.endswith(".pyc")]
        except OSError:
            return
        for name in names:
            self._emit(ev.FileEvent(t, ev.CREATE, f"{d}/{name}", None, 0, self._empty_at or None))

    def _pycache_ok(self, d: str) -> bool:
        """A bytecode cache of a watched folder: watched for reads only."""
        return (self._reads and d.endswith(_PYCACHE)
                and not self._ignore.skip_dir(d[: -len(_PYCACHE)]))

    def _watch(self, d: str, mask: int | None = None) -> int | None:
        try:
            wd = self._ino.add_watch(d, self._mask if mask is None else mask)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                msg = LIMIT_MESSAGE.format(n=self.watch_count)
                if not self._limit_hit:
                    log.log(logging.DEBUG if self.problem else logging.ERROR, "%s", msg)
                self.problem = msg
                self._limit_hit += 1
            elif err.errno in (errno.ENOENT, errno.ENOTDIR):
                pass  # gone already; its removal is reported by its parent
            else:
                log.warning("inotify: cannot watch %s: %s", d, err.strerror)
            return None
        old = self._wd_path.get(wd)
        if old is not None and old != d:
            self._forget(wd)  # the same folder under a stale name
        stale = self._path_wd.get(d)
        if stale is not None and stale != wd:
            self._forget(stale)
        self._wd_path[wd] = d
        self._path_wd[d] = wd
        self._kids.setdefault(d, set())
        if d != self._root:
            self._kids.setdefault(d.rpartition("/")[0], set()).add(d)
        return wd

    def _forget(self, wd: int) -> None:
        """Drop our record of one watch (the kernel removed it, or it is stale)."""
        d = self._wd_path.pop(wd, None)
        if d is None or self._path_wd.get(d) != wd:
            return
        del self._path_wd[d]
        parent = self._kids.get(d.rpartition("/")[0])
        if parent is not None:
            parent.discard(d)
        if not self._kids.get(d):
            self._kids.pop(d, None)

    def _subtree(self, top: str) -> list[str]:
        out, stack = [], [top]
        while stack:
            d = stack.pop()
            if d in self._path_wd:
                out.append(d)
            stack.extend(self._kids.get(d, ()))
        return out

    def _unwatch_tree(self, top: str) -> None:
        for d in self._subtree(top):
            wd = self._path_wd[d]
            try:
                self._ino.rm_watch(wd)
            except OSError:
                pass  # already gone
            self._forget(wd)
            self._kids.pop(d, None)

    def _rekey(self, old: str, new: str) -> bool:
        """A watched folder was renamed: the kernel keeps its watches; fix our names."""
        moved = self._subtree(old)
        if not moved:
            return False
        cut = len(old)
        kids = {d: self._kids.pop(d, set()) for d in moved}
        wds = {d: self._path_wd.pop(d) for d in moved}
        parent = self._kids.get(old.rpartition("/")[0])
        if parent is not None:
            parent.discard(old)
        for d in moved:
            nd = new + d[cut:]
            self._wd_path[wds[d]] = nd
            self._path_wd[nd] = wds[d]
            self._kids[nd] = {new + k[cut:] for k in kids[d]}
        self._kids.setdefault(new.rpartition("/")[0], set()).add(new)
        return True
