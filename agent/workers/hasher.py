"""The hasher pool: BLAKE3 off the event thread, once a file is quiet, never a torn hash."""

from __future__ import annotations

import fcntl
import heapq
import itertools
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

import blake3

from onlooker.agent import clock
from onlooker.agent.events import HashDone
from onlooker.store import hashing, private
from onlooker.store.errors import (
    ChangedWhileHashing,
    FileVanished,
    HashError,
    NotAFile,
    OpenForWriting,
    StoreError,
)
from onlooker.store.objects import ObjectStore, hash_file

log = logging.getLogger(__name__)

# Lower runs first: run inputs/outputs before the background scan.
PRIO_RUN = 0
PRIO_SCAN = 1

_RETRY_LIMIT = 50  # a file still changing after this many tries is given up on (logged)
# A file some process holds open for writing is tried again this many times (about 40 s
# at the default quiet time), then hashed as it is: a log held open all along still
# gets a version.
_WRITERS_TRIES = 20
_BATCH = 512  # jobs one worker takes at once: their objects share one sync
# A due job waits up to _LINGER for others until _BATCH_MIN are queued: one batch of
# many costs one sync, one pack and one round trip to the bulk process instead of one
# each (a run writing files one by one would otherwise make a batch of each).
_BATCH_MIN = 256
_LINGER = 0.1


@dataclass(slots=True)  # one per file queued: a burst queues tens of thousands
class _Job:
    path: str
    copy: bool
    prio: int
    tries: int = 0
    settled: bool = False  # closed by its writer: no quiet period needed
    size: int = 0  # what it counts in the backlog's bytes while queued or being hashed
    door: bool = True  # read through the side door (False once a link was refused)


_STAT = struct.Struct("<qq")  # size, mtime_ns
_B3 = hashing.PREFIX  # "blake3:"


def _pack(size: int, mtime_ns: int, h: str) -> bytes | tuple[int, int, str]:
    """One entry's value as 48 bytes (size, mtime, the raw digest) where it is a BLAKE3
    hash as the store writes them, else the plain tuple."""
    if len(h) == 71 and h.startswith(_B3) and h.islower():
        try:
            return _STAT.pack(size, mtime_ns) + bytes.fromhex(h[7:])
        except (ValueError, struct.error):
            pass
    return (size, mtime_ns, h)


