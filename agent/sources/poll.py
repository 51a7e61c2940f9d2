"""Process exec/exit events from polling /proc (the unprivileged process tier)."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection

from onlooker.agent import clock
from onlooker.agent.events import ProcExec, ProcExit
from onlooker.agent.probes import procfs
from onlooker.agent.sources.reader import pid_set

log = logging.getLogger(__name__)

# Known pids whose start time is re-checked per tick, to notice a pid reused
# between two ticks (pid_max is often 32768). Cheap: one stat read each.
_REUSE_CHECKS_PER_TICK = 4
# A new process is re-read this many ticks in case it was seen between fork and exec.
_YOUNG_TICKS = 3
_SLEEP_MAX = 0.2  # seconds: sources ticking at least this often sleep between ticks


class TickingSource:
    """A thread that calls `tick(now)` `hz` times a second until stopped."""

    name = "onlooker-tick"

    def __init__(self, out: queue.Queue, *, hz: float) -> None:
        if hz <= 0:
            raise ValueError(f"polling rate must be positive, got {hz} Hz")
        self._out = out
        self._period = 1.0 / hz
        self._stop = threading.Event()
        self._wake = threading.Event()  # nudge(): something to look at again
        self._thread: threading.Thread | None = None
        self.ticks = 0  # ticks done so far; lets tests wait for the source to look

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; returns within one tick's work."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout=2.0)
        if not thread.is_alive():
            # One last look, so a run that ended just before the stop is not left open.
            try:
                self.tick(clock.now())
            except Exception:
                log.exception("%s: final tick failed", self.name)

    def cpu_seconds(self) -> float:
        """CPU time the thread has used so far (0.0 when not running)."""
        thread = self._thread
        if thread is None or thread.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:
            return 0.0

    def setup(self) -> None:
        """Runs once on the thread before the first tick."""

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def idle(self) -> bool:
        """Whether there is nothing to look at until `nudge()`: the thread then sleeps
        instead of ticking (an idle agent must cost next to nothing)."""
        return False

    def nudge(self) -> None:
        """There is something to look at again (a run started): tick now."""
        self._wake.set()

    def _run(self) -> None:
        try:
            self.setup()
        except Exception:
            log.exception("%s: setup failed", self.name)
        period = self._period
        next_at = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            try:
                self.tick(clock.now())
            except Exception:  # one bad tick must not end the source
                failures += 1
                # A lasting fault (e.g. /proc hidden) would otherwise log 20 times a second.
                if failures in (1, 10) or failures % 1000 == 0:
                    log.exception("%s: tick failed (%d times so far)", self.name, failures)
            self.ticks += 1
            if self.idle():
                # Cleared before the second look: a nudge after that look wakes the wait.
                self._wake.clear()
                if self.idle():
                    self._wake.wait()
                    next_at = time.monotonic()
                    continue
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:
                # Fell behind (suspend, overload): skip the missed ticks, don't burst.
                next_at = time.monotonic()
                delay = 0.0
            if period <= _SLEEP_MAX:
                # A plain sleep costs the least per wake-up (an Event's timed wait takes
                # ~1.6x the CPU on a small VM, 20 times a second); stop() waits one period.
                time.sleep(delay)
            elif self._stop.wait(delay):
                break


def _call_watched(watched: Callable[[], Collection[int]]) -> tuple[int, ...]:
    try:
        return tuple(watched())
    except Exception:  # the caller's set may change under us; try next tick
        log.debug("poll proc source: watched() failed", exc_info=True)
        return ()


class PollProcSource(TickingSource):
    """Emits ProcExec for each new process (and for each exec in place of a watched
    one) and ProcExit for each vanished process.

    ProcExec.t is when the process was first seen; info.started is when it was
    forked (from /proc, 10 ms resolution). Exit codes are known only for
    watched processes caught as zombies.
    """

    name = "onlooker-poll"

    def __init__(
        self,
        out: queue.Queue,
        *,
        hz: float,
        ignore_pid: int | Collection[int],
        watched: Callable[[], Collection[int]],
    ) -> None:
        super().__init__(out, hz=hz)
        self._ignore = pid_set(ignore_pid)
        self._watched = watched
        # pid -> start ticks (-1: unknown) of every pid listed, reported or not.
        self._known: dict[int, int] = {}
        self._reported: set[int] = set()  # processes announced with a ProcExec
        # pid -> (exe, argv) last seen, for processes whose exec in place we track.
        self._images: dict[int, tuple[str | None, tuple[str, ...]]] = {}
        # pid -> ticks left to re-check it: seen new, it may not have exec'd yet.
        self._young: dict[int, int] = {}
        self._zombie: dict[int, tuple[int | None, int | None]] = {}
        self._reuse_cursor: list[int] = []
        self._counters: tuple[bytes, bytes] | None = None
        self.relists = 0  # ticks that listed /proc because a task was created or reaped
        self._prev_tick: float | None = None
        # Every process alive at this time (and still alive when /proc was listed) has
        # been reported: a file event from before it is matched to runs only after.
        self.caught_up = 0.0
        self._loadavg: int | None = None  # /proc/loadavg kept open (procfs.fork_counters)

    def stop(self) -> None:
        thread = self._thread
        super().stop()
        if thread is not None and thread.is_alive():
            return  # still ticking: it keeps its fd (a daemon thread, gone at exit)
        fd, self._loadavg = self._loadavg, None
        if fd is not None:
            os.close(fd)

    def setup(self) -> None:
        now = clock.now()
        self._loadavg = procfs.open_loadavg()
        self._counters = procfs.fork_counters(self._loadavg)
        for pid in procfs.list_pids():
            self._add(pid, now, young=False)

    def tick(self, now: float) -> None:
        # Processes seen lately may have been caught between fork and exec.
        recheck = [pid for pid, left in self._young.items() if left > 0]
        for pid in recheck:
            self._young[pid] -= 1
        counters = procfs.fork_counters(self._loadavg)
        if counters is None or counters != self._counters:
            self._counters = counters
            self._relist(now)
        recheck.extend(_call_watched(self._watched))
        for pid in set(recheck):
            if pid in self._reported:
                self._check(pid, now)
        self._young = {pid: left for pid, left in self._young.items() if left > 0}
        # Every known pid was alive now: unchanged counters mean nothing was reaped,
        # and a relist looked. An exit found next tick happened after this.
        self._prev_tick = now
        self.caught_up = now

    def _relist(self, now: float) -> None:
        self.relists += 1
        known = self._known
        current = set(procfs.list_pids())
        for pid in known.keys() - current:
            self._gone(pid, now)
        # Lower pids first: usually parents before children.
        for pid in sorted(current - known.keys()):
            self._add(pid, now, young=True)
        self._check_reuse(now)

    def _add(self, pid: int, now: float, *, young: bool) -> None:
        info = None if pid in self._ignore else procfs.read_info(pid)
        if info is None:
            # The agent itself or a kernel thread: remembered, never reported. A process
            # that vanished already is not listed next tick and is dropped then.
            brief = procfs.stat_brief(pid)
            self._known[pid] = brief[2] if brief is not None else -1
            return
        self._known[pid] = info.start_ticks
        self._reported.add(pid)
        self._images[pid] = (info.exe, info.argv)
        if young:
            self._young[pid] = _YOUNG_TICKS
        if not info.argv:
            z = procfs.zombie_exit(pid)
            if z is not None:
                self._zombie[pid] = z
        self._out.put(ProcExec(now, info))

    def _gone(self, pid: int, now: float) -> None:
        self._known.pop(pid, None)
        self._images.pop(pid, None)
        self._young.pop(pid, None)
        code, sig = self._zombie.pop(pid, (None, None))
        if pid in self._reported:
            self._reported.discard(pid)
            self._out.put(ProcExit(now, pid, code, sig, after=self._prev_tick))

    def _check(self, pid: int, now: float) -> None:
        """Re-read a watched or young process: zombie, pid reuse, or an exec in place."""
        brief = procfs.stat_brief(pid)
        if brief is None:
            return  # vanished; the next listing reports the exit
        state, _ppid, ticks = brief
        if ticks != self._known.get(pid):
            self._replace(pid, now)
            return
        if state == "Z":
            if pid not in self._zombie:
                z = procfs.zombie_exit(pid)
                if z is not None:
                    self._zombie[pid] = z
            return
        image = procfs.exe_and_argv(pid)
        if image is None or image == self._images.get(pid):
            return
        if not image[1]:
            return  # mid-exec or exiting: cmdline is empty for a moment; look again next tick
        info = procfs.read_info(pid)
        if info is None or info.start_ticks != ticks:
            return
        self._images[pid] = (info.exe, info.argv)
        self._out.put(ProcExec(now, info))

    def _replace(self, pid: int, now: float) -> None:
        """The pid now names another process: end the old one, announce the new one."""
        self._gone(pid, now)
        self._add(pid, now, young=True)

    def _check_reuse(self, now: float) -> None:
        cursor = self._reuse_cursor
        for _ in range(_REUSE_CHECKS_PER_TICK):
            if not cursor:
                cursor.extend(self._known)
                if not cursor:
                    return
            pid = cursor.pop()
            ticks = self._known.get(pid, -1)
            if ticks < 0 or pid in self._ignore:
                continue
            brief = procfs.stat_brief(pid)
            if brief is not None and brief[2] != ticks:
                self._replace(pid, now)
