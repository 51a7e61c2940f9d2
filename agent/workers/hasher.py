"""The hasher pool: BLAKE3 off the event thread, once a file is quiet, never a torn hash."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from onlooker.agent import clock
from onlooker.agent.events import HashDone
from onlooker.store.errors import (
    ChangedWhileHashing,
    FileVanished,
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


@dataclass
class _Job:
    path: str
    copy: bool
    prio: int
    tries: int = 0
    settled: bool = False  # closed by its writer: no quiet period needed


class StatCache:
    """(dev, ino) -> (size, mtime_ns, hash): an unchanged file is never read twice."""

    def __init__(self) -> None:
        self._map: dict[tuple[int, int], tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def load(self, rows) -> None:
        with self._lock:
            for dev, ino, size, mtime_ns, h in rows:
                self._map[(dev, ino)] = (size, mtime_ns, h)

    def get(self, st: os.stat_result) -> str | None:
        with self._lock:
            hit = self._map.get((st.st_dev, st.st_ino))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        return None

    def put(self, dev: int, ino: int, size: int, mtime_ns: int, h: str) -> None:
        with self._lock:
            self._map[(dev, ino)] = (size, mtime_ns, h)

    def __len__(self) -> int:
        return len(self._map)


class SideDoor:
    """Reads a project file through a hard link in an unwatched folder.

    inotify reports an open to the watch on the folder the path went through, so
    an open through a link under `.onlooker/` raises no event in the project,
    and the agent's own reads can never be mistaken for a run's. Where a link
    cannot be made (another filesystem, a protected file), the caller falls back
    to announcing the read (`fallback`), which the inotify source then drops.
    """

    def __init__(self, folder: Path, fallback: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self.fallback = fallback
        self._seq = itertools.count()
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():  # left by an agent that died
            try:
                old.unlink()
            except OSError:
                pass

    @contextmanager
    def path(self, path: str) -> Iterator[str]:
        link = str(self.folder / f"{threading.get_ident()}-{next(self._seq)}")
        try:
            os.link(path, link, follow_symlinks=False)
        except OSError:
            if self.fallback is not None:
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


class Hasher:
    """Worker threads that hash (and store) files and report HashDone on `out`.

    A request is deduplicated per path while queued. A file modified less than
    `quiet` seconds ago waits; a file that changes while hashed is retried.
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
        self._threads = [
            threading.Thread(target=self._work, name=f"onlooker-hasher-{i}", daemon=True)
            for i in range(threads)
        ]
        self.bytes_hashed = 0
        self.files_hashed = 0

    def start(self) -> None:
        for th in self._threads:
            th.start()

    def set_side_door(self, door: SideDoor | None) -> None:
        self._side_door = door

    def request(self, path: str, *, copy: bool, prio: int = PRIO_RUN, delay: float = 0.0,
                settled: bool = False) -> None:
        """Hash `path` (once quiet, unless `settled`: its writer closed it)."""
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
            self._jobs[path] = _Job(path, copy, prio, settled=settled)
            heapq.heappush(self._heap, (prio, time.monotonic() + delay, next(self._seq), path))
            self._cond.notify()

    def hurry(self) -> None:
        """From now on a file open for writing is hashed as it is, and jobs put back to
        wait for a writer are due at once: the agent is stopping, and waiting ~40 s
        for a writer would hold `onlooker stop`."""
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

    # -- worker side ---------------------------------------------------------

    def _next(self) -> list[_Job] | None:
        """The jobs due now (up to _BATCH), waiting for one if none is; None to stop."""
        with self._cond:
            while not self._stop:
                now = time.monotonic()
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

    def _requeue(self, job: _Job, delay: float) -> None:
        with self._cond:
            self._busy.discard(job.path)
            if job.path in self._jobs:  # a newer request supersedes
                self._cond.notify_all()
                return
            job.tries += 1
            self._jobs[job.path] = job
            heapq.heappush(self._heap, (job.prio, time.monotonic() + delay,
                                        next(self._seq), job.path))
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            jobs = self._next()
            if jobs is None:
                return
            results: list[HashDone] = []
            # One batch: small objects share one sync (and a pack); they are readable
            # once it closes, so the results go out after it.
            try:
                with self._objects.batch():
                    for job in jobs:
                        try:
                            ev = self._hash(job)
                        except Exception:  # never let one file kill a hasher thread
                            log.exception("hashing %s failed", job.path)
                            ev = HashDone(clock.now(), job.path, None, error="internal error")
                        if ev is not None:
                            results.append(ev)
            except Exception:
                log.exception("storing a batch of %d objects failed", len(jobs))
                results = [HashDone(clock.now(), j.path, None, error="store failed")
                           for j in jobs]
            for ev in results:
                self._out.put(ev)
            with self._cond:
                for ev in results:
                    self._busy.discard(ev.path)
                self._cond.notify_all()

    def _hash(self, job: _Job) -> HashDone | None:
        """The result, or None when the job was put back to wait (not quiet yet)."""
        path = job.path
        began = clock.now()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return HashDone(clock.now(), path, None, error="vanished", began=began)
        except OSError as err:
            return HashDone(clock.now(), path, None, error=err.strerror or str(err))
        age = time.time() - st.st_mtime_ns / 1e9
        if not job.settled and age < self._quiet and job.tries < _RETRY_LIMIT:
            self._requeue(job, self._quiet - max(age, 0.0) + 0.01)
            return None
        cached = self._cache.get(st)
        copy = job.copy and (st.st_size <= self._copy_max)
        if cached is not None and (not copy or self._objects.has(cached)):
            return HashDone(clock.now(), path, cached, began=began, size=st.st_size,
                            mtime_ns=st.st_mtime_ns, dev=st.st_dev, ino=st.st_ino, stored=copy)
        try:
            writers_ok = self._hurry or job.tries >= _WRITERS_TRIES
            if self._side_door is None:
                res = hash_file(path, store=self._objects if copy else None, copy=copy,
                                copy_max_bytes=self._copy_max, writers_ok=writers_ok)
            else:
                with self._side_door.path(path) as quiet_path:
                    res = hash_file(quiet_path, store=self._objects if copy else None,
                                    copy=copy, copy_max_bytes=self._copy_max,
                                    writers_ok=writers_ok)
        except OpenForWriting:
            # Closed, then opened for writing again (a rewrite by `open(..., "w")` is
            # empty until filled): what the next close leaves is the version.
            self._requeue(job, min(5.0, self._quiet * (1 + job.tries)))
            return None
        except ChangedWhileHashing:
            if job.tries >= _RETRY_LIMIT:
                log.warning("giving up on %s: it keeps changing", path)
                return HashDone(clock.now(), path, None, error="keeps changing")
            self._requeue(job, min(5.0, self._quiet * (1 + job.tries)))
            return None
        except FileVanished:
            return HashDone(clock.now(), path, None, error="vanished")
        except NotAFile:
            return HashDone(clock.now(), path, None, error="not a regular file")
        except (StoreError, OSError) as err:
            log.warning("cannot hash %s: %s", path, err)
            return HashDone(clock.now(), path, None, error=str(err))
        self._cache.put(res.dev, res.ino, res.size, res.mtime_ns, res.hash)
        self.files_hashed += 1
        self.bytes_hashed += res.size
        return HashDone(clock.now(), path, res.hash, began=began, size=res.size,
                        mtime_ns=res.mtime_ns,
                        dev=res.dev, ino=res.ino, stored=res.stored, head=res.head)
