"""The telemetry sampler: each live run's process tree (and its GPUs) read on its own thread.

Sampling semantics, per run, summed over every process of its tree:

- `cpu_pct`: CPU time used between two readings divided by the wall time between
  them, x100 (100 = one core busy). A process is primed when first seen (its CPU
  time is read and remembered); its first figure comes with the next reading, so a
  new run gets a meaningful first sample ~0.1 s after it appears, not a 0.0.
- `cpu_s`, `read_bytes`, `write_bytes`: cumulative since the processes started,
  over every process the run ever had (an ended worker keeps its last figures).
  Bytes are those the run read and wrote through system calls (`rchar`/`wchar`,
  cache hits included), not only what reached the disk.
  The CPU a process spends after its last reading is not counted (< one interval).
- `rss`, `threads`, `procs`, `fds` (open file descriptors: files, pipes, sockets):
  the live tree now. RSS summed over forked workers counts shared pages once per
  process. USS is not sampled: it needs /proc/<pid>/smaps, a page-table walk whose
  cost grows with the process's memory (milliseconds per GB), too dear at 1 Hz.
- System context: `sys_cpu_pct` (all cores, 100 = one core, like `cpu_pct`),
  `mem_available` (bytes), `load1`.
- GPU, only for devices on which one of the run's pids has a context:
  `gpu.<i>.procs` (how many of its pids hold a context there), `gpu.<i>.mem` (bytes
  its pids hold) and `gpu.<i>.util` (its pids' SM %, where the driver supports
  per-process utilization) are the run's own; `dev.<i>.util`,
  `dev.<i>.mem`, `dev.<i>.temp`, `dev.<i>.power` are the whole device, as context.

A reading the kernel or driver cannot give is left out of the sample, never 0.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from onlooker.agent import clock
from onlooker.agent.events import TelemetryBatch
from onlooker.agent.probes.gpu import GpuReader, GpuSample

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.1  # how often new runs and processes are looked for (and primed)
_CORES = psutil.cpu_count() or 1
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError)


@dataclass
class _Proc:
    proc: psutil.Process
    cpu: float  # user + system seconds at the last reading
    t: float  # agent clock at the last reading
    io: tuple[int, int] | None = None
    alive: bool = True


@dataclass
class _Run:
    due: float  # agent clock of the next sample
    procs: dict[int, _Proc] = field(default_factory=dict)
    # Last known cumulative figures of every pid the run ever had.
    cpu: dict[int, float] = field(default_factory=dict)
    io: dict[int, tuple[int, int]] = field(default_factory=dict)
    last: dict[str, Any] | None = None  # the last sample, for a run gone before its first
    emitted: bool = False


class TelemetrySampler:
    """Samples runs' trees every `interval` seconds; puts one TelemetryBatch per tick."""

    def __init__(self, out: queue.Queue, *, interval: float = 1.0,
                 runs: Callable[[], dict[int, frozenset[int]]],
                 gpu: GpuReader | None = None) -> None:
        if interval <= 0:
            raise ValueError("the telemetry interval must be positive")
        self.out = out
        self.interval = float(interval)
        self.runs = runs
        self.gpu = gpu
        self._runs: dict[int, _Run] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # nudge(): a run may have started
        self._thread: threading.Thread | None = None
        self._cpu = 0.0
        self._slot: float | None = None  # the shared schedule: next sample of established runs
        self.samples = 0  # per-run samples emitted, for status and benchmarks

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.gpu is not None:
            self.gpu.probe()  # NVML initialises here, once, not on the first sample
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="onlooker-telemetry",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; returns within about CHECK_SECONDS."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def cpu_seconds(self) -> float:
        """CPU time the sampler thread has used so far."""
        return self._cpu

    def nudge(self) -> None:
        """A run started: look now (with none open the thread sleeps until this)."""
        self._wake.set()

    def _idle(self) -> bool:
        if self._runs:
            return False
        try:
            return not self.runs()
        except Exception:
            return False

    def _loop(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            try:
                self.tick(clock.now())
            except Exception:  # a bug here must not end telemetry for the day
                log.exception("telemetry: sampling failed")
            self._cpu = time.thread_time()
            if self._idle():
                # No run to sample: no wake-ups until one starts (cleared before the
                # second look, so a nudge after it still wakes the wait).
                self._wake.clear()
                if self._idle():
                    self._wake.wait()

    # -- one step (tests drive it directly) --------------------------------------

    def tick(self, now: float) -> None:
        """Look for new runs and processes; sample the runs that are due."""
        try:
            current = self.runs()
        except Exception:
            log.exception("telemetry: cannot get the runs")
            return
        rows: list[tuple[int, float, dict]] = []
        for run_id in list(self._runs):
            if run_id not in current:
                state = self._runs.pop(run_id)
                if not state.emitted and state.last is not None:
                    rows.append((run_id, clock.to_wall(now), state.last))
        due: list[int] = []
        for run_id, pids in current.items():
            state = self._runs.get(run_id)
            if state is None:
                # First sight: prime now, first sample a moment later.
                if not self._runs:
                    psutil.cpu_percent(None)  # the system figure then covers the run only
                state = self._runs[run_id] = _Run(due=now + CHECK_SECONDS)
                self._track(state, pids, now)
                state.last = self._provisional(state, now)
            else:
                self._track(state, pids, now)
            if now >= state.due - 1e-3:
                due.append(run_id)
        if due:
            rows.extend(self._sample(due, now))
        if rows:
            self.samples += len(rows)
            self.out.put(TelemetryBatch(now, tuple(rows)))

    def _track(self, state: _Run, pids: frozenset[int], now: float) -> None:
        for pid in list(state.procs):
            if pid not in pids:
                del state.procs[pid]
        for pid in pids:
            if pid in state.procs:
                continue
            try:
                proc = psutil.Process(pid)
                times = proc.cpu_times()
            except _GONE:
                continue
            cpu = times.user + times.system
            state.procs[pid] = _Proc(proc, cpu, now)
            state.cpu[pid] = cpu

    def _sample(self, run_ids: list[int], now: float) -> list[tuple[int, float, dict]]:
        context = _system()
        gpu = None
        if self.gpu is not None:
            wanted = set().union(*(self._runs[r].procs for r in run_ids))
            gpu = self.gpu.read(wanted)
        wall = clock.to_wall(now)
        if self._slot is None or self._slot <= now + CHECK_SECONDS / 2:
            self._slot = max((self._slot or now) + self.interval, now + CHECK_SECONDS)
        rows = []
        for run_id in run_ids:
            state = self._runs[run_id]
            data = self._read_run(state, now)
            if data is None:  # every process ended before its first reading
                if not state.emitted and state.last is not None:
                    rows.append((run_id, wall, state.last))
                    state.emitted = True
            else:
                data.update(context)
                if gpu is not None:
                    data.update(_gpu_of(gpu, set(state.procs)))
                rows.append((run_id, wall, data))
                state.last, state.emitted = data, True
            # Established runs share one schedule, so one tick carries them all.
            state.due = self._slot
        return rows

    def _provisional(self, state: _Run, now: float) -> dict[str, Any] | None:
        """What priming saw, kept in case the run ends before its first sample: CPU %
        is then the average since each process started."""
        data = self._read_run(state, now)
        if data is None:
            return None
        pct = 0.0
        wall = time.time()
        for pid, p in state.procs.items():
            try:
                age = wall - p.proc.create_time()
            except _GONE:
                continue
            pct += state.cpu.get(pid, 0.0) / max(age, 0.01) * 100.0
        data["cpu_pct"] = round(pct, 1)
        data.update(_system())
        return data

    def _read_run(self, state: _Run, now: float) -> dict[str, Any] | None:
        pct = 0.0
        rss = threads = fds = procs = 0
        for pid, p in list(state.procs.items()):
            try:
                with p.proc.oneshot():
                    times = p.proc.cpu_times()
                    mem = p.proc.memory_info()
                    n_threads = p.proc.num_threads()
                try:
                    io = p.proc.io_counters()
                    # What the run read and wrote (rchar/wchar), not what reached the disk:
                    # a model written to the page cache is 0 disk bytes for a while.
                    state.io[pid] = (getattr(io, "read_chars", io.read_bytes),
                                     getattr(io, "write_chars", io.write_bytes))
                except (psutil.AccessDenied, NotImplementedError):
                    pass
                try:
                    n_fds = p.proc.num_fds()
                except psutil.AccessDenied:
                    n_fds = 0
            except _GONE:
                del state.procs[pid]  # its last figures stay in state.cpu / state.io
                continue
            cpu = times.user + times.system
            if now > p.t:
                pct += max(0.0, cpu - p.cpu) / (now - p.t) * 100.0
            p.cpu, p.t = cpu, now
            state.cpu[pid] = cpu
            rss += mem.rss
            threads += n_threads
            fds += n_fds
            procs += 1
        if not procs:
            return None
        data: dict[str, Any] = {
            "cpu_pct": round(pct, 1), "cpu_s": round(sum(state.cpu.values()), 3),
            "rss": rss, "threads": threads, "procs": procs, "fds": fds,
        }
        if state.io:
            data["read_bytes"] = sum(r for r, _ in state.io.values())
            data["write_bytes"] = sum(w for _, w in state.io.values())
        return data


def _system() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["sys_cpu_pct"] = round(psutil.cpu_percent(None) * _CORES, 1)
        out["mem_available"] = psutil.virtual_memory().available
        out["load1"] = round(os.getloadavg()[0], 2)
    except OSError as err:  # /proc unreadable: context is optional
        log.debug("telemetry: no system context: %s", err)
    return out


def _gpu_of(sample: GpuSample, pids: set[int]) -> dict[str, Any]:
    """The run's own GPU figures, and context for the devices it uses only."""
    mem: dict[int, int | None] = {}
    sm: dict[int, float | None] = {}
    for p in sample.procs:
        if p.pid not in pids:
            continue
        d = p.device
        if p.mem is not None:
            mem[d] = (mem.get(d) or 0) + p.mem
        else:
            mem.setdefault(d, None)
        if p.sm is not None:
            sm[d] = (sm.get(d) or 0.0) + p.sm
        else:
            sm.setdefault(d, None)
    out: dict[str, Any] = {}
    for dev in sample.devices:
        if dev.index not in mem:
            continue
        i = dev.index
        for key, value in ((f"gpu.{i}.mem", mem[i]), (f"gpu.{i}.util", sm.get(i)),
                           (f"dev.{i}.util", dev.util), (f"dev.{i}.mem", dev.mem_used),
                           (f"dev.{i}.temp", dev.temp), (f"dev.{i}.power", dev.power)):
            if value is not None:
                out[key] = round(value, 1) if isinstance(value, float) else value
        out[f"gpu.{i}.procs"] = sum(1 for p in sample.procs if p.pid in pids and p.device == i)
    return out