class StatCache:
    """(dev, ino) -> (size, mtime_ns, hash): an unchanged file is never read twice.

    The agent holds one entry per file hashed (its bulk process none: each job it
    sends there carries the entry for that file as a hint), so an entry is kept
    small: an int key and 48 bytes (about 170 bytes in all, against about 290-410 as
    two tuples and the hash's text); 100,000 files written in a burst cost about
    17 MB instead of 30-42."""

    def __init__(self) -> None:
        self._map: dict[int, bytes | tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def load(self, rows) -> None:
        with self._lock:
            for dev, ino, size, mtime_ns, h in rows:
                self._map[dev << 64 | ino] = _pack(size, mtime_ns, h)

    def get(self, st: os.stat_result) -> str | None:
        with self._lock:
            hit = self._map.get(st.st_dev << 64 | st.st_ino)
        if hit is None:
            return None
        if type(hit) is bytes:
            size, mtime_ns = _STAT.unpack_from(hit)
            if size == st.st_size and mtime_ns == st.st_mtime_ns:
                return _B3 + hit[16:].hex()
            return None
        if hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        return None

    def hint(self, path: str) -> tuple[int, int, int, int, str] | None:
        """(dev, ino, size, mtime_ns, hash) of `path` as it is now, where its entry
        still holds (a job's hint for the bulk process, which keeps no cache)."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        h = self.get(st)
        return None if h is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, h)

    def put(self, dev: int, ino: int, size: int, mtime_ns: int, h: str) -> None:
        value = _pack(size, mtime_ns, h)
        with self._lock:
            self._map[dev << 64 | ino] = value

    def put_many(self, rows: list[tuple[int, int, int, int, str]]) -> None:
        values = [(dev << 64 | ino, _pack(size, mtime_ns, h))
                  for dev, ino, size, mtime_ns, h in rows]
        with self._lock:
            self._map.update(values)

    def __len__(self) -> int:
        return len(self._map)


class _NoLink(Exception):
    """The side door could not make a link and has no fallback to call here."""


class SideDoor:
    """Reads a project file through a hard link in an unwatched folder.

    inotify reports an open to the watch on the folder the path went through, so
    an open through a link under `.onlooker/` raises no event in the project,
    and the agent's own reads can never be mistaken for a run's. Where a link
    cannot be made (another filesystem, a protected file), the caller falls back
    to announcing the read (`fallback`), which the inotify source then drops; with
    no fallback (the bulk process, which cannot call into the inotify source) it
    raises _NoLink and the agent announces the read before asking again.
    """

    def __init__(self, folder: Path, fallback: Callable[[str], None] | None = None, *,
                 clean: bool = True) -> None:
        self.folder = folder
        self.fallback = fallback
        self._seq = itertools.count()
        self._pid = os.getpid()  # the agent and its bulk process share the folder
        self._prefix = f"{folder}/{self._pid}-"  # (a Path join per file costs 2 us)
        private.make_dir(folder, private.Owner.of(folder))
        if clean:
            for old in folder.iterdir():  # left by an agent that died
                try:
                    old.unlink()
                except OSError:
                    pass

    @contextmanager
    def path(self, path: str) -> Iterator[str]:
        link = f"{self._prefix}{threading.get_ident()}-{next(self._seq)}"
        try:
            os.link(path, link, follow_symlinks=False)
        except OSError:
            if self.fallback is None:
                raise _NoLink(path) from None
            self.fallback(path)
            yield path
            return
        try:
            yield link
        finally:
            try:
                os.unlink(link)
            except OSError:
                pass


# What one hash job comes to (the bulk process sends these back as plain tuples):
#   (DONE, HashDone fields as a tuple, read: bool)   read: the file was read (no cache hit)
#   (RETRY, delay, size)                             not quiet / open for writing / changed
#   (DOOR,)                                          no side-door link: announce, ask again
DONE, RETRY, DOOR = 0, 1, 2


class _StoreTrouble:
    """Says, once a minute at most, that copies are being skipped (a full disk would
    otherwise log a line per file)."""

    EVERY = 60.0

    def __init__(self) -> None:
        self.skipped = 0
        self.said = -self.EVERY

    def skip(self, what: str, err: BaseException) -> None:
        self.skipped += 1
        now = time.monotonic()
        if now - self.said >= self.EVERY:
            self.said = now
            log.warning("cannot keep a copy of %s in the object store (%s): hashes are still"
                        " recorded, copies skipped (%d so far)", what, err, self.skipped)


_STORE_TROUBLE = _StoreTrouble()


def _done(path: str, hash: str | None, *, size: int = 0, mtime_ns: int = 0, dev: int = 0,
          ino: int = 0, stored: bool = False, error: str | None = None, head: bytes = b"",
          began: float | None = None) -> tuple:
    """HashDone's fields, in its order (the agent makes the event: a tuple pickles cheaper)."""
    return (clock.now(), path, hash, size, mtime_ns, dev, ino, stored, error, head, began)


def _hash_probing(path: str, *, objects: ObjectStore, keep: bool, copy_max: int,
                  writers_ok: bool, before: os.stat_result | None = None
                  ) -> hashing.HashResult:
    """`store.hashing.hash_file`, but a small file's read lease is only probed, not held
    through the read: for the bulk process, whose idle priority can leave it preempted
    for seconds between taking a lease and giving it back, while a run's `open(path,
    "w")` of that file would wait on it. What the held lease is for stays covered: a
    writer holding the file open now refuses the probe (OpenForWriting), and a writer's
    open with O_TRUNC after it changes size and mtime, which the stat pair around the
    read catches (ChangedWhileHashing). Large files go the store's way (their lease is
    a probe there too, except around an mmap that a truncation would turn into SIGBUS).

    `before`: the file's lstat taken by the caller just now (the same inode, through the
    side door's link or not): the stat pair is then that one and the one after the
    read, one system call fewer per file; a change between the two is caught the same.
    """
    if before is None:
        before = hashing._lstat(path)
    if not S_ISREG(before.st_mode):
        raise NotAFile(f"{path} is not a regular file", path)
    size = before.st_size
    if size > hashing.SMALL_MAX:
        return hash_file(path, store=objects if keep else None, copy=keep,
                         copy_max_bytes=copy_max, writers_ok=writers_ok)
    fd = hashing._open(path, before)
    try:
        if hashing._lease(fd, path, writers_ok):
            fcntl.fcntl(fd, hashing._F_SETLEASE, fcntl.F_UNLCK)
        data = hashing._read_small(fd, path, size)
    finally:
        os.close(fd)
    hashing._check_unchanged(path, before)
    hexdigest = blake3.blake3(data).hexdigest()
    if keep:
        try:
            objects._put(hexdigest, data)
        except OSError as err:
            raise hashing._store_failed(path, err) from err
    return hashing.HashResult(hashing.PREFIX + hexdigest, size, before.st_mtime_ns,
                              before.st_dev, before.st_ino, data[:hashing.HEAD_BYTES], keep)


def _hinted(hint: tuple[int, int, int, int, str] | None, st: os.stat_result) -> str | None:
    if hint is None or hint[:4] != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
        return None
    return hint[4]


def hash_job(path: str, copy: bool, settled: bool, tries: int, writers_ok: bool,
             door: SideDoor | None, *, objects: ObjectStore, cache: StatCache | None,
             quiet: float, copy_max: int, probe_only: bool = False,
             hint: tuple[int, int, int, int, str] | None = None) -> tuple:
    """Hash (and store) one file, never a torn hash; the outcome tuple above. What
    says the file is unchanged since it was last hashed: `cache`, or without one (the
    bulk process) the agent's entry for it sent with the job (`hint`), taken as a
    cache hit only when the file's own lstat here matches it.

    The stat pair around the read (`store.hashing.hash_file`) stays the rule however
    late this runs: a file that changed since it was asked for, or while it is read,
    is put back (RETRY), never versioned as it was."""
    began = clock.now()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return (DONE, _done(path, None, error="vanished", began=began), False)
    except OSError as err:
        return (DONE, _done(path, None, error=err.strerror or str(err)), False)
    if not private.may_read(path, st):
        # An agent with more rights than the project's owner (root) takes in nothing
        # the owner could not read: no hash (a guessable secret's hash is itself a
        # leak), no copy; the same outcome as a permission-denied file.
        return (DONE, _done(path, None, error="the project's owner may not read it"), False)
    age = time.time() - st.st_mtime_ns / 1e9
    if not settled and age < quiet and tries < _RETRY_LIMIT:
        return (RETRY, quiet - max(age, 0.0) + 0.01, st.st_size)
    cached = cache.get(st) if cache is not None else _hinted(hint, st)
    keep = copy and (st.st_size <= copy_max)
    if cached is not None and (not keep or objects.has(cached)):
        return (DONE, _done(path, cached, began=began, size=st.st_size,
                            mtime_ns=st.st_mtime_ns, dev=st.st_dev, ino=st.st_ino,
                            stored=keep), False)
    retry = (RETRY, min(5.0, quiet * (1 + tries)), st.st_size)
    try:
        if probe_only:
            def read(p: str) -> hashing.HashResult:
                return _hash_probing(p, objects=objects, keep=keep, copy_max=copy_max,
                                     writers_ok=writers_ok, before=st)
        else:
            def read(p: str) -> hashing.HashResult:
                return hash_file(p, store=objects if keep else None, copy=keep,
                                 copy_max_bytes=copy_max, writers_ok=writers_ok)
        try:
            if door is None:
                res = read(path)
            else:
                with door.path(path) as quiet_path:
                    res = read(quiet_path)
        except StoreError as err:
            if not keep or isinstance(err, HashError):
                raise
            # the store cannot take the copy (its disk is full, say): the version is
            # still the file's hash, recorded as only referenced
            _STORE_TROUBLE.skip(path, err)
            keep = False
            if door is None:
                res = read(path)
            else:
                with door.path(path) as quiet_path:
                    res = read(quiet_path)
    except _NoLink:
        return (DOOR,)
    except OpenForWriting:
        # Closed, then opened for writing again (a rewrite by `open(..., "w")` is
        # empty until filled): what the next close leaves is the version.
        return retry
    except ChangedWhileHashing:
        if tries >= _RETRY_LIMIT:
            log.warning("giving up on %s: it keeps changing", path)
            return (DONE, _done(path, None, error="keeps changing"), False)
        return retry
    except FileVanished:
        return (DONE, _done(path, None, error="vanished"), False)
    except NotAFile:
        return (DONE, _done(path, None, error="not a regular file"), False)
    except (StoreError, OSError) as err:
        log.warning("cannot hash %s: %s", path, err)
        return (DONE, _done(path, None, error=str(err)), False)
    if cache is not None:
        cache.put(res.dev, res.ino, res.size, res.mtime_ns, res.hash)
    return (DONE, _done(path, res.hash, began=began, size=res.size, mtime_ns=res.mtime_ns,
                        dev=res.dev, ino=res.ino, stored=res.stored, head=res.head), True)


def hash_batch(specs: list[tuple], door: SideDoor | None, *, objects: ObjectStore,
               cache: StatCache | None, quiet: float, copy_max: int,
               probe_only: bool = False) -> list[tuple]:
    """hash_job over one batch inside one ObjectStore batch: small objects share one
    sync (and a pack), and they are readable once it closes, so the outcomes are
    returned (and posted) after it."""
    outcomes: list[tuple] = []
    try:
        with objects.batch():
            for path, copy, settled, tries, writers_ok, use_door, *hint in specs:
                try:
                    outcomes.append(hash_job(path, copy, settled, tries, writers_ok,
                                             door if use_door else None, objects=objects,
                                             cache=cache, quiet=quiet, copy_max=copy_max,
                                             probe_only=probe_only,
                                             hint=hint[0] if hint else None))
                except Exception:  # never let one file kill a worker
                    log.exception("hashing %s failed", path)
                    outcomes.append((DONE, _done(path, None, error="internal error"), False))
    except OSError as err:
        # the batch's pack could not be written (a full disk): its files were hashed,
        # so their versions stand, as only referenced
        _STORE_TROUBLE.skip(f"a batch of {len(specs)} files", err)
        # (the pack writer aborts as a whole, and loose objects are installed after it)
        outcomes = [(o[0], o[1][:7] + (False,) + o[1][8:], o[2])
                    if o[0] == DONE and o[1][2] is not None else o for o in outcomes]
    except Exception:
        log.exception("storing a batch of %d objects failed", len(specs))
        outcomes = [(DONE, _done(s[0], None, error="store failed"), False) for s in specs]
    return outcomes


class Hasher:
    """Hashes (and stores) files off the event path; reports HashDone on `out`.

    A request is deduplicated per path while queued. A file modified less than
    `quiet` seconds ago waits; a file that changes while hashed is retried.

    The queue, deduplication and retries live here, in the agent process; the
    reading, hashing and storing run in the bulk process (`agent/workers/bulk.py`)
    at idle CPU and IO priority, so a busy run takes the cores and the hashing
    catches up after. One lane thread per `threads` hands batches over a socket and
    waits for their outcomes: it holds the GIL only to pickle them, and the event
    path never waits for it. With `isolate=False`, or where the bulk process cannot
    start, the lanes hash in this process at normal priority (lowering a thread of
    this process would let it hold the GIL while starved: see `priority.py`).
    """

    def __init__(
        self,
        out: queue.Queue,
        objects: ObjectStore,
        cache: StatCache,
        *,
        threads: int = 2,
        quiet: float = 0.2,
        copy_max_bytes: int = 256 * 1024 * 1024,
        side_door: SideDoor | None = None,
        isolate: bool = True,
    ) -> None:
        self._out = out
        self._objects = objects
        self._cache = cache
        self._quiet = quiet
        self._copy_max = copy_max_bytes
        self._side_door = side_door
        self._heap: list[tuple[int, float, int, str]] = []
        self._jobs: dict[str, _Job] = {}
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stop = False
        self._hurry = False  # the agent is stopping: hash what is there, wait for no one
        self._n_threads = max(1, int(threads))
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"onlooker-hasher-{i}",
                             daemon=True)
            for i in range(self._n_threads)
        ]
        self._isolate = isolate
        self._bulk = None  # bulk.BulkProcess once started
        self.bytes_hashed = 0
        self.files_hashed = 0
        self._bytes_waiting = 0  # sizes known of the queued jobs (scan, retries)

    def start(self) -> None:
        if self._isolate:
            from onlooker.agent.workers.bulk import BulkProcess

            try:
                self._bulk = BulkProcess.spawn(
                    lanes=self._n_threads, objects_root=self._objects.root,
                    quiet=self._quiet, copy_max=self._copy_max,
                    door=self._side_door.folder if self._side_door is not None else None)
            except Exception as err:  # hash in-process rather than not at all
                log.warning("cannot start the bulk process (%s): hashing at normal "
                            "priority in the agent", err)
                self._bulk = None
        for th in self._threads:
            th.start()

    @property
    def priority(self) -> dict[str, Any]:
        """Where the hashing runs and at what CPU and IO priority (for `status`)."""
        bulk = self._bulk
        if bulk is None:
            return {"where": "agent", "cpu": "normal", "io": "normal"}
        return {"where": "bulk process", "pid": bulk.pid, **bulk.priority}

    @property
    def bulk_pid(self) -> int | None:
        """The bulk process's pid: the sources must drop its opens like the agent's."""
        return self._bulk.pid if self._bulk is not None else None

    def set_side_door(self, door: SideDoor | None) -> None:
        self._side_door = door

    def request(self, path: str, *, copy: bool, prio: int = PRIO_RUN, delay: float = 0.0,
                settled: bool = False, size: int = 0) -> None:
        """Hash `path` (once quiet, unless `settled`: its writer closed it). `size`, when
        the caller knows it (the scan), counts in the backlog's bytes."""
        with self._cond:
            job = self._jobs.get(path)
            if job is not None:
                job.copy = job.copy or copy
                job.settled = job.settled or settled
                if prio < job.prio:
                    job.prio = prio
                    heapq.heappush(self._heap, (prio, time.monotonic() + delay,
                                                next(self._seq), path))
                return
            self._jobs[path] = _Job(path, copy, prio, settled=settled, size=size)
            self._bytes_waiting += size
            heapq.heappush(self._heap, (prio, time.monotonic() + delay, next(self._seq), path))
            # Wake a lane only when it must look: the first job (it may sleep with no
            # deadline) and a full batch; between, it sleeps until its linger ends.
            if len(self._jobs) == 1 or len(self._jobs) == _BATCH_MIN:
                self._cond.notify()

    def hurry(self) -> None:
        """From now on a file open for writing is hashed as it is, and jobs put back to
        wait for a writer are due at once: the agent is stopping, and waiting ~40 s
        for a writer would hold `onlooker stop`. The rest is hashed in this process at
        its normal priority: an idle-priority process beside a CPU hog would hold
        `stop` for as long as the hog runs."""
        if self._bulk is not None:
            self._bulk.hurried = True
        with self._cond:
            self._hurry = True
            now = time.monotonic()
            self._heap = [(prio, min(due, now), seq, path)
                          for prio, due, seq, path in self._heap]
            heapq.heapify(self._heap)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs) + len(self._busy)

    def backlog(self) -> dict[str, int]:
        """Files queued or being hashed, and the bytes of those whose size is known."""
        with self._cond:
            return {"files": len(self._jobs) + len(self._busy),
                    "bytes": max(0, self._bytes_waiting)}

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(left, 0.05))
        return True

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for th in self._threads:
            if th.is_alive():
                th.join(timeout=5)
        if self._bulk is not None:
            self._bulk.close()

    # -- lane side -----------------------------------------------------------

    def _next(self) -> list[_Job] | None:
        """The jobs due now (up to _BATCH), waiting for one if none is; None to stop."""
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                if self._heap and not self._hurry and len(self._jobs) < _BATCH_MIN:
                    until = self._heap[0][1] + _LINGER
                    if now < until:
                        self._cond.wait(until - now)
                        continue
                out: list[_Job] = []
                while self._heap and len(out) < _BATCH:
                    prio, due, _, path = self._heap[0]
                    job = self._jobs.get(path)
                    if job is None or prio != job.prio:
                        heapq.heappop(self._heap)  # stale entry
                        continue
                    if path in self._busy:
                        # Asked again while being hashed: look once that is done.
                        heapq.heappop(self._heap)
                        heapq.heappush(self._heap, (job.prio, now + 0.05,
                                                    next(self._seq), path))
                        break
                    if due > now:
                        break
                    heapq.heappop(self._heap)
                    del self._jobs[path]
                    self._busy.add(path)
                    out.append(job)
                if out:
                    return out
                # Idle: sleep until a request or stop() notifies (no timed wake-ups).
                wait = max(0.001, self._heap[0][1] - now) if self._heap else None
                self._cond.wait(wait)
            return None

    def _run_batch(self, lane: int, jobs: list[_Job]) -> list[tuple]:
        hurry = self._hurry
        specs = [(j.path, j.copy, j.settled, j.tries, hurry or j.tries >= _WRITERS_TRIES,
                  j.door) for j in jobs]
        bulk = self._bulk
        if bulk is not None and not hurry:
            hint = self._cache.hint
            try:
                return bulk.run(lane, [(*spec, hint(spec[0])) for spec in specs])
            except Exception as err:
                if not self._stop:
                    log.warning("the bulk process failed (%s): hashing in the agent", err)
                self._bulk = None
                bulk.close(kill=True)
        return hash_batch(specs, self._side_door, objects=self._objects, cache=self._cache,
                          quiet=self._quiet, copy_max=self._copy_max)

    def _work(self, lane: int) -> None:
        while True:
            jobs = self._next()
            if jobs is None:
                return
            outcomes = self._run_batch(lane, jobs)
            results: list[HashDone] = []
            again: list[tuple[_Job, float, int]] = []
            hashed = hashed_bytes = 0
            known: list[tuple[int, int, int, int, str]] = []
            for job, outcome in zip(jobs, outcomes, strict=True):
                kind = outcome[0]
                if kind == DONE:
                    ev = HashDone(*outcome[1])
                    if ev.hash is not None and ev.dev:
                        known.append((ev.dev, ev.ino, ev.size, ev.mtime_ns, ev.hash))
                    if outcome[2]:
                        hashed += 1
                        hashed_bytes += ev.size
                    results.append(ev)
                elif kind == RETRY:
                    again.append((job, outcome[1], outcome[2]))
                else:  # DOOR: say the read is ours before it happens, then ask again
                    if self._side_door is not None and self._side_door.fallback is not None:
                        self._side_door.fallback(job.path)
                    job.door = False
                    again.append((job, 0.0, job.size))
            self._cache.put_many(known)  # the scan's view: what the bulk process learnt
            self.files_hashed += hashed
            self.bytes_hashed += hashed_bytes
            for ev in results:
                self._out.put(ev)
            with self._cond:
                for job in jobs:
                    self._bytes_waiting -= job.size
                for job, delay, size in again:
                    self._requeue_locked(job, delay, size)
                for ev in results:
                    self._busy.discard(ev.path)
                self._cond.notify_all()

    def _requeue_locked(self, job: _Job, delay: float, size: int) -> None:
        self._busy.discard(job.path)
        if job.path in self._jobs:  # a newer request supersedes
            return
        job.tries += 1
        job.size = size
        self._bytes_waiting += size
        self._jobs[job.path] = job
        heapq.heappush(self._heap, (job.prio, time.monotonic() + delay,
                                    next(self._seq), job.path))
